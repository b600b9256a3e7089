#!/usr/bin/env python3
"""Project commands that work on a fresh clone with nothing but python3.

    python3 run.py demo     # the main job: `mae_nb demo`
    python3 run.py demo-vs REF   # time the demo of git revision REF, then this checkout's, on this machine: both times and gains
    python3 run.py test     # every test: nbdev_test over all notebooks, then pytest tests/, a file per core at a time (installs Chromium if missing)
    python3 run.py readme   # render nbs/index.ipynb into README.md (+ README_files/)
    python3 run.py site [--serve [PORT]]   # the read-along website from the executed notebooks, in _docs/, checked in Chromium
    python3 run.py lab      # read along and run the notebooks in JupyterLab: `jupyter lab nbs/` (extra arguments go to it)
    python3 run.py lesson-model [--to DIR] [DEMO FLAGS]   # re-make models/fmnist-mae.pt (+ .json provenance), the lessons' trained MAE

Each creates the virtual environment .venv/ on first use and installs the package with its dev
extras; it reinstalls when the contents of settings.ini, setup.py or pyproject.toml change.
"""
from __future__ import annotations
import hashlib, inspect, os, re, subprocess, sys
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


# ---------------------------------------------------------------- the read-along website
SITE = ROOT/'_docs'
SITE_CSS = """
body.jp-Notebook { margin: 0; padding: 0; }
nav.site-nav { position: fixed; top: 0; left: 0; bottom: 0; width: 14rem; overflow-y: auto; padding: 1.2rem 1rem;
  background: #f6f7f9; border-right: 1px solid #dde; font: 15px/1.4 system-ui, sans-serif; }
nav.site-nav .brand { display: block; font-weight: 700; font-size: 1.15rem; margin-bottom: 1rem; color: #222; text-decoration: none; }
nav.site-nav ol { list-style: none; padding: 0; margin: 0; }
nav.site-nav li a { display: block; padding: .3rem .5rem; border-radius: 4px; color: #2a5db0; text-decoration: none; }
nav.site-nav li a:hover { background: #e8ecf3; }
nav.site-nav li.current a { background: #2a5db0; color: white; }
nav.site-nav .num { display: inline-block; width: 1.6rem; color: #888; font-variant-numeric: tabular-nums; }
nav.site-nav li.current .num { color: #dde; }
main.site-main { margin-left: 16rem; max-width: 62rem; padding: 1rem 2rem 3rem; }
header.site-title { font-family: system-ui, sans-serif; padding-left: var(--jp-cell-padding, 5px); }
header.site-title h1 { margin-bottom: .2rem; font-size: 2.2rem; }
header.site-title .description { font-style: italic; font-size: 120%; opacity: 75%; margin: 0 0 1rem; }
.jp-RenderedMarkdown pre { background: #f5f6f8; padding: .6rem .8rem; border-radius: 4px; }
footer.pager { display: flex; justify-content: space-between; margin-top: 3rem; padding-top: 1rem; border-top: 1px solid #dde;
  font: 15px system-ui, sans-serif; }
.jp-InputArea-editor .highlight pre { overflow-x: auto; }
a.source-link { float: right; font-size: smaller; }
.jp-RenderedMarkdown table { font-size: 90%; }
.jp-OutputArea-output img { max-width: 100%; height: auto; }
@media (max-width: 900px) { nav.site-nav { position: static; width: auto; } main.site-main { margin-left: 0; } }
"""
SITE_TEMPLATE = """{%- extends 'lab/index.html.j2' -%}
{% block html_head_js_requirejs %}{% endblock %}
{% block html_head_js_mathjax %}{% endblock %}
{% block html_head_js_mermaidjs %}{% endblock %}
{% block extra_css %}<link rel="stylesheet" href="{{ resources.site.root }}site.css">{% endblock %}
{% block body_header %}<body class="jp-Notebook" data-jp-theme-light="true" data-jp-theme-name="JupyterLab Light">
{{ resources.site.nav }}<main class="site-main">{{ resources.site.header }}{% endblock %}
{% block body_footer %}{{ resources.site.pager }}</main></body>{% endblock %}
"""


def site_notebooks() -> list[Path]:
    "Every notebook under nbs/, in reading order: index first, then by path (names starting with _ or . are skipped, as nbdev does)."
    nbs = [p for p in (ROOT/'nbs').rglob('*.ipynb')
           if not any(part.startswith(('_', '.')) for part in p.relative_to(ROOT/'nbs').parts)]
    return sorted(nbs, key=lambda p: (p.name != 'index.ipynb', p.relative_to(ROOT/'nbs').as_posix()))


def page_name(nb: Path) -> str:
    "The page a notebook becomes, named as nbdev and Quarto name it: nbs/01_patches.ipynb -> patches.html."
    rel = nb.relative_to(ROOT/'nbs') if nb.is_relative_to(ROOT/'nbs') else Path(nb.name)
    return rel.with_name(re.sub(r'^\d+[a-zA-Z0-9]*_', '', rel.name.lower())).with_suffix('.html').as_posix()


def is_derivation(nb: Path) -> bool:
    "Notebooks 00–09 derive the method one piece at a time: their pages show the exported code, not only its API docs."
    m = re.match(r'(\d\d)[a-z]?_', nb.name)
    return bool(m) and int(m[1]) < 10


def top_level_spans(src: str) -> list[tuple]:
    """(node, first line, first line after it) of each top-level statement of `src`, 1-based: a statement starts at its
    decorators and the comment lines right above them, and runs until the next statement starts."""
    import ast
    body, lines = ast.parse(src).body, src.split('\n')
    starts, prev_end = [], 0
    for n in body:
        a = min([n.lineno] + [d.lineno for d in getattr(n, 'decorator_list', [])])
        while a - 1 > prev_end and lines[a - 2].lstrip().startswith('#'): a -= 1
        starts.append(a); prev_end = n.end_lineno
    return list(zip(body, starts, starts[1:] + [len(lines) + 1]))


