"Fast CPU checks of mae_nb.bench: peaks, FLOP counts, step timing, the three-way benchmark, the step breakdown, time to train."
import math
from dataclasses import replace
import pytest
import torch
from mae_nb.bench import (CONTENDERS, PHASES, bench_step, benchmark, format_bench, format_breakdown, peak_tflops, step_breakdown,
                          time_steps, time_to_train, train_flops)
from mae_nb.model import MAEConfig
from mae_nb.train import TrainConfig
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
    import mae_nb.bench as bench
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
