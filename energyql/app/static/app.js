// The explorer page: plain JavaScript over the server's JSON API (energyql/app/server.py).
"use strict";

const $ = (id) => document.getElementById(id);
const state = { run: null, info: null, drawing: false, pending: false, comparing: false,
                comparePending: false, poll: null };

async function call(path, body) {
  const options = body === undefined ? {} : {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) };
  let response;
  try {
    response = await fetch(path, options);
  } catch (error) {
    return { error: "the server cannot be reached (is energyql serve still running?)", hint: "" };
  }
  let data;
  try {
    data = await response.json();
  } catch (error) {
    data = { error: `the server answered ${response.status} without JSON`, hint: "" };
  }
  if (!response.ok && data.error === undefined) data.error = `error ${response.status}`;
  return data;
}

function showError(element, data) {
  if (!data || data.error === undefined) { element.hidden = true; element.textContent = ""; return; }
  element.hidden = false;
  element.textContent = data.error + (data.hint ? `\nhint: ${data.hint}` : "");
}

function debounce(fn, ms) {
  let timer = null;
  return (...args) => { clearTimeout(timer); timer = setTimeout(() => fn(...args), ms); };
}

// --- Write: check as you type ---------------------------------------------------------------
let checkNumber = 0;
async function check() {
  const number = ++checkNumber;
  const expr = $("expr").value;
  $("check-status").textContent = "checking…";
  const data = await call("/api/check", { expr, gen: $("gen").value || null });
  if (number !== checkNumber) return;  // a newer check is on its way
  const failed = !data.ok;
  $("check-error").hidden = !failed || !data.error;
  $("check-status").className = "status " + (failed ? "bad" : "good");
  if (failed) {
    $("check-status").textContent = data.error ? "✗ error" : "";
    $("check-message").textContent = data.error || "";
    $("check-caret").textContent = data.caret || "";
    $("check-hint").textContent = data.hint ? `hint: ${data.hint}` : "";
    $("check-tree").textContent = "";
  } else {
    $("check-status").textContent = `✓ ${data.stages} stage(s)` + (data.conditional ? ", conditional" : "");
    $("check-tree").textContent = data.tree;
  }
  $("expr").dataset.checked = expr;  // tests wait on it
}
const checkSoon = debounce(check, 250);

// --- Train ----------------------------------------------------------------------------------
async function startTraining() {
  const body = {
    expr: $("expr").value, gen: $("gen").value, name: $("train-name").value.trim(),
    steps: $("train-steps").value, batch: $("train-batch").value, seed: $("train-seed").value,
    report: $("train-report").checked, samples: $("train-samples").value,
  };
  for (const [key, value] of Object.entries(window.energyqlTrainExtra || {})) body[key] = value;
  const data = await call("/api/train", body);
  if (data.error !== undefined) { showError($("train-error"), data); return; }
  showError($("train-error"), null);
  showTraining(data);
  pollTraining();
}

async function cancelTraining() {
  const data = await call("/api/train/cancel", {});
  if (data.error !== undefined) showError($("train-error"), data); else showTraining(data);
}

function pollTraining() {
  clearTimeout(state.poll);
  state.poll = setTimeout(async () => {
    const data = await call("/api/train/status");
    if (data.error === undefined) showTraining(data);
    if (data.state === "running") pollTraining();
    else if (data.state === "finished") await loadRuns(data.run);
  }, 400);
}

function showTraining(data) {
  const running = data.state === "running";
  $("train-start").disabled = running;
  $("train-cancel").disabled = !running || data.cancelling;
  if (data.state === "idle") return;
  $("train-progress").hidden = false;
  const stageSteps = data.steps || 1;
  const done = ((data.stage || 1) - 1) * stageSteps + (data.step || 0);
  $("train-bar").max = stageSteps * (data.stages || 1);
  $("train-bar").value = done;
  const where = data.stage ? `stage ${data.stage}/${data.stages}, step ${data.step}/${data.steps}` : "";
  $("train-state").textContent = `${data.state}: ${data.run}` + (where ? ` — ${where}` : "");
  $("train-state").className = "status " + ({ finished: "good", failed: "bad", cancelled: "bad" }[data.state] || "");
  $("train-state").dataset.state = data.state;
  $("train-phase").textContent = (data.phase ? `phase: ${data.phase}` : "") +
    (data.seconds ? ` · ${data.seconds} s` : "") + (data.message ? ` · ${data.message}` : "");
  const figures = Object.entries(data.figures || {}).map(([k, v]) => `${k} ${Number(v).toFixed(3)}`);
  if (data.loss !== null && data.loss !== undefined) figures.unshift(`loss ${Number(data.loss).toFixed(3)}`);
  $("train-figures").textContent = figures.join(" · ");
  drawCurve(data.curve || []);
}

