// PolyCert dashboard: a hash-routed page over the service's read-only API. No framework, no external URL.
// Every number drawn comes from an API response; the page only lays it out (no verification logic here).

const $app = document.getElementById("app");
const SVGNS = "http://www.w3.org/2000/svg";
const COLOURS = { lp: "#d9822b", klp: "#8e44ad", mip: "#1f6fb2", attack: "#6b7b8c", lower: [200, 50, 43], upper: [34, 88, 184] };
let timers = [];       // intervals of the current page, cleared on navigation
let generation = 0;    // increments on navigation: late answers of a left page are dropped

// ---------------------------------------------------------------- helpers
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  setAttrs(node, attrs);
  append(node, children);
  return node;
}
function sv(tag, attrs = {}, ...children) {
  const node = document.createElementNS(SVGNS, tag);
  setAttrs(node, attrs);
  append(node, children);
  return node;
}
function setAttrs(node, attrs) {
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "onclick" || k === "onchange" || k === "oninput" || k === "onkeydown") node.addEventListener(k.slice(2), v);
    else if (k === "text") node.textContent = v;
    else node.setAttribute(k, v === true ? "" : String(v));
  }
}
function append(node, children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}
class ApiError extends Error {
  constructor(status, detail) { super(detail); this.status = status; }
}
async function api(path, options = {}) {
  const response = await fetch(path, { headers: { "Accept": "application/json", ...(options.body ? { "Content-Type": "application/json" } : {}) }, ...options });
  const text = await response.text();
  let body = null;
  try { body = text ? JSON.parse(text) : null; } catch { body = { detail: text }; }
  if (!response.ok) {
    const d = body && body.detail;
    throw new ApiError(response.status, typeof d === "string" ? d : JSON.stringify(d));
  }
  return body;
}
function qs(params) {
  const p = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== null && v !== undefined && v !== "") p.set(k, v);
  const s = p.toString();
  return s ? "?" + s : "";
}
const fmt = (v, digits = 4) => (v === null || v === undefined ? "—" : Number.isInteger(v) ? String(v) : Number(v).toPrecision(digits));
const pct = (v) => (v === null || v === undefined ? "—" : (100 * v).toFixed(v === 0 || v === 1 ? 0 : 1) + " %");
const when = (iso) => (iso ? new Date(iso).toISOString().replace("T", " ").slice(0, 19) + " UTC" : "—");
function seconds(a, b) {
  if (!a || !b) return "—";
  const s = (new Date(b) - new Date(a)) / 1000;
  return s < 90 ? s.toFixed(1) + " s" : (s / 60).toFixed(1) + " min";
}
function badge(word) { return el("span", { class: "badge " + String(word || "").replace(/\s+/g, "-"), text: word ?? "—" }); }
function errorBox(e) { return el("p", { class: "error", text: e instanceof ApiError ? `${e.status}: ${e.message}` : String(e.message || e) }); }
function every(ms, fn) { const id = setInterval(fn, ms); timers.push(id); return id; }
function scroll(table) { return el("div", { class: "scroll" }, table); }
function stat(value, label) { return el("div", { class: "stat" }, el("b", { text: value }), el("span", { text: label })); }

// colours
function mix(rgb, t) { // white -> rgb as t goes 0 -> 1
  t = Math.max(0, Math.min(1, t));
  const c = rgb.map((v) => Math.round(255 + (v - 255) * t));
  return `rgb(${c[0]},${c[1]},${c[2]})`;
}
function grey(t) { const v = Math.round(255 * (1 - Math.max(0, Math.min(1, t)))); return `rgb(${v},${v},${v})`; }
function diverging(v, max) { // negative brown-orange, positive teal, white at 0
  const t = max > 0 ? Math.max(-1, Math.min(1, v / max)) : 0;
  return t >= 0 ? mix([1, 110, 110], t) : mix([178, 84, 16], -t);
}

// A square image of `values` (row-major, side x side) as SVG cells carrying their value.
function pixelGrid(values, side, colour, { size = 168, label = "", kind = "", title = (i, v) => `pixel ${i}: ${fmt(v)}` } = {}) {
  const cell = size / side;
  const svg = sv("svg", { width: size, height: size, viewBox: `0 0 ${size} ${size}`, class: "grid-image", "data-kind": kind,
                          "data-side": side, role: "img", "aria-label": label });
  values.forEach((v, i) => {
    const r = sv("rect", { x: (i % side) * cell, y: Math.floor(i / side) * cell, width: cell + 0.05, height: cell + 0.05,
                           fill: colour(v), "data-pixel": i, "data-value": v });
    r.append(sv("title", { text: title(i, v) }));
    svg.append(r);
  });
  return svg;
}
function figure(caption, node, scale) { return el("figure", { class: "map" }, el("figcaption", { text: caption }), node, scale || null); }
function rampScale(css, lo, hi, unit = "") {
  return el("div", { class: "scale" }, el("span", { text: lo + unit }), el("span", { class: "ramp", style: `background: linear-gradient(90deg, ${css})` }), el("span", { text: hi + unit }));
}
function imageRange(values) {
  const lo = Math.min(0, ...values), hi = Math.max(1, ...values);
  return [lo, hi];
}
function inputImage(values, side, caption, opts = {}) {
  const [lo, hi] = opts.range || imageRange(values);
  const g = pixelGrid(values, side, (v) => grey((v - lo) / (hi - lo)), { size: opts.size || 140, kind: opts.kind || "input", label: caption });
  return figure(caption, g, rampScale("#fff, #000", fmt(lo, 2), fmt(hi, 2)));
}

// Horizontal bars of logits; the predicted class bold, the label marked.
function logitBars(logits, { label = null, kind = "logits" } = {}) {
  const w = 320, row = 17, pad = 34, h = logits.length * row + 20;
  const lo = Math.min(0, ...logits), hi = Math.max(0, ...logits), span = hi - lo || 1;
  const x = (v) => pad + ((v - lo) / span) * (w - pad - 60);
  const best = logits.indexOf(Math.max(...logits));
  const svg = sv("svg", { viewBox: `0 0 ${w} ${h}`, class: "chart logits", "data-kind": kind, role: "img", "aria-label": "logits" });
  svg.append(sv("line", { x1: x(0), x2: x(0), y1: 4, y2: h - 14, stroke: "#8a96a5" }));
  logits.forEach((v, i) => {
    const y = 6 + i * row;
    const fill = i === best ? "#1f6fb2" : "#9fb3c8";
    svg.append(sv("text", { x: 4, y: y + 11, "font-size": 11, "font-weight": i === best ? 700 : 400, fill: "#34404f", text: `${i}${i === label ? " ★" : ""}` }));
    svg.append(sv("rect", { x: Math.min(x(0), x(v)), y, width: Math.max(1, Math.abs(x(v) - x(0))), height: row - 5, fill, "data-class": i, "data-value": v }));
    svg.append(sv("text", { x: Math.max(x(0), x(v)) + 4, y: y + 10, "font-size": 10, fill: "#4a5665", text: fmt(v, 3) }));
  });
  svg.append(sv("text", { x: w / 2, y: h - 2, "font-size": 10, "text-anchor": "middle", fill: "#5d6b7c", text: "logit (network output) · bold: predicted · ★: label" }));
  return svg;
}