def field_signature(cls) -> str:
    "A NamedTuple's constructor as show_doc would write it, with its fields, their types, defaults and comments."
    import ast, io, textwrap, tokenize
    notes = {}
    try:
        src = textwrap.dedent(inspect.getsource(cls))
        comments = {t.start[0]: t.string.lstrip('#').strip() for t in tokenize.generate_tokens(io.StringIO(src).readline)
                    if t.type == tokenize.COMMENT}
        notes = {n.target.id: comments.get(n.lineno) for n in ast.parse(src).body[0].body
                 if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)}
    except (OSError, TypeError, SyntaxError, IndexError, AttributeError): pass
    annos, defaults = getattr(cls, '__annotations__', {}), getattr(cls, '_field_defaults', {})
    def anno(a): return a if isinstance(a, str) else getattr(a, '__forward_arg__', None) or inspect.formatannotation(a)
    params = [(f + (f':{anno(annos[f])}' if f in annos else '') + (f'={defaults[f]!r}' if f in defaults else ''), notes.get(f))
              for f in cls._fields]
    if not any(note for _, note in params): return f"{cls.__name__}({', '.join(p for p, _ in params)})"
    return '\n'.join([f'{cls.__name__}(', *(f'    {p},' + (f' # {note}' if note else '') for p, note in params), ')'])


def class_signature(sym, sig: str) -> str:
    """show_doc's signature `sig` of `sym`, for a class written as a call of its constructor (`MAEConfig(img_size:int=224, ...)`,
    not `def MAEConfig(...)->None:`); a NamedTuple gets its fields, where inspect sees only `(*args, **kwargs)`."""
    if not inspect.isclass(sym): return sig
    if issubclass(sym, tuple) and hasattr(sym, '_fields'): return field_signature(sym)
    sig = re.sub(r'^def (?=\w)', '', sig)
    return re.sub(r'\)(?:->None)?:(\s*#[^\n]*)?\s*$', r')\1', sig)


def doc_notebook(path: Path):
    """`path` as the website shows it: nbdev's own docs processors (a `show_doc` for every exported symbol, exported
    and hidden cells removed, symbols in backticks linked), except that `show_doc` is evaluated against the exported
    module instead of re-executing the notebook, and that
    - the `show_doc`s of a cell come in the order the cell defines their symbols (nbdev reverses them);
    - in the derivation notebooks (00–09, `is_derivation`) the exported code stays on the page, cut into one piece per
      documented symbol, each after its `show_doc` (what nbdev's `#| exports` does, for every `#| export` cell);
    - a symbol defined in a cell of imports (such as `patch_to` in 05_mae) moves to just before the first cell that uses
      it, so that a helper does not lead the page.
    Returns (nbformat notebook, frontmatter dict)."""
    import ast, importlib, json, nbformat
    from execnb.nbio import NbCell, read_nb
    from nbdev.config import get_config
    from nbdev.frontmatter import FrontmatterProc
    from nbdev.process import NBProcessor, Processor
    from nbdev import processors as P
    from nbdev.showdoc import show_doc
    show_src = is_derivation(path)
    EXPORTS = {'export', 'exporti', 'exports'}

    def code_cell(like, lines: list[str], outputs=()):
        "A plain code cell (no export directive, so nothing removes it) showing `lines` of the cell `like`."
        while lines and not lines[0].strip(): lines = lines[1:]
        while lines and not lines[-1].strip(): lines = lines[:-1]
        if not lines: return None
        c = NbCell(like.idx_, {'cell_type': 'code', 'source': '\n'.join(lines), 'metadata': dict(like.get('metadata', {})),
                               'outputs': list(outputs), 'execution_count': None})
        c.directives_ = {k: v for k, v in like.directives_.items() if k not in EXPORTS}
        return c

    class teach_exports(Processor):
        "Place the `show_doc` cells nbdev added after each exported cell (see `doc_notebook`), and keep the code in derivation notebooks."
        def begin(self):
            cells, units, helpers, i = self.nb.cells, [], [], 0     # units: (original cell, the cells shown for it)
            while i < len(cells):
                cell, j = cells[i], i + 1
                while j < len(cells) and getattr(cells[j], 'has_sd', False): j += 1
                docs, i = cells[i + 1:j], j
                d = cell.get('directives_', {})
                trees = cell.parsed_() if cell.cell_type == 'code' and d.keys() & EXPORTS else None
                if not trees or 'hide' in d or d.get('include:') == ['false']: units.append((cell, [cell, *docs])); continue
                spans, lines = top_level_spans(cell.source), cell.source.split('\n')
                doc_of = {re.match(r'show_doc\(([\w.]+)', c.source)[1].rsplit('.', 1)[-1]: c for c in docs}
                documented = [(n, a, b) for n, a, b in spans if getattr(n, 'name', None) in doc_of]
                if any(isinstance(n, (ast.Import, ast.ImportFrom)) for n, _, _ in spans):   # helpers among the imports
                    for n, a, b in documented:
                        src = code_cell(cell, lines[a-1:b-1]) if show_src else None
                        helpers.append((n.name, len(units), [doc_of[n.name], *([src] if src else [])]))
                    if show_src: lines = [l for k, l in enumerate(lines, 1) if not any(a <= k < b for _, a, b in documented)]
                    documented = []
                    docs = [c for c in docs if all(c is not m for _, _, moved in helpers for m in moved)]
                placed = [doc_of[n.name] for n, _, _ in documented]
                rest = [c for c in docs if all(c is not p for p in placed)]    # show_docs without a definition here
                if not show_src: units.append((cell, [cell, *placed, *rest])); continue
                bounds = [1, *(a for _, a, _ in documented[1:]), len(lines) + 1]
                shown = []
                for k, (a, b) in enumerate(zip(bounds, bounds[1:])):
                    shown += [doc_of[n.name] for n, na, _ in documented if a <= na < b]
                    shown.append(code_cell(cell, lines[a-1:b-1], cell.get('outputs', []) if k == len(bounds) - 2 else ()))
                units.append((cell, [*filter(None, shown), *rest]))
            for name, origin, moved in helpers:     # just before the first code cell that uses the helper (or at the end)
                use = next((u for u in range(origin + 1, len(units)) if units[u][0].cell_type == 'code'
                            and re.search(rf'\b{re.escape(name)}\b', units[u][0].source)), None)
                if use is None: units[-1][1].extend(moved)
                else: units[use][1][:0] = moved
            self.nb.cells = [c for _, shown in units for c in shown]

    class render_show_docs(Processor):
        "Give each `show_doc` cell its markdown output, rendered from the exported module."
        def begin(self):
            mod = P._default_exp(self.nb)
            self.ns = {'show_doc': show_doc, **(vars(importlib.import_module(f'{get_config().lib_name}.{mod}')) if mod else {})}
        def cell(self, cell):
            if not P._is_showdoc(cell): return
            code = '\n'.join(l for l in cell.source.splitlines() if not l.startswith('#|'))
            try: doc = eval(code, self.ns); doc.dm = class_signature(doc.sym, str(doc.dm)); md = doc._repr_markdown_()
            except Exception as e: raise RuntimeError(f"{path.name}: `{code}` failed ({e}): is the notebook exported (nbdev_export)?") from e
            try: md = md.replace('#LNone)', f'#L{inspect.getsourcelines(doc.sym)[1]})')   # (nbdev finds no line for qualified names)
            except (TypeError, OSError): pass
            md = re.sub(r'\[source\]\((\S+?)\)\{[^}]*\}', r'<a class="source-link" href="\1">source</a>', md)   # Quarto attributes
            md = re.sub(r'^(#+) (\S+)\s*$', lambda m: f'<h{len(m[1])} id="{m[2].lower()}">{m[2]}</h{len(m[1])}>\n', md, flags=re.M)
            cell.outputs = [{'output_type': 'display_data', 'metadata': {}, 'data': {'text/markdown': md.splitlines(True)}}]

    nb = read_nb(path)
    NBProcessor(path, [FrontmatterProc, P.populate_language, P.add_show_docs, teach_exports, P.strip_ansi, P.hide_line, P.filter_stream_,
                       P.rm_header_dash, P.clean_show_doc, render_show_docs, P.rm_export, P.clean_magics, P.hide_,
                       P.add_links, P.mv_exports, P.strip_hidden_metadata], nb=nb).process()
    cells = []
    for c in nb.cells:
        d = {**c.get('directives_', {}), **{k.strip() + ':': v.split() for k, _, v in
                                              (l[2:].partition(':') for l in c.source.splitlines() if l.startswith('#|'))}}
        if c.cell_type == 'raw' or d.get('include:') == ['false']: continue
        src = '\n'.join(l for l in c.source.splitlines() if not l.startswith('#|'))
        if c.cell_type == 'markdown': cells.append(nbformat.v4.new_markdown_cell(src)); continue
        outs = [o for o in c.get('outputs', []) if WIDGET not in o.get('data', {})]   # live controls need a kernel: the page keeps their static figure
        cell = nbformat.v4.new_code_cell(src, outputs=[] if d.get('output:') == ['false'] else outs)
        if d.get('echo:') == ['false'] or not src.strip(): cell.metadata['tags'] = ['remove_input']
        cells.append(cell)
    out = nbformat.v4.new_notebook(cells=cells, metadata=dict(nb.metadata))
    return nbformat.reads(json.dumps(out), as_version=4), getattr(nb, 'frontmatter_', {})   # (joins multi-line fields)


