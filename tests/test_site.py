"""The read-along website (`python3 run.py site`): built once from the executed notebooks, then checked page by page,
also in headless Chromium (every page: no console error, every image decoded; screenshots of some go to _screenshots/).
Without Chromium the browser tests fail under `python3 run.py test` (which installs it) or MAE_NB_REQUIRE_BROWSER=1, and
are skipped by a plain pytest."""
import base64, dataclasses, inspect, importlib, json, os, re, shutil, subprocess, time
from html.parser import HTMLParser
from pathlib import Path
from typing import NamedTuple
from urllib.parse import unquote, urlsplit
import nbformat, pytest
from conftest import ROOT
import run

SHOTS = ROOT/'_screenshots'


class Page(HTMLParser):
    "What a page links to, shows and says."
    def __init__(self, path: Path):
        super().__init__()
        self.path, self.ids, self.links, self.imgs, self.text, self.id_order = path, set(), [], [], [], []
        self.feed(path.read_text()); self.close()
    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if 'id' in a: self.ids.add(a['id']); self.id_order.append(a['id'])
        if tag == 'a' and 'name' in a: self.ids.add(a['name'])
        if tag == 'a' and a.get('href'): self.links.append(a['href'])
        if tag == 'img': self.imgs.append(a.get('src') or '')
        if a.get('data-mime-type') == 'application/vnd.jupyter.error': self.text.append('<error output>')
    def handle_data(self, data): self.text.append(data)


def page_problems(page: Path, pages: dict) -> list[str]:
    "Everything wrong with one built page: missing or empty images, tracebacks, error cells, dead internal links."
    p, probs = pages[page], []
    for src in p.imgs:
        if src.startswith('data:'):
            if not base64.b64decode(src.split(',', 1)[1] + '==', validate=False): probs.append(f'empty inline image')
        elif urlsplit(src).scheme: probs.append(f'image from the network: {src}')
        else:
            f = page.parent/unquote(src)
            if not f.is_file() or f.stat().st_size == 0: probs.append(f'missing or empty image {src}')
    text = ''.join(p.text)
    if 'Traceback (most recent call last)' in text or '<error output>' in text: probs.append('a Python traceback or an error cell')
    for href in p.links:
        u = urlsplit(href)
        if u.scheme or href.startswith('//'): continue           # external
        target = page if not u.path else (page.parent/unquote(u.path)).resolve()
        if target not in pages and not target.is_file(): probs.append(f'dead link {href}'); continue
        if u.fragment and target in pages and unquote(u.fragment) not in pages[target].ids:
            probs.append(f'link to a missing anchor {href}')
    return probs


def parse(paths) -> dict: return {p.resolve(): Page(p) for p in paths}


@pytest.fixture(scope='module')
def site(tmp_path_factory):
    "Build the website once for all tests of this module."
    out, nbs = tmp_path_factory.mktemp('site'), run.site_notebooks()
    return out, parse(run.build_site(out, nbs)), nbs


def test_every_notebook_has_a_page(site):
    out, pages, nbs = site
    assert nbs[0].name == 'index.ipynb' and len(nbs) >= 10
    for nb in nbs: assert (out/run.page_name(nb)).resolve() in pages, f'{nb.name} has no page'
    assert len(pages) == len(nbs)


def test_pages_are_whole(site):
    "Images exist and are not empty, no traceback or error cell, every internal link (and anchor) resolves."
    out, pages, _ = site
    problems = {p.name: page_problems(p, pages) for p in pages}
    assert not any(problems.values()), {k: v for k, v in problems.items() if v}
    n_imgs = {p.name: len(pages[p].imgs) for p in pages}
    for name in ('index.html', 'patches.html', 'masking.html', 'pos_embed.html', 'mae.html', 'train.html', 'visualize.html'):
        assert n_imgs[name] > 0, f'{name} shows no figure'


def test_navigation_in_reading_order(site):
    out, pages, nbs = site
    order = [run.page_name(nb) for nb in nbs]
    for i, name in enumerate(order):
        links = pages[(out/name).resolve()].links
        nav = [l for l in links if l in order]
        assert nav[:len(order) + 1] == [order[0], *order], f'{name}: navigation is not the reading order'
        if i + 1 < len(order): assert order[i + 1] in links[-2:], f'{name} has no link to the next page'