// Bars of shares (0..1) with labels.
function shareBars(rows, colour) {
  return el("div", { class: "bars" }, rows.map((r) => el("div", { class: "row", "data-key": r.key, "data-value": r.value },
    el("span", { text: r.label, title: r.label }),
    el("span", { class: "track" }, el("span", { class: "fill", style: `width:${(100 * r.value).toFixed(2)}%;background:${r.colour || colour}` })),
    el("span", { class: "v", text: pct(r.value) }))));
}

// ---------------------------------------------------------------- routing
const routes = [
  [/^\/?$/, () => { location.hash = "#/networks"; }],
  [/^\/networks$/, pageNetworks],
  [/^\/networks\/(\d+)$/, pageNetwork],
  [/^\/signatures$/, pageSignatures],
  [/^\/jobs$/, pageJobs],
  [/^\/jobs\/(\d+)$/, pageJob],
];
function parseHash() {
  const raw = location.hash.replace(/^#/, "") || "/";
  const [path, query] = raw.split("?");
  return { path, params: Object.fromEntries(new URLSearchParams(query || "")) };
}
function setParams(params) { // replace the query part of the hash without a new page render
  const { path } = parseHash();
  history.replaceState(null, "", "#" + path + qs(params));
}
async function render() {
  timers.forEach(clearInterval); timers = [];
  const gen = ++generation;
  const { path, params } = parseHash();
  document.querySelectorAll("[data-nav]").forEach((a) => a.classList.toggle("active", path.startsWith("/" + a.dataset.nav)));
  for (const [re, page] of routes) {
    const m = path.match(re);
    if (m) {
      $app.replaceChildren(el("p", { class: "muted", text: "Loading…" }));
      try { await page({ args: m.slice(1), params, live: () => gen === generation }); }
      catch (e) { if (gen === generation) $app.replaceChildren(errorBox(e)); }
      document.body.dataset.page = path.split("/")[1] || "";
      document.body.dataset.ready = String(gen);
      return;
    }
  }
  $app.replaceChildren(el("h1", { text: "Not found" }), el("p", {}, "No page ", el("code", { text: path }), ". ", el("a", { href: "#/networks", text: "Networks" })));
}
window.addEventListener("hashchange", render);
window.addEventListener("DOMContentLoaded", render);

// ---------------------------------------------------------------- networks
async function pageNetworks() {
  const [nets, jobs] = await Promise.all([api("/networks"), api("/jobs?limit=500")]);
  const jobCount = {};
  for (const j of jobs.data) jobCount[j.network_id] = (jobCount[j.network_id] || 0) + 1;
  const rows = nets.data.map((n) => el("tr", { "data-network": n.id },
    el("td", { class: "num", text: n.id }),
    el("td", {}, el("a", { href: `#/networks/${n.id}`, text: n.name }), n.aliases.length ? el("span", { class: "muted small", text: " aka " + n.aliases.join(", ") }) : null),
    el("td", { class: "mono", text: n.architecture }),
    el("td", { class: "num", text: n.input_size }), el("td", { class: "num", text: n.output_size }),
    el("td", { class: "mono", text: domainText(n.input_domain) }),
    el("td", { text: n.source_format }), el("td", { class: "num", text: jobCount[n.id] || 0 }),
    el("td", { text: when(n.created_at) })));
  $app.replaceChildren(
    el("h1", { text: "Networks" }),
    el("p", { class: "subtitle", text: `${nets.count} registered network${nets.count === 1 ? "" : "s"}; open one to see its layers, weights and activations.` }),
    nets.count ? scroll(el("table", { id: "networks" }, el("thead", {}, el("tr", {}, ["id", "name", "architecture", "inputs", "outputs", "input domain", "source", "jobs", "registered"].map((h, i) => el("th", { class: [0, 3, 4, 7].includes(i) ? "num" : null, text: h })))), el("tbody", {}, rows)))
      : el("p", { class: "muted" }, "No network yet: ", el("code", { text: "polycert demo" }), " registers polycert-tiny and runs a small job."));
}
function domainText(d) {
  const side = (v) => (v === null ? "∞" : Array.isArray(v) ? "per-coordinate" : fmt(v, 3));
  return d ? `[${d.lower === null ? "−∞" : side(d.lower)}, ${side(d.upper)}]` : "—";
}

async function pageNetwork({ args, params, live }) {
  const id = Number(args[0]);
  const [net, weights, sets] = await Promise.all([api(`/networks/${id}`), api(`/networks/${id}/weights`), api("/datasets")]);
  const fitting = sets.data.filter((d) => d.input_size === weights.sizes[0]);
  const preferred = fitting.find((d) => d.name === weights.preprocessing && d.split === "test") || fitting[0] || null;
  const state = {
    dataset: params.dataset && fitting.some((d) => d.name === params.dataset) ? params.dataset : preferred && preferred.name,
    index: Math.max(0, Number(params.index || 0) || 0),
    layer: params.layer !== undefined ? Number(params.layer) : 0, neuron: params.neuron !== undefined ? Number(params.neuron) : null,
    forward: null, sample: null, signatures: null, sigDigit: null,
  };
  const setInfo = () => fitting.find((d) => d.name === state.dataset && d.split === "test") || fitting.find((d) => d.name === state.dataset);
  const diagramBox = el("div", { class: "card", id: "diagram-card" });
  const sampleBox = el("div", { class: "card", id: "sample-card" });
  const neuronBox = el("div", { class: "card", id: "neuron-card" });
  $app.replaceChildren(
    el("h1", { text: net.name }),
    el("p", { class: "subtitle" }, el("span", { class: "mono", text: net.architecture }), ` · input domain ${domainText(net.input_domain)} · `,
      weights.image_side ? `input: ${weights.image_side}×${weights.image_side} image` : `input: ${weights.sizes[0]} values`,
      weights.preprocessing ? ` (${weights.preprocessing})` : ""),
    el("div", { class: "grid side" }, diagramBox, el("div", { class: "grid" }, sampleBox, neuronBox)));

  async function load() {
    if (!state.dataset) { state.forward = null; return; }
    const info = setInfo();
    state.index = Math.min(Math.max(0, state.index), info.count - 1);
    const [sample, forward] = await Promise.all([
      api(`/datasets/${state.dataset}/${state.index}${qs({ split: info.split })}`),
      api(`/networks/${id}/forward${qs({ dataset: state.dataset, index: state.index, split: info.split })}`)]);
    if (!live()) return;
    state.sample = sample; state.forward = forward;
    if (state.sigDigit !== sample.label) {
      state.sigDigit = sample.label;
      try { state.signatures = await api(`/signatures${qs({ network: id, digit: sample.label })}`); }
      catch (e) { state.signatures = { error: e }; }
    }
  }
  function draw() {
    drawDiagram(); drawSample(); drawNeuron();
    setParams({ dataset: state.dataset, index: state.index, layer: state.layer, neuron: state.neuron });
  }
  function drawDiagram() {
    diagramBox.replaceChildren(el("h2", { text: "Layers" }),
      el("p", { class: "muted small", text: "Each circle is a neuron, filled by its activation on the current sample (teal positive, orange negative); edges show the incoming weights (width ∝ |w|). Click a neuron to see its incoming weights." }),
      networkDiagram(weights, state, (layer, neuron) => { state.layer = layer; state.neuron = neuron; draw(); }),
      el("div", { class: "legend" }, el("span", {}, el("i", { style: "background:#016e6e" }), "positive weight / activation"), el("span", {}, el("i", { style: "background:#b25410" }), "negative")));
  }
  function drawSample() {
    const info = setInfo();
    if (!info) { sampleBox.replaceChildren(el("h2", { text: "Sample" }), el("p", { class: "muted", text: `No shipped data set has ${weights.sizes[0]} inputs.` })); return; }
    const go = async (index) => { state.index = index; await load(); if (live()) draw(); };
    const box = el("input", { type: "number", id: "sample-index", min: 0, max: info.count - 1, value: state.index,
      onchange: (e) => go(Number(e.target.value) || 0),
      onkeydown: (e) => { if (e.key === "Enter") e.target.blur(); } });  // Enter commits the index (a change)
    const f = state.forward, s = state.sample;
    sampleBox.replaceChildren(
      el("h2", { text: "Sample" }),
      el("div", { class: "controls" },
        el("label", {}, "data set", el("select", { id: "dataset", onchange: async (e) => { state.dataset = e.target.value; state.index = 0; await load(); if (live()) draw(); } },
          [...new Set(fitting.map((d) => d.name))].map((n) => el("option", { value: n, selected: n === state.dataset, text: n })))),
        el("label", {}, `test image (0–${info.count - 1})`, el("div", { class: "stepper" },
          el("button", { id: "prev", "aria-label": "previous sample", onclick: () => go(Math.max(0, state.index - 1)), text: "◀" }), box,
          el("button", { id: "next", "aria-label": "next sample", onclick: () => go(Math.min(info.count - 1, state.index + 1)), text: "▶" })))),
      el("div", { class: "pair" },
        s.image_side ? inputImage(s.input, s.image_side, `image ${s.index}`, { size: 126, range: [0, 1] }) : null,
        el("dl", { class: "kv", id: "sample-facts", "data-index": s.index, "data-label": s.label, "data-predicted": f.predicted },
          el("dt", { text: "label" }), el("dd", { text: s.label }),
          el("dt", { text: "predicted" }), el("dd", {}, String(f.predicted), " ", badge(f.predicted === s.label ? "correct" : "wrong")),
          el("dt", { text: "max logit" }), el("dd", { text: fmt(Math.max(...f.logits)) }))),
      el("h3", { text: "Logits (server's forward pass)" }),
      el("div", { id: "logits", "data-values": JSON.stringify(f.logits) }, logitBars(f.logits, { label: s.label })));
  }
  function drawNeuron() {
    const f = state.forward;
    const hidden = weights.layers.length - 1;
    if (state.neuron === null) {
      neuronBox.replaceChildren(el("h2", { text: "Neuron" }), el("p", { class: "muted", text: "Click a neuron in the diagram." }));
      return;
    }
    const L = weights.layers[state.layer], n = state.neuron;
    const w = L.weight[n];
    const maxAbs = Math.max(...w.map(Math.abs));
    const isOutput = state.layer === hidden;
    const named = L.names ? ` “${L.names[n]}”` : "";
    const title = isOutput ? `Output ${n} (logit of class ${n})` : `Hidden layer ${state.layer + 1} · neuron ${n}${named}`;
    const pattern = state.layer === 0 && weights.image_side
      ? figure(`incoming weights (${weights.image_side}×${weights.image_side})`,
          pixelGrid(w, weights.image_side, (v) => diverging(v, maxAbs), { size: 168, kind: "weights", label: "incoming weights", title: (i, v) => `w[${n}, ${i}] = ${fmt(v)}` }),
          rampScale("#b25410, #fff, #016e6e", fmt(-maxAbs, 2), "+" + fmt(maxAbs, 2)))
      : el("div", {}, el("h3", { text: "incoming weights" }), weightBars(w, maxAbs));
    const act = f ? el("dl", { class: "kv", id: "neuron-activation", "data-pre": f.layers[state.layer].pre[n], "data-post": f.layers[state.layer].post[n] },
      el("dt", { text: "pre-activation z" }), el("dd", { text: fmt(f.layers[state.layer].pre[n], 5) }),
      el("dt", { text: `${L.activation}(z)` }), el("dd", { text: fmt(f.layers[state.layer].post[n], 5) }),
      el("dt", { text: "bias" }), el("dd", { text: fmt(L.bias[n], 5) }),
      el("dt", { text: "sample" }), el("dd", { text: `${state.dataset} #${state.index}` })) : null;
    neuronBox.replaceChildren(el("h2", { text: title }),
      el("div", { id: "neuron-detail", "data-layer": state.layer, "data-neuron": n, "data-weights": JSON.stringify(w) },
        el("div", { class: "pair" }, pattern, act)),
      isOutput ? null : neuronSignatures(state, weights));
  }
  function weightBars(w, maxAbs) {
    return shareBars(w.map((v, i) => ({ key: i, label: `from unit ${i}: ${fmt(v, 3)}`, value: maxAbs ? Math.abs(v) / maxAbs : 0, colour: v >= 0 ? "#016e6e" : "#b25410" })));
  }
  await load();
  if (live()) draw();
}

function networkDiagram(weights, state, onPick) {
  const sizes = weights.sizes, L = weights.layers.length;
  const W = 640, top = 28, bottom = 24, colGap = (W - 150) / L;
  const maxShown = 24;
  const shown = sizes.map((s) => Math.min(s, maxShown));
  const H = Math.max(260, Math.min(520, Math.max(...shown.slice(1)) * 34 + top + bottom));
  const ys = (count) => Array.from({ length: count }, (_, i) => top + ((i + 0.5) * (H - top - bottom)) / count);
  const svg = sv("svg", { viewBox: `0 0 ${W} ${H}`, class: "diagram", id: "network-diagram", role: "img", "aria-label": "network layers" });
  const imgSize = 100, x0 = 12, imgY = (H - imgSize) / 2;
  const f = state.forward;
  // input column: the sample as an image (when the input is one), else the input values as small dots
  const inputX = weights.image_side ? x0 + imgSize : x0 + 20;
  if (weights.image_side && state.sample) {
    const g = pixelGrid(state.sample.input, weights.image_side, (v) => grey(v), { size: imgSize, kind: "diagram-input", label: "input" });
    g.setAttribute("x", x0); g.setAttribute("y", imgY);
    svg.append(g, sv("rect", { x: x0, y: imgY, width: imgSize, height: imgSize, fill: "none", stroke: "#8a96a5" }));
  } else {
    ys(shown[0]).forEach((y) => svg.append(sv("circle", { cx: inputX - 10, cy: y, r: 4, fill: "#c9d1db" })));
  }
  svg.append(sv("text", { x: x0, y: 16, "font-size": 12, fill: "#34404f", "font-weight": 600, text: `input (${sizes[0]})` }));
  const colX = (l) => inputX + 50 + l * colGap + (l === L - 1 ? 10 : 0);
  // edges
  const edges = sv("g", {});
  svg.append(edges);
  weights.layers.forEach((layer, l) => {
    const yOut = ys(shown[l + 1]);
    const maxAbs = Math.max(...layer.weight.flat().map(Math.abs)) || 1;
    if (l === 0) {
      // from the input image's right edge: one edge per neuron, width by the norm of its incoming weights
      yOut.forEach((y, j) => {
        const norm = Math.sqrt(layer.weight[j].reduce((a, v) => a + v * v, 0));
        edges.append(sv("path", { class: "edge", d: `M${inputX} ${H / 2} C ${inputX + 25} ${H / 2}, ${colX(0) - 25} ${y}, ${colX(0) - 12} ${y}`, stroke: "#9fb3c8", "stroke-width": 1 + Math.min(4, norm / 3) }));
      });
      return;
    }
    const yIn = ys(shown[l]);
    yOut.forEach((y2, j) => yIn.forEach((y1, i) => {
      const w = layer.weight[j][i];
      edges.append(sv("line", { x1: colX(l - 1) + 12, y1, x2: colX(l) - 12, y2, stroke: w >= 0 ? "#016e6e" : "#b25410", "stroke-opacity": 0.25 + 0.6 * Math.abs(w) / maxAbs, "stroke-width": 0.4 + 3 * Math.abs(w) / maxAbs }));
    }));
  });
  // neurons
  weights.layers.forEach((layer, l) => {
    const post = f ? f.layers[l].post : null;
    const scale = post ? Math.max(...post.map(Math.abs)) || 1 : 1;
    const label = l === L - 1 ? `output (${layer.n_out})` : `layer ${l + 1} (${layer.n_out}, ${layer.activation})`;
    svg.append(sv("text", { x: colX(l), y: 16, "font-size": 12, "text-anchor": "middle", fill: "#34404f", "font-weight": 600, text: label }));
    ys(shown[l + 1]).forEach((y, j) => {
      const v = post ? post[j] : 0;
      const g = sv("g", { class: "neuron" + (state.layer === l && state.neuron === j ? " selected" : ""), "data-layer": l, "data-neuron": j, "data-activation": post ? v : "",
                          tabindex: 0, role: "button", "aria-label": `layer ${l + 1} neuron ${j}`,
                          onclick: () => onPick(l, j), onkeydown: (e) => { if (e.key === "Enter") onPick(l, j); } });
      g.append(sv("circle", { cx: colX(l), cy: y, r: 11, fill: diverging(v, scale) }), sv("title", { text: `layer ${l + 1}, neuron ${j}: ${post ? fmt(v) : ""}` }));
      const tx = l === L - 1 ? colX(l) + 16 : colX(l);
      const ty = l === L - 1 ? y + 4 : y + 24;
      if (l === L - 1) g.append(sv("text", { x: tx, y: ty, "font-size": 11, fill: f && f.predicted === j ? "#1f6fb2" : "#34404f", "font-weight": f && f.predicted === j ? 700 : 400, text: `${j}: ${post ? fmt(v, 3) : ""}` }));
      else if (shown[l + 1] <= 8) g.append(sv("text", { x: tx, y: ty, "font-size": 10, "text-anchor": "middle", fill: "#4a5665", text: (layer.names ? layer.names[j] + " " : "") + (post ? fmt(v, 3) : "") }));
      svg.append(g);
    });
    if (layer.n_out > maxShown) svg.append(sv("text", { x: colX(l), y: H - 6, "font-size": 10, "text-anchor": "middle", fill: "#5d6b7c", text: `first ${maxShown} of ${layer.n_out}` }));
  });
  return svg;
}

function regionName(sig, layer, index) {
  const names = (sig.region_names || [])[layer];
  return names && names[index] !== undefined ? names[index] : `region ${index}`;
}
function tightLabel(sig, r) {
  if (r.kind === "region") return `region: ${regionName(sig, r.layer, r.index)}`;
  if (r.kind === "envelope_lower" || r.kind === "envelope_upper") return `${r.kind.replace("envelope_", "")} env. ${r.index === -1 ? "image bound" : "line " + r.index}`;
  if (r.kind === "segment") return `segment ${r.index}`;
  return r.index === null ? r.kind : `${r.kind} ${r.index}`;
}
function neuronSignatures(state, weights) {
  const sig = state.signatures;
  const box = el("div", { id: "neuron-signatures" }, el("h3", { text: `In stored signatures (digit ${state.sigDigit}, the sample's label)` }));
  if (!sig) return box;
  if (sig.error) { box.append(el("p", { class: "muted small", text: sig.error.message })); return box; }
  const rows = sig.neurons.filter((r) => r.layer === state.layer && r.neuron === state.neuron);
  if (!sig.n) { box.append(el("p", { class: "muted small", text: "No stored certificate of this digit on this network yet." })); return box; }
  box.append(el("p", { class: "muted small", text: `Share of the n = ${sig.n} certificates (LP and MIP, all eps) whose optimum has this neuron on each envelope line, segment or region.` }));
  box.append(rows.length ? shareBars(rows.map((r) => ({ key: `${r.kind}:${r.index}`, label: tightLabel(sig, r), value: r.share, colour: r.kind === "region" ? "#1f6fb2" : r.kind === "segment" ? "#6b4fa0" : "#d9822b" })))
    : el("p", { class: "muted small", text: "Never tight in these certificates." }));
  return box;
}

// ---------------------------------------------------------------- signatures by digit
async function pageSignatures({ params, live }) {
  const [nets, jobs] = await Promise.all([api("/networks"), api("/jobs?limit=500")]);
  if (!nets.count) { $app.replaceChildren(el("h1", { text: "Signatures by digit" }), el("p", { class: "muted", text: "No network registered yet." })); return; }
  const sigJobs = jobs.data.filter((j) => j.kind === "signature" || j.kind === "robustness");
  const withCerts = nets.data.filter((n) => sigJobs.some((j) => j.network_id === n.id));
  const state = {
    network: Number(params.network) || (withCerts[0] || nets.data[0]).id,
    digit: params.digit !== undefined ? Number(params.digit) : 0,
    eps: params.eps ?? "", source: params.source ?? "", job: params.job ?? "",
  };
  const body = el("div", { id: "signature-maps" });
  const controls = el("div", { class: "controls" });
  $app.replaceChildren(el("h1", { text: "Signatures by digit" }),
    el("p", { class: "subtitle", text: "For the certificates of one digit: how often each pixel sits at the lower (red) or upper (blue) end of its interval at the optimum, and how often each hidden neuron lies on an envelope line, segment or region. LP relaxation and exact MIP side by side." }),
    controls, body);
  function epsChoices() {
    const values = new Set();
    sigJobs.filter((j) => j.network_id === state.network && (!state.job || String(j.id) === String(state.job))).forEach((j) => (j.parameters.eps || []).forEach((e) => values.add(e)));
    return [...values].sort((a, b) => a - b);
  }
  function drawControls() {
    const net = nets.data.find((n) => n.id === state.network);
    const classes = net ? net.output_size : 10;
    controls.replaceChildren(
      el("label", {}, "network", el("select", { id: "sig-network", onchange: (e) => { state.network = Number(e.target.value); state.job = ""; state.eps = ""; update(); } },
        nets.data.map((n) => el("option", { value: n.id, selected: n.id === state.network, text: `${n.name} (#${n.id})` })))),
      el("label", {}, "digit (true class)", el("div", { class: "digits-pick", id: "sig-digits" },
        Array.from({ length: Math.min(classes, 20) }, (_, d) => el("button", { class: d === state.digit ? "on" : null, "data-digit": d, onclick: () => { state.digit = d; update(); }, text: d })))),
      el("label", {}, "eps (L∞ radius)", el("select", { id: "sig-eps", onchange: (e) => { state.eps = e.target.value; update(); } },
        el("option", { value: "", text: "all" }), epsChoices().map((e) => el("option", { value: e, selected: String(e) === String(state.eps), text: e })))),
      el("label", {}, "source", el("select", { id: "sig-source", onchange: (e) => { state.source = e.target.value; update(); } },
        [["", "signature + robustness jobs"], ["signature", "signature jobs"], ["robustness", "robustness jobs"]].map(([v, t]) => el("option", { value: v, selected: v === state.source, text: t })))),
      el("label", {}, "job", el("select", { id: "sig-job", onchange: (e) => { state.job = e.target.value; update(); } },
        el("option", { value: "", text: "all jobs" }),
        sigJobs.filter((j) => j.network_id === state.network).map((j) => el("option", { value: j.id, selected: String(j.id) === String(state.job), text: `#${j.id} ${j.kind}` })))));
  }
  async function update() {
    drawControls();
    setParams({ network: state.network, digit: state.digit, eps: state.eps, source: state.source, job: state.job });
    const common = { network: state.network, digit: state.digit, eps: state.eps, source: state.source, job: state.job };
    let lp, mip;
    try { [lp, mip] = await Promise.all([api("/signatures" + qs({ ...common, method: "lp" })), api("/signatures" + qs({ ...common, method: "mip" }))]); }
    catch (e) { if (live()) body.replaceChildren(errorBox(e)); return; }
    if (!live()) return;
    body.replaceChildren(el("div", { class: "grid two", "data-digit": state.digit }, methodColumn("LP relaxation", "lp", lp), methodColumn("exact MIP", "mip", mip)));
  }
  function methodColumn(title, method, sig) {
    const col = el("section", { class: "card", "data-method": method, "data-n": sig.n });
    col.append(el("h2", { text: title }), el("p", { class: "muted small" }, el("b", { class: "n", text: `n = ${sig.n}` }), ` certificates of digit ${sig.digit}` + (sig.eps !== null ? ` at eps ${sig.eps}` : " (all eps)")));
    if (!sig.n) { col.append(el("p", { class: "muted", text: "No stored certificate in this scope." })); return col; }
    const side = sig.image_side;
    if (side) {
      col.append(el("div", { class: "maps" },
        figure("pixel at its lower bound", pixelGrid(sig.pixel_lower, side, (v) => mix(COLOURS.lower, v), { kind: "lower", size: 160, label: `${method} lower`, title: (i, v) => `pixel ${i} (row ${Math.floor(i / side)}, col ${i % side}): ${pct(v)} at lower bound` }),
          rampScale("#fff, rgb(200,50,43)", "0", "100", " %")),
        figure("pixel at its upper bound", pixelGrid(sig.pixel_upper, side, (v) => mix(COLOURS.upper, v), { kind: "upper", size: 160, label: `${method} upper`, title: (i, v) => `pixel ${i} (row ${Math.floor(i / side)}, col ${i % side}): ${pct(v)} at upper bound` }),
          rampScale("#fff, rgb(34,88,184)", "0", "100", " %"))));
      col.querySelectorAll("svg.grid-image").forEach((g) => g.setAttribute("data-method", method));
    } else {
      col.append(el("p", { class: "muted small", text: `The input (${sig.input_size} values) is not a square image.` }));
    }
    col.append(el("h3", { text: "Envelope activity per hidden neuron" }),
      el("p", { class: "muted small", text: "share of the n certificates with the neuron on that line / segment / region at the optimum" }));
    const groups = new Map();
    for (const r of sig.neurons) {
      if (r.layer === null || r.neuron === null) continue;
      const key = `${r.layer}:${r.neuron}`;
      if (!groups.has(key)) groups.set(key, []);
      groups.get(key).push(r);
    }
    const bars = el("div", { class: "envelope", "data-method": method });
    for (const [key, rows] of groups) {
      const [l, u] = key.split(":").map(Number);
      bars.append(el("h4", { text: `layer ${l + 1}, neuron ${u}` }),
        shareBars(rows.map((r) => ({ key: `${key}:${r.kind}:${r.index}`, label: tightLabel(sig, r), value: r.share, colour: r.kind === "region" ? "#1f6fb2" : r.kind === "segment" ? "#6b4fa0" : "#d9822b" }))));
    }
    col.append(groups.size ? bars : el("p", { class: "muted small", text: "No tight hidden-neuron constraint stored." }));
    col.append(el("script", { type: "application/json", class: "signature-data", text: JSON.stringify({ n: sig.n, pixel_lower: sig.pixel_lower, pixel_upper: sig.pixel_upper }) }));
    return col;
  }
  await update();
}

// ---------------------------------------------------------------- jobs
function progressCell(job) {
  const p = job.progress || { done: 0, total: 0, fraction: 0 };
  return el("div", { class: "progress", "data-job": job.id },
    el("span", { class: "bar" }, el("span", { style: `width:${(100 * p.fraction).toFixed(1)}%` })),
    el("span", { class: "progress-text", "data-done": p.done, "data-total": p.total, text: `${p.done} / ${p.total} (${(100 * p.fraction).toFixed(0)} %)` }));
}
const ACTIVE = ["queued", "running"];

async function pageJobs({ live }) {
  const nets = await api("/networks");
  const names = Object.fromEntries(nets.data.map((n) => [n.id, n.name]));
  const tableBox = el("div", {});
  const note = el("p", { class: "subtitle" });
  $app.replaceChildren(el("h1", { text: "Jobs" }), note, tableBox);
  async function refresh() {
    let jobs;
    try { jobs = await api("/jobs?limit=200"); } catch (e) { return; } // a busy server: the next poll tries again
    if (!live()) return;
    note.textContent = `${jobs.count} job${jobs.count === 1 ? "" : "s"}, newest first; progress updates every second while a job runs.`;
    const rows = jobs.data.map((j) => el("tr", { "data-job": j.id, "data-status": j.status },
      el("td", { class: "num" }, el("a", { href: `#/jobs/${j.id}`, text: j.id })),
      el("td", { text: j.kind }), el("td", { text: names[j.network_id] || j.network_id }),
      el("td", {}, badge(j.status)), el("td", {}, progressCell(j)),
      el("td", { text: describe(j) }),
      el("td", { text: when(j.created_at) }), el("td", { class: "num", text: seconds(j.started_at, j.finished_at) })));
    tableBox.replaceChildren(jobs.count ? scroll(el("table", { id: "jobs" },
      el("thead", {}, el("tr", {}, ["id", "kind", "network", "status", "progress (queries)", "what", "submitted", "took"].map((h) => el("th", { text: h })))),
      el("tbody", {}, rows))) : el("p", { class: "muted", text: "No job yet." }));
  }
  await refresh();
  every(1000, refresh);
}
function describe(job) {
  const p = job.parameters || {};
  const data = p.dataset ? `${p.dataset.name} ${p.dataset.start}:${p.dataset.stop}` : p.instances ? `${p.instances.length} instances` : "explicit inputs";
  if (job.kind === "robustness") return `${data}; eps ${(p.eps || []).join(", ")}; ${p.methods}`;
  if (job.kind === "signature") return `${data}; eps ${(p.eps || []).join(", ")}; ${p.methods}`;
  if (job.kind === "vnncomp") return data;
  return `${data}; ${p.radius ? "radius " + p.radius : "radius searched"}; ${p.norm || ""}`;
}

async function pageJob({ args, live }) {
  const id = Number(args[0]);
  let job = await api(`/jobs/${id}`);
  const net = await api(`/networks/${job.network_id}`);
  const head = el("div", {});
  const detail = el("div", { id: "job-detail" });
  $app.replaceChildren(head, detail);
  function drawHead() {
    head.replaceChildren(
      el("h1", {}, `Job ${job.id} · ${job.kind} `, badge(job.status)),
      el("p", { class: "subtitle" }, "network ", el("a", { href: `#/networks/${net.id}`, text: net.name }), ` · ${describe(job)} · submitted ${when(job.created_at)}` + (job.finished_at ? ` · took ${seconds(job.started_at, job.finished_at)}` : "")),
      el("div", { class: "card", id: "job-progress" }, progressCell(job),
        el("div", { class: "stats" }, Object.entries(job.progress.verdicts || {}).flatMap(([m, vs]) => Object.entries(vs).map(([v, n]) => stat(n, `${m} ${v}`)))),
        job.error ? el("p", { class: "error", text: job.error }) : null));
  }
  drawHead();
  let drawn = false;
  async function drawDetail() {
    drawn = true;
    if (job.kind === "robustness") await robustnessDetail(job, net, detail, live);
    else if (job.kind === "signature") await signatureDetail(job, net, detail);
    else if (job.kind === "vnncomp") detail.replaceChildren(el("p", { class: "muted", text: "VNN-COMP results: GET /jobs/" + job.id + "/results." }));
    else await invertibilityDetail(job, net, detail);
  }
  if (!ACTIVE.includes(job.status)) await drawDetail();
  else detail.replaceChildren(el("p", { class: "muted", text: "The results appear here when the job has finished." }));
  if (ACTIVE.includes(job.status)) every(1000, async () => {
    try { job = await api(`/jobs/${id}`); } catch (e) { return; }
    if (!live()) return;
    drawHead();
    if (!ACTIVE.includes(job.status) && !drawn) { timers.forEach(clearInterval); await drawDetail(); }
  });
}

// robustness: curves per digit, the LP-versus-MIP table, counterexamples
async function robustnessDetail(job, net, box, live) {
  const curves = await api(`/jobs/${job.id}/curves`);
  const methods = [].concat(job.parameters.methods || []).flatMap((m) => (m === "both" ? ["lp", "mip"] : m === "all" ? ["lp", "klp", "mip"] : [m]));
  const both = methods.includes("lp") && methods.includes("mip");
  const comparison = both ? await api(`/jobs/${job.id}/comparison?limit=1000`) : null;
  if (!live()) return;
  const series = curves.methods.map((m) => ({ key: m, label: { lp: "verified by LP relaxation", klp: "verified by k-neuron LP", mip: "verified exactly (MIP)" }[m] || m, colour: COLOURS[m] || COLOURS.lp }))
    .concat([{ key: "attack", label: "not falsified by the attack at this eps or below (upper bound)", colour: COLOURS.attack, dash: true }]);
  const legend = el("div", { class: "legend" }, series.map((s) => el("span", {}, el("i", { class: s.dash ? "dash" : null, style: `background:${s.colour};color:${s.colour}` }), s.label)));
  const charts = el("div", { class: "grid digits", id: "digit-curves" }, curves.digits.map((d) => el("div", { class: "card" },
    curveChart(d.points, series, { title: `digit ${d.digit}`, digit: d.digit, small: true }))));
  box.replaceChildren(
    el("h2", { text: "Robustness against eps" }),
    el("p", { class: "muted small", text: "Share of the test inputs of each digit (n per point in the tooltip) whose L∞ ball of radius eps is verified. Misclassified inputs count as not verified." }),
    legend,
    el("div", { class: "grid side" }, el("div", { class: "card", id: "total-curve" }, curveChart(curves.total, series, { title: "all digits", digit: "all" })),
      el("div", { class: "card" }, el("h3", { text: "At each eps (all digits)" }), scroll(el("table", {},
        el("thead", {}, el("tr", {}, ["eps", "n", ...curves.methods.map((m) => m.toUpperCase() + " verified"), "not falsified"].map((h, i) => el("th", { class: i ? "num" : null, text: h })))),
        el("tbody", {}, curves.total.map((p) => el("tr", {}, el("td", { text: p.eps }), el("td", { class: "num", text: p.n }),
          curves.methods.map((m) => el("td", { class: "num", text: pct(p[m]) })), el("td", { class: "num", text: pct(p.attack) })))))))),
    el("h3", { text: "Per digit" }), charts,
    comparison ? comparisonSection(job, comparison) : el("p", { class: "muted", text: "LP versus MIP: this job ran one method only." }),
    await counterexamples(job, net, live));
}

function curveChart(points, series, { title, digit, small = false }) {
  const W = small ? 240 : 460, H = small ? 170 : 280, m = { l: 42, r: 18, t: 22, b: 36 };
  const maxEps = Math.max(...points.map((p) => p.eps), 1e-9);
  const x = (e) => m.l + (e / maxEps) * (W - m.l - m.r);
  const y = (s) => m.t + (1 - s) * (H - m.t - m.b);
  const svg = sv("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart curve", "data-digit": digit, role: "img", "aria-label": `robustness curve, ${title}` });
  svg.append(sv("text", { x: m.l, y: 14, "font-size": 12, "font-weight": 600, fill: "#1b2430", text: title + (points.length ? `  (n = ${points[0].n})` : "") }));
  const axis = sv("g", { class: "axis" });
  [0, 0.25, 0.5, 0.75, 1].forEach((s) => {
    axis.append(sv("line", { class: "gridline", x1: m.l, x2: W - m.r, y1: y(s), y2: y(s) }));
    axis.append(sv("text", { x: m.l - 5, y: y(s) + 4, "text-anchor": "end", text: `${100 * s}` }));
  });
  axis.append(sv("line", { x1: m.l, x2: W - m.r, y1: y(0), y2: y(0) }), sv("line", { x1: m.l, x2: m.l, y1: y(0), y2: y(1) }));
  points.forEach((p) => {
    axis.append(sv("line", { x1: x(p.eps), x2: x(p.eps), y1: y(0), y2: y(0) + 4 }));
    axis.append(sv("text", { x: x(p.eps), y: y(0) + 15, "text-anchor": "middle", text: p.eps }));
  });
  axis.append(sv("text", { x: (m.l + W - m.r) / 2, y: H - 4, "text-anchor": "middle", text: "eps (L∞ radius)" }));
  axis.append(sv("text", { x: 11, y: (m.t + H - m.b) / 2, "text-anchor": "middle", transform: `rotate(-90 11 ${(m.t + H - m.b) / 2})`, text: "inputs verified (%)" }));
  svg.append(axis);
  for (const s of series) {
    const pts = points.filter((p) => p[s.key] !== null && p[s.key] !== undefined);
    if (!pts.length) continue;
    svg.append(sv("polyline", { fill: "none", stroke: s.colour, "stroke-width": small ? 1.8 : 2.4, "stroke-dasharray": s.dash ? "5 4" : null,
      points: pts.map((p) => `${x(p.eps)},${y(p[s.key])}`).join(" "), "data-series": s.key }));
    pts.forEach((p) => {
      const c = sv("circle", { class: "point", cx: x(p.eps), cy: y(p[s.key]), r: small ? 3 : 4, fill: s.colour, "data-series": s.key, "data-eps": p.eps, "data-share": p[s.key], "data-n": p.n, "data-digit": digit });
      c.append(sv("title", { text: `${s.label} at eps ${p.eps}: ${pct(p[s.key])} of n = ${p.n}` }));
      svg.append(c);
    });
  }
  return svg;
}

