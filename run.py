#!/usr/bin/env python3
"""Project commands that work on a fresh clone with nothing but python3.

    python3 run.py demo     # the main job: `mae_nb demo`
    python3 run.py test     # every test: nbdev_test over all notebooks, then pytest tests/
    python3 run.py readme   # render nbs/index.ipynb into README.md (+ README_files/)

Each creates the virtual environment .venv/ on first use and installs the package with its dev
extras; it reinstalls when the contents of settings.ini, setup.py or pyproject.toml change.
"""
from __future__ import annotations
import hashlib, os, subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT/'.venv'
BIN = VENV/('Scripts' if os.name == 'nt' else 'bin')
README_NB, README, README_FILES = ROOT/'nbs'/'index.ipynb', ROOT/'README.md', 'README_files'


def sh(*cmd, **kw):
    print('+', ' '.join(map(str, cmd)), flush=True)
    r = subprocess.run([str(c) for c in cmd], cwd=ROOT, **kw)
    if r.returncode: sys.exit(r.returncode)


def ensure_venv():
    "Create .venv and install the project into it, unless that is already done for the current settings."
    py, stamp = BIN/'python', VENV/'.installed'
    if not py.exists(): sh(sys.executable, '-m', 'venv', VENV)
    digest = hashlib.sha256(b''.join((ROOT/f).read_bytes() for f in ('settings.ini', 'setup.py', 'pyproject.toml'))).hexdigest()
    if not stamp.exists() or stamp.read_text() != digest:
        sh(py, '-m', 'pip', 'install', '--disable-pip-version-check', '-e', f'{ROOT}[dev]')
        stamp.write_text(digest)


def venv_env() -> dict:
    return {**os.environ, 'PATH': f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", 'VIRTUAL_ENV': str(VENV),
            'MPLBACKEND': 'Agg'}


def render_readme() -> tuple[str, dict[str, bytes]]:
    "README.md's text and its image files, rendered from the executed nbs/index.ipynb (runs inside .venv)."
    import nbformat
    from nbconvert import MarkdownExporter
    from traitlets.config import Config
    nb = nbformat.read(README_NB, as_version=4)
    cells = []
    for cell in nb.cells:
        if cell.cell_type == 'code':
            lines = cell.source.splitlines()
            opts = {l[3:].strip().replace(' ', '') for l in lines if l.startswith('#|')}
            if opts & {'hide', 'include:false'}: continue
            cell.source = '\n'.join(l for l in lines if not l.startswith('#|'))
            if 'echo:false' in opts: cell.metadata['tags'] = ['remove_input']
        cells.append(cell)
    nb.cells = cells
    c = Config()
    c.TagRemovePreprocessor.enabled = True
    c.TagRemovePreprocessor.remove_input_tags = {'remove_input'}
    body, res = MarkdownExporter(config=c).from_notebook_node(nb, resources={'output_files_dir': README_FILES})
    return body.strip() + '\n', dict(res.get('outputs', {}))


def cmd_readme():
    text, files = render_readme()
    README.write_text(text)
    out = ROOT/README_FILES
    for old in out.glob('*'): old.unlink()
    for name, data in files.items():
        (ROOT/name).parent.mkdir(parents=True, exist_ok=True)
        (ROOT/name).write_bytes(data)
    print(f'wrote {README.name} and {len(files)} file(s) in {README_FILES}/')


def main(argv):
    cmds = ('demo', 'test', 'readme')
    if not argv or argv[0] not in cmds + ('_readme',):
        print(__doc__); sys.exit(0 if argv[:1] in ([], ['-h'], ['--help']) else 2)
    cmd, rest = argv[0], argv[1:]
    if cmd == '_readme': return cmd_readme()          # already inside .venv
    ensure_venv()
    env = venv_env()
    if cmd == 'demo': sh(BIN/'mae_nb', 'demo', *rest, env=env)
    elif cmd == 'readme': sh(BIN/'python', ROOT/'run.py', '_readme', env=env)
    elif cmd == 'test':
        sh(BIN/'nbdev_test', '--timing', *rest, env=env)
        sh(BIN/'python', '-m', 'pytest', '-q', 'tests', env=env)


if __name__ == '__main__': main(sys.argv[1:])
