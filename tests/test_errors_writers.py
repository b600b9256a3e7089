"""Nothing half-written, nothing left running. Every writer is atomic — converted weights (a timm file, an HF folder), pictures,
logs — so a full disk mid-way leaves neither the file nor its temporary sibling, and the retry works. A damaged HF weights file is
one line. SIGTERM (a cluster's preemption, torchrun stopping its ranks) ends a run as Ctrl-C does — one line, status 143, the
checkpoint whole, no `.tmp` — in every process; `ablate --jobs` passes a signal on to its runs and waits for them."""
import contextlib, errno, io, json, os, signal, subprocess, sys, time
from dataclasses import asdict
from pathlib import Path
import pytest
import torch
from conftest import ROOT
from mae_nb.checkpoint import load_checkpoint, save_checkpoint
from mae_nb.cli import main
from mae_nb.model import MAEConfig, MaskedAutoencoder

CLI = [sys.executable, '-c', 'from mae_nb.cli import main; main()']      # this tree's package, as the tests import it
ENV = {**os.environ, 'PYTHONPATH': str(ROOT), 'MPLBACKEND': 'Agg', 'OMP_NUM_THREADS': '1'}
TINY = MAEConfig.from_preset('fmnist', embed_dim=32, depth=2, num_heads=2, decoder_embed_dim=16, decoder_depth=1, decoder_num_heads=2)


from conftest import call   # (exit status, stdout, stderr) of `mae_nb ARGV`, run in this process


def one_line(code, err, status, says):
    lines = err.strip().splitlines()
    assert code == status and len(lines) == 1 and says in lines[0] and 'Traceback' not in err, (code, err)


@pytest.fixture(scope='module')
def root(tmp_path_factory) -> Path:
    "A tiny MAE checkpoint (model.pt) and, with transformers, its HF folder (hf/)."
    root = tmp_path_factory.mktemp('writers')
    torch.manual_seed(0)
    save_checkpoint(root/'model.pt', dict(model=MaskedAutoencoder(TINY).state_dict(), config=asdict(TINY)))
    return root


@pytest.fixture(scope='module')
def hf(root) -> Path:
    pytest.importorskip('transformers')
    code, _, err = call(['convert', root/'model.pt', root/'hf', '--to', 'hf'])
    assert code == 0, err
    return root/'hf'


