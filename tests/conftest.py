import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))      # so that tests can import run.py


def call(argv) -> tuple[int, str, str]:
    "(exit status, stdout, stderr) of `mae_nb ARGV`, run in this process (one torch import for all)."
    import contextlib, io
    from mae_nb.cli import main
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try: main([str(a) for a in argv]); code = 0
        except SystemExit as e: code = e.code
    return code, out.getvalue(), err.getvalue()
