"""Fast CPU checks of mae_nb.bench: peaks, FLOP counts, step timing, the three-way benchmark, the step breakdown, time to train,
and the suite (`mae_nb bench --suite`: plans, progress lines, a failing entry, the files it writes, the GPU user's command line)."""
import json, math, os, subprocess, sys
from pathlib import Path
from dataclasses import replace
import pytest
import torch
import mae_nb.bench as bench
import mae_nb.suite as suite
from mae_nb.bench import CONTENDERS, BenchConfig, bench_step, benchmark, format_bench, peak_tflops, time_steps, time_to_train
from mae_nb.suite import (CPU_SUITE, CUDA_SUITE, PHASES, SUITE_KINDS, SuiteEntry, format_breakdown, run_suite, step_breakdown,
                          suite_plan)
from mae_nb.cli import main
from mae_nb.distributed import device_name
from mae_nb.model import MAEConfig
from mae_nb.cost import train_flops
from mae_nb.runs import TrainConfig
from mae_nb.weights import have_transformers

SMALL = MAEConfig(img_size=16, patch_size=4, in_chans=3, embed_dim=32, depth=2, num_heads=2,
                  decoder_embed_dim=16, decoder_depth=1, decoder_num_heads=2)


def test_peak_lookup_and_override():
    assert peak_tflops('cpu', 2.0) == (2.0, 'given')
    peak, why = peak_tflops('cpu')
    assert peak is None and 'peak_tflops' in why
    with pytest.raises(ValueError, match='positive'): peak_tflops('cpu', -1)


def test_train_flops_counts_backward_and_mask_tokens():
    f = train_flops(SMALL)
    assert f['forward_flops'] == f['encoder_flops'] + f['decoder_flops'] > 0
    assert 2.5 < f['train_flops'] / f['forward_flops'] < 3.1
    mt = train_flops(replace(SMALL, encoder_mask_tokens=True))
    assert mt['encoder_flops'] > 2.5 * f['encoder_flops']      # 4× the tokens, attention quadratic
    assert f['decoder_flops'] <= mt['decoder_flops'] < 1.2 * f['decoder_flops']   # decoder_embed sees all N tokens


def test_time_steps_trains():
    from mae_nb.model import MaskedAutoencoder
    torch.manual_seed(0)
    m = MaskedAutoencoder(SMALL)
    x, nz = torch.rand(8, 3, 16, 16), torch.rand(8, 16)
    step = bench_step(m, torch.device('cpu'), lr=1e-2)
    first = step(x, nz).item()
    r = time_steps(step, x, nz, warmup=1, iters=5, windows=3)
    assert r['loss'] < first                                   # the same batch, fitted: the optimizer steps
    assert len(r['windows']) == 3 and r['sec_per_step'] == min(r['windows']) and r['peak_mem'] is None


def test_benchmark_cpu_three_way():
    res = benchmark(SMALL, batch_size=4, device='cpu', warmup=1, iters=2, windows=1, peak=1.0)
    names = [r['name'] for r in res['rows']]
    assert names == (list(CONTENDERS) if have_transformers() else ['ours', 'mask_tokens'])
    for r in res['rows']:
        assert r['img_per_s'] > 0 and math.isfinite(r['loss'])
        assert math.isclose(r['tflops'], r['train_gflops'] * r['img_per_s'] / 1e3, rel_tol=1e-9)
        assert math.isclose(r['mfu'], r['tflops'], rel_tol=1e-9)   # peak 1 TFLOP/s
    assert set(res['ratios']) == {f'ours / {n}' for n in names if n != 'ours'}
    table = format_bench(res)
    assert '| ours |' in table and 'ours / mask_tokens' in table
    with pytest.raises(ValueError, match='unknown contender'): benchmark(SMALL, contenders=('x',), device='cpu')
    with pytest.raises(ValueError, match='at least 1'): benchmark(SMALL, batch_size=0, device='cpu')


def test_hf_skipped_without_transformers(monkeypatch):
    monkeypatch.setattr(bench, 'have_transformers', lambda: False)
    res = bench.benchmark(SMALL, batch_size=2, device='cpu', warmup=0, iters=1, windows=1, contenders=('ours', 'hf'))
    assert [r['name'] for r in res['rows']] == ['ours'] and 'transformers' in res['skipped']['hf']
    assert 'skipped' in format_bench(res)