def test_api_docs_for_every_export(site):
    "Each exported function and class has its `show_doc` entry (an anchor named like nbdev's) on its notebook's page."
    out, pages, nbs = site
    for nb in nbs:
        m = re.search(r'^#\|\s*default_exp\s+(\S+)', '\n'.join(c.source for c in nbformat.read(nb, 4).cells if c.cell_type == 'code'), re.M)
        if not m: continue
        mod = importlib.import_module(f'mae_nb.{m[1]}')
        names = [n for n in getattr(mod, '__all__', []) if (inspect.isfunction(o := getattr(mod, n)) or inspect.isclass(o))
                 and o.__module__ == mod.__name__]
        ids = pages[(out/run.page_name(nb)).resolve()].ids
        missing = [n for n in names if n.lower() not in ids]
        assert not missing, f'{nb.name}: no API docs for {missing}'


def module_of(nb: Path):
    "The module a notebook exports to (its `default_exp`), or None."
    m = re.search(r'^#\|\s*default_exp\s+(\S+)', '\n'.join(c.source for c in nbformat.read(nb, 4).cells if c.cell_type == 'code'), re.M)
    return importlib.import_module(f'mae_nb.{m[1]}') if m else None


def exported_cells(nb: Path) -> list[str]:
    "The source of each exported cell of a notebook, without its `#|` directives."
    cells = []
    for c in nbformat.read(nb, 4).cells:
        lines = c.source.splitlines()
        dirs = {l[3:].split(':')[0].strip() for l in lines if l.startswith('#|')}
        if c.cell_type == 'code' and dirs & {'export', 'exporti', 'exports'} and 'hide' not in dirs:
            cells.append('\n'.join(l for l in lines if not l.startswith('#|')))
    return cells


def api_order(nb: Path, mod) -> tuple[list[str], set[str]]:
    """The API entries (show_doc anchors) a notebook's exported cells define, in the order it defines them, and those
    defined in a cell of imports (helpers such as `patch_to`, which must not lead the page)."""
    import ast
    order, helpers = [], set()
    for src in exported_cells(nb):
        body = ast.parse(src).body
        names = [n.name for n in body if isinstance(n, (ast.FunctionDef, ast.ClassDef)) and not n.name.startswith('_')]
        ids = [getattr(mod, n).__qualname__.lower() for n in names]
        if any(isinstance(n, (ast.Import, ast.ImportFrom)) for n in body): helpers.update(ids)
        else: order += ids
    return order, helpers


def test_derivation_pages_show_their_code(site):
    """The pages of notebooks 00–09 show every line of their exported code (the reader sees `random_masking` being
    written, not only its signature); later pages show the API docs only."""
    out, pages, nbs = site
    derivation = [nb for nb in nbs if run.is_derivation(nb)]
    assert {nb.name[:2] for nb in derivation} == {f'{i:02d}' for i in range(10)}
    for nb in derivation:
        text = ''.join(pages[(out/run.page_name(nb)).resolve()].text)
        missing = [l for src in exported_cells(nb) for l in src.splitlines() if l.strip() and l not in text]
        assert not missing, f'{nb.name}: its page lacks exported code such as {missing[:3]}'
    from mae_nb import masking, model
    for page, fn in (('masking.html', masking.random_masking), ('mae.html', model.MaskedAutoencoder.forward_encoder)):
        src = inspect.getsource(fn).strip()
        assert src.startswith(('def ', '@')) and src in ''.join(pages[(out/page).resolve()].text), f'{page} does not show `{fn.__name__}` as written'
    assert not any(run.is_derivation(Path(n)) for n in ('index.ipynb', '16_weights.ipynb', '17b_ablation_study.ipynb', '19_cli.ipynb', '99_broken.ipynb'))
    assert all(run.is_derivation(Path(n)) for n in ('00_data.ipynb', '05b_cost.ipynb', '09_finetune.ipynb'))


def test_api_docs_in_the_order_of_the_notebook(site):
    """Each page documents its symbols in the order its notebook defines them (each entry before its code); a helper
    defined among the imports (`patch_to`) does not lead the page: it comes just before the code that first uses it."""
    out, pages, nbs = site
    for nb in nbs:
        if not (mod := module_of(nb)): continue
        order, helpers = api_order(nb, mod)
        shown = [i for i in dict.fromkeys(pages[(out/run.page_name(nb)).resolve()].id_order) if i in set(order) | helpers]
        assert [i for i in shown if i not in helpers] == order, f'{nb.name}: API docs out of order'
        if shown: assert shown[0] not in helpers, f'{nb.name}: the helper {shown[0]} leads the page'
    mae = next(nb for nb in nbs if run.page_name(nb) == 'mae.html')
    order, helpers = api_order(mae, module_of(mae))
    shown = [i for i in dict.fromkeys(pages[(out/'mae.html').resolve()].id_order) if i in set(order) | helpers]
    assert shown[0] == 'maeconfig', f'mae.html starts its API with {shown[0]}, not MAEConfig'
    assert shown.index('maskedautoencoder') < shown.index('patch_to') < shown.index('maskedautoencoder.forward_encoder'), shown


