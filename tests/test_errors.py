"""Every mistake a user can make ends in one line on stderr, a non-zero exit status, no traceback, and no lost or
half-written file. The cases are a table: (command, what the line must say, exit status, files that must be intact).
Most run `mae_nb.cli.main` in this process (one torch import for all); a few run the installed console script."""
import contextlib, hashlib, io, json, os, signal, subprocess, sys, time
from pathlib import Path
import pytest
import torch
from mae_nb.cli import main

MAE_NB = Path(sys.executable).parent/'mae_nb'
QUICK = ['--limit', '128', '--batch-size', '64', '--no-progress', '--log-every', '1']


from conftest import call   # (exit status, stdout, stderr) of `mae_nb ARGV`, run in this process


def digest(path: Path) -> str: return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope='module')
def run(tmp_path_factory) -> Path:
    "A finished one-epoch pretraining run (seed 0, batch 64, 128 images), a classifier checkpoint and a file that is not a folder."
    root = tmp_path_factory.mktemp('errors')
    code, _, err = call(['pretrain', *QUICK, '--epochs', '1', '--out', root/'run'])
    assert code == 0, err
    (root/'a_file').write_text('not a folder')
    ck = torch.load(root/'run'/'checkpoint.pt', weights_only=True)                 # a fine-tuned classifier's kind of weights
    enc = {k: v for k, v in ck['model'].items() if k.startswith(('cls_token', 'pos_embed', 'patch_embed', 'blocks'))}
    torch.save(dict(model={**enc, 'head.weight': torch.zeros(10, 128), 'head.bias': torch.zeros(10)}, config=ck['config']), root/'classifier.pt')
    return root