function comparisonSection(job, comparison) {
  const t = comparison.summary.total;
  const section = el("section", { id: "comparison" },
    el("h2", { text: "LP relaxation versus exact MIP" }),
    el("p", { class: "muted small", text: "Per (input, eps): the LP relaxation's lower bound on the minimum margin, the MIP's bracket [lower, upper] around the exact minimum, and the relaxation gap (MIP lower − LP lower). A negative margin is a counterexample." }),
    el("div", { class: "stats", id: "comparison-summary" },
      stat(t.pairs, "pairs"), stat(t.lp_verified, "LP verified"), stat(t.mip_verified, "MIP verified"),
      stat(t.mip_only_verified, "only MIP verifies"), stat(t.mip_falsified, "MIP falsified"), stat(t.misclassified, "misclassified"),
      stat(t.conflicts, "conflicts"), stat(fmt(t.gap_median, 3), "median gap"), stat(fmt(t.gap_p90, 3), "90th pct gap"), stat(fmt(t.gap_max, 3), "max gap"),
      ...(t.klp_pairs ? [stat(t.klp_verified, "k-LP verified"), stat(t.klp_over_lp, "k-LP beyond LP"), stat(t.mip_over_klp, "only MIP beyond k-LP"), stat(fmt(t.klp_gap_median, 3), "median k-LP gap")] : [])));
  const klp = t.klp_pairs > 0;
  const epsValues = [...new Set(comparison.rows.map((r) => r.eps))].sort((a, b) => a - b);
  const state = { differ: false, eps: "" };
  const count = el("span", { class: "muted small", id: "comparison-count" });
  const tableBox = el("div", {});
  const draw = () => {
    const rows = comparison.rows.filter((r) => (!state.differ || r.differ) && (state.eps === "" || String(r.eps) === state.eps));
    count.textContent = `${rows.length} of ${comparison.count} rows`;
    tableBox.replaceChildren(el("div", { class: "scroll comparison-scroll" }, el("table", { id: "comparison-table" },
      el("thead", {}, el("tr", {}, ["input", "label", "eps", "LP verdict", "LP lower", ...(klp ? ["k-LP verdict", "k-LP lower"] : []), "MIP verdict", "MIP lower", "MIP upper", "relaxation gap", "agreement"].map((h) => el("th", { class: /lower|upper|gap/.test(h) ? "num" : null, text: h })))),
      el("tbody", {}, rows.map((r) => el("tr", { class: r.differ ? "differ" : null, "data-item": r.item, "data-eps": r.eps, "data-differ": String(r.differ) },
        el("td", { class: "num", text: r.source_index ?? r.item }), el("td", { class: "num", text: r.label }), el("td", { text: r.eps }),
        el("td", {}, badge(r.lp_verdict)), el("td", { class: "num", text: fmt(r.lp_lower) }),
        ...(klp ? [el("td", {}, badge(r.klp_verdict)), el("td", { class: "num", text: fmt(r.klp_lower) })] : []),
        el("td", {}, badge(r.mip_verdict)), el("td", { class: "num", text: fmt(r.mip_lower) }), el("td", { class: "num", text: fmt(r.mip_upper) }),
        el("td", { class: "num", text: fmt(r.relaxation_gap) }), el("td", { text: r.agreement + (r.misclassified ? " (misclassified)" : "") })))))));
  };
  section.append(el("div", { class: "controls" },
    el("label", { class: "check" }, el("input", { type: "checkbox", id: "differ-filter", onchange: (e) => { state.differ = e.target.checked; draw(); } }), "only where LP and MIP differ"),
    el("label", {}, "eps", el("select", { id: "comparison-eps", onchange: (e) => { state.eps = e.target.value; draw(); } },
      el("option", { value: "", text: "all" }), epsValues.map((e) => el("option", { value: e, text: e })))), count), tableBox);
  draw();
  return section;
}