def signatures(text: str, name: str) -> list[str]:
    "The parameter lists `text` shows after `name(`: one per line up to a line `)`, or all on one line."
    return [m[1] if m[1] is not None else m[2] for m in re.finditer(rf'\b{re.escape(name)}\((?:\n(.*?)\n\)|([^\n]*?)\))', text, re.S)]


def test_records_show_their_fields(site):
    "NamedTuples and dataclasses are documented with their fields (not `Masking(*args, **kwargs)`)."
    out, pages, nbs = site
    seen = set()
    for nb in nbs:
        if not (mod := module_of(nb)): continue
        text = ''.join(pages[(out/run.page_name(nb)).resolve()].text)
        for name in getattr(mod, '__all__', []):
            o = getattr(mod, name)
            if not inspect.isclass(o) or o.__module__ != mod.__name__: continue
            if issubclass(o, tuple) and hasattr(o, '_fields'): fields = list(o._fields)
            elif dataclasses.is_dataclass(o): fields = [f.name for f in dataclasses.fields(o) if f.init]
            else: continue
            seen.add(name)
            sigs = signatures(text, name)
            assert not any(s.strip().startswith('*args') for s in sigs), f'{nb.name}: {name} is shown as {name}(*args, **kwargs)'
            assert any(re.search(r'[\s\S]*?'.join(rf'\b{f}\b' for f in fields), s) for s in sigs), f'{nb.name}: {name} is not shown with its fields {fields}'
    assert {'Masking', 'MAEOutput', 'MAEConfig', 'TrainConfig'} <= seen, seen


class _Point(NamedTuple):
    x: int
    y: float = 0.5   # a comment


def test_class_signature():
    "The signature fix on its own: a NamedTuple gets its fields, a class is written as its constructor call."
    assert run.class_signature(_Point, 'def _Point(\n    *args, **kwargs\n):') == '_Point(\n    x:int,\n    y:float=0.5, # a comment\n)'
    assert run.class_signature(Page, 'def Page(\n    path:Path,\n)->None:') == 'Page(\n    path:Path,\n)'
    assert run.class_signature(run.build_site, 'def build_site(out:Path)->list:') == 'def build_site(out:Path)->list:'


def test_checks_can_fail(tmp_path):
    "A page with an error cell, a missing image and dead links is caught."
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell('# Broken\n\n> a page that must fail'),
        nbformat.v4.new_markdown_cell('![x](missing.png) [nowhere](nowhere.html) [anchor](#no-such-anchor)'),
        nbformat.v4.new_code_cell('1/0', outputs=[nbformat.v4.new_output('error', ename='ZeroDivisionError', evalue='division by zero',
                                                                          traceback=['Traceback (most recent call last)', 'ZeroDivisionError'])])])
    nbformat.write(nb, tmp_path/'99_broken.ipynb')
    pages = parse(run.build_site(tmp_path/'site', [tmp_path/'99_broken.ipynb']))
    probs = page_problems((tmp_path/'site'/'broken.html').resolve(), pages)
    for what in ('missing or empty image missing.png', 'traceback', 'dead link nowhere.html', 'missing anchor #no-such-anchor'):
        assert any(what in p for p in probs), (what, probs)


def chromium() -> str:
    "Chromium's path; without one, the test fails under `run.py test` (MAE_NB_REQUIRE_BROWSER=1) and is skipped otherwise."
    if exe := run.find_chromium(): return exe
    msg = f'no Chromium here to check the website in a browser: {run.CHROMIUM_HINT}'
    if os.environ.get('MAE_NB_REQUIRE_BROWSER') == '1': pytest.fail(msg)
    pytest.skip(msg)


@pytest.fixture(scope='module')
def browser():
    "One headless Chromium for the tests of this module, driven over the DevTools protocol."
    with run.Chromium(chromium()) as b: yield b