def test_step_breakdown_cpu():
    b = step_breakdown(MAEConfig.from_preset('fmnist', depth=2, decoder_depth=1),
                       TrainConfig(dataset='fmnist', batch_size=32, limit=256, device='cpu', progress=False), steps=3, warmup=1)
    phases = sum(b[f'{p}_ms'] for p in PHASES)
    assert all(b[f'{p}_ms'] > 0 for p in PHASES)
    assert 0.7 < phases / b['wall_ms'] < 1.2, b
    assert 'device_busy' not in b and '| data |' in format_breakdown(b)
    with pytest.raises(ValueError, match='fewer than warmup'):
        step_breakdown(MAEConfig.from_preset('fmnist', depth=1, decoder_depth=1),
                       TrainConfig(dataset='fmnist', batch_size=32, limit=64, device='cpu'), steps=3)


def test_time_to_train():
    h = time_to_train(1000.0, [1, 4], epochs=2, images=1_800_000)
    assert math.isclose(h[1], 1.0) and math.isclose(h[4], 0.25)
    assert math.isclose(time_to_train(1000.0, 4, epochs=2, images=1_800_000, efficiency=0.8)[4], 0.25 / 0.8)
    with pytest.raises(ValueError, match='positive'): time_to_train(0.0)
    with pytest.raises(ValueError, match='efficiency'): time_to_train(1.0, efficiency=1.5)


# ---- the suite: `mae_nb bench --suite` ----
ROOT = Path(__file__).resolve().parents[1]


def test_suite_plans_hold_the_issue_targets():
    got = {(e.name, f): t for e in CUDA_SUITE for f, t in e.targets if t is not None}
    assert got[('vit-l', 'mfu')] == 0.5 and got[('vit-l', 'ours / hf')] == 1.3 and got[('vit-l', 'ours / mask_tokens')] == 3.0
    assert got[('vit-l-dec1', 'ours / mask_tokens')] == 3.0 and got[('cifar', 'img_per_s')] == 40_000
    assert got[('fmnist-pretrain', 'img_per_s')] == 100_000 and got[('fmnist-finetune', 'img_per_s')] == 30_000
    by_name = {e.name: e for e in CUDA_SUITE}
    assert by_name['vit-l-dec1'].decoder_depth == 1 and by_name['fmnist-finetune'].batch_size == 256 and by_name['cifar'].batch_size == 2048
    for plan in (CUDA_SUITE, CPU_SUITE): assert {e.kind for e in plan} == set(SUITE_KINDS)
    assert suite_plan('cpu') is CPU_SUITE and all(t is None for e in CPU_SUITE for _, t in e.targets)
    with pytest.raises(ValueError, match='kind train: must be one of'): SuiteEntry('x', 'train', 'x', 'fmnist', 8)
    with pytest.raises(ValueError, match='targets '): SuiteEntry('x', 'breakdown', 'x', 'fmnist', 8, targets=(('img_per_s', 1.0),))


def test_suite_through_the_cli(tmp_path, monkeypatch, capsys):
    "Two entries of the CPU plan via `mae_nb bench --suite --only`; the breakdown fails as a GPU out of memory would."
    def oom(*a): raise torch.OutOfMemoryError('CUDA out of memory. Tried to allocate 2.00 GiB')
    monkeypatch.setitem(suite.SUITE_RUNNERS, 'breakdown', oom)
    main(['bench', '--suite', '--device', 'cpu', '--only', 'fmnist-dec1,fmnist-breakdown', '--out', str(tmp_path)])
    out = capsys.readouterr().out
    assert '[1/2] Fashion-MNIST preset, 1-block decoder' in out and '[1/2] fmnist-dec1: ours / mask_tokens ' in out
    assert '[2/2] fmnist-breakdown: skipped: OutOfMemoryError: CUDA out of memory' in out
    assert out.index('[2/2] fmnist-breakdown:') < out.index('| # | entry |') < out.index('wrote ')    # progress, report, files
    files = sorted(tmp_path.iterdir())
    assert [p.suffix for p in files] == ['.json', '.md'] and files[0].stem == files[1].stem == bench.device_slug(device_name('cpu'))
    rep = json.loads(files[0].read_text())
    assert {'device', 'device_type', 'torch', 'date', 'command', 'total_s', 'entries'} <= set(rep)
    assert rep['command'] == f'mae_nb bench --suite --device cpu --only fmnist-dec1,fmnist-breakdown --out {tmp_path}'
    ok, bad = rep['entries']
    assert ok['status'] == 'ok' and ok['checks'][0]['figure'] == 'ours / mask_tokens' and ok['checks'][0]['value'] > 1
    assert bad['status'] == 'skipped' and bad['reason'].startswith('OutOfMemoryError') and bad['checks'][0]['value'] is None
    md = files[1].read_text()
    assert f"Made by `{rep['command']}`" in md and 'skipped: OutOfMemoryError' in md and '| ours / mask_tokens |' in md