WIDGET = 'application/vnd.jupyter.widget-view+json'


def build_site(out: Path = SITE, notebooks: list[Path] | None = None) -> list[Path]:
    "Render `notebooks` (default: all of nbs/) into a static website in `out`, with a navigation in reading order."
    import html, shutil
    from jinja2 import DictLoader
    from nbconvert import HTMLExporter
    from nbconvert.filters import markdown2html_mistune
    from nbdev.config import get_config
    from traitlets.config import Config
    notebooks = site_notebooks() if notebooks is None else notebooks
    if out.exists(): shutil.rmtree(out)
    out.mkdir(parents=True)
    (out/'site.css').write_text(SITE_CSS)
    c = Config()
    c.TagRemovePreprocessor.enabled = True
    c.TagRemovePreprocessor.remove_input_tags = {'remove_input'}
    c.ExtractOutputPreprocessor.enabled = True
    exporter = HTMLExporter(config=c, template_name='lab', exclude_input_prompt=True, exclude_output_prompt=True,
                            extra_loaders=[DictLoader({'site.html.j2': SITE_TEMPLATE})], template_file='site.html.j2')
    cwd = os.getcwd(); os.chdir(ROOT)               # nbdev reads settings.ini from the working directory
    try:
        cfg = get_config()
        docs_url = f"{cfg.doc_host.rstrip('/')}/{cfg.doc_baseurl.strip('/')}/"
        docs = [(nb, page_name(nb), *doc_notebook(nb)) for nb in notebooks]
    finally: os.chdir(cwd)
    titles = [fm.get('title', nb.stem) for nb, _, _, fm in docs]
    labels = ['Overview' if nb.name == 'index.ipynb' else t for (nb, *_), t in zip(docs, titles)]
    pages_of = {nb.name: page for nb, page, _, _ in docs}

    def local_link(m, root=''):                      # notebook and nbdev-docs links -> this site's pages
        href = m[2]
        if href.startswith(docs_url): href = root + href[len(docs_url):]
        target, frag = (href.split('#', 1) + [''])[:2]
        if target.endswith('.ipynb') and Path(target).name in pages_of: href = root + pages_of[Path(target).name] + (f'#{frag}' if frag else '')
        return f'{m[1]}="{href}"'

    written = []
    for i, (nb, page, doc, fm) in enumerate(docs):
        root = '../' * page.count('/')              # pages in subfolders of nbs/ link back up
        nav = ''.join(f'<li{" class=current" if j == i else ""}><a href="{root}{p}"><span class="num">{n.stem.split("_")[0] if n.stem[0].isdigit() else ""}</span>{html.escape(t)}</a></li>'
                      for j, ((n, p, _, _), t) in enumerate(zip(docs, labels)))
        prev = f'<a href="{root}{docs[i-1][1]}">← {html.escape(labels[i-1])}</a>' if i > 0 else '<span></span>'
        nxt = f'<a href="{root}{docs[i+1][1]}">{html.escape(labels[i+1])} →</a>' if i + 1 < len(docs) else '<span></span>'
        desc = markdown2html_mistune(fm['description']) if fm.get('description') else ''
        site = {'root': root, 'nav': f'<nav class="site-nav"><a class="brand" href="{root}{docs[0][1]}">{html.escape(titles[0])}</a><ol>{nav}</ol></nav>',
                'header': f'<header class="site-title"><h1>{html.escape(titles[i])}</h1><div class="description">{desc}</div></header>',
                'pager': f'<footer class="pager">{prev}{nxt}</footer>'}
        files_dir = Path(page).with_suffix('').as_posix() + '_files'
        doc.metadata['title'] = f'{titles[i]} – {titles[0]}' if i else titles[0]
        body, res = exporter.from_notebook_node(doc, resources={'site': site, 'output_files_dir': files_dir,
                                                                'metadata': {'name': nb.stem}})
        body = re.sub(r'\b(href)="([^"]*)"', lambda m: local_link(m, root), body)
        (out/page).parent.mkdir(parents=True, exist_ok=True)
        (out/page).write_text(body)
        for name, data in res.get('outputs', {}).items():
            (out/name).parent.mkdir(parents=True, exist_ok=True); (out/name).write_bytes(data)
        written.append(out/page)
    if any(EXPLORER_LINK in p.read_text() for p in written): build_explorer(out/'explorer')
    return written


