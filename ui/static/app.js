// nnps ui: the runs, their live curves, W^1 per epoch, a canvas to draw on, the confusion matrix.
// Plain JavaScript against the JSON API of ui/server.py; no libraries.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { run: null, rows: [], timer: null, side: 28 };

async function api(path, options) {
  const response = await fetch(path, options);
  const body = await response.json().catch(() => ({ error: `HTTP ${response.status}` }));
  if (!response.ok) throw new Error(body.error || `HTTP ${response.status}`);
  return body;
}

function showError(e) { $("error").textContent = e ? `error: ${e.message || e}` : ""; }

async function loadRuns() {
  const runs = await api("/api/runs");
  const list = $("runs");
  list.replaceChildren(...runs.map((r) => {
    const li = document.createElement("li");
    li.dataset.id = r.id;
    li.innerHTML = `<div>${escape(r.name)}</div><div class="state">${escape(r.job ? `job ${r.job.status}` : r.uri)}</div>`;
    li.onclick = () => selectRun(r.id);
    return li;
  }));
  if (runs.length && state.run === null) selectRun(runs[0].id);
}

function escape(text) {
  return String(text).replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" })[c]);
}

async function selectRun(id) {
  state.run = id;
  state.rows = [];
  forgetRun();
  for (const li of $("runs").children) li.classList.toggle("selected", Number(li.dataset.id) === id);
  $("run").hidden = false;
  clearInterval(state.timer);
  state.timer = setInterval(() => refresh().catch(showError), 1000);
  state.confusionOf = null;
  await refresh().catch(showError);
}

async function refresh() {
  const id = state.run;
  const summary = await api(`/api/runs/${id}`);
  const c = summary.config, table = summary.table;
  const ends = table ? [table.features.length, (table.targets.length ? table.targets : table.classes).length] : [784, 10];
  const sizes = [c.hidden ? [ends[0], ...c.hidden, ends[1]].join("-") : ""];
  showTable(table);
  const transport = summary.transport ? Object.entries(summary.transport).filter(([, n]) => typeof n === "number" && n > 0)
    .map(([k, n]) => `${k} ${n}`).join(", ") : "";
  $("run-name").textContent = summary.name;
  $("run-info").textContent = [sizes[0] && `network ${sizes[0]}`, `${c.activation}/${c.output}/${c.cost}`,
    `workers ${summary.workers}`, transport && `steps by channel: ${transport}`,
    summary.examples_per_s && `${Math.round(summary.examples_per_s).toLocaleString()} examples/s`,
    summary.job && `Ray job ${summary.job.status}`,
    `epoch ${summary.epochs_done}/${summary.epochs}`].filter(Boolean).join(" · ");
  $("config").textContent = JSON.stringify(c, null, 2);
  const fresh = await api(`/api/runs/${id}/metrics?since=${state.rows.length}`);
  if (id !== state.run) return;
  state.rows.push(...fresh.rows);
  $("rows").textContent = state.rows.length;
  drawCurves();
  updateSlider(summary.snapshots);
  if (summary.checkpoint && summary.checkpoint !== state.confusionOf) {  // a newer checkpoint: its confusion
    state.confusionOf = summary.checkpoint;
    loadConfusion().catch((e) => { $("confusion-note").textContent = e.message; });
  }
}

// A table run: a form of its features instead of the drawing pad, filled from a test row.
function showTable(table) {
  $("row-panel").hidden = !table;
  document.querySelector("figure.draw").hidden = !!table;
  $("weights-over").textContent = table ? "features (each a column)" : "pixels";
  state.table = table;
  if (!table || state.formOf === state.run) return;
  state.formOf = state.run;
  $("row-form").replaceChildren(...table.features.map((name) => {
    const label = document.createElement("label");
    label.innerHTML = `<span>${escape(name)}</span><input type="number" step="any" value="0">`;
    return label;
  }));
  loadRow().catch(showError);
}

async function loadRow() {
  const r = await api(`/api/runs/${state.run}/rows/${Number($("row-index").value) || 0}`);
  [...$("row-form").querySelectorAll("input")].forEach((input, j) => { input.value = r.values[j]; });
  $("row-truth").textContent = `true: ${Array.isArray(r.label) ? r.label.map((v) => v.toPrecision(4)).join(", ") : r.label}`;
  await predictRow();
}

