"Training across processes: exact resume after SIGKILL (pretraining and fine-tuning), and a 2-process DDP run equal to one process."
import json, os, signal, subprocess, sys, time
from pathlib import Path
import pytest
import torch

BIN = Path(sys.executable).parent
ENV = {**os.environ, 'OMP_NUM_THREADS': '1', 'MPLBACKEND': 'Agg'}
SMALL = ['pretrain', '--preset', 'fmnist', '--dataset', 'fmnist', '--limit', '384', '--batch-size', '32', '--blr', '1e-3',
         '--log-every', '1', '--no-progress', '--device', 'cpu']


FINETUNE = ['finetune', '--preset', 'fmnist', '--dataset', 'fmnist', '--limit', '384', '--batch-size', '32', '--eval-limit', '64',
            '--log-every', '1', '--no-progress', '--device', 'cpu']      # the full recipe: RandAugment, MixUp/CutMix, drop path


def losses(run):
    "(step, loss) of every training record, (step, test accuracy) of every evaluation record."
    return [(r['step'], r['loss'] if 'loss' in r else r['test_acc']) for r in map(json.loads, (run/'metrics.jsonl').read_text().splitlines())]


@pytest.mark.parametrize('command', [SMALL, FINETUNE], ids=['pretrain', 'finetune'])
def test_resume_after_sigkill_is_exact(tmp_path, command):
    args = command + ['--epochs', '4', '--ckpt-every', '5']                    # 12 steps per epoch, 48 in all
    subprocess.run([BIN/'mae_nb', *args, '--out', tmp_path/'ref'], check=True, env=ENV, capture_output=True)
    ref = losses(tmp_path/'ref')
    assert sorted(s for s, _ in ref) == sorted(list(range(1, 49)) + ([12, 24, 36, 48] if command is FINETUNE else []))  # + evaluations

    run = tmp_path/'killed'
    for kill_at in (8, 27):                                                      # two kills, mid-epoch, between checkpoints
        p = subprocess.Popen([BIN/'mae_nb', *args, '--out', run, '--resume'], env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 120
        while time.time() < deadline and p.poll() is None:
            m = run/'metrics.jsonl'
            if m.exists() and len(m.read_text().splitlines()) >= kill_at: break
            time.sleep(0.01)
        assert p.poll() is None, 'the run ended before it could be killed'
        p.send_signal(signal.SIGKILL); p.wait()
        ck = torch.load(run/'checkpoint.pt', weights_only=True)
        assert 0 < ck['step'] < 48
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
    assert s1['effective_batch'] == s2['effective_batch'] == 64 and s1['step'] == s2['step'] == 12
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