def test_suite_skips_hf_without_transformers(tmp_path, monkeypatch):
    monkeypatch.setattr(bench, 'have_transformers', lambda: False)
    plan = [SuiteEntry('s', 'step', 'fmnist: ours, HF', 'fmnist', 4, contenders=('ours', 'hf'), steps=1, warmup=0, windows=1,
                       targets=(('img_per_s', None), ('ours / hf', 1.3)))]
    rep = run_suite(BenchConfig(suite=True, device='cpu', out_dir=str(tmp_path)), plan)
    (speed, hf), = [rep['entries'][0]['checks']]
    assert speed['value'] > 0 and hf['value'] is None and hf['met'] is None
    assert '| ours / hf | hf skipped: transformers is not installed' in next(tmp_path.glob('*.md')).read_text()


def test_suite_refuses_unknown_entries_and_unwritable_folders(tmp_path, capsys):
    with pytest.raises(SystemExit) as e: main(['bench', '--suite', '--device', 'cpu', '--only', 'vit-l', '--out', str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 1 and len(err.splitlines()) == 1 and '--only vit-l: must be names of entries of the cpu suite' in err
    (tmp_path/'file').write_text('x')
    with pytest.raises(SystemExit): main(['bench', '--suite', '--device', 'cpu', '--only', 'cifar-step', '--out', str(tmp_path/'file')])
    assert '--out' in capsys.readouterr().err


def test_suite_gpu_command_line(tmp_path):
    "The command a GPU user runs without the package installed: python3 -c 'from mae_nb.cli import main; main()' bench --suite."
    r = subprocess.run([sys.executable, '-c', 'from mae_nb.cli import main; main()', 'bench', '--suite', '--device', 'cpu',
                        '--only', 'fmnist-breakdown', '--out', str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=120,
                       env={**os.environ, 'PYTHONPATH': '.', 'OMP_NUM_THREADS': '1'})
    assert r.returncode == 0, r.stderr[-2000:]
    assert '[1/1] fmnist-breakdown: step time' in r.stdout and len(list(tmp_path.glob('*.md'))) == 1


def test_hf_is_compiled_layer_by_layer_and_says_how_long(monkeypatch, capsys):
    "With compile, HF's model is compiled per ViTMAELayer as ours per Block (never whole), each contender's warm-up printed as it goes."
    pytest.importorskip('transformers')
    compiled, real = [], torch.nn.Module.compile
    def spy(self, *a, **k): compiled.append(type(self).__name__); return real(self, *a, **{**k, 'backend': 'eager'})   # eager: fast on a CPU
    monkeypatch.setattr(torch.nn.Module, 'compile', spy)
    res = benchmark(SMALL, batch_size=2, device='cpu', compile=True, warmup=1, iters=1, windows=1, contenders=('ours', 'hf'))
    layers = SMALL.depth + SMALL.decoder_depth
    assert sorted(compiled) == ['Block'] * layers + ['ViTMAELayer'] * layers and [r['name'] for r in res['rows']] == ['ours', 'hf']
    out = capsys.readouterr().out
    for name in ('ours', 'hf'):
        assert f'  {name}: compiling block by block, then warming up' in out and f'  {name}: ready in ' in out
    assert out.index('  hf: compiling') < out.index('  hf: ready in ') and '(compilation included)' in out


def test_one_contenders_failure_keeps_the_others(monkeypatch):
    "A contender whose step fails (here: as a compiler error would) is skipped with its reason; the others' rows and ratios stay."
    real = bench.bench_step
    def step_of(model, *a, **k):
        step = real(model, *a, **k)
        if not getattr(getattr(model, 'cfg', None), 'encoder_mask_tokens', False): return step
        def fails(imgs, noise): raise RuntimeError('inductor: compilation of the mask-token encoder failed\nlong trace ...')
        return fails
    monkeypatch.setattr(bench, 'bench_step', step_of)
    res = benchmark(SMALL, batch_size=2, device='cpu', warmup=0, iters=1, windows=1, contenders=('ours', 'mask_tokens'))
    assert [r['name'] for r in res['rows']] == ['ours'] and res['ratios'] == {}
    assert res['skipped'] == {'mask_tokens': 'RuntimeError: inductor: compilation of the mask-token encoder failed'}
    assert 'mask_tokens: skipped, RuntimeError' in format_bench(res)


def test_find_batch_is_sized_for_every_contender(monkeypatch, capsys):
    "--find-batch sizes the batch for all the contenders it will time, resident together (find_batch_size itself needs a GPU)."
    seen = {}
    with pytest.raises(ValueError, match='needs a CUDA device'): bench.find_batch_size('fmnist', device='cpu', contenders=CONTENDERS)
    def fake(cfg, device, amp, fused, contenders):
        seen['contenders'] = contenders
        return dict(batch_size=4, peak_gib=1.0, capacity_gib=2.0, tried={2: 0.5, 4: 1.0})
    monkeypatch.setattr(bench, 'find_batch_size', fake)
    res = bench.run_bench(BenchConfig(preset='fmnist', device='cpu', find_batch=True, contenders='ours,mask_tokens', warmup=0, iters=1, windows=1))
    assert seen['contenders'] == ('ours', 'mask_tokens') and res['batch_size'] == 4
    assert 'for ours, mask_tokens together: 4' in capsys.readouterr().out


def test_suite_time_limit_through_the_cli(tmp_path, monkeypatch, capsys):
    "`bench --suite --time-limit`: entries with faked durations; the one running at the limit is stopped, the rest named as not reached."
    takes = iter([0.1, 30.0] + [0.1] * 20)
    def faked(e, bc, out):
        import time
        time.sleep(next(takes))
        return dict(step=1, epochs=1, first_step_s=0.0, readings=1, img_per_s=1.0, final_loss=1.0), {f: 1.0 for f in suite.FIGURES[e.kind]}
    for kind in SUITE_KINDS: monkeypatch.setitem(suite.SUITE_RUNNERS, kind, faked)
    monkeypatch.setattr(suite, "_details", lambda rec: 'details')                 # (the faked results have no details to show)
    main(['bench', '--suite', '--device', 'cpu', '--time-limit', '2s', '--out', str(tmp_path)])
    out = capsys.readouterr().out
    rep = json.loads(next(tmp_path.glob('*.json')).read_text())
    names = [e.name for e in CPU_SUITE]
    assert [e['name'] for e in rep['entries']] == names[:2] and rep['entries'][1]['reason'] == 'stopped by the time limit'
    assert rep['not_reached'] == names[2:] and f"not reached {', '.join(names[2:])}" in out
    assert rep['command'] == f'mae_nb bench --suite --device cpu --out {tmp_path} --time-limit 2s'


def test_scaling_through_the_cli(tmp_path, monkeypatch, capsys):
    "`bench --scaling FOLDER`: the encoders' times and FLOPs with and without mask tokens, into FOLDER/DEVICE.json (small presets here)."
    timed, threads = bench.time_encoders, torch.get_num_threads()
    monkeypatch.setattr(bench, 'time_encoders', lambda **kw: timed(presets=('fmnist',), repeats=1))
    main(['bench', '--scaling', str(tmp_path/'scaling')])
    rep = json.loads((tmp_path/'scaling'/f"{bench.device_slug(device_name('cpu'))}.json").read_text())
    row = rep['presets']['fmnist']
    assert rep['command'] == f"mae_nb bench --scaling {tmp_path/'scaling'}" and rep['threads'] == 1 and torch.get_num_threads() == threads   # (restored)
    assert row['flop_ratio'] > 3 and row['time_ratio'] > 0 and set(row['ms_per_img']) == {'visible', 'mask_tokens'}
    assert 'fmnist: ' in capsys.readouterr().out
