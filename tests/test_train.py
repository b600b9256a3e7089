"""Training: gradient accumulation through `fit` equal to the larger batch, the fp16 + GradScaler path on CPU, and across processes
an exact resume after SIGKILL (pretraining and fine-tuning) and a 2-process DDP run equal to one process."""
import json, math, os, signal, subprocess, sys, time
from pathlib import Path
import pytest
import torch
from mae_nb.loaders import ShardedTensorLoader
from mae_nb.model import MAEConfig, MaskedAutoencoder
from mae_nb.train import param_groups
from mae_nb.checkpoint import read_metrics
from mae_nb.runs import TrainConfig, fit, pretrain

BIN = Path(sys.executable).parent
ENV = {**os.environ, 'OMP_NUM_THREADS': '1', 'MPLBACKEND': 'Agg'}
SMALL = ['pretrain', '--preset', 'fmnist', '--dataset', 'fmnist', '--limit', '192', '--batch-size', '32', '--blr', '1e-3',
         '--log-every', '1', '--no-progress', '--device', 'cpu']


FINETUNE = ['finetune', '--preset', 'fmnist', '--dataset', 'fmnist', '--limit', '192', '--batch-size', '32', '--eval-limit', '64',
            '--log-every', '1', '--no-progress', '--device', 'cpu']      # the full recipe: RandAugment, MixUp/CutMix, drop path


def losses(run):
    "(step, loss) of every training record, (step, test accuracy) of every evaluation record."
    return [(r['step'], r['loss'] if 'loss' in r else r['test_acc']) for r in map(json.loads, (run/'metrics.jsonl').read_text().splitlines())
            if 'loss' in r or 'test_acc' in r]                             # (each session also logs its first step's seconds)