# ---------------------------------------------------------------- the explorer page: the trained MAE in the reader's browser
EXPLORER_SRC = ROOT/'explorer'                       # its HTML, JS and CSS, and package.json pinning onnxruntime-web
EXPLORER_LINK = 'explorer/index.html'                # pages that link here make build_site build it
EXPLORER_CACHE = ROOT/'build'/'explorer'             # the exported .onnx, kept between builds (named by what it is made from)
ORT_FILES = ('ort.wasm.min.js', 'ort-wasm-simd-threaded.mjs', 'ort-wasm-simd-threaded.wasm')   # the WebAssembly back end only
EXPLORER_IMAGES = 16                                 # the first test images, as the notebook's explorer


def onnxruntime_web() -> Path | None:
    """onnxruntime-web's dist/ folder, installed into explorer/node_modules by `npm ci` (the versions of package-lock.json)
    where missing or made from another lock file; None, after saying why, without npm or when the install fails."""
    import shutil
    dist, lock = EXPLORER_SRC/'node_modules'/'onnxruntime-web'/'dist', EXPLORER_SRC/'package-lock.json'
    stamp, want = EXPLORER_SRC/'node_modules'/'.mae_nb-lock', hashlib.sha256(lock.read_bytes()).hexdigest()
    if all((dist/f).is_file() for f in ORT_FILES) and stamp.is_file() and stamp.read_text() == want: return dist
    if not (npm := shutil.which('npm')):
        print(f'npm is missing: the explorer page is built without ONNX Runtime Web ({NPM_HINT})', flush=True); return None
    cmd = [npm, 'ci', '--no-audit', '--no-fund', '--ignore-scripts']
    print('+', ' '.join(cmd), f'(in {EXPLORER_SRC.relative_to(ROOT)}/)', flush=True)
    if subprocess.run(cmd, cwd=EXPLORER_SRC).returncode or not all((dist/f).is_file() for f in ORT_FILES):
        print('npm ci failed: the explorer page is built without ONNX Runtime Web', flush=True); return None
    stamp.write_text(want)
    return dist


def explorer_model() -> Path:
    "models/fmnist-mae.pt exported to ONNX by `mae_nb.weights.export_onnx`, cached in build/explorer/ under the hash of what makes it."
    from mae_nb import weights
    from mae_nb.visualize import trained_mae
    key = hashlib.sha256(LESSON_MODEL.read_bytes() + inspect.getsource(weights).encode()).hexdigest()[:16]
    onnx = EXPLORER_CACHE/f'fmnist-mae-{key}.onnx'
    if not onnx.exists():
        tmp = weights.export_onnx(trained_mae()[0], onnx.with_suffix('.tmp'))
        os.replace(tmp, onnx)
        for old in EXPLORER_CACHE.glob('fmnist-mae-*.onnx'):
            if old != onnx: old.unlink()
    return onnx


def explorer_data() -> dict:
    "What the page needs besides the model: the first test images, normalised as the model takes them, their labels, geometry, provenance."
    from mae_nb.data import FASHION_CLASSES, fashion_mnist
    from mae_nb.datasets import dataset_info
    from mae_nb.visualize import trained_mae
    model, prov = trained_mae()
    info, (imgs, labels) = dataset_info('fmnist'), fashion_mnist('test')
    mean, std = info['mean'][0], info['std'][0]
    x = (imgs[:EXPLORER_IMAGES].float() / 255 - mean) / std                      # (16, 28, 28)
    return dict(mean=mean, std=std, grid=model.cfg.grid_size, patch_size=model.cfg.patch_size, in_chans=model.cfg.in_chans,
                params_millions=round(sum(p.numel() for p in model.parameters() if p.requires_grad) / 1e6, 2),
                images=[[round(v, 6) for v in im.flatten().tolist()] for im in x],
                labels=[FASHION_CLASSES[int(l)] for l in labels[:EXPLORER_IMAGES]], provenance=prov)


def build_explorer(out: Path) -> Path:
    """The explorer page in `out` (`_docs/explorer/`): its HTML/JS/CSS, the model as ONNX, the images as JSON and
    onnxruntime-web's WebAssembly back end (from npm) in ort/. Everything it loads is in that folder: no request leaves it.
    Browsers do not run WebAssembly from file:// pages, so it works served (`python3 run.py site --serve`, or any web host)."""
    import json, shutil
    out.mkdir(parents=True, exist_ok=True)
    for f in ('index.html', 'explorer.js', 'explorer.css'): shutil.copyfile(EXPLORER_SRC/f, out/f)
    shutil.copyfile(explorer_model(), out/'mae.onnx')
    (out/'data.json').write_text(json.dumps(explorer_data(), separators=(',', ':')))
    if dist := onnxruntime_web():
        (out/'ort').mkdir(exist_ok=True)
        for f in ORT_FILES: shutil.copyfile(dist/f, out/'ort'/f)
    return out/'index.html'