# (name, argv with {run} and {root} placeholders, what stderr's one line says, exit status, files that must be intact)
CASES = [
    ('limit 0', ['pretrain', '--limit', '0', '--out', '{root}/x'], '--limit 0: must be a whole number of at least 1', 1, []),
    ('negative limit', ['pretrain', '--limit', '-5', '--out', '{root}/x'], '--limit -5: must be', 1, []),
    ('negative weight decay', ['pretrain', '--weight-decay', '-0.1', '--out', '{root}/x'], '--weight-decay -0.1: must be at least 0', 1, []),
    ('negative warm-up', ['pretrain', '--warmup-epochs', '-1', '--out', '{root}/x'], '--warmup-epochs -1.0: must be at least 0', 1, []),
    ('zero batch', ['pretrain', '--batch-size', '0', '--out', '{root}/x'], '--batch-size 0', 1, []),
    ('no visible patch', ['pretrain', '--mask-ratio', '0.99', '--out', '{root}/x'], 'leave none of the 49 patches visible', 1, []),
    ('nothing removed', ['pretrain', '--mask-ratio', '0', '--out', '{root}/x'], '--mask-ratio 0.0: must be above 0 to pretrain', 1, []),
    ('mask ratio 1.5', ['pretrain', '--mask-ratio', '1.5'], 'mask_ratio must be in [0, 1)', 2, []),
    ('unknown dataset', ['pretrain', '--dataset', 'imagenet21k'], 'choose one of fmnist, cifar10, imagefolder', 2, []),
    ('device gpu0', ['pretrain', '--device', 'gpu0', '--out', '{root}/x'], '--device gpu0: must be auto, cpu, cuda or cuda:N', 1, []),
    ('device cuda:x', ['pretrain', '--device', 'cuda:x', '--out', '{root}/x'], '--device cuda:x', 1, []),
    ('out under a file', ['pretrain', *QUICK, '--out', '{root}/a_file/run'], 'cannot write there', 1, ['a_file']),
    ('run exists', ['pretrain', *QUICK, '--out', '{root}/run'], 'pass --resume', 1, ['run/checkpoint.pt', 'run/metrics.jsonl']),
    ('resume, other seed', ['pretrain', *QUICK, '--seed', '1', '--resume', '--out', '{root}/run'], '--seed 0 → 1', 1, ['run/checkpoint.pt']),
    ('resume, other batch', ['pretrain', *QUICK[:2], '--batch-size', '32', '--no-progress', '--resume', '--out', '{root}/run'],
     '--batch-size 64 → 32', 1, ['run/checkpoint.pt']),
    ('resume, other limit', ['pretrain', '--limit', '256', '--batch-size', '64', '--resume', '--out', '{root}/run'], '--limit 128 → 256', 1, ['run/checkpoint.pt']),
    ('resume, other mask ratio', ['pretrain', *QUICK, '--mask-ratio', '0.5', '--resume', '--out', '{root}/run'], '--mask-ratio 0.75 → 0.5', 1, ['run/checkpoint.pt']),
    ('resume, norm-pix', ['pretrain', *QUICK, '--norm-pix-loss', '--resume', '--out', '{root}/run'], '--norm-pix-loss False → True', 1, ['run/checkpoint.pt']),
    ('probe over the checkpoint', ['probe', '{root}/run/checkpoint.pt', '--out', '{root}/run/checkpoint.pt'], 'is not a result of this kind', 1, ['run/checkpoint.pt']),
    ('probe into a file', ['probe', '{root}/run/checkpoint.pt', '--out', '{root}/a_file/probe.json'], 'cannot write there', 1, ['a_file']),
    ('probe img-size 0', ['probe', '{root}/run/checkpoint.pt', '--img-size', '0'], "--img-size 0: must be a whole number of at least 1 (or left out: the checkpoint's)",
     1, []),
    ('probe limit 0', ['probe', '{root}/run/checkpoint.pt', '--limit', '0'], '--limit 0', 1, []),
    ('knn eval-limit 0', ['knn', '{root}/run/checkpoint.pt', '--eval-limit', '0'], '--eval-limit 0', 1, []),
    ('missing checkpoint', ['probe', '{root}/nothing.pt'], 'does not exist', 1, []),
    ('not a checkpoint', ['probe', '{root}/a_file'], 'is not a readable checkpoint (UnpicklingError: Weights only load failed.)', 1, ['a_file']),
    ('convert from a missing hf folder', ['convert', '{root}/no_such_folder', '{root}/x.pt', '--from', 'hf'], 'does not exist', 1, []),
    ('probe a classifier', ['probe', '{root}/classifier.pt'], 'holds another kind of model (with head', 1, ['classifier.pt']),
    ('convert a classifier', ['convert', '{root}/classifier.pt', '{root}/c.pt'], 'holds another kind of model (with head', 1, ['classifier.pt']),
    ('convert onto its source', ['convert', '{root}/run/checkpoint.pt', '{root}/run/checkpoint.pt'], 'exists: convert writes a new file', 1,
     ['run/checkpoint.pt']),
    ('convert into a run folder', ['convert', '{root}/run/checkpoint.pt', '{root}/run', '--to', 'hf'], 'exists: convert writes a new file', 1,
     ['run/checkpoint.pt', 'run/metrics.jsonl']),
    ('convert into a file', ['convert', '{root}/run/checkpoint.pt', '{root}/a_file/x.pt'], 'cannot write there', 1, ['a_file', 'run/checkpoint.pt']),
    ('layer decay 2', ['finetune', '--layer-decay', '2', '--out', '{root}/x'], '--layer-decay 2.0: must be in (0, 1]', 1, []),
    ('smoothing 1', ['finetune', '--smoothing', '1', '--out', '{root}/x'], '--smoothing 1.0: must be in [0, 1)', 1, []),
    ('finetune over a pretraining run', ['finetune', '--checkpoint', '{root}/run/checkpoint.pt', *QUICK, '--out', '{root}/run'], 'pass --resume', 1,
     ['run/checkpoint.pt']),
    ('bench contenders', ['bench', '--contenders', 'ours,theirs'], '--contenders ours,theirs', 1, []),
    ('bench json over the checkpoint', ['bench', '--preset', 'fmnist', '--batch-size', '2', '--device', 'cpu', '--json', '{root}/run/checkpoint.pt'],
     'is not a result of this kind', 1, ['run/checkpoint.pt']),
    ('demo epochs 0', ['demo', '--epochs', '0', '--out', '{root}/x'], '--epochs 0', 1, []),
    ('unknown variant', ['ablate', 'mask_0.3'], "unknown variant 'mask_0.3'", 2, []),
    ('ablate negative holdout', ['ablate', 'all', '--holdout', '-3', '--dry-run'], '--holdout -3: must be in [0, 59', 1, []),
    ('ablate epochs 0', ['ablate', 'default', '--epochs', '0', '--dry-run'], '--epochs 0: must be at least 1', 1, []),
    ('ablate negative seed', ['ablate', 'default', '--seeds', '0', '-1', '--dry-run'], '--seeds -1: must be at least 0', 1, []),
]


@pytest.mark.parametrize('name, argv, says, status, intact', CASES, ids=[c[0] for c in CASES])
def test_mistake_is_one_line(run, name, argv, says, status, intact):
    before = {f: digest(run/f) for f in intact}
    code, _, err = call([a.format(root=run) for a in argv])
    lines = err.strip().splitlines()
    assert code == status and len(lines) == 1 and says in lines[0], (code, err)
    assert 'Traceback' not in err
    for f, d in before.items(): assert digest(run/f) == d, f'{f} changed'
    assert not list(run.rglob('*.tmp')), 'a temporary file was left behind'


