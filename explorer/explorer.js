// The explorer page: the trained MAE (mae.onnx, written by `export_onnx` at site-build time) run by ONNX Runtime Web.
// data.json (also written at build time) holds the test images, normalised as the model takes them, the
// model's geometry and its provenance. `window.explorerState` is the page's last result, for the browser test.
'use strict';
(() => {
  const $ = id => document.getElementById(id);
  const SCALE = 7;                                   // screen pixels per image pixel on the 196-px canvases
  let data, session, G, P, N;                        // grid side, patch side, patch count
  const ui = { index: 0, ratio: 0.75, strategy: 'random', seed: 0, kept: [], drawn: null };   // drawn: the reader's image, if any
  let pending = null, running = null;                // at most one inference in flight, the latest request queued

  // ---- a small seeded generator (mulberry32): the page's masks are reproducible, not torch's
  function rng(seed) {
    let a = (seed >>> 0) ^ 0x9e3779b9;
    return () => {
      a = (a + 0x6d2b79f5) >>> 0;
      let t = Math.imul(a ^ (a >>> 15), 1 | a);
      t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
      return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
    };
  }
  const roundEven = x => { const r = Math.round(x); return (Math.abs(x % 1) === 0.5 && r % 2) ? r - 1 : r; };   // as torch.round
  const numKeep = r => Math.floor(N * (1 - r));      // mae_nb.masking.num_keep
  const gridSide = r => Math.max(2, Math.round(Math.pow(1 - r, -0.5)));

  // ---- the three strategies of mae_nb.masking, as per-patch noise: the patches with the smallest noise stay visible
  function blockRemoved(r, rand) {                   // block_noise: random rectangles until the ratio is reached
    const target = N - numKeep(r), minBlock = Math.max(1, Math.floor(N / 12));
    const removed = new Array(N).fill(false);
    let count = 0;
    for (let t = 0; t < 100 && count < target; t++) {
      const left = target - count, u = [rand(), rand(), rand(), rand()];
      const area = minBlock + (Math.max(left, minBlock) - minBlock) * u[0];
      const aspect = Math.exp(Math.log(0.3) + 2 * Math.log(1 / 0.3) * u[1]);
      const bh = roundEven(Math.sqrt(area * aspect)), bw = roundEven(Math.sqrt(area / aspect));
      if (bh < 1 || bh > G || bw < 1 || bw > G) continue;
      const top = Math.floor(u[2] * Math.max(1, G - bh + 1)), lft = Math.floor(u[3] * Math.max(1, G - bw + 1));
      const cells = [];
      for (let i = top; i < top + bh; i++) for (let j = lft; j < lft + bw; j++) if (!removed[i * G + j]) cells.push(i * G + j);
      if (cells.length === 0 || cells.length > left) continue;
      cells.forEach(c => { removed[c] = true; }); count += cells.length;
    }
    return removed;
  }
  function gridRemoved(r, rand) {                    // grid_noise: one patch kept per s×s cell, at a random offset
    const s = gridSide(r), offRow = Math.floor(rand() * s), offCol = Math.floor(rand() * s);
    const mod = (a, b) => ((a % b) + b) % b;
    return Array.from({ length: N }, (_, k) => !(mod(Math.floor(k / G) - offRow, s) === 0 && mod(k % G - offCol, s) === 0));
  }
  function drawMask() {                              // -> the kept patch indices, ascending
    const rand = rng(ui.seed * 7919 + ['random', 'block', 'grid'].indexOf(ui.strategy));
    let r = ui.ratio;
    if (ui.strategy === 'grid') r = 1 - 1 / gridSide(r) ** 2;
    const removed = ui.strategy === 'block' ? blockRemoved(r, rand) : ui.strategy === 'grid' ? gridRemoved(r, rand) : new Array(N).fill(false);
    const noise = removed.map(x => rand() + (x ? 1 : 0));
    const order = [...noise.keys()].sort((a, b) => noise[a] - noise[b]);
    return order.slice(0, Math.max(1, numKeep(r))).sort((a, b) => a - b);
  }

  // ---- drawing: patches (N, P*P) in normalised units -> grey levels
  const pixel = v => Math.min(1, Math.max(0, v * data.std + data.mean));
  function paint(canvas, valueAt) {                  // valueAt(row, col) -> grey in [0, 1], or null for a hidden patch
    const ctx = canvas.getContext('2d');
    for (let y = 0; y < G * P; y++) for (let x = 0; x < G * P; x++) {
      const v = valueAt(y, x);
      ctx.fillStyle = v === null ? '#7f7f7f' : `rgb(${Array(3).fill(Math.round(255 * v)).join(',')})`;
      ctx.fillRect(x * SCALE, y * SCALE, SCALE, SCALE);
    }
  }
  const patchOf = (y, x) => Math.floor(y / P) * G + Math.floor(x / P);
  const inPatch = (y, x) => (y % P) * P + (x % P);   // patchify's order inside a patch (one channel)

  function draw(img, kept, pred) {
    const isKept = new Array(N).fill(false); kept.forEach(k => { isKept[k] = true; });
    const at = (y, x) => img[y * G * P + x];
    const predAt = (y, x) => pred[patchOf(y, x) * P * P + inPatch(y, x)];
    paint($('original'), (y, x) => pixel(at(y, x)));
    paint($('visible'), (y, x) => isKept[patchOf(y, x)] ? pixel(at(y, x)) : null);
    paint($('prediction'), (y, x) => pixel(predAt(y, x)));
    paint($('pasted'), (y, x) => pixel(isKept[patchOf(y, x)] ? at(y, x) : predAt(y, x)));
    const ctx = $('visible').getContext('2d');       // the patch grid, where clicks land
    ctx.strokeStyle = 'rgba(255,255,255,0.25)';
    for (let i = 1; i < G; i++) {
      ctx.beginPath(); ctx.moveTo(i * P * SCALE, 0); ctx.lineTo(i * P * SCALE, G * P * SCALE); ctx.stroke();
      ctx.beginPath(); ctx.moveTo(0, i * P * SCALE); ctx.lineTo(G * P * SCALE, i * P * SCALE); ctx.stroke();
    }
  }

  // ---- the model
  async function infer() {
    const index = ui.drawn ? null : ui.index, kept = ui.kept.slice(), img = ui.drawn ? ui.drawn.slice() : data.images[index];
    const feeds = {
      imgs: new ort.Tensor('float32', Float32Array.from(img), [1, data.in_chans, G * P, G * P]),
      ids_keep: new ort.Tensor('int64', BigInt64Array.from(kept.map(BigInt)), [1, kept.length]),
    };
    const t0 = performance.now();
    const out = await session.run(feeds);
    const ms = performance.now() - t0;
    const pred = Array.from(out.pred.data), loss = out.loss.data[0];
    draw(img, kept, pred);
    const hidden = N - kept.length;
    $('summary').textContent = `${hidden} of ${N} patches hidden (${Math.round(100 * hidden / N)} %) · ` +
      (hidden ? `loss on the hidden patches ${loss.toFixed(4)}` : 'nothing hidden: no loss') + ` · ${ms.toFixed(1)} ms`;
    window.explorerState = { ready: true, index, drawn: !!ui.drawn, image: Array.from(img), kept, ratio: ui.ratio, strategy: ui.strategy, seed: ui.seed,
                             pred, loss: hidden ? loss : null, ms, runs: (window.explorerState?.runs || 0) + 1 };
  }
  function update() {                                // run the model on the current choice (coalescing rapid changes)
    pending = true;
    if (!running) running = (async () => {
      while (pending) { pending = false; await infer(); }
      running = null;
    })().catch(fail);
    return running;
  }
  window.explorerIdle = async () => { while (running) await running; return window.explorerState; };

  function showDrawn() {                            // the image list says that the image is the reader's
    if (![...$('image').options].some(o => o.value === 'drawn')) $('image').add(new Option('drawn by you', 'drawn'));
    $('image').value = 'drawn';
  }
  function newMask() { ui.kept = drawMask(); return update(); }
  function fail(e) {
    const s = $('summary'); s.classList.add('error');
    s.textContent = location.protocol === 'file:'
      ? 'The explorer needs the page to be served over HTTP (browsers do not load WebAssembly from files): run `python3 run.py site --serve` and open /explorer/.'
      : `The model could not run: ${e.message || e}`;
    console.error(e);
  }

  async function start() {
    data = await (await fetch('data.json')).json();
    G = data.grid; P = data.patch_size; N = G * G;
    const p = data.provenance;
    $('provenance').innerHTML = `A ViT with ${data.params_millions} M parameters (the <code>fmnist</code> preset: 28×28 images in ${N} patches of ` +
      `${P}×${P}), pretrained for ${p.steps} steps (${p.recipe.epochs} epochs, ${Math.round(100 * p.recipe.mask_ratio)} % hidden, seed ${p.seed}) ` +
      `by <code>${p.command}</code>; final loss ${p.final_loss}; a linear probe on its features reaches ${p.linear_probe} % on the ` +
      `${p.probe_test_images} test images (${p.linear_probe_random_init} % for the same encoder untrained). Made ${p.made}.`;
    data.labels.forEach((l, i) => $('image').add(new Option(`${i}: ${l}`, i)));
    ort.env.wasm.numThreads = 1;                     // no cross-origin isolation on a static site: one thread
    ort.env.wasm.wasmPaths = new URL('ort/', location.href).href;
    session = await ort.InferenceSession.create('mae.onnx', { executionProviders: ['wasm'] });
    $('image').onchange = e => { if (e.target.value !== 'drawn') { ui.index = +e.target.value; ui.drawn = null; } update(); };
    $('clear').onclick = () => { ui.drawn = new Array(G * P * G * P).fill(-data.mean / data.std); showDrawn(); update(); };
    let last = null;                                 // drawing on the original: a soft round brush, white, along the stroke
    const stamp = (cx, cy) => {
      const side = G * P;
      for (let y = Math.floor(cy - 2); y <= cy + 2; y++) for (let x = Math.floor(cx - 2); x <= cx + 2; x++) {
        if (x < 0 || y < 0 || x >= side || y >= side) continue;
        const ink = Math.min(1, Math.max(0, 1.6 - Math.hypot(x + 0.5 - cx, y + 0.5 - cy)));
        if (ink > 0) ui.drawn[y * side + x] = Math.max(ui.drawn[y * side + x], (ink - data.mean) / data.std);
      }
    };
    const brush = e => {
      const box = e.target.getBoundingClientRect(), side = G * P;
      const cx = (e.clientX - box.left) / box.width * side, cy = (e.clientY - box.top) / box.height * side;
      if (!ui.drawn) { ui.drawn = data.images[ui.index].slice(); showDrawn(); }
      const [x0, y0] = last || [cx, cy], steps = Math.max(1, Math.ceil(2 * Math.hypot(cx - x0, cy - y0)));
      for (let i = 1; i <= steps; i++) stamp(x0 + (cx - x0) * i / steps, y0 + (cy - y0) * i / steps);
      last = [cx, cy];
      update();
    };
    $('original').onmousedown = e => { last = null; brush(e); };
    $('original').onmousemove = e => { if (last && e.buttons & 1) brush(e); };
    window.addEventListener('mouseup', () => { last = null; });
    $('ratio').oninput = e => { ui.ratio = +e.target.value; $('ratio-out').textContent = `${Math.round(100 * ui.ratio)} %`; newMask(); };
    $('strategy').onchange = e => { ui.strategy = e.target.value; newMask(); };
    $('seed').oninput = e => { ui.seed = Math.max(0, Math.floor(+e.target.value || 0)); newMask(); };
    $('redraw').onclick = () => { $('seed').value = ui.seed = ui.seed + 1; newMask(); };
    $('visible').onclick = e => {                    // toggle the clicked patch (one stays visible at least)
      const box = e.target.getBoundingClientRect();
      const col = Math.floor((e.clientX - box.left) / box.width * G), row = Math.floor((e.clientY - box.top) / box.height * G);
      if (row < 0 || col < 0 || row >= G || col >= G) return;
      const k = row * G + col, at = ui.kept.indexOf(k);
      if (at >= 0 && ui.kept.length > 1) ui.kept.splice(at, 1);
      else if (at < 0) ui.kept = [...ui.kept, k].sort((a, b) => a - b);
      update();
    };
    await newMask();
  }
  window.explorerStarted = start().catch(fail);
})();
