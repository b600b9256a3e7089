"""The shape of the project (two tracks, one idea per module), checked so that it stays that way:
- the lesson (notebooks 00–09) reads in a sitting and uses none of the engine's machinery;
- modules import only modules below them in reading order, `core` being the lowest;
- no module grows past a few hundred lines."""
import ast, json, re
import pytest
from conftest import ROOT

PKG = ROOT/'mae_nb'
# reading order, lowest first: a module may import only modules to its left (core and the paper's numbers are for all)
ORDER = ['core', 'paper', 'data', 'patches', 'masking', 'pos_embed', 'vit', 'model', 'cost', 'train', 'visualize', 'evaluate', 'finetune',  # lesson
         'datasets', 'loaders', 'checkpoint', 'distributed', 'runs', 'augment', 'weights', 'experiments', 'ablations', 'bench', 'suite', 'cli']    # engine
LESSON = ORDER[:ORDER.index('finetune') + 1]
ENGINE = ORDER[ORDER.index('finetune') + 1:]
LESSON_NBS = sorted((ROOT/'nbs').glob('0[0-9]*_*.ipynb'))
# what a lesson notebook never shows: locks, signals, temporary files, pinned memory, compile internals, unpicklers,
# profilers, timing harnesses (the engine's notebooks hold those)
MACHINERY = re.compile(r'\b(fcntl|flock|tempfile|signal\.|os\.replace|pin_memory|is_pinned|torch\.compile|_dynamo|pickle|Unpickler|'
                       r'torch\.profiler|perf_counter|time\.time\(|resource\.getrusage)')
# the aims: a lesson notebook reads in a sitting (~250 code lines), the whole lesson ~1,800, no module over ~400 lines.
# Where the project is not there yet, the size of today is the ceiling (a test fails if it grows): lower these as the
# notebooks and modules are trimmed or split, and delete an entry once it meets the aim. The track's ceiling was raised
# from 2,250 for the lessons issue 20 added (the trained model, images vs words, the mask ratio, the explorer, partial
# fine-tuning, why it scales), then lowered as the engine's checks, the refusals and the finer statistics left the pages
# for tests/test_<module>.py, the kNN monitor, `TrainStep` (mixed precision, accumulation, DDP's no_sync) and the loaders'
# sharding and resume for the engine (runs, distributed, loaders), and a loss on every patch for story 22.
LESSON_LINES, TRACK_LINES, MODULE_LINES = 265, 2_096, 400
NOT_YET_SHORT: dict[str, int] = {}   # every lesson notebook is within LESSON_LINES
NOT_YET_SPLIT: dict[str, int] = {}   # every module is within MODULE_LINES (bench, experiments, runs were split)


def code_cells(nb):
    return [''.join(c['source']) for c in json.loads(nb.read_text())['cells'] if c['cell_type'] == 'code']


def code_lines(nb) -> int:
    return sum(1 for s in code_cells(nb) for l in s.splitlines() if l.strip() and not l.startswith('#|'))


def imports(module: str) -> set[str]:
    "The mae_nb modules that `module` imports."
    tree, found = ast.parse((PKG/f'{module}.py').read_text()), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            name = node.module if node.level == 0 else f'mae_nb.{node.module}'
            if name.startswith('mae_nb.'): found.add(name.split('.')[1])
            elif name == 'mae_nb' or (node.level == 1 and node.module is None): found.update(a.name for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name.split('.')[1] for a in node.names if a.name.startswith('mae_nb.'))
    return found - {'__version__'}


def test_every_module_has_its_place():
    mods = {p.stem for p in PKG.glob('*.py') if not p.stem.startswith('_')}
    assert mods == set(ORDER), f'not in ORDER: {mods - set(ORDER)}; gone: {set(ORDER) - mods}'


@pytest.mark.parametrize('module', ORDER)
def test_imports_point_down(module):
    "A module imports only modules below it: the lesson never the engine, nothing a module above it."
    up = {m for m in imports(module) if m in ORDER and ORDER.index(m) >= ORDER.index(module)}
    assert not up, f'mae_nb.{module} imports {sorted(up)}, which come after it'


@pytest.mark.parametrize('nb', LESSON_NBS, ids=lambda p: p.name)
def test_lesson_notebook_reads_in_a_sitting(nb):
    limit = NOT_YET_SHORT.get(nb.name, LESSON_LINES)
    assert code_lines(nb) <= limit, f'{nb.name}: {code_lines(nb)} code lines (at most {limit})'


def test_lesson_track_size():
    n = {nb.name: code_lines(nb) for nb in LESSON_NBS}
    assert sum(n.values()) <= TRACK_LINES, f'the lesson has {sum(n.values())} code lines (at most {TRACK_LINES}): {n}'


@pytest.mark.parametrize('nb', LESSON_NBS, ids=lambda p: p.name)
def test_lesson_uses_no_machinery(nb):
    "No engine import and no engine machinery in any code cell of a lesson notebook."
    text = '\n'.join(code_cells(nb))
    engine = sorted(set(re.findall(r'mae_nb\.(\w+)', text)) & set(ENGINE))
    assert not engine, f'{nb.name} imports engine modules {engine}'
    assert not MACHINERY.search(text), f'{nb.name} uses {MACHINERY.search(text)[0]!r}: engine machinery'


@pytest.mark.parametrize('module', ORDER)
def test_modules_stay_small(module):
    n = len((PKG/f'{module}.py').read_text().splitlines())
    limit = NOT_YET_SPLIT.get(module, MODULE_LINES)
    assert n <= limit, f'mae_nb/{module}.py has {n} lines (at most {limit})'


def test_checks_can_fail(tmp_path):
    "The import check sees an upward import, and the machinery rule sees a lock."
    (tmp_path/'x.py').write_text('from .cli import main\nfrom mae_nb.runs import fit\nimport mae_nb.loaders\n')
    global PKG
    old, PKG = PKG, tmp_path
    try: assert imports('x') == {'cli', 'runs', 'loaders'}
    finally: PKG = old
    assert MACHINERY.search('import fcntl; fcntl.flock(f, 2)') and not MACHINERY.search('loss.backward()')
