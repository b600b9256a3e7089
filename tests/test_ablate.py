"""The ablation study: every variant's config is built, runs through the model and is recorded with a command that re-makes it
(cheap, stages faked); the GPU budget hands its recipe to fine-tuning; two variants run end to end through the console script,
two at a time, in the GPU budget's one-step smoke version."""
import json, math, os, shlex, subprocess, sys
from dataclasses import asdict
from pathlib import Path
import pytest
import torch
from mae_nb.cli import build_parser
import mae_nb.ablations as ab
from mae_nb.ablations import ABLATIONS, GPU_ABLATION, SMOKE, ablate, smoke_budget
from mae_nb.masking import num_keep
from mae_nb.model import MAEConfig, MaskedAutoencoder
from mae_nb.train import batch_noise
from mae_nb.checkpoint import load_model

MAE_NB = Path(sys.executable).parent/'mae_nb'
JSON_KEYS = {'variant', 'seed', 'changes', 'config', 'budget', 'command', 'linear_probe', 'knn', 'finetune', 'pretrain_loss',
             'pretrain_s', 'pretrain_img_per_s', 'finetune_s', 'eval_images', 'wall_s', 'torch', 'device', 'threads', 'budget_name',
             'eval_split', 'loss_tail_drop'}


def _fake_stages(monkeypatch, seen: dict):
    "Replace pretraining, loading, probing and fine-tuning by stand-ins that record what `ablate` hands them and run the model once."
    def pretrain(mc, tc):
        seen['pretrained'] = mc
        Path(tc.out_dir).mkdir(parents=True, exist_ok=True)
        (Path(tc.out_dir)/'metrics.jsonl').write_text(''.join(json.dumps(dict(step=s, loss=1.0, img_per_s=10.0 * s)) + '\n' for s in (1, 2)))
        return dict(final_loss=1.0, train_s=0.5, checkpoint=str(Path(tc.out_dir)/'checkpoint.pt'))

    def probe_encoder(model, **kw):
        mc = model.cfg
        x = torch.rand(2, mc.in_chans, mc.img_size, mc.img_size)
        with torch.no_grad(): out = model(x, noise=batch_noise(mc, 0, 0, 0, 2))          # the noise pretraining draws for it
        assert math.isfinite(out.loss.item())
        assert (out.mask.sum(1) == mc.num_patches - num_keep(mc.num_patches, mc.mask_ratio)).all()
        seen['probed'] = mc
        return dict(linear_probe=50.0, knn=40.0, eval_images=kw['eval_limit'])

    monkeypatch.setattr(ab, 'pretrain', pretrain)
    monkeypatch.setattr(ab, 'load_model', lambda ckpt: MaskedAutoencoder(seen['pretrained']))
    monkeypatch.setattr(ab, 'probe_encoder', probe_encoder)
    def finetune(fc):
        seen['finetuned'] = fc
        return dict(test_acc=30.0, train_s=0.5)
    monkeypatch.setattr(ab, 'finetune', finetune)


@pytest.mark.parametrize('variant', list(ABLATIONS))
def test_variant_config_runs_and_command_parses(tmp_path, monkeypatch, variant):
    changes = ABLATIONS[variant]
    want = MAEConfig.from_preset('fmnist', **(changes or {}))                    # a valid config (or raises here)
    seen = {}
    _fake_stages(monkeypatch, seen)
    res = ablate(variant, seed=1, out=tmp_path/'json', work=tmp_path/'work', smoke=True, device='cpu')
    assert seen['probed'] == want and res['config'] == asdict(want)            # the variant's config is what the model was built from
    assert (seen['finetuned'].erase_prob, seen['finetuned'].min_crop_scale, seen['finetuned'].mixup) == (0.0, 0.2, 0.0)   # the CPU recipe
    assert ('pretrained' in seen) == (changes is not None) and (res['pretrain_s'] is None) == (changes is None)
    assert JSON_KEYS <= set(res) and res['budget'] == SMOKE and res['pretrain_img_per_s'] == (None if changes is None else 20.0)
    assert json.loads((tmp_path/'json'/f'{variant}-seed1-smoke.json').read_text()) == res
    argv = shlex.split(res['command'])
    assert argv[0] == 'mae_nb'
    args = build_parser().parse_args(argv[1:])                                   # the recorded command re-makes this run
    assert (args.command, args.variants, args.seeds, args.smoke, args.epochs, Path(args.out)) == ('ablate', [variant], [1], True, None, tmp_path/'json')


