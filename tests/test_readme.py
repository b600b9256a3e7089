"README.md is rendered from nbs/index.ipynb: the committed files must equal a fresh rendering."
from conftest import ROOT
import run


def test_readme_matches_index_notebook():
    text, files = run.render_readme()
    assert (ROOT/'README.md').read_text() == text, "README.md differs from nbs/index.ipynb: run `python3 run.py readme`"
    assert files, "index.ipynb has no figure output: execute it before rendering"
    committed = {p.relative_to(ROOT).as_posix() for p in (ROOT/run.README_FILES).glob('*')}
    assert committed == set(files), f"README_files/ holds {sorted(committed)}, rendering gives {sorted(files)}: run `python3 run.py readme`"
    for name, data in files.items():
        assert (ROOT/name).read_bytes() == data, f"{name} differs: run `python3 run.py readme`"
        assert f'({name})' in text