async function predictRow() {
  const row = [...$("row-form").querySelectorAll("input")].map((input) => Number(input.value));
  const r = await api(`/api/runs/${state.run}/predict`, {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ row }) });
  const names = state.table.targets.length ? state.table.targets : state.table.classes;
  $("row-prediction").textContent = r.values ? Object.entries(r.values).map(([k, v]) => `${k} ${v.toPrecision(4)}`).join(", ")
    : r.label;
  $("row-outputs").replaceChildren(...(r.values ? [] : r.outputs.map((v, k) => bar(names[k], v))));
  $("row-activations").replaceChildren(...r.activations.map(layerRow));
  showError(null);
}

// What the page showed of the previous run goes when another is chosen.
function forgetRun() {
  const slider = $("epoch-slider");
  slider.disabled = true; slider.min = 0; slider.max = 0; slider.value = 0;
  $("epoch").textContent = "-";
  for (const id of ["weights", "cell"]) { $(id).removeAttribute("src"); $(id).alt = ""; }
  $("weights-note").textContent = "";
  $("confusion").replaceChildren();
  $("confusion-note").textContent = "";
  $("prediction").textContent = "-";
  $("pred-label").textContent = "";
  $("outputs").replaceChildren();
  $("activations").replaceChildren();
  for (const id of ["row-outputs", "row-activations"]) $(id).replaceChildren();
  $("row-prediction").textContent = "-";
  $("row-truth").textContent = "";
  $("scatter").hidden = true;
  state.formOf = null;
  $("seen").getContext("2d").clearRect(0, 0, $("seen").width, $("seen").height);
  window.nnpsLastPixels = null;
  if (padHasInk()) setTimeout(predictNow, 0);  // the drawing stays; the new run's answer for it
}

function drawCurves() {
  const canvas = $("curves"), g = canvas.getContext("2d"), rows = state.rows;
  g.clearRect(0, 0, canvas.width, canvas.height);
  g.strokeStyle = "#ccc";
  g.strokeRect(40, 10, canvas.width - 80, canvas.height - 40);
  if (!rows.length) return;
  const x = (i) => 40 + (rows.length === 1 ? 0.5 : i / (rows.length - 1)) * (canvas.width - 80);
  const costs = rows.flatMap((r) => [r.train_cost, r.test_cost]);
  const top = Math.max(...costs) || 1;
  const yCost = (v) => 10 + (1 - v / top) * (canvas.height - 40);
  const yAcc = (v) => 10 + (1 - v) * (canvas.height - 40);
  const line = (key, y, colour) => {
    g.strokeStyle = colour; g.fillStyle = colour; g.beginPath();
    rows.forEach((r, i) => (i ? g.lineTo(x(i), y(r[key])) : g.moveTo(x(i), y(r[key]))));
    g.stroke();
    rows.forEach((r, i) => g.fillRect(x(i) - 2, y(r[key]) - 2, 4, 4));
  };
  line("train_cost", yCost, "#1f77b4");
  line("test_cost", yCost, "#ff7f0e");
  const score = "test_r2" in rows[0] ? "test_r2" : "test_accuracy";  // a regression's R^2 (below 0 drawn at 0)
  line(score, (v) => yAcc(Math.max(0, v)), "#2ca02c");
  document.querySelector(".legend .acc").textContent = score === "test_r2" ? "test R^2" : "test accuracy";
  g.fillStyle = "#444";
  g.fillText(top.toPrecision(3), 2, 16);
  const last = rows[rows.length - 1][score];
  g.fillText(score === "test_r2" ? "R^2 1" : "100%", canvas.width - 36, 16);
  g.fillText(`epoch ${rows[rows.length - 1].epoch}: ` + (score === "test_r2" ? `test R^2 ${last.toFixed(4)}`
    : `test accuracy ${(100 * last).toFixed(2)}%`), 48, canvas.height - 12);
}

