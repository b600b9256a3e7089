"""What the notebooks promise a reader: short teaching cells in the lesson and engine notebooks (00–19), and nothing that
points outside the repository (a reader of a fresh clone has nothing else)."""
import json, re
import pytest
from conftest import ROOT

NOTEBOOKS = sorted((ROOT/'nbs').glob('*.ipynb'))
OUTSIDE = re.compile(r'\.\./shared|DESIGN\.md|paper-facts')


def cells(nb):
    return json.loads(nb.read_text())['cells']


@pytest.mark.parametrize('nb', [p for p in NOTEBOOKS if re.match(r'[01]\d[a-z]?_', p.name)], ids=lambda p: p.name)
def test_code_cells_are_short(nb):
    "No code cell over 40 lines (blank lines and `#|` directives not counted): longer ideas are split with prose between."
    long = [(i, n) for i, c in enumerate(cells(nb)) if c['cell_type'] == 'code'
            and (n := sum(1 for l in ''.join(c['source']).splitlines() if l.strip() and not l.startswith('#|'))) > 40]
    assert not long, f'{nb.name}: cells (index, lines) over 40 lines: {long}'


def test_nothing_points_outside_the_repository():
    texts = {p.name: ''.join(''.join(c['source']) for c in cells(p)) for p in NOTEBOOKS}
    texts['README.md'] = (ROOT/'README.md').read_text()
    assert not [name for name, t in texts.items() if OUTSIDE.search(t)]