async function counterexamples(job, net, live) {
  const section = el("section", { id: "counterexamples" }, el("h2", { text: "Counterexamples" }));
  const page = await api(`/jobs/${job.id}/results${qs({ verdict: "falsified", limit: 500 })}`);
  const found = page.data.filter((c) => c.counterexample);
  if (!found.length) { section.append(el("p", { class: "muted", text: "No falsified query: every answered query was verified or unknown." })); return section; }
  section.append(el("p", { class: "muted small", text: `${found.length} falsified queries carry a counterexample: a point of the eps-ball that the network classifies otherwise (re-evaluated here by the server's forward pass).` }));
  const view = el("div", { class: "card", id: "counterexample" });
  const pick = el("select", { id: "counterexample-pick", onchange: (e) => show(found[Number(e.target.value)]) },
    found.map((c, i) => el("option", { value: i, text: `input ${c.source_index ?? c.item} (label ${c.label}), eps ${c.eps}, ${c.method}, margin ${fmt(c.counterexample_value, 3)}` })));
  section.append(el("div", { class: "controls" }, el("label", {}, "falsified query", pick)), view);
  const ds = job.parameters.dataset;
  async function show(c) {
    const side = Math.round(Math.sqrt(c.counterexample.length));
    const isImage = side * side === c.counterexample.length;
    let centre = null;
    if (ds && c.source_index !== null) {
      try { centre = (await api(`/datasets/${ds.name}/${c.source_index}${qs({ split: ds.split })}`)).input; } catch (e) { centre = null; }
    }
    const [fx, fc] = await Promise.all([
      centre ? api(`/networks/${net.id}/forward`, { method: "POST", body: JSON.stringify({ input: centre }) }) : null,
      api(`/networks/${net.id}/forward`, { method: "POST", body: JSON.stringify({ input: c.counterexample }) })]);
    if (!live()) return;
    const delta = centre ? c.counterexample.map((v, i) => v - centre[i]) : null;
    const dmax = delta ? Math.max(...delta.map(Math.abs)) : 0;
    view.replaceChildren(
      el("div", { class: "pair", "data-certificate": c.id },
        centre && isImage ? inputImage(centre, side, `input ${c.source_index} (label ${c.label})`, { range: [0, 1], kind: "centre" }) : null,
        isImage ? inputImage(c.counterexample, side, `counterexample (predicted ${fc.predicted})`, { range: [0, 1], kind: "counterexample" }) : null,
        delta && isImage ? figure(`perturbation (max |δ| = ${fmt(dmax, 3)} ≤ eps ${c.eps})`, pixelGrid(delta, side, (v) => diverging(v, c.eps || dmax), { size: 140, kind: "delta" }),
          rampScale("#b25410, #fff, #016e6e", "−" + c.eps, "+" + c.eps)) : null,
        el("dl", { class: "kv" },
          el("dt", { text: "verdict" }), el("dd", {}, badge(c.verdict), ` by ${c.method} (stage ${c.stage})`),
          el("dt", { text: "margin at counterexample" }), el("dd", { text: fmt(c.counterexample_value) }),
          el("dt", { text: "predicted at input" }), el("dd", { text: fx ? fx.predicted : "—" }),
          el("dt", { text: "predicted at counterexample" }), el("dd", { text: fc.predicted }))),
      el("div", { class: "grid two" },
        fx ? el("div", {}, el("h3", { text: "logits at the input" }), logitBars(fx.logits, { label: c.label, kind: "logits-centre" })) : null,
        el("div", {}, el("h3", { text: "logits at the counterexample" }), logitBars(fc.logits, { label: c.label, kind: "logits-counterexample" }))));
  }
  await show(found[0]);
  return section;
}

