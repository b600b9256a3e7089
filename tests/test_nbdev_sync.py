"The notebooks are the source: exporting and cleaning them must not change the committed package or notebooks."
import shutil, subprocess, sys
from pathlib import Path
from conftest import ROOT

BIN = Path(sys.executable).parent


def _copy(tmp_path):
    for f in ('settings.ini', 'setup.py', 'pyproject.toml', 'README.md'): shutil.copy(ROOT/f, tmp_path/f)
    shutil.copytree(ROOT/'nbs', tmp_path/'nbs', ignore=shutil.ignore_patterns('.ipynb_checkpoints', '_docs', '.quarto'))
    shutil.copytree(ROOT/'mae_nb', tmp_path/'mae_nb', ignore=shutil.ignore_patterns('__pycache__'))
    return tmp_path


def _files(folder, pattern):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.glob(pattern))}


def test_export_leaves_package_unchanged(tmp_path):
    work = _copy(tmp_path)
    shutil.rmtree(work/'mae_nb')
    subprocess.run([BIN/'nbdev_export'], cwd=work, check=True)
    got, want = _files(work/'mae_nb', '*.py'), _files(ROOT/'mae_nb', '*.py')
    assert sorted(got) == sorted(want), f"nbdev_export makes {sorted(got)}, the repository has {sorted(want)}"
    stale = [f for f in want if got[f] != want[f]]
    assert not stale, f"mae_nb/{stale} are out of date with the notebooks: run nbdev_export"


def test_clean_leaves_notebooks_unchanged(tmp_path):
    work = _copy(tmp_path)
    subprocess.run([BIN/'nbdev_clean'], cwd=work, check=True)
    got, want = _files(work/'nbs', '*.ipynb'), _files(ROOT/'nbs', '*.ipynb')
    dirty = [f for f in want if got[f] != want[f]]
    assert not dirty, f"nbs/{dirty} carry execution noise: run nbdev_clean"