def test_longer_budget_command_parses(tmp_path, monkeypatch):
    _fake_stages(monkeypatch, {})
    res = ablate('mask_0.5', seed=0, out=tmp_path, work=tmp_path/'work', device='cpu', epochs=5)
    assert (tmp_path/'mask_0.5-seed0-ep5.json').exists() and res['budget']['epochs'] == 5
    args = build_parser().parse_args(shlex.split(res['command'])[1:])
    assert (args.variants, args.seeds, args.smoke, args.epochs) == (['mask_0.5'], [0], False, 5)


@pytest.mark.parametrize('variant', ['default', 'random_init'])
def test_gpu_budget_hands_its_recipe_to_finetuning(tmp_path, monkeypatch, variant):
    seen = {}
    _fake_stages(monkeypatch, seen)
    res = ablate(variant, seed=0, out=tmp_path, work=tmp_path/'work', budget='gpu', device='cpu')
    fc, b = seen['finetuned'], GPU_ABLATION
    assert (fc.mixup, fc.cutmix, fc.randaug_ops, fc.layer_decay, fc.drop_path, fc.smoothing, fc.compile) == (0.8, 1.0, 2, 0.75, 0.1, 0.1, True)
    assert (fc.randaug_magnitude, fc.randaug_mstd, fc.erase_prob, fc.min_crop_scale) == (9.0, 0.5, 0.25, 0.08)
    assert (fc.batch_size, fc.limit, fc.blr) == (b['finetune_batch_size'], b['finetune_images'], b['finetune_blr'])
    assert fc.epochs == (b['scratch_epochs'] if variant == 'random_init' else b['finetune_epochs'])    # from scratch: longer
    assert (tmp_path/f'{variant}-seed0-gpu.json').exists() and res['budget'] == b and res['budget_name'] == 'gpu'
    args = build_parser().parse_args(shlex.split(res['command'])[1:])
    assert (args.variants, args.budget, args.smoke) == ([variant], 'gpu', False)


def test_gpu_smoke_end_to_end_two_at_a_time(tmp_path):
    "The console script runs the reference (no pretraining) and a pretraining variant whose change must reach the model, in parallel."
    r = subprocess.run([MAE_NB, 'ablate', 'random_init', 'encoder_mask_tokens', '--smoke', '--budget', 'gpu', '--jobs', '2',
                        '--device', 'cpu', '--out', tmp_path/'json', '--work', tmp_path/'work'],
                       capture_output=True, text=True, env={**os.environ, 'MPLBACKEND': 'Agg'})
    assert r.returncode == 0, r.stderr[-2000:]
    results = {p.name: json.loads(p.read_text()) for p in (tmp_path/'json').glob('*.json')}
    assert sorted(results) == ['encoder_mask_tokens-seed0-gpu-smoke.json', 'random_init-seed0-gpu-smoke.json']
    for name, res in results.items():
        assert JSON_KEYS <= set(res), name
        assert 0 <= res['linear_probe'] <= 100 and 0 <= res['knn'] <= 100 and 0 <= res['finetune'] <= 100, name
        assert res['eval_images'] == SMOKE['eval_limit'] and res['budget'] == smoke_budget(GPU_ABLATION), name
        assert res['command'].startswith(f"mae_nb ablate {res['variant']} --seeds 0 --budget gpu --smoke")
        assert (res['pretrain_s'] is None) == (res['variant'] == 'random_init')
        assert (tmp_path/'work'/f"{res['variant']}-seed0-gpu-smoke.log").exists()        # each process's own output
    assert results['encoder_mask_tokens-seed0-gpu-smoke.json']['config']['encoder_mask_tokens'] is True
    ckpt = tmp_path/'work'/'encoder_mask_tokens-seed0-gpu-smoke'/'pretrain'/'checkpoint.pt'
    assert load_model(ckpt).cfg.encoder_mask_tokens is True                      # the pretrained model itself had mask tokens
    assert not (tmp_path/'work'/'random_init-seed0-gpu-smoke'/'pretrain').exists()
    assert r.stdout.count('linear probe') == 4                                   # a line as each finishes, then one per result read back


def test_parallel_study_stops_at_its_time_limit(tmp_path, capsys):
    "Two runs at once, each in its own process, given 3 s: both interrupted as at a Ctrl-C, none counted as failed, the study says where it is."
    from mae_nb.ablations import ablation_study
    got = ablation_study(['mask_0.5', 'default'], [0], jobs=2, smoke=True, time_limit='3s', out=tmp_path/'out', work=tmp_path/'work',
                         device='cpu')
    out = capsys.readouterr().out
    assert got == [] and 'stopped by the time limit (3s): 0 of 2 runs finished' in out and 'failed' not in out
    assert sorted(p.name for p in (tmp_path/'work').glob('*.log')) == ['default-seed0-smoke.log', 'mask_0.5-seed0-smoke.log']
