"""The explorer page (issue 23): the trained MAE exported to ONNX computes what PyTorch computes, and the page built by
`run.build_explorer` runs it in headless Chromium (ONNX Runtime Web) with the same result for the same image and kept
patches, reacts to a clicked patch and to a drawing, and logs no error. Without Chromium or npm (ONNX Runtime Web) the
browser tests fail under `python3 run.py test` (MAE_NB_REQUIRE_BROWSER=1) and are skipped by a plain pytest, as the
website's tests."""
import base64, json, os, threading, time
from pathlib import Path
import numpy as np, pytest, torch
from conftest import ROOT
import run
from mae_nb.masking import num_keep
from mae_nb.visualize import trained_mae
from mae_nb.weights import KeptPatchesMAE, kept_noise

SHOTS = ROOT/'_screenshots'


@pytest.fixture(scope='module')
def model(): return trained_mae()[0]


def python_pred(model, img, kept) -> tuple[np.ndarray, float]:
    "PyTorch's prediction (N, p*p) and loss for one normalised image (flat list) with the patches `kept` visible, by the model's own forward."
    x = torch.tensor(img, dtype=torch.float32).view(1, 1, 28, 28)
    noise, r = kept_noise(torch.tensor([kept]), model.cfg.num_patches)
    with torch.no_grad(): out = model(x, mask_ratio=r, noise=noise)
    assert (out.mask[0] == 0).nonzero()[:, 0].tolist() == sorted(kept)
    return out.pred[0].numpy(), float(out.loss)


def test_onnx_equals_pytorch(model):
    "onnxruntime on the exported file vs the model's forward, on the same images and kept patches: 1, 5, 14, 25 and all 49."
    ort = pytest.importorskip('onnxruntime', reason='onnxruntime is a dev extra: pip install -e ".[dev]"')
    sess = ort.InferenceSession(str(run.explorer_model()))
    data = run.explorer_data()
    g = torch.Generator().manual_seed(0)
    for i, k in enumerate((1, 5, 14, 25, 49)):
        img, kept = data['images'][i], torch.randperm(49, generator=g)[:k].tolist()
        pred, loss, mask = sess.run(None, {'imgs': np.array(img, np.float32).reshape(1, 1, 28, 28), 'ids_keep': np.array([kept])})
        ref, ref_loss = python_pred(model, img, kept)
        assert pred.shape == (1, 49, 16) and np.abs(pred[0] - ref).max() <= 1e-4, (k, np.abs(pred[0] - ref).max())
        assert abs(float(loss[0]) - ref_loss) <= 1e-4 and mask[0].sum() == 49 - k


@pytest.fixture(scope='module')
def served(tmp_path_factory):
    "The explorer page built into a temporary folder and served on a local port, as a web host would serve _docs/."
    import http.server
    out = tmp_path_factory.mktemp('site')
    run.build_explorer(out/'explorer')
    if not (out/'explorer'/'ort').is_dir():                   # no npm, or npm ci failed (it said why)
        msg = f'no ONNX Runtime Web for the explorer page: {run.NPM_HINT}'
        if os.environ.get('MAE_NB_REQUIRE_BROWSER') == '1': pytest.fail(msg)
        pytest.skip(msg)
    httpd = http.server.ThreadingHTTPServer(('127.0.0.1', 0), run.site_handler(out, quiet=True))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield out, f'http://127.0.0.1:{httpd.server_address[1]}/explorer/index.html'
    httpd.shutdown(); httpd.server_close()


def test_page_is_complete(served):
    "Everything the page loads is in its folder, from the project (no network): model, data, ONNX Runtime Web's back end."
    out, _ = served
    d = out/'explorer'
    for f in ('index.html', 'explorer.js', 'mae.onnx', 'data.json', *(f'ort/{f}' for f in run.ORT_FILES)):
        assert (d/f).is_file() and (d/f).stat().st_size > 0, f'{f} is missing: is npm installed?'
    html = (d/'index.html').read_text() + (d/'explorer.js').read_text()
    assert 'http://' not in html and 'https://' not in html and '//cdn' not in html
    data = json.loads((d/'data.json').read_text())
    assert len(data['images']) == 16 and len(data['images'][0]) == 784 and data['provenance']['command'].startswith('python3 run.py')


def js(browser, s, expr):
    r = browser.send('Runtime.evaluate', s, expression=expr, awaitPromise=True, returnByValue=True)
    if 'exceptionDetails' in r: raise AssertionError(f"{expr[:80]}: {r['exceptionDetails']}")
    return r['result'].get('value')