function drawCurve(points) {
  const canvas = $("train-curve");
  const g = canvas.getContext("2d");
  g.clearRect(0, 0, canvas.width, canvas.height);
  if (points.length < 2) return;
  const keys = Object.keys(points[points.length - 1]).filter((k) => !["stage", "step"].includes(k));
  const colours = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c"];
  const pad = 24, w = canvas.width - 2 * pad, h = canvas.height - 2 * pad;
  g.strokeStyle = "#ccc"; g.strokeRect(pad, pad, w, h);
  keys.forEach((key, i) => {
    const values = points.map((p) => p[key]).filter((v) => v !== null && v !== undefined);
    if (values.length < 2) return;
    const low = Math.min(...values), high = Math.max(...values), span = high - low || 1;
    g.strokeStyle = colours[i % colours.length]; g.beginPath();
    points.forEach((p, j) => {
      if (p[key] === null || p[key] === undefined) return;
      const x = pad + (w * j) / (points.length - 1), y = pad + h - (h * (p[key] - low)) / span;
      if (j === 0) g.moveTo(x, y); else g.lineTo(x, y);
    });
    g.stroke();
    g.fillStyle = colours[i % colours.length]; g.font = "11px sans-serif";
    g.fillText(`${key} (${low.toPrecision(3)}..${high.toPrecision(3)})`, pad + 4 + 170 * i, 14);
  });
}

// --- Explore --------------------------------------------------------------------------------
async function loadRuns(select) {
  const data = await call("/api/runs");
  const chooser = $("run-select");
  const before = select || chooser.value;
  chooser.innerHTML = "";
  if (data.error !== undefined) { showError($("run-error"), data); return; }
  const none = new Option(data.runs.length ? "— pick a run —" : "no runs yet: train one", "");
  chooser.add(none);
  for (const run of data.runs) {
    const label = run.error ? `${run.name} (unreadable)` : `${run.name} — ${run.source}`;
    chooser.add(new Option(label.length > 90 ? label.slice(0, 89) + "…" : label, run.name));
  }
  if (before && data.runs.some((r) => r.name === before)) {
    chooser.value = before;
    if (before !== state.run || select) await openRun(before);
  }
}

async function openRun(name) {
  state.run = name;
  $("run-panel").hidden = true; $("compare").hidden = true;
  if (!name) return;
  const info = await call("/api/run/info", { name });
  if (info.error !== undefined) { showError($("run-error"), info); return; }
  showError($("run-error"), null);
  state.info = info;
  $("run-source").textContent = `${info.canonical}   ·   ${info.generator}, ${info.stages.length} stage(s)`;
  const table = $("headline");
  table.innerHTML = "";
  info.headline.forEach((row, i) => {
    const tr = table.insertRow();
    row.forEach((cell) => { const c = document.createElement(i ? "td" : "th"); c.textContent = cell; tr.appendChild(c); });
  });
  const sampler = $("sampler");
  sampler.innerHTML = "";
  info.samplers.forEach((s) => sampler.add(new Option(s, s)));
  const sliders = $("sliders");
  sliders.innerHTML = "";
  for (const param of info.context) {
    const row = document.createElement("div");
    row.className = "row";
    const label = document.createElement("label");
    label.textContent = `${param.name} (${param.control})`;
    label.htmlFor = `slider-${param.name}`;
    const input = document.createElement("input");
    Object.assign(input, { type: "range", id: `slider-${param.name}`, min: param.low, max: param.high,
                           step: (param.high - param.low) / 100, value: (param.low + param.high) / 2 });
    input.dataset.param = param.name;
    const value = document.createElement("span");
    value.className = "value"; value.id = `slider-${param.name}-value`;
    value.textContent = Number(input.value).toFixed(3);
    input.addEventListener("input", () => {
      value.textContent = Number(input.value).toFixed(3); markSweeps(); requestDraw(); });
    row.append(label, input, value);
    sliders.appendChild(row);
  }
  showSweeps(info);
  const report = $("download-report");
  report.hidden = !info.reports.length;
  if (info.reports.length) {
    const kind = info.reports.includes("html") ? "html" : info.reports[0];
    report.href = `/api/run/report?name=${encodeURIComponent(name)}&kind=${kind}`;
    report.textContent = `report (${kind})`;
  }
  const stages = $("stage-select");
  stages.innerHTML = "";
  info.stages.forEach((s) => stages.add(new Option(`stage ${s.index}: ${s.source}`, s.index)));
  $("run-panel").hidden = false;
  $("compare").hidden = false;
  requestDraw();
  requestCompare();
}