function updateSlider(epochs) {
  const slider = $("epoch-slider");
  if (!epochs.length) {
    $("weights-note").textContent = "no W^1 snapshots: train with --snapshot-weights to see them per epoch";
    return;
  }
  $("weights-note").textContent = "";
  const atEnd = slider.disabled || Number(slider.value) === Number(slider.max);
  slider.disabled = false;
  slider.min = epochs[0];
  slider.max = epochs[epochs.length - 1];
  if (atEnd) { slider.value = slider.max; showWeights(); }
}

function showWeights() {
  const epoch = $("epoch-slider").value;
  $("epoch").textContent = epoch;
  $("weights").src = `/api/runs/${state.run}/weights/${epoch}.png`;
}

// The drawing pad: white strokes on black, as MNIST's digits are. It sends the pad at
// SENT x SENT pixels (0-255); the server fits the ink to the network's frame and centres it
// as MNIST's digits were made (core/images.py), the same function `nnps predict` uses, and
// answers with the pixels the network saw, drawn beside the pad.
const SENT = 112;
const pad = $("pad"), pen = pad.getContext("2d");
let drawing = false, pending = null;
function clearPad() { pen.fillStyle = "#000"; pen.fillRect(0, 0, pad.width, pad.height); }
function at(e) { const r = pad.getBoundingClientRect(); return [e.clientX - r.left, e.clientY - r.top]; }
pad.addEventListener("pointerdown", (e) => {
  pad.setPointerCapture(e.pointerId);  // the stroke stays on the pad even if the pointer leaves it
  drawing = true; pen.beginPath(); pen.moveTo(...at(e)); stroke(e);
});
pad.addEventListener("pointermove", (e) => { if (drawing) stroke(e); });
window.addEventListener("pointerup", () => { if (drawing) { drawing = false; predictNow(); } });
$("clear").onclick = () => { clearPad(); predictNow(); };

function stroke(e) {
  pen.lineWidth = 16; pen.lineCap = "round"; pen.lineJoin = "round"; pen.strokeStyle = "#fff";
  pen.lineTo(...at(e)); pen.stroke(); pen.beginPath(); pen.moveTo(...at(e));
  if (!pending) pending = setTimeout(predictNow, 120);  // redrawn as the stroke changes
}

function pixels() {
  const small = document.createElement("canvas");
  small.width = small.height = SENT;
  const g = small.getContext("2d");
  g.imageSmoothingEnabled = true; g.imageSmoothingQuality = "high";
  g.drawImage(pad, 0, 0, SENT, SENT);
  const data = g.getImageData(0, 0, SENT, SENT).data;
  return Array.from({ length: SENT * SENT }, (_, i) => data[4 * i]);
}

function padHasInk() {
  const data = pen.getImageData(0, 0, pad.width, pad.height).data;
  for (let i = 0; i < data.length; i += 4) if (data[i]) return true;
  return false;
}

function drawSeen(seen) {  // the network's input, 28x28, scaled up
  const canvas = $("seen"), n = Math.round(Math.sqrt(seen.length)), g = canvas.getContext("2d");
  const img = g.createImageData(n, n);
  seen.forEach((v, i) => { img.data.set([v, v, v, 255], 4 * i); });
  const tmp = document.createElement("canvas");
  tmp.width = tmp.height = n;
  tmp.getContext("2d").putImageData(img, 0, 0);
  g.imageSmoothingEnabled = false;
  g.drawImage(tmp, 0, 0, canvas.width, canvas.height);
}

async function predictNow() {
  clearTimeout(pending); pending = null;
  if (state.run === null) return;
  const sent = pixels();
  try {
    const r = await api(`/api/runs/${state.run}/predict`, {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ pixels: sent }) });
    window.nnpsLastPixels = sent;  // what the prediction on the page is of (the browser test reads it)
    $("prediction").textContent = r.prediction;
    $("pred-label").textContent = r.label === String(r.prediction) ? "" : r.label;
    $("outputs").replaceChildren(...r.outputs.map((v, k) => bar(k, v)));
    $("activations").replaceChildren(...r.activations.map(layerRow));
    drawSeen(r.pixels);
    window.nnpsSeen = r.pixels;
    showError(null);
  } catch (e) { showError(e); }
}

function bar(k, v) {
  const div = document.createElement("div");
  div.className = "bar";
  div.innerHTML = `<span>${k}</span><i style="width:${Math.round(200 * v)}px"></i><span>${v.toFixed(3)}</span>`;
  return div;
}