# ---------------------------------------------------------------- Chromium, to check the website in a real browser
CHROMIUM_NAMES = ('chromium', 'chromium-browser', 'google-chrome', 'google-chrome-stable')
CHROMIUM_HINT = ('run `sudo apt-get install chromium` (Debian; elsewhere install Chromium or Google Chrome) so that a '
                 '`chromium` is on PATH')


def find_chromium() -> str | None:
    import shutil
    return next((p for n in CHROMIUM_NAMES if (p := shutil.which(n))), None)


NPM_HINT = 'run `sudo apt-get install npm` (Debian; elsewhere install Node.js with npm) so that an `npm` is on PATH'


def ensure_npm() -> str | None:
    "npm on PATH; where there is none, Debian's package installed with apt-get (as root, or with sudo), as `ensure_chromium` does."
    import shutil
    if exe := shutil.which('npm'): return exe
    root = os.name == 'posix' and os.geteuid() == 0
    sudo = [] if root else ['sudo', *([] if sys.stdin.isatty() else ['-n'])] if shutil.which('sudo') else None
    if shutil.which('apt-get') and sudo is not None:
        print("npm is missing: installing Debian's package with apt-get for the explorer page's ONNX Runtime Web", flush=True)
        pre = [*sudo, 'env', 'DEBIAN_FRONTEND=noninteractive'] if sudo else []
        for cmd in (['apt-get', 'update', '-q'], ['apt-get', 'install', '-y', '-q', '--no-install-recommends', 'npm']):
            print('+', ' '.join(pre + cmd), flush=True)
            if subprocess.run(pre + cmd, env={**os.environ, 'DEBIAN_FRONTEND': 'noninteractive'}).returncode: break
        if exe := shutil.which('npm'): return exe
    print(f'npm is missing and could not be installed here: {NPM_HINT}; the explorer page cannot run the model without it.', flush=True)
    return None


def ensure_chromium() -> str | None:
    """The Chromium on PATH; where there is none, Debian's package installed with apt-get (as root, or with sudo). None, after
    one line saying what to run, where that is not possible: the website's browser tests then fail under `run.py test`."""
    import shutil
    if exe := find_chromium(): return exe                                   # fast: no apt call
    root = os.name == 'posix' and os.geteuid() == 0
    sudo = [] if root else ['sudo', *([] if sys.stdin.isatty() else ['-n'])] if shutil.which('sudo') else None
    if shutil.which('apt-get') and sudo is not None:
        print("Chromium is missing: installing Debian's package with apt-get for the website's browser checks (a minute or so)",
              flush=True)
        pre = [*sudo, 'env', 'DEBIAN_FRONTEND=noninteractive'] if sudo else []
        for cmd in (['apt-get', 'update', '-q'], ['apt-get', 'install', '-y', '-q', '--no-install-recommends', 'chromium']):
            print('+', ' '.join(pre + cmd), flush=True)
            if subprocess.run(pre + cmd, env={**os.environ, 'DEBIAN_FRONTEND': 'noninteractive'}).returncode: break
        if exe := find_chromium(): return exe
    print(f"Chromium is missing and could not be installed here: {CHROMIUM_HINT}; the website's browser tests fail without it.",
          flush=True)
    return None


IMAGES_JS = """(async () => {
  const imgs = [...document.images];
  await Promise.all(imgs.map(i => i.complete ? null : new Promise(r => { i.addEventListener('load', r); i.addEventListener('error', r); })));
  return {href: location.href, n: imgs.length,
          bad: imgs.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => (i.getAttribute('src') || '').slice(0, 100))};
})()"""