// --- Sliders: what `energyql run` measured along each (metrics.json's sweeps) ---------------
const tidy = (v) => String(Number(Number(v).toPrecision(6)));  // 0.30000000000000004 -> 0.3
const share = (v) => (v === null || v === undefined ? "—" : Number(v).toFixed(3));

// [heading, row -> figure] per column, as the report tables them. A weight slider has no
// requested share: its columns are the shares of the predicates it weights.
function sweepColumns(sweep) {
  const many = sweep.cells.length + sweep.predicates.length > 1;
  const columns = [];
  for (const cell of sweep.cells) {
    const tail = many ? ` ${cell}` : "";
    columns.push([`requested${tail}`, (r) => r.requested[cell]], [`judged${tail}`, (r) => r.judged[cell]],
                 [`true${tail}`, (r) => r.truth[cell]]);
  }
  for (const text of sweep.predicates) {
    const tail = many ? ` ${text}` : "";
    columns.push([`judged share${tail}`, (r) => r.predicate_share[text]],
                 [`true share${tail}`, (r) => r.truth_predicate_share[text]]);
  }
  columns.push(["ESS/N", (r) => r.ess_fraction]);
  return columns;
}

function sweepTitle(sweep) {
  if (sweep.cells.length) return `slider ${sweep.name}: share of ${sweep.cells.join(", ")}, requested against achieved`;
  if (sweep.predicates.length) return `slider ${sweep.name} (a weight): shares satisfying ${sweep.predicates.join(", ")}`;
  return `slider ${sweep.name}`;
}

function showSweeps(info) {
  const box = $("sweeps");
  box.innerHTML = "";
  for (const sweep of info.sliders || []) {
    if (!sweep.rows.length) continue;
    const panel = document.createElement("div");
    panel.className = "sweep"; panel.dataset.slider = sweep.name;
    const title = document.createElement("h3"); title.textContent = sweepTitle(sweep);
    const table = document.createElement("table");
    const columns = sweepColumns(sweep);
    const head = table.insertRow();
    for (const heading of [sweep.name, ...columns.map((c) => c[0])]) {
      const th = document.createElement("th"); th.textContent = heading; head.appendChild(th);
    }
    for (const row of sweep.rows) {
      const tr = table.insertRow();
      tr.dataset.value = tidy(row.value);
      tr.insertCell().textContent = tidy(row.value);
      for (const [, figure] of columns) tr.insertCell().textContent = share(figure(row));
    }
    const note = document.createElement("div");
    note.className = "dim";
    note.textContent = "measured by energyql run at each setting (true: what the world drew); " +
      "marked: the setting nearest the slider";
    panel.append(title, table, note);
    box.appendChild(panel);
  }
  markSweeps();
}

function nearestRow(sweep, value) {
  return sweep.rows.reduce((best, row) => (Math.abs(row.value - value) < Math.abs(best.value - value) ? row : best));
}

