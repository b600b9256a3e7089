"""The read-along website (`python3 run.py site`): built once from the executed notebooks, then checked page by page.
Screenshots of some pages with headless Chromium go to _screenshots/ (skipped where Chromium is not installed)."""
import base64, inspect, importlib, json, re, shutil, subprocess
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit
import nbformat, pytest
from conftest import ROOT
import run

SHOTS = ROOT/'_screenshots'


class Page(HTMLParser):
    "What a page links to, shows and says."
    def __init__(self, path: Path):
        super().__init__()
        self.path, self.ids, self.links, self.imgs, self.text = path, set(), [], [], []
        self.feed(path.read_text()); self.close()
    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if 'id' in a: self.ids.add(a['id'])
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
    exe = shutil.which('chromium') or shutil.which('chromium-browser') or shutil.which('google-chrome')
    if not exe: pytest.skip('no Chromium here: `apt-get install chromium` to take screenshots of the website')
    return exe


@pytest.mark.parametrize('page,section', [('index.html', ''), ('masking.html', 'Pictures'), ('mae.html', 'What-goes-where')])
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