class Chromium:
    """One headless Chromium, driven over the DevTools protocol on a pipe (`--remote-debugging-pipe`: JSON messages ended by
    a NUL byte on file descriptors 3 and 4), with nothing but the standard library. Use it as a context manager."""
    def __init__(self, exe: str | None = None, timeout: float = 60):
        import fcntl, tempfile
        self.exe, self.timeout = exe or find_chromium(), timeout
        if not self.exe: raise FileNotFoundError(f'no Chromium: {CHROMIUM_HINT}')
        self.profile = tempfile.TemporaryDirectory(prefix='mae_nb-chromium-')
        self.log = tempfile.TemporaryFile()
        to_r, self.to_w = os.pipe()
        self.from_r, from_w = os.pipe()
        def fds_3_and_4():                           # in the child: the browser reads commands on 3, writes on 4
            a, b = fcntl.fcntl(to_r, fcntl.F_DUPFD, 10), fcntl.fcntl(from_w, fcntl.F_DUPFD, 10)
            os.dup2(a, 3); os.dup2(b, 4)
        args = ['--headless', '--no-sandbox', '--disable-gpu', '--remote-debugging-pipe', f'--user-data-dir={self.profile.name}',
                '--no-first-run', '--no-default-browser-check', '--disable-extensions', '--mute-audio', '--hide-scrollbars',
                '--window-size=1200,1600', 'about:blank']
        self.proc = subprocess.Popen([self.exe, *args], stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT,
                                     close_fds=False, preexec_fn=fds_3_and_4)
        os.close(to_r); os.close(from_w)
        self.buf, self.last_id, self.events = bytearray(), 0, []

    def __enter__(self): return self
    def __exit__(self, *exc): self.close()

    def close(self):
        if self.proc.poll() is None:
            try: self.send('Browser.close')
            except Exception: pass
            try: self.proc.wait(10)
            except subprocess.TimeoutExpired: self.proc.kill(); self.proc.wait()
        for fd in (self.to_w, self.from_r):
            try: os.close(fd)
            except OSError: pass
        self.log.close(); self.profile.cleanup()

    def output(self) -> str:
        self.log.seek(0); return self.log.read().decode(errors='replace')[-2000:]

    def receive(self, deadline: float) -> dict:
        import json, select, time
        while (end := self.buf.find(b'\0')) < 0:
            if not select.select([self.from_r], [], [], max(0, deadline - time.monotonic()))[0]:
                raise TimeoutError(f'Chromium did not answer in time: {self.output()}')
            if not (chunk := os.read(self.from_r, 1 << 20)): raise RuntimeError(f'Chromium quit: {self.output()}')
            self.buf += chunk
        msg = json.loads(self.buf[:end]); del self.buf[:end + 1]
        return msg

    def send(self, method: str, session: str | None = None, **params) -> dict:
        "Call `method` (in the page of `session`, or of the browser) and return its result; events met meanwhile are kept."
        import json, time
        self.last_id += 1
        data = json.dumps({'id': self.last_id, 'method': method, 'params': params, **({'sessionId': session} if session else {})})
        view = memoryview(data.encode() + b'\0')
        while view: view = view[os.write(self.to_w, view):]
        deadline = time.monotonic() + self.timeout
        while (msg := self.receive(deadline)).get('id') != self.last_id: self.events.append(msg)
        if 'error' in msg: raise RuntimeError(f"{method}: {msg['error']}")
        return msg['result']

    def wait(self, session: str, test) -> dict:
        "The first event of `session` that passes `test`, among those kept or still to come."
        import time
        deadline = time.monotonic() + self.timeout
        for i, e in enumerate(self.events):
            if e.get('sessionId') == session and test(e): return self.events.pop(i)
        while True:
            e = self.receive(deadline)
            if e.get('sessionId') == session and test(e): return e
            self.events.append(e)

    def open(self, url: str) -> tuple:
        "A new tab that records its console, loading `url`."
        target = self.send('Target.createTarget', url='about:blank')['targetId']
        s = self.send('Target.attachToTarget', targetId=target, flatten=True)['sessionId']
        for domain in ('Runtime', 'Log', 'Page'): self.send(f'{domain}.enable', s)
        self.send('Page.setLifecycleEventsEnabled', s, enabled=True)
        return target, s, self.send('Page.navigate', s, url=url)

    def finish(self, url: str, target: str, s: str, nav: dict) -> tuple[int, list[str]]:
        "Once the tab of `open` has loaded: how many images it shows, and every problem (console error, image not decoded)."
        if nav.get('errorText'): probs, n = [f"it does not load: {nav['errorText']}"], 0
        else:
            self.wait(s, lambda e: e.get('method') == 'Page.lifecycleEvent' and e['params']['name'] == 'load'
                      and e['params'].get('loaderId') == nav.get('loaderId'))
            r = self.send('Runtime.evaluate', s, expression=IMAGES_JS, awaitPromise=True, returnByValue=True)
            if 'exceptionDetails' in r: raise RuntimeError(f"checking the images of {url}: {r['exceptionDetails']}")
            v = r['result']['value']
            if v['href'] != url: raise RuntimeError(f"the tab shows {v['href']}, not {url}")
            n, probs = v['n'], [f'image not decoded: {src}' for src in v['bad']]
        events, self.events = [e for e in self.events if e.get('sessionId') == s], [e for e in self.events if e.get('sessionId') != s]
        for e in events:
            m, p = e.get('method'), e.get('params', {})
            if m == 'Runtime.exceptionThrown':
                d = p['exceptionDetails']
                what = (d.get('exception') or {}).get('description') or d.get('text', '')
                probs.append(f"JavaScript error: {what.splitlines()[0] if what else d.get('text')} ({d.get('url', '')}:{d.get('lineNumber', 0) + 1})")
            elif m == 'Runtime.consoleAPICalled' and p.get('type') in ('error', 'assert'):
                probs.append('console.error: ' + ' '.join(str(a.get('value', a.get('description', ''))) for a in p.get('args', [])))
            elif m == 'Log.entryAdded' and p['entry'].get('level') == 'error':
                probs.append(f"{p['entry'].get('text', '')} {p['entry'].get('url', '')}".strip())
        self.send('Target.closeTarget', targetId=target)
        return n, probs

    def check(self, pages: list[Path], parallel: int = 4) -> dict[Path, tuple[int, list[str]]]:
        "Load each page (a file), `parallel` tabs at a time: for each, how many images it shows and its problems."
        found = {}
        for i in range(0, len(pages), parallel):
            tabs = [(p, self.open(Path(p).resolve().as_uri())) for p in pages[i:i + parallel]]
            for p, tab in tabs: found[p] = self.finish(Path(p).resolve().as_uri(), *tab)
        return found


def site_handler(directory: Path, quiet: bool = False):
    "An HTTP handler serving `directory`, with the media types the explorer's ES modules and WebAssembly need."
    import http.server
    class Handler(http.server.SimpleHTTPRequestHandler):
        extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map, '.mjs': 'text/javascript', '.js': 'text/javascript',
                          '.wasm': 'application/wasm', '.json': 'application/json', '.onnx': 'application/octet-stream'}
        def __init__(self, *a, **kw): super().__init__(*a, directory=str(directory), **kw)
        def log_message(self, *a):
            if not quiet: super().log_message(*a)
    return Handler


def check_explorer(browser: Chromium, site: Path = SITE) -> list[str]:
    "The explorer page of `site`, served on a free local port and loaded in `browser`: its problems (none when the model ran)."
    import http.server, threading
    httpd = http.server.ThreadingHTTPServer(('127.0.0.1', 0), site_handler(site, quiet=True))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    url = f'http://127.0.0.1:{httpd.server_address[1]}/explorer/index.html'
    try:
        target, s, nav = browser.open(url)
        if not nav.get('errorText'):
            load = browser.wait(s, lambda e: e.get('method') == 'Page.lifecycleEvent' and e['params']['name'] == 'load'
                                and e['params'].get('loaderId') == nav.get('loaderId'))
            browser.events.append(load)                  # `finish` waits for it too
            r = browser.send('Runtime.evaluate', s, expression='window.explorerStarted.then(() => window.explorerState)',
                             awaitPromise=True, returnByValue=True)
            ran = (r.get('result', {}).get('value') or {}).get('ready')
        _, probs = browser.finish(url, target, s, nav)
        return probs + ([] if nav.get('errorText') or ran else ['the model did not run'])
    finally: httpd.shutdown(); httpd.server_close()