@pytest.mark.parametrize('command', [SMALL, FINETUNE], ids=['pretrain', 'finetune'])
def test_resume_after_sigkill_is_exact(tmp_path, command):
    args = command + ['--epochs', '4', '--ckpt-every', '4']                    # 6 steps per epoch, 24 in all
    subprocess.run([BIN/'mae_nb', *args, '--out', tmp_path/'ref'], check=True, env=ENV, capture_output=True)
    ref = losses(tmp_path/'ref')
    assert sorted(s for s, _ in ref) == sorted(list(range(1, 25)) + ([6, 12, 18, 24] if command is FINETUNE else []))  # + evaluations

    run = tmp_path/'killed'
    for kill_at in (6, 15):                                                      # two kills, mid-epoch, between checkpoints
        p = subprocess.Popen([BIN/'mae_nb', *args, '--out', run, '--resume'], env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 120
        while time.time() < deadline and p.poll() is None:
            m = run/'metrics.jsonl'
            if m.exists() and len(m.read_text().splitlines()) >= kill_at: break
            time.sleep(0.01)
        assert p.poll() is None, 'the run ended before it could be killed'
        p.send_signal(signal.SIGKILL); p.wait()
        ck = torch.load(run/'checkpoint.pt', weights_only=True)
        assert 0 < ck['step'] < 24
    subprocess.run([BIN/'mae_nb', *args, '--out', run, '--resume'], check=True, env=ENV, capture_output=True)
    assert losses(run) == ref                                                   # bit-for-bit on CPU


def test_ddp_two_processes_match_one(tmp_path):
    args = SMALL + ['--epochs', '2']
    one = subprocess.run([BIN/'mae_nb', *args, '--batch-size', '64', '--out', tmp_path/'one'], env=ENV, capture_output=True, text=True)
    assert one.returncode == 0, one.stderr
    two = subprocess.run([BIN/'torchrun', '--standalone', '--nproc_per_node', '2', '--no-python', BIN/'mae_nb', *args,
                          '--batch-size', '32', '--out', tmp_path/'two'], env=ENV, capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stdout + two.stderr
    s1, s2 = (json.loads((tmp_path/d/'summary.json').read_text()) for d in ('one', 'two'))
    assert s2['world_size'] == 2 and s2['ranks_in_sync'] is True
    assert s1['effective_batch'] == s2['effective_batch'] == 64 and s1['step'] == s2['step'] == 6
    w1 = torch.load(tmp_path/'one'/'checkpoint.pt', weights_only=True)['model']
    w2 = torch.load(tmp_path/'two'/'checkpoint.pt', weights_only=True)['model']
    for k in w1:
        a, b = w1[k], w2[k]
        if k.endswith('attn.qkv.bias'):
            # The key bias adds the same q·b_k to every score of a query row, which softmax ignores: its true gradient is 0,
            # and Adam divides rounding noise by its own tiny size, so those entries wander apart. Compare q and v biases only.
            D = len(a) // 3
            a, b = torch.cat([a[:D], a[2 * D:]]), torch.cat([b[:D], b[2 * D:]])
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-4), (k, (a - b).abs().max())
    l1, l2 = losses(tmp_path/'one'), losses(tmp_path/'two')
    assert [s for s, _ in l1] == [s for s, _ in l2]
    assert max(abs(a - b) for (_, a), (_, b) in zip(l1, l2)) < 1e-4


TINY = MAEConfig.from_preset('fmnist', embed_dim=32, depth=2, num_heads=2, decoder_embed_dim=16, decoder_depth=1, decoder_num_heads=2)


def _fit(tmp_path, name, batch_size, accum_iter, n=96):
    """`fit` on n random images in a shuffled order that does not depend on the batch size (no augmentation), each image masked by
    its own fixed noise. (`pretrain` cannot be compared so: it draws masking noise and crops per micro-batch index, so batches
    2k and 2k+1 of B images get other masks than batch k of 2B.)"""
    g = torch.Generator().manual_seed(0)
    imgs = torch.randint(0, 256, (n, 1, 28, 28), dtype=torch.uint8, generator=g)
    noise = torch.rand(n, TINY.num_patches, generator=g)
    loader = ShardedTensorLoader(imgs, torch.arange(n), batch_size, train=True, augment=False, seed=0)   # labels: the images' indices
    torch.manual_seed(0)
    model = MaskedAutoencoder(TINY)
    def loss_fn(m, x, idx, epoch, i): return m(x, noise=noise[idx]).loss
    tc = TrainConfig(batch_size=batch_size, accum_iter=accum_iter, epochs=2, blr=1e-3, warmup_epochs=0.5, out_dir=str(tmp_path/name),
                     log_every=1, progress=False, device='cpu')
    summary = fit(model, param_groups(model, tc.weight_decay), loader, loss_fn, tc)
    return model, summary, read_metrics(tmp_path/name/'metrics.jsonl', has='loss')


def test_accumulation_equals_the_larger_batch(tmp_path):
    m1, s1, r1 = _fit(tmp_path, 'big', 32, 1)
    m2, s2, r2 = _fit(tmp_path, 'accum', 16, 2)
    assert (s1['step'], s1['effective_batch'], s1['lr']) == (s2['step'], s2['effective_batch'], s2['lr']) == (6, 32, 1e-3 * 32 / 256)
    assert [r['step'] for r in r1] == [r['step'] for r in r2] and [r['lr'] for r in r1] == [r['lr'] for r in r2]
    torch.testing.assert_close([r['loss'] for r in r2], [r['loss'] for r in r1], rtol=1e-5, atol=1e-6)
    w1, w2 = m1.state_dict(), m2.state_dict()
    for k in w1:
        a, b = w1[k], w2[k]
        if k.endswith('attn.qkv.bias'):      # the key bias has a zero true gradient: Adam amplifies its rounding noise (see DDP below)
            D = len(a) // 3
            a, b = torch.cat([a[:D], a[2 * D:]]), torch.cat([b[:D], b[2 * D:]])
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-7), (k, (a - b).abs().max())
    # Adam is nearly blind to the gradient's scale; its moments are not: a missing `/ accum_iter` shows here (3x off), not above
    o1, o2 = (torch.load(tmp_path/d/'checkpoint.pt', weights_only=True)['optimizer']['state'] for d in ('big', 'accum'))
    assert o1.keys() == o2.keys()
    for i in o1:
        for n in ('exp_avg', 'exp_avg_sq', 'step'):
            a, b = o1[i][n], o2[i][n]
            assert (a - b).abs().max() <= 1e-5 * a.abs().max(), (i, n)
    ref = _fit(tmp_path, 'other', 16, 1)[0].state_dict()                            # no accumulation: twice the steps, other weights
    assert any(not torch.allclose(w1[k], ref[k], rtol=1e-4, atol=1e-6) for k in w1)