async function signatureDetail(job, net, box) {
  const res = await api(`/jobs/${job.id}/results?limit=1000`);
  const digits = [...new Set(res.data.map((c) => c.label))].sort((a, b) => a - b);
  const per = (d, m) => res.data.filter((c) => c.label === d && c.method === m).length;
  box.replaceChildren(el("h2", { text: "Signature queries" }),
    el("p", { class: "muted small", text: "Each query maximises one logit over the eps-ball and stores the tight constraints at the optimum; the maps aggregate them per digit." }),
    scroll(el("table", { id: "signature-digits" }, el("thead", {}, el("tr", {}, ["digit", "LP certificates", "MIP certificates", ""].map((h) => el("th", { text: h })))),
      el("tbody", {}, digits.map((d) => el("tr", {}, el("td", { text: d }), el("td", { class: "num", text: per(d, "lp") }), el("td", { class: "num", text: per(d, "mip") }),
        el("td", {}, el("a", { href: `#/signatures${qs({ network: net.id, digit: d, job: job.id })}`, text: "heatmaps →" }))))))));
}

// invertibility: witness pairs, brackets, certified radius
async function invertibilityDetail(job, net, box) {
  const res = await api(`/jobs/${job.id}/results?limit=200`);
  const cards = res.data.map((c) => {
    const ex = c.extra || {};
    const card = el("section", { class: "card cert", "data-certificate": c.id, "data-kind": job.kind });
    const isRadius = job.kind === "radius";
    card.append(el("h3", {}, `Centre ${c.source_index ?? c.item} (predicted class ${c.label}) `, badge(c.answer || c.verdict)));
    const facts = el("dl", { class: "kv" });
    const add = (k, v, attrs = {}) => facts.append(el("dt", { text: k }), el("dd", { ...attrs, text: v }));
    if (isRadius) {
      add("certified radius", `${fmt(c.lower)} (injective on every ball up to it)`, { class: "radius", "data-lower": c.lower, "data-upper": c.upper });
      add("not certified beyond", fmt(c.upper));
    } else {
      add("radius", c.eps);
      add(job.kind === "invariance" ? "bracket" : "max distance p* ∈", `[${fmt(c.lower)}, ${fmt(c.upper)}]`);
    }
    add("verdict", `${c.verdict}${c.reason ? " (" + c.reason + ")" : ""}`);
    add("norm", c.norm); add("solver", c.solver); add("time", fmt(c.wall_time, 3) + " s");
    card.append(facts);
    const w = isRadius ? ex.witness_above : ex.witness;
    const centre = ex.center || null;
    const ref = centre || (w && w.x) || null;
    if (ref && ref.length) {
      const side = Math.round(Math.sqrt(ref.length));
      const isImage = side * side === ref.length;
      if (w && w.x && w.y) {
        const diff = w.x.map((v, i) => v - w.y[i]);
        const range = imageRange([...w.x, ...w.y, ...(centre || [])]);
        const dmax = Math.max(...diff.map(Math.abs));
        card.append(el("h4", { text: isRadius ? "Witness pair beyond the certified radius" : "Witness pair: two inputs with (nearly) the same output" }),
          el("dl", { class: "kv witness", "data-distance": w.distance, "data-output-difference": w.output_difference },
            el("dt", { text: "distance ‖x − y‖" }), el("dd", { text: fmt(w.distance) }),
            el("dt", { text: "output difference ‖f(x) − f(y)‖∞" }), el("dd", { text: fmt(w.output_difference) }),
            w.valid !== undefined ? [el("dt", { text: "re-checked" }), el("dd", { text: w.valid ? "yes" : "no" })] : null));
        card.append(isImage ? el("div", { class: "pair" },
          centre ? inputImage(centre, side, "centre", { range, kind: "centre" }) : null,
          inputImage(w.x, side, "witness x", { range, kind: "witness-x" }),
          inputImage(w.y, side, "witness y", { range, kind: "witness-y" }),
          figure(`x − y (max ${fmt(dmax, 3)})`, pixelGrid(diff, side, (v) => diverging(v, dmax), { size: 140, kind: "witness-diff" }), rampScale("#b25410, #fff, #016e6e", "−" + fmt(dmax, 2), "+" + fmt(dmax, 2))))
          : scroll(el("table", {}, el("thead", {}, el("tr", {}, ["", ...w.x.map((_, i) => `x${i}`)].map((h) => el("th", { text: h })))),
              el("tbody", {}, [["centre", centre || []], ["x", w.x], ["y", w.y]].map(([k, v]) => el("tr", {}, el("td", { text: k }), v.map((t) => el("td", { class: "num", text: fmt(t) }))))))));
      } else if (isImage) {
        card.append(el("div", { class: "pair" }, inputImage(centre, side, "centre", { kind: "centre" })));
      }
    }
    if (isRadius && ex.evaluations) {
      card.append(el("h4", { text: "Radii evaluated" }), scroll(el("table", { class: "evaluations" },
        el("thead", {}, el("tr", {}, ["radius", "verdict", "p* lower", "p* upper", "seconds"].map((h, i) => el("th", { class: i && i !== 1 ? "num" : null, text: h })))),
        el("tbody", {}, ex.evaluations.map((e) => el("tr", {}, el("td", { text: fmt(e.radius) }), el("td", {}, badge(e.verdict)), el("td", { class: "num", text: fmt(e.lower) }), el("td", { class: "num", text: fmt(e.upper) }), el("td", { class: "num", text: fmt(e.seconds, 3) })))))));
    }
    return card;
  });
  box.replaceChildren(el("h2", { text: job.kind === "radius" ? "Certified radius of injectivity" : "Invertibility answers" }),
    el("p", { class: "muted small", text: job.kind === "radius"
      ? "The largest L∞ radius around each centre on which the network is certified injective (no two inputs in the ball share an output), found by growing and bisecting the radius."
      : "p* = max ‖x − y‖ over pairs of the ball with f(x) = f(y) (within delta): 0 means the network is injective on the ball; the witness pair attains the lower end." }),
    el("div", { class: "grid" }, cards));
}