// Mark each sweep's row nearest its slider, and show that setting's figures beside the grid.
function markSweeps() {
  const measured = $("measured");
  measured.innerHTML = "";
  const sweeps = ((state.info && state.info.sliders) || []).filter((s) => s.rows.length);
  let shown = 0;
  for (const sweep of sweeps) {
    const input = document.getElementById(`slider-${sweep.name}`);
    const panel = [...document.querySelectorAll("#sweeps .sweep")].find((p) => p.dataset.slider === sweep.name);
    if (!input || !panel) continue;
    const row = nearestRow(sweep, Number(input.value));
    panel.dataset.nearest = tidy(row.value);
    panel.querySelectorAll("tr").forEach((tr, i) => {
      tr.classList.toggle("nearest", i > 0 && i - 1 === sweep.rows.indexOf(row));
    });
    const box = document.createElement("div");
    box.dataset.slider = sweep.name;
    const title = document.createElement("h3");
    title.textContent = `measured at ${sweep.name}=${tidy(row.value)}`;
    // One line per share the slider moves: requested (dist entries), judged, true; then ESS/N.
    const table = document.createElement("table");
    const lines = [[sweep.cells.length ? "share of" : "share satisfying",
                    ...(sweep.cells.length ? ["requested"] : []), "judged", "true"]];
    for (const cell of sweep.cells) {
      lines.push([cell, share(row.requested[cell]), share(row.judged[cell]), share(row.truth[cell])]);
    }
    for (const text of sweep.predicates) {
      lines.push([text, share(row.predicate_share[text]), share(row.truth_predicate_share[text])]);
    }
    lines.push(["ESS/N", share(row.ess_fraction)]);
    lines.forEach((cells, i) => {
      const tr = table.insertRow();
      for (const text of cells) {
        const cell = document.createElement(i ? "td" : "th"); cell.textContent = text; tr.appendChild(cell);
      }
    });
    box.append(title, table);
    const note = document.createElement("div");
    note.className = "dim";
    note.textContent = `the nearest of the ${sweep.rows.length} measured settings to ${sweep.name}=` +
      `${Number(input.value).toFixed(3)}` + (state.info.context.length > 1 ? "; other sliders at their middles" : "");
    box.appendChild(note);
    measured.appendChild(box);
    shown += 1;
  }
  measured.hidden = !shown;
}

function request() {
  const context = {};
  document.querySelectorAll("#sliders input[type=range]").forEach((input) => {
    context[input.dataset.param] = Number(input.value);
  });
  return { name: state.run, seed: $("seed").value, sampler: $("sampler").value || "flow", context };
}

// Slider moves come faster than grids: one request in flight, the latest position next.
async function requestDraw() {
  if (state.drawing) { state.pending = true; return; }
  state.drawing = true;
  do {
    state.pending = false;
    const asked = request();
    const began = performance.now();
    const data = await call("/api/run/draw", asked);
    if (asked.name !== state.run) continue;  // another run was opened: draw that one next
    if (data.error !== undefined) { showError($("draw-error"), data); continue; }
    showError($("draw-error"), null);
    const grid = $("grid");
    await new Promise((done) => { grid.onload = done; grid.onerror = done; grid.src = data.grid; });
    grid.dataset.key = JSON.stringify(asked);  // what the grid shows (tests wait on it)
    grid.dataset.ms = String(Math.round(performance.now() - began));
    $("draw-time").textContent = `drawn in ${Math.round(data.seconds * 1000)} ms on the server, ` +
      `${grid.dataset.ms} ms to the page` + (data.stats.ess ? ` · ESS ${Number(data.stats.ess).toFixed(1)} of ${data.stats.proposals}` : "");
    const params = new URLSearchParams({ name: asked.name, seed: asked.seed, sampler: asked.sampler,
                                         context: JSON.stringify(asked.context) });
    $("download-grid").href = `/api/run/grid.png?${params}`;
    showHistograms(data);
  } while (state.pending);
  state.drawing = false;
  if (!$("compare").hidden) requestCompare();
}