function layerRow(values, l, all) {
  const div = document.createElement("div");
  div.className = "layer";
  const name = document.createElement("span");  // a^1 .. a^L, the last the output layer
  name.className = "layer-name";
  name.innerHTML = `a<sup>${l + 1}</sup>${l === all.length - 1 ? " output" : ""} <small>(${values.length})</small>`;
  div.appendChild(name);
  const top = Math.max(...values.map(Math.abs)) || 1;
  for (const v of values) {
    const cell = document.createElement("i");
    const shade = Math.round(255 * Math.min(1, Math.abs(v) / top));
    cell.style.background = `rgb(${shade},${shade},${shade})`;
    div.appendChild(cell);
  }
  return div;
}

async function loadConfusion() {
  const id = state.run;
  $("confusion").replaceChildren();
  $("confusion-note").textContent = "computing on the test set...";
  const c = await api(`/api/runs/${id}/confusion`);
  if (id !== state.run) return;
  if (c.scatter) return drawScatter(c);
  $("test-caption").textContent = "Confusion on the test set (rows: true, columns: predicted; click a cell)";
  $("confusion-note").textContent = `${c.checkpoint}: test accuracy ${(100 * c.accuracy).toFixed(2)}%`;
  const head = document.createElement("tr");
  head.innerHTML = "<th></th>" + c.classes.map((_, j) => `<th>${j}</th>`).join("");
  const body = c.confusion.map((row, i) => {
    const tr = document.createElement("tr");
    tr.innerHTML = `<th title="${escape(c.classes[i])}">${escape(c.classes[i])}</th>`;
    row.forEach((v, j) => {
      const td = document.createElement("td");
      td.textContent = v;
      td.className = i === j ? "diag" : "";
      td.dataset.true = i; td.dataset.pred = j;
      td.style.background = `rgba(31,119,180,${Math.min(1, Math.log1p(v) / 7)})`;
      td.onclick = () => { $("cell").src = `/api/runs/${id}/confusion/${i}/${j}.png`; $("cell").alt = `true ${i}, predicted ${j}`; };
      tr.appendChild(td);
    });
    return tr;
  });
  $("confusion").replaceChildren(head, ...body);
}

// A regression's test rows: predicted against true, the first target, in its units.
function drawScatter(c) {
  const canvas = $("scatter"), g = canvas.getContext("2d"), s = c.scatter;
  const t = s.true[0], p = s.predicted[0];
  let lo = Infinity, hi = -Infinity;  // a loop, not Math.min(...): a spread of many values overflows the stack
  for (const v of t.concat(p)) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
  const span = hi - lo || 1;
  const at = (v, size, flip) => 30 + (flip ? 1 - (v - lo) / span : (v - lo) / span) * (size - 50);
  canvas.hidden = false;
  $("test-caption").textContent = `Test rows: predicted against true ${s.targets[0]} (its units)`;
  g.clearRect(0, 0, canvas.width, canvas.height);
  g.strokeStyle = "#999"; g.beginPath();
  g.moveTo(at(lo, canvas.width), at(lo, canvas.height, true)); g.lineTo(at(hi, canvas.width), at(hi, canvas.height, true));
  g.stroke();
  g.fillStyle = "rgba(31,119,180,0.6)";
  t.forEach((v, i) => g.fillRect(at(v, canvas.width) - 2, at(p[i], canvas.height, true) - 2, 4, 4));
  g.fillStyle = "#444";
  g.fillText(`true ${s.targets[0]} →`, canvas.width - 110, canvas.height - 6);
  g.fillText(`predicted ↑`, 4, 12);
  $("confusion-note").textContent = `${s.checkpoint}: test R^2 ${c.r2 === null ? "-" : c.r2.toFixed(4)}, ` +
    (t.length < s.rows ? `${t.length} of its ${s.rows} rows drawn` : `${t.length} rows`);
  window.nnpsScatter = s;
}

$("epoch-slider").addEventListener("input", showWeights);
$("row-load").onclick = () => loadRow().catch(showError);
$("row-predict").onclick = () => predictRow().catch(showError);
clearPad();
$("where").textContent = location.host;
loadRuns().catch(showError);