def test_explorer_in_a_browser(served, model):
    """Chromium: set image, ratio and seed with the page's controls; the page's prediction equals PyTorch's for the same image
    and kept patches (≤ 1e-4); block and grid masks keep the right number of patches; a click on a patch hides it and
    changes the prediction; an image drawn with the mouse goes through the model too; every file it loads comes from
    its own folder; no console error. A screenshot goes to _screenshots/explorer.png."""
    from test_site import chromium
    out, url = served
    data = json.loads((out/'explorer'/'data.json').read_text())
    t0 = time.perf_counter()
    with run.Chromium(chromium()) as browser:
        target, s, nav = browser.open(url)
        assert not nav.get('errorText'), nav
        load = browser.wait(s, lambda e: e.get('method') == 'Page.lifecycleEvent' and e['params']['name'] == 'load'
                            and e['params'].get('loaderId') == nav.get('loaderId'))
        browser.events.append(load)                              # for `finish`, which checks the console at the end
        state = js(browser, s, 'window.explorerStarted.then(() => window.explorerIdle())')
        if not (state and state.get('ready')): print(browser.finish(url, target, s, nav)[1])
        assert state and state['ready'], state
        set_ = lambda id, v, ev: js(browser, s, f"(() => {{ const e = document.getElementById('{id}'); e.value = {v!r}; "
                                                 f"e.dispatchEvent(new Event('{ev}')); return window.explorerIdle(); }})()")
        set_('image', '3', 'change'); set_('seed', '7', 'input')
        state = set_('ratio', '0.6', 'input')
        assert (state['index'], state['seed'], state['ratio'], state['strategy']) == (3, 7, 0.6, 'random')
        assert len(state['kept']) == num_keep(49, 0.6) == 19
        ref, ref_loss = python_pred(model, data['images'][3], state['kept'])
        assert np.abs(np.array(state['pred']).reshape(49, 16) - ref).max() <= 1e-4
        assert abs(state['loss'] - ref_loss) <= 1e-4
        for strategy, kept in (('block', num_keep(49, 0.6)), ('grid', num_keep(49, 1 - 1 / 2**2))):   # grid snaps 0.6 to 0.75
            assert len(set_('strategy', strategy, 'change')['kept']) == kept, strategy
        before = set_('strategy', 'random', 'change')
        box = js(browser, s, "(() => { const r = document.getElementById('visible').getBoundingClientRect(); "
                             "return [r.left, r.top, r.width]; })()")
        patch = before['kept'][0]                                # click the first visible patch: it hides
        x, y = box[0] + (patch % 7 + 0.5) * box[2] / 7, box[1] + (patch // 7 + 0.5) * box[2] / 7
        for kind in ('mousePressed', 'mouseReleased'):
            browser.send('Input.dispatchMouseEvent', s, type=kind, x=x, y=y, button='left', clickCount=1)
        after = js(browser, s, 'window.explorerIdle()')
        assert after['runs'] > before['runs'] and after['kept'] == [k for k in before['kept'] if k != patch], (before['kept'], after['kept'])
        ref, _ = python_pred(model, data['images'][3], after['kept'])
        assert np.abs(np.array(after['pred']).reshape(49, 16) - ref).max() <= 1e-4
        assert np.abs(np.array(after['pred']) - np.array(before['pred'])).max() > 1e-3, 'the prediction did not change'
        box = js(browser, s, "(() => { const r = document.getElementById('original').getBoundingClientRect(); "
                             "return [r.left, r.top, r.width]; })()")
        js(browser, s, "document.getElementById('clear').click(); window.explorerIdle()")   # a blank canvas, then a stroke
        for kind, f in (('mousePressed', 0.3), ('mouseMoved', 0.5), ('mouseMoved', 0.7), ('mouseReleased', 0.7)):
            browser.send('Input.dispatchMouseEvent', s, type=kind, x=box[0] + f * box[2], y=box[1] + f * box[2], button='left',
                         buttons=1, clickCount=1)
        drawn = js(browser, s, 'new Promise(r => setTimeout(r, 200)).then(window.explorerIdle)')   # (moves come with frames)
        img = np.array(drawn['image']) > 1                       # the stroke's bright pixels
        assert drawn['drawn'] and drawn['index'] is None and drawn['kept'] == after['kept'] and img.sum() >= 20, img.sum()
        ref, _ = python_pred(model, drawn['image'], drawn['kept'])
        assert np.abs(np.array(drawn['pred']).reshape(49, 16) - ref).max() <= 1e-4
        set_('image', '3', 'change')
        SHOTS.mkdir(exist_ok=True)
        (SHOTS/'explorer.png').write_bytes(base64.b64decode(browser.send('Page.captureScreenshot', s, format='png')['data']))
        summary = js(browser, s, "document.getElementById('summary').textContent")
        assert 'loss on the hidden patches' in summary, summary
        loaded = js(browser, s, "performance.getEntriesByType('resource').map(e => e.name)")
        assert {'mae.onnx', 'data.json', *run.ORT_FILES} <= {u.rsplit('/', 1)[-1] for u in loaded}, loaded
        origin = url.split('/explorer/')[0]
        assert all(u.startswith(origin + '/explorer/') or u.startswith('data:') for u in loaded), f'requests leave the page: {loaded}'
        _, problems = browser.finish(url, target, s, nav)
    assert not problems, problems
    print(f'explorer checked in Chromium in {time.perf_counter() - t0:.1f} s; one inference {after["ms"]:.1f} ms')


def test_explore_panels_from_the_package(model):
    "The package's own `explore_panels` (not the notebook's namespace, which imports more) draws its four panels."
    import matplotlib; matplotlib.use('Agg')
    from mae_nb.visualize import explore_panels
    fig = explore_panels(model, torch.rand(2, 1, 28, 28), index=1, masking='grid', seed=3)
    assert len(fig.axes) == 4