def test_fp16_grad_scaler_on_cpu(tmp_path):
    s = pretrain(TINY, TrainConfig(amp='fp16', limit=64, batch_size=32, epochs=1, log_every=1, progress=False, device='cpu',
                                   out_dir=str(tmp_path)))
    assert s['step'] == 2 and math.isfinite(s['final_loss']) and s['final_loss'] > 0
    ck = torch.load(tmp_path/'checkpoint.pt', weights_only=True)
    scale = ck['scaler'].get('scale')                                   # a disabled scaler saves an empty state
    assert scale is not None and 0 < scale < float('inf') and ck['train_config']['amp'] == 'fp16'
    assert all(torch.isfinite(v).all() for v in ck['model'].values())


def test_tensorboard_events_hold_the_logged_numbers(tmp_path):
    "With tensorboard=True, OUT/tensorboard holds every number of metrics.jsonl as a scalar at its step; a resumed run hides the steps it redoes."
    pytest.importorskip('tensorboard')
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    tc = dict(limit=96, batch_size=32, log_every=1, progress=False, device='cpu', tensorboard=True, out_dir=str(tmp_path))
    from mae_nb.checkpoint import TensorBoardLog
    pretrain(TINY, TrainConfig(epochs=1, **tc))                                 # steps 1-3, checkpoint at 3
    killed = TensorBoardLog(tmp_path/'tensorboard'); killed.write(step=4, loss=99.0); killed.close()   # as a session killed after step 4
    pretrain(TINY, TrainConfig(epochs=2, resume=True, **tc))                    # resumes at 3: steps 4-6 again, in the same folder
    ev = EventAccumulator(str(tmp_path/'tensorboard')); ev.Reload()
    got = {(tag, e.step): e.value for tag in ev.Tags()['scalars'] for e in ev.Scalars(tag)}
    want = {(f'train/{k}', r['step']): v for r in read_metrics(tmp_path/'metrics.jsonl', has='loss') for k, v in r.items() if k != 'step'}
    assert {t for t, _ in want} == {'train/epoch', 'train/lr', 'train/loss', 'train/img_per_s', 'train/elapsed_s'}
    assert sorted(s for t, s in want if t == 'train/loss') == list(range(1, 7))
    for key, v in want.items(): assert got[key] == pytest.approx(v, rel=1e-6), key   # (float32 in the event files)
    assert [e.value != 99.0 for e in ev.Scalars('train/loss') if e.step == 4] == [True]   # the killed session's step 4 is hidden
    assert ('run/first_step_s', 1) in got and ('run/first_step_s', 4) in got        # each session's first step


def test_each_config_declares_what_a_resume_may_change():
    "A config built on TrainConfig adds its own resumable fields; the run-defining ones still refuse a resume."
    from dataclasses import asdict
    from mae_nb.runs import changed_settings
    from mae_nb.runs import PretrainConfig
    from mae_nb.experiments import FinetuneConfig
    for cls, may, may_not in [(PretrainConfig, dict(knn_every=5, knn_train=100), dict(knn_every=5, seed=1)),
                              (FinetuneConfig, dict(eval_every=3, eval_limit=64), dict(eval_every=3, mixup=0.0))]:
        ck = dict(train_config=asdict(cls()))
        assert changed_settings(ck, cls(**may)) == [], cls
        assert changed_settings(ck, cls(**may_not)) == [f'`{k}` {getattr(cls(), k)!r} → {v!r}' for k, v in may_not.items() if k not in may], cls
    assert not {'knn_every', 'eval_every'} & TrainConfig.RESUMABLE                 # TrainConfig knows only its own fields
