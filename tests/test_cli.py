"The `mae_nb` console command, run as a user runs it."
import subprocess, sys
from pathlib import Path

MAE_NB = Path(sys.executable).parent/'mae_nb'


def run(*args):
    return subprocess.run([MAE_NB, *args], capture_output=True, text=True)


def test_help_lists_commands():
    r = run('--help')
    assert r.returncode == 0 and 'demo' in r.stdout and 'flops' in r.stdout


def test_flops_table():
    r = run('flops', 'fmnist', 'large')
    assert r.returncode == 0, r.stderr
    rows = [l for l in r.stdout.splitlines() if l.startswith('| large')]
    assert len(rows) == 1 and '303.1' in rows[0]      # ViT-L encoder: 303.1 M trainable parameters


def test_unknown_preset_lists_known_ones():
    r = run('flops', 'gigantic')
    assert r.returncode == 2 and 'choose one of tiny, small, base, large, huge, cifar, fmnist' in r.stderr


def test_demo_writes_figure(tmp_path):
    r = run('demo', '--steps', '20', '--out', str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert (tmp_path/'overfit.png').stat().st_size > 10_000
    assert 'not pretraining' in r.stdout