def cmd_site(serve: bool, port: int = 8000):
    pages = build_site()
    print(f'wrote {len(pages)} pages to {SITE.relative_to(ROOT)}/: open {(SITE/"index.html").as_uri()}')
    if exe := find_chromium():                       # each page in a real browser: console errors, images not decoded
        with Chromium(exe) as browser:
            found = browser.check(pages)
            explorer = check_explorer(browser) if (SITE/'explorer'/'ort').is_dir() else None   # over HTTP: WebAssembly
        bad = {p.relative_to(SITE).as_posix(): probs for p, (_, probs) in found.items() if probs}
        for page, probs in bad.items(): print(f'  {page}: ' + '; '.join(probs))
        print(f'Chromium: {len(bad)} of {len(pages)} pages have problems (above)' if bad else
              f'Chromium shows every page without a console error, every image decoded')
        if explorer is not None: print(f'explorer page (served): ' + ('; '.join(explorer) if explorer else 'the model runs, no console error'))
    if serve:
        import http.server
        with http.server.ThreadingHTTPServer(('127.0.0.1', port), site_handler(SITE)) as httpd:
            print(f'serving on http://127.0.0.1:{port}/ (the explorer: http://127.0.0.1:{port}/explorer/; Ctrl-C stops)', flush=True)
            try: httpd.serve_forever()
            except KeyboardInterrupt: pass


def cmd_lab(rest, env):
    """JupyterLab on nbs/: the process becomes `jupyter lab` (where it can), so that Ctrl-C reaches the server and its kernels
    as usual. Without venv_env's MPLBACKEND=Agg (unless the user set one), so that the kernels draw figures inline."""
    env = {k: v for k, v in env.items() if k != 'MPLBACKEND'} | ({'MPLBACKEND': os.environ['MPLBACKEND']} if 'MPLBACKEND' in os.environ else {})
    cmd = [str(BIN/'jupyter'), 'lab', 'nbs/', *rest]
    if os.name != 'posix': return sh(*cmd, env=env)
    print('+', ' '.join(cmd), flush=True)
    os.chdir(ROOT)
    os.execve(cmd[0], cmd, env)


def cmd_demo_vs(ref: str, env: dict):
    """The demo of git revision `ref` (checked out in a temporary worktree), then this checkout's, one after the other on this
    machine with this .venv: the wall time of each whole command, their ratio and each linear-probe gain, printed and written
    to results/demo/vs-CPU.json. Runs on the same machine differ far less than machines do, so the ratio is the figure to compare."""
    import json, tempfile, time
    work = Path(tempfile.mkdtemp(prefix='mae_nb-demo-vs-'))
    sh('git', 'worktree', 'add', '--detach', work/'then', ref)
    runs = {}
    try:
        for name, tree in ((f'{ref}', work/'then'), ('this checkout', ROOT)):
            out, t0 = work/f'run-{len(runs)}', time.perf_counter()
            print(f'demo of {name}: output in {out}/ (log: {out}.log)', flush=True)
            with open(f'{out}.log', 'w') as log:
                r = subprocess.run([str(BIN/'python'), '-c', 'from mae_nb.cli import main; main()', 'demo', '--out', str(out)],
                                   cwd=tree, env={**env, 'PYTHONPATH': str(tree)}, stdout=log, stderr=subprocess.STDOUT)
            if r.returncode: sys.exit(f'the demo of {name} failed (status {r.returncode}): see {out}.log')
            res = json.loads(next(p for p in (out/'demo.json', out/'probe.json') if p.exists()).read_text())
            runs[name] = dict(wall_s=round(time.perf_counter() - t0, 1), gain_linear_probe=res['gain_linear_probe'],
                              pretrained=res['pretrained']['linear_probe'], random_init=res['random_init']['linear_probe'],
                              steps=res['pretrain']['step'], pretrain_s=res['pretrain_wall_s'], probe_s=res['probe_wall_s'])
            print(f"  {runs[name]['wall_s'] / 60:.1f} min in all ({res['pretrain']['step']} steps); linear probe "
                  f"{runs[name]['pretrained']:.2f} % vs {runs[name]['random_init']:.2f} % at random init: gain {res['gain_linear_probe']:+.2f} points", flush=True)
    finally: subprocess.run(['git', 'worktree', 'remove', '--force', str(work/'then')], cwd=ROOT)
    (then, a), (now, b) = runs.items()
    cpu = next((l.split(':', 1)[1].strip() for l in open('/proc/cpuinfo') if l.startswith('model name')), '?') if Path('/proc/cpuinfo').exists() else '?'
    summary = dict(ref=ref, machine=dict(cpu=cpu, cores=os.cpu_count()), runs=runs, ratio=round(b['wall_s'] / a['wall_s'], 3))
    path = ROOT/'results'/'demo'/f"vs-{re.sub(r'[^a-z0-9]+', '-', cpu.lower()).strip('-')}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary, indent=1) + '\n')
    print(f"\nthis checkout's demo took {summary['ratio']:.2f}× the time of {then}'s on {cpu} ({os.cpu_count()} cores): "
          f"{b['wall_s'] / 60:.1f} vs {a['wall_s'] / 60:.1f} min; gains {b['gain_linear_probe']:+.2f} vs {a['gain_linear_probe']:+.2f} points "
          f"(written to {path.relative_to(ROOT)})")


LESSON_MODEL = ROOT/'models'/'fmnist-mae.pt'