def test_cuda_without_cuda(run):
    if torch.cuda.is_available(): pytest.skip('CUDA is available here')
    code, _, err = call(['pretrain', *QUICK, '--device', 'cuda', '--out', run/'x'])
    assert code == 1 and 'CUDA is not available here' in err and len(err.strip().splitlines()) == 1, err


def test_resume_may_extend_and_change_how_it_runs(tmp_path):
    "What may change on resume (epochs, logging, workers, device) does: the run goes on from its checkpoint."
    assert call(['pretrain', *QUICK, '--epochs', '1', '--out', tmp_path])[0] == 0
    code, out, err = call(['pretrain', *QUICK[:-2], '--log-every', '2', '--epochs', '2', '--device', 'cpu', '--resume', '--out', tmp_path])
    assert code == 0, err
    assert json.loads((tmp_path/'summary.json').read_text())['step'] == 4


def console(*args, **kw):
    return subprocess.run([MAE_NB, *map(str, args)], capture_output=True, text=True, env={**os.environ, 'MPLBACKEND': 'Agg'}, **kw)


def test_disk_full_keeps_the_last_checkpoint(tmp_path):
    "A checkpoint that cannot be written (a full disk: /dev/full) stops the run in one line; the previous checkpoint stays intact."
    assert console('pretrain', *QUICK, '--epochs', '1', '--out', tmp_path).returncode == 0
    good = digest(tmp_path/'checkpoint.pt')
    (tmp_path/'checkpoint.pt.tmp').symlink_to('/dev/full')             # every write of the next checkpoint fails: ENOSPC
    r = console('pretrain', *QUICK, '--epochs', '2', '--resume', '--out', tmp_path)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 1 and len(lines) == 1 and 'No space left on device' in lines[0] and 'previous checkpoint is kept' in lines[0], r.stderr
    assert digest(tmp_path/'checkpoint.pt') == good and not (tmp_path/'checkpoint.pt.tmp').exists()


def test_ctrl_c_keeps_the_last_checkpoint(tmp_path):
    """A second run into a folder that a run is using is refused. Ctrl-C (SIGINT) mid-run: status 130, one line that says how to go
    on, the last checkpoint intact, no temporary file; --resume goes on."""
    argv = ['pretrain', '--limit', '128', '--batch-size', '64', '--no-progress', '--log-every', '1', '--out', tmp_path]
    p = subprocess.Popen([MAE_NB, *map(str, argv), '--epochs', '1000'], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (tmp_path/'checkpoint.pt').exists() and time.time() < deadline and p.poll() is None: time.sleep(0.2)
    code, _, err = call([*argv, '--epochs', '1000', '--resume'])           # a second run into the same folder meanwhile: refused
    assert code == 1 and len(err.strip().splitlines()) == 1 and 'is in use by another run right now' in err, err
    time.sleep(1.0)                                                       # well inside a later epoch or its checkpoint
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=60)
    lines = err.strip().splitlines()
    assert p.returncode == 130 and len(lines) == 1 and 'interrupted; the last checkpoint is kept' in lines[0] and '--resume' in lines[0], err
    assert not list(tmp_path.glob('*.tmp'))
    epoch = torch.load(tmp_path/'checkpoint.pt', weights_only=True)['epoch']
    r = console(*argv, '--epochs', epoch + 1, '--resume')
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path/'summary.json').read_text())['step'] == 2 * (epoch + 1)


def test_debug_shows_the_traceback(tmp_path):
    r = console('--debug', 'pretrain', '--limit', '0', '--out', tmp_path)
    assert r.returncode == 1 and 'Traceback' in r.stderr and 'ConfigError: limit 0' in r.stderr   # the exception as Python raised it
    r = subprocess.run([MAE_NB, 'pretrain', '--limit', '0', '--out', tmp_path], capture_output=True, text=True,
                       env={**os.environ, 'MAE_NB_DEBUG': '1'})
    assert r.returncode == 1 and 'Traceback' in r.stderr


@pytest.mark.skipif(os.name != 'posix' or os.geteuid() == 0, reason='permissions do not bind root: the other cases cover unwritable places')
def test_read_only_folder(tmp_path, run):
    ro = tmp_path/'ro'
    ro.mkdir(); (ro/'checkpoint.pt').write_bytes((run/'run'/'checkpoint.pt').read_bytes()); ro.chmod(0o555)
    try:
        code, _, err = call(['probe', ro/'checkpoint.pt', '--limit', '64', '--eval-limit', '64', '--epochs', '1'])
        assert code == 1 and 'cannot write there' in err and len(err.strip().splitlines()) == 1, err
        code, _, err = call(['pretrain', *QUICK, '--out', ro/'run'])
        assert code == 1 and 'cannot write there' in err, err
    finally: ro.chmod(0o755)