def _damage(how):
    def damage(folder: Path):
        w = folder/'model.safetensors'
        data = w.read_bytes()
        w.write_bytes({'truncated': data[:len(data) // 2], 'empty': b'', 'garbage': os.urandom(64), 'header only': data[:8]}[how])
    return damage


# (name, damage done to a copy of the HF folder, what the line says)
DAMAGED = [(how, _damage(how), 'model.safetensors is truncated or damaged') for how in ('truncated', 'empty', 'garbage', 'header only')]


@pytest.mark.parametrize('name, damage, says', DAMAGED, ids=[c[0] for c in DAMAGED])
def test_damaged_hf_weights_are_one_line(hf, tmp_path, name, damage, says):
    bad = tmp_path/'bad'
    bad.mkdir()
    for f in hf.iterdir(): (bad/f.name).write_bytes(f.read_bytes())
    damage(bad)
    code, _, err = call(['convert', bad, tmp_path/'x.pt', '--from', 'hf'])
    one_line(code, err, 1, says)
    assert 'write or download the folder again' in err and not (tmp_path/'x.pt').exists()


def _full_file(dst: Path, monkeypatch):
    (dst.parent/(dst.name + '.tmp')).symlink_to('/dev/full')             # every write of DST's temporary file: ENOSPC


def _full_after_config(dst: Path, monkeypatch):
    "The HF folder's weights hit a full disk after config.json is written (and half the weights)."
    import transformers.modeling_utils as mu
    def save_file(tensors, filename, **kw):
        Path(filename).write_bytes(b'\0' * 100)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), filename)
    monkeypatch.setattr(mu, 'safe_save_file', save_file)


# (name, extra convert arguments, how the disk fills up, how to check the retry's output)
FULL = [
    ('timm file', ['--to', 'timm'], _full_file, lambda p: torch.load(p, weights_only=True)),
    ('mae checkpoint', [], _full_file, lambda p: load_checkpoint(p)),
    ('hf folder', ['--to', 'hf'], _full_after_config, lambda p: __import__('mae_nb.weights').weights.load_hf(str(p))),
]


@pytest.mark.parametrize('name, args, fill, check', FULL, ids=[c[0] for c in FULL])
def test_convert_on_a_full_disk_leaves_nothing_and_the_retry_works(root, tmp_path, monkeypatch, name, args, fill, check):
    if 'hf' in args: pytest.importorskip('transformers')
    dst = tmp_path/'out'/'dst'
    dst.parent.mkdir()
    with monkeypatch.context() as m:
        fill(dst, m)
        code, _, err = call(['convert', root/'model.pt', dst, *args])
    one_line(code, err, 1, 'No space left on device')
    assert f'could not write {dst}' in err
    assert list(dst.parent.iterdir()) == [], 'a half-written file or folder was left behind'
    code, _, err = call(['convert', root/'model.pt', dst, *args])                  # the disk has room again: the same command works
    assert code == 0, err
    check(dst)
    assert not list(dst.parent.glob('*.tmp'))


def test_pictures_and_logs_are_written_whole(tmp_path):
    "A picture, and the metrics log rewritten on resume, on a full disk: one-line error, the old file intact, nothing left behind."
    import matplotlib; matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from mae_nb.core import RunError, save_figure
    from mae_nb.checkpoint import MetricsLog
    (tmp_path/'loss.png.tmp').symlink_to('/dev/full')
    fig, ax = plt.subplots(); ax.plot([1, 2])
    with pytest.raises(RunError, match='No space left on device'): save_figure(fig, tmp_path/'loss.png')
    assert list(tmp_path.iterdir()) == [] and not plt.get_fignums()               # nothing written, the figure closed
    fig, ax = plt.subplots(); ax.plot([1, 2])
    assert save_figure(fig, tmp_path/'loss.png', dpi=50).read_bytes()[:4] == b'\x89PNG'
    log = tmp_path/'metrics.jsonl'
    log.write_text(''.join(json.dumps(dict(step=s, loss=1.0)) + '\n' for s in (1, 2, 3)))
    before = log.read_text()
    (tmp_path/'metrics.jsonl.tmp').symlink_to('/dev/full')
    with pytest.raises(RunError, match='No space left on device'): MetricsLog(log, keep_until=2)
    assert log.read_text() == before and not (tmp_path/'metrics.jsonl.tmp').exists()
    MetricsLog(log, keep_until=2)
    assert [json.loads(l)['step'] for l in log.read_text().splitlines()] == [1, 2]


def test_sigterm_mid_run_is_ctrl_c(tmp_path):
    """SIGTERM while a run checkpoints at every step: status 143, the one line that says how to go on, the checkpoint whole, no
    temporary file; --resume goes on from it."""
    argv = ['pretrain', '--limit', '128', '--batch-size', '64', '--no-progress', '--log-every', '1', '--ckpt-every', '1', '--out', tmp_path]
    p = subprocess.Popen([*CLI, *map(str, argv), '--epochs', '1000'], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=ENV)
    deadline = time.time() + 120
    while not (tmp_path/'checkpoint.pt').exists() and time.time() < deadline and p.poll() is None: time.sleep(0.1)
    time.sleep(0.5)
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=60)
    lines = err.strip().splitlines()
    assert p.returncode == 143 and len(lines) == 1, (p.returncode, err)
    assert 'mae_nb pretrain: interrupted by SIGTERM; the last checkpoint is kept' in lines[0] and '--resume' in lines[0], err
    assert not list(tmp_path.glob('*.tmp'))
    step = load_checkpoint(tmp_path/'checkpoint.pt')['step']
    code, _, err = call([*argv, '--epochs', step // 2 + 1, '--resume'])
    assert code == 0, err
    assert json.loads((tmp_path/'summary.json').read_text())['step'] == 2 * (step // 2 + 1)


def test_sigterm_reaches_every_ddp_rank(tmp_path):
    """torchrun, stopped with SIGTERM (as a cluster stops it), passes SIGTERM to its ranks: each says how to go on (torchrun's own
    report follows, not ours), and the checkpoint that rank 0 writes at every step is whole, with no temporary file."""
    argv = ['pretrain', '--limit', '128', '--batch-size', '32', '--no-progress', '--log-every', '1', '--ckpt-every', '1', '--epochs', '1000',
            '--out', tmp_path]
    p = subprocess.Popen([Path(sys.executable).parent/'torchrun', '--standalone', '--nproc_per_node', '2', '--no-python', *CLI, *map(str, argv)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=ENV)
    deadline = time.time() + 180
    while not (tmp_path/'checkpoint.pt').exists() and time.time() < deadline and p.poll() is None: time.sleep(0.1)
    assert p.poll() is None, p.communicate()[1][-2000:]
    time.sleep(0.5)
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=120)
    assert err.count('mae_nb pretrain: interrupted by SIGTERM; the last checkpoint is kept') == 2, err[-3000:]
    assert not list(tmp_path.glob('*.tmp')) and load_checkpoint(tmp_path/'checkpoint.pt')['step'] >= 1


def _alive(pid: int) -> bool:
    try: return Path(f'/proc/{pid}/stat').read_text().split(')')[-1].split()[0] not in 'ZX'   # a zombie has ended
    except FileNotFoundError: return False


@pytest.mark.skipif(not Path('/proc').is_dir(), reason='reads child processes from /proc')
@pytest.mark.parametrize('sig, status, says', [(signal.SIGINT, 130, 'interrupted;'), (signal.SIGTERM, 143, 'interrupted by SIGTERM;')],
                         ids=['SIGINT', 'SIGTERM'])
def test_ablate_jobs_passes_the_signal_on(tmp_path, sig, status, says):
    """`ablate --jobs 2`, a signal to the parent once both runs are pretraining: the parent passes it on, waits for both, says
    how to go on, and ends with the signal's status; no run goes on alone, and no result appears afterwards."""
    p = subprocess.Popen([*CLI, 'ablate', 'default', 'mask_0.5', '--jobs', '2', '--device', 'cpu', '--out', tmp_path/'out',
                          '--work', tmp_path/'work'], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    kids, deadline = set(), time.time() + 120
    try:
        while time.time() < deadline and p.poll() is None:    # the children now (a short one may come first: `ldconfig -p`, from ctypes at import)
            kids = {int(c) for t in Path(f'/proc/{p.pid}/task').iterdir() for c in (t/'children').read_text().split()}
            if len(kids) == 2 and len(list((tmp_path/'work').glob('*/pretrain'))) == 2: break     # both runs are pretraining
            time.sleep(0.2)
        assert p.poll() is None and len(kids) == 2, 'the runs did not start'
        p.send_signal(sig)
        try: _, err = p.communicate(timeout=90)
        except subprocess.TimeoutExpired:                         # say where it hangs: the parent's words and each run's last lines
            p.kill(); _, err = p.communicate()
            logs = {f.name: f.read_text().strip().splitlines()[-3:] for f in (tmp_path/'work').glob('*.log')}
            raise AssertionError(f'the study did not end within 90 s of the signal; alive: {[k for k in kids if _alive(k)]}; '
                                 f'its stderr: {err!r}; the runs\' logs: {logs}') from None
        lines = err.strip().splitlines()
        assert p.returncode == status and len(lines) == 1 and f'mae_nb ablate: {says} finished runs keep their JSON files' in lines[0], err
        assert not [k for k in kids if _alive(k)], 'a run outlived the study'
        time.sleep(1)
        assert not list((tmp_path/'out').glob('*.json')) and not list((tmp_path/'work').rglob('*.tmp'))
    finally:
        for k in kids:
            with contextlib.suppress(ProcessLookupError): os.kill(k, signal.SIGKILL)
        if p.poll() is None: p.kill()