def cmd_lesson_model(rest, env):
    """Re-make the trained model the lesson notebooks load (models/fmnist-mae.pt): `mae_nb demo` (the demo's recipe and seed)
    in a temporary folder, then its weights and configuration without the optimiser's state, and the provenance beside them
    (fmnist-mae.json: command, commit, seed, final loss, probe accuracies, machine, time) and its training log. Extra arguments go to the demo;
    `--to DIR` writes into DIR instead of models/ (the test makes a tiny one that way); `--from RUN` exports the finished demo
    run in RUN instead of running one (its provenance then says so)."""
    import tempfile
    opts = {}
    for flag in ('--to', '--from'):
        if flag in rest:
            i = rest.index(flag); opts[flag] = Path(rest[i + 1]).resolve(); rest = rest[:i] + rest[i + 2:]
    to, env = opts.get('--to', LESSON_MODEL.parent), {**env, 'PYTHONPATH': str(ROOT)}
    if '--from' in opts: return sh(BIN/'python', ROOT/'run.py', '_lesson_model', opts['--from'], to, '--from', opts['--from'], env=env)
    with tempfile.TemporaryDirectory(prefix='mae_nb-lesson-model-') as work:
        run = Path(work)/'demo'
        sh(BIN/'python', '-c', 'from mae_nb.cli import main; main()', 'demo', '--out', run, '--no-progress', *rest, env=env)
        sh(BIN/'python', ROOT/'run.py', '_lesson_model', run, to, *rest, env=env)


def export_lesson_model(run: Path, to: Path, demo_args: list[str]):
    "Inside .venv: the demo run in `run` -> `to`/fmnist-mae.pt (weights and config, loadable with weights_only) + fmnist-mae.json."
    import datetime, hashlib, json, platform, torch
    ck = torch.load(run/'checkpoint.pt', map_location='cpu', weights_only=True)
    res = json.loads((run/'demo.json').read_text())
    to.mkdir(parents=True, exist_ok=True)
    pt, tmp = to/LESSON_MODEL.name, to/(LESSON_MODEL.name + '.tmp')
    torch.save(dict(config=ck['config'], model=ck['model']), tmp); os.replace(tmp, pt)
    git = lambda *a: subprocess.run(['git', *a], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    prov = dict(
        command=' '.join(['python3 run.py lesson-model', *(os.path.relpath(a, ROOT) if os.path.isabs(str(a)) else str(a) for a in demo_args)]), commit=git('rev-parse', 'HEAD'),
        uncommitted_changes=bool(git('status', '--porcelain', '--untracked-files=no')), seed=ck.get('train_config', {}).get('seed', 0),
        recipe={k: res['demo_config'][k] for k in ('epochs', 'batch_size', 'blr', 'warmup_epochs', 'decoder_depth', 'mask_ratio', 'limit')},
        steps=res['pretrain']['step'], final_loss=round(res['pretrain']['final_loss'], 4),
        linear_probe=res['pretrained']['linear_probe'], knn=res['pretrained']['knn'],
        linear_probe_random_init=res['random_init']['linear_probe'], probe_test_images=res['pretrained']['eval_images'],
        pretrain_minutes=round(res['pretrain_wall_s'] / 60, 1), machine=res['machine'], torch=torch.__version__,
        python=platform.python_version(), made=datetime.date.today().isoformat(),
        sha256=hashlib.sha256(pt.read_bytes()).hexdigest(), megabytes=round(pt.stat().st_size / 2**20, 2))
    if '--from' in demo_args:                        # an earlier demo run, exported: when it ran, not the commit it ran at
        prov.update(commit=None, exported_at_commit=prov['commit'], demo_finished=datetime.datetime.fromtimestamp(
            (run/'checkpoint.pt').stat().st_mtime, datetime.timezone.utc).isoformat(timespec='minutes'),
            note='exported from a finished `mae_nb demo` run (same recipe and seed); `python3 run.py lesson-model` re-makes it from scratch')
    (to/'fmnist-mae.json').write_text(json.dumps(prov, indent=1) + '\n')
    (to/'fmnist-mae-metrics.jsonl').write_text((run/'metrics.jsonl').read_text())     # its training log, for the loss curve
    print(f"wrote {pt} ({prov['megabytes']} MB) and its provenance {to/'fmnist-mae.json'}: loss {prov['final_loss']}, "
          f"linear probe {prov['linear_probe']} % (random init {prov['linear_probe_random_init']} %)")


def main(argv):
    cmds = ('demo', 'demo-vs', 'test', 'readme', 'site', 'lab', 'lesson-model')
    if not argv or argv[0] not in cmds + ('_readme', '_site', '_lesson_model'):
        print(__doc__); sys.exit(0 if argv[:1] in ([], ['-h'], ['--help']) else 2)
    cmd, rest = argv[0], argv[1:]
    if cmd == '_readme': return cmd_readme()          # already inside .venv
    if cmd == '_lesson_model': return export_lesson_model(Path(rest[0]), Path(rest[1]), rest[2:])
    if cmd == '_site': return cmd_site('--serve' in rest, *[int(a) for a in rest if a.isdigit()])
    ensure_venv()
    env = venv_env()
    if cmd == 'demo': sh(BIN/'mae_nb', 'demo', *rest, env=env)
    elif cmd == 'demo-vs':
        if len(rest) != 1: sys.exit('usage: python3 run.py demo-vs REF   (a git revision, e.g. main or a commit)')
        cmd_demo_vs(rest[0], env)
    elif cmd == 'readme': sh(BIN/'python', ROOT/'run.py', '_readme', env=env)
    elif cmd == 'site':
        ensure_chromium(); ensure_npm()
        sh(BIN/'python', ROOT/'run.py', '_site', *rest, env=env)
    elif cmd == 'lab': cmd_lab(rest, env)
    elif cmd == 'lesson-model': cmd_lesson_model(rest, env)
    elif cmd == 'test':
        ensure_chromium(); ensure_npm()              # the website's browser tests fail (not skip) without them
        env['MAE_NB_REQUIRE_BROWSER'] = '1'
        # As many at a time as there are cores, one thread each: processes that each spin a thread per core slow each
        # other several-fold (OpenMP threads busy-wait); on 2 cores that made the suite three times longer.
        workers = str(min(os.cpu_count() or 1, 16))
        env.setdefault('OMP_NUM_THREADS', '1')
        sh(BIN/'nbdev_test', '--timing', '--n_workers', workers, *rest, env=env)
        sh(BIN/'python', '-m', 'pytest', '-q', 'tests', '-n', workers, '--dist', 'loadfile', env=env)   # a file's tests share one process


if __name__ == '__main__': main(sys.argv[1:])