def test_pages_in_a_browser(site, browser):
    """Every page, loaded in Chromium: no console error (JavaScript error, resource that fails to load), every image
    decoded (complete, with a width), as many images as the HTML has."""
    out, pages, _ = site
    t0 = time.perf_counter()
    found = browser.check(list(pages))
    print(f'{len(pages)} pages in Chromium in {time.perf_counter() - t0:.1f} s')
    assert set(found) == set(pages)
    problems = {p.name: probs for p, (_, probs) in found.items() if probs}
    assert not problems, problems
    for p, (n, _) in found.items(): assert n == len(pages[p].imgs), f'{p.name}: Chromium shows {n} images, the HTML has {len(pages[p].imgs)}'


def test_explorer_has_its_static_copy(site):
    "The page of the live explorer shows its first figure in its place, and nothing of the widget (which needs a kernel)."
    out, pages, _ = site
    html = (out/'visualize.html').read_text()
    assert 'Explore-it-yourself' in pages[(out/'visualize.html').resolve()].ids
    after = html[html.index('id="Explore-it-yourself"'):]
    assert '<img' in after, 'no static figure after the explorer heading'
    assert 'VBox(' not in html and run.WIDGET not in html, 'the widget itself is on the page'


PNG_1x1 = ('iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==')


def test_browser_checks_can_fail(tmp_path, browser):
    """A page with a broken image, a missing one, a missing stylesheet, a script that throws and a console.error is caught on
    each count; the same page without them passes."""
    good = f'<img src="data:image/png;base64,{PNG_1x1}"><img src="fine.png"><script>var ok = 1;</script>'
    (tmp_path/'fine.png').write_bytes(base64.b64decode(PNG_1x1))
    (tmp_path/'good.html').write_text(f'<!DOCTYPE html><html><head><title>good</title></head><body>{good}</body></html>')
    (tmp_path/'broken.html').write_text(
        '<!DOCTYPE html><html><head><title>broken</title><link rel="stylesheet" href="missing.css"></head><body>'
        f'{good}<img src="missing.png"><img src="data:image/png;base64,iVBORw0KGgoAAAA="><script>no_such_function();</script>'
        '<script>console.error("boom")</script></body></html>')
    found = browser.check([tmp_path/'good.html', tmp_path/'broken.html'])
    assert found[tmp_path/'good.html'] == (2, []), found[tmp_path/'good.html']
    n, probs = found[tmp_path/'broken.html']
    assert n == 4, n
    for what in ('image not decoded: missing.png', 'image not decoded: data:image/png', 'JavaScript error: ReferenceError: no_such_function',
                 'console.error: boom', 'missing.png', 'missing.css'):
        assert any(what in p for p in probs), (what, probs)
    assert sum('Failed to load resource' in p or 'ERR_FILE_NOT_FOUND' in p for p in probs) >= 2, probs


@pytest.mark.parametrize('page,section', [('index.html', ''), ('masking.html', 'Random-masking'), ('masking.html', 'Pictures'),
                                          ('mae.html', 'Encoder'), ('cost.html', 'What-goes-where')])
def test_screenshot(site, page, section):
    """Headless Chromium renders the page (from `section` on) with its figures; the PNG lands in _screenshots/
    for a person to look at, and must not be blank."""
    import matplotlib.image as mpimg
    exe = chromium()
    out, pages, _ = site
    src = out/page
    if section:                                    # a copy of the page that starts at the section (no scrolling needed)
        assert section in pages[src.resolve()].ids, f'{page} has no section #{section}'
        cut = ("<script>const c = document.getElementById('%s').closest('.jp-Cell');"
               "while (c.previousElementSibling) c.previousElementSibling.remove();</script></body>") % section
        src = out/f'_shot_{section}_{page}'
        src.write_text((out/page).read_text().replace('</body>', cut))
    SHOTS.mkdir(exist_ok=True)
    png = SHOTS/f"{Path(page).stem}{'-' + section.lower() if section else ''}.png"
    png.unlink(missing_ok=True)
    r = subprocess.run([exe, '--headless', '--no-sandbox', '--disable-gpu', '--hide-scrollbars', f'--screenshot={png}',
                        '--window-size=1200,1600', src.resolve().as_uri()], capture_output=True, text=True, timeout=120)
    assert png.is_file(), f'Chromium wrote no screenshot of {page}: {r.stderr[-500:]}'
    img = mpimg.imread(png)[..., :3]                          # (H, W, 3) in [0, 1]
    content = img[:, 300:]                                    # right of the navigation
    dark = (content.mean(-1) < 0.5).mean()
    assert content.std() > 0.1 and dark > 0.02, f'{png.name} looks blank (std {content.std():.3f}, dark share {dark:.3f})'