function bars(title, entries, marker) {
  const box = document.createElement("div");
  box.className = "hist";
  const h = document.createElement("h3"); h.textContent = title; box.appendChild(h);
  for (const [label, share, highlight] of entries) {
    const row = document.createElement("div"); row.className = "bar-row" + (highlight ? " marked" : "");
    const name = document.createElement("span"); name.className = "bar-label"; name.textContent = label;
    const bar = document.createElement("span"); bar.className = "bar";
    bar.style.width = `${Math.round(share * 120)}px`;
    const value = document.createElement("span"); value.className = "bar-value"; value.textContent = share.toFixed(2);
    row.append(name, bar, value); box.appendChild(row);
  }
  if (marker) { const note = document.createElement("div"); note.className = "dim"; note.textContent = marker; box.appendChild(note); }
  return box;
}

function showHistograms(data) {
  const box = $("histograms");
  box.innerHTML = "";
  for (const [name, reading] of Object.entries(data.pose || {})) {
    const bins = 8, counts = new Array(bins).fill(0);
    const width = (reading.high - reading.low) || 1;
    reading.read.forEach((v) => { counts[Math.min(bins - 1, Math.max(0, Math.floor(((v - reading.low) / width) * bins)))] += 1; });
    const asked = Math.min(bins - 1, Math.max(0, Math.floor(((reading.requested - reading.low) / width) * bins)));
    const entries = counts.map((c, i) => {
      const a = reading.low + (width * i) / bins;
      return [`${a.toFixed(2)}…`, c / reading.read.length, i === asked];
    });
    box.appendChild(bars(`${name} as the pose model reads it`, entries,
      `requested ${reading.requested.toFixed(3)} (marked) · mean |read − requested| ${reading.mean_error}`));
  }
  for (const [attribute, shares] of Object.entries(data.attributes || {})) {
    box.appendChild(bars(`${attribute} (judged)`, Object.entries(shares).map(([v, s]) => [v, s, false])));
  }
}

// --- Compare --------------------------------------------------------------------------------
async function requestCompare() {
  if (!state.run) return;
  if (state.comparing) { state.comparePending = true; return; }
  state.comparing = true;
  do {
    state.comparePending = false;
    const asked = { ...request(), stage: $("stage-select").value || 1 };
    const data = await call("/api/run/compare", asked);
    if (asked.name !== state.run) continue;  // another run was opened: compare that one next
    const box = $("compare-panels");
    box.innerHTML = "";
    if (data.error !== undefined) { const e = document.createElement("div"); e.className = "error"; box.appendChild(e); showError(e, data); continue; }
    for (const panel of data.panels) {
      const figure = document.createElement("figure");
      const img = document.createElement("img"); img.src = panel.grid; img.alt = panel.label;
      const caption = document.createElement("figcaption"); caption.textContent = panel.label;
      figure.append(img, caption); box.appendChild(figure);
    }
    box.dataset.key = JSON.stringify(asked);
    $("compare-time").textContent = `seed ${asked.seed}, drawn in ${Math.round(data.seconds * 1000)} ms`;
  } while (state.comparePending);
  state.comparing = false;
}

// --- start ----------------------------------------------------------------------------------
async function start() {
  const meta = await call("/api/meta");
  const gen = $("gen");
  gen.add(new Option("(syntax only)", ""));
  for (const name of meta.generators || []) gen.add(new Option(name, name));
  gen.value = (meta.trainable || []).includes("shapes") ? "shapes" : (meta.trainable || [""])[0] || "";
  $("runs-dir").textContent = meta.runs_dir ? `runs: ${meta.runs_dir} · energyql ${meta.version}` : "";
  document.body.dataset.trainable = JSON.stringify(meta.trainable || []);
  $("expr").addEventListener("input", checkSoon);
  gen.addEventListener("change", check);
  $("train-start").addEventListener("click", startTraining);
  $("train-cancel").addEventListener("click", cancelTraining);
  $("run-select").addEventListener("change", () => openRun($("run-select").value));
  $("runs-refresh").addEventListener("click", () => loadRuns());
  $("sampler").addEventListener("change", requestDraw);
  $("seed").addEventListener("input", debounce(requestDraw, 200));
  $("stage-select").addEventListener("change", requestCompare);
  check();
  await loadRuns();
  const status = await call("/api/train/status");
  if (status.state && status.state !== "idle") { showTraining(status); if (status.state === "running") pollTraining(); }
  document.body.dataset.ready = "1";
}

document.addEventListener("DOMContentLoaded", start);
