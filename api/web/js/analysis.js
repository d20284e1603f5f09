// The study page's analysis: parallel coordinates (hover, brushing an axis filters the
// leaderboard, a choice of how many trials), and contour, slice, EDF, rank and timeline plots.
// Each draws what `GET .../charts/{chart}` answers for the leaderboard's state and filter: at
// most 2,000 trials (a sample that always holds the best ones) or, for the EDF, quantiles.
// Drawn as SVG here (uPlot has none of these); every mark knows its trial (`data-number`).

import { get } from "./api.js";
import { ramp } from "./charts.js";
import { alertBox, h, hide, num, param, replace, showError, specParams, throttle, whenVisible } from "./dom.js";

const NS = "http://www.w3.org/2000/svg";
const STATE_COLORS = { RUNNING: "#1d4ed8", COMPLETED: "#15803d", PRUNED: "#c2410c", FAILED: "#b91c1c", STOPPED: "#4b5563" };

function svg(tag, attrs = {}, ...children) {
  const el = document.createElementNS(NS, tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "text") el.textContent = value;
    else el.setAttribute(key, String(value));
  }
  for (const child of children.flat()) if (child) el.append(child);
  return el;
}

/** A scale of one parameter (its spec's range, log when log-scaled) or of the objective. */
export function scaleOf(spec, values) {
  const name = spec.parameterName;
  if (spec.type === "CATEGORICAL") {
    const cats = spec.categoricalValues || [...new Set(values.map(String))];
    const index = new Map(cats.map((c, i) => [String(c), i]));
    const at = (v) => (index.has(String(v)) ? (cats.length === 1 ? 0.5 : index.get(String(v)) / (cats.length - 1)) : null);
    return { name, categorical: true, cats, at, ticks: cats.map((c) => ({ t: at(c), label: String(c) })) };
  }
  const numbers = values.filter((v) => typeof v === "number" && Number.isFinite(v));
  let lo = spec.minValue ?? Math.min(...numbers);
  let hi = spec.maxValue ?? Math.max(...numbers);
  if (spec.type === "DISCRETE" && spec.discreteValues) {
    lo = Math.min(...spec.discreteValues);
    hi = Math.max(...spec.discreteValues);
  }
  if (!Number.isFinite(lo) || !Number.isFinite(hi)) return { name, categorical: false, at: () => null, invert: () => null, ticks: [] };
  const log = (spec.scaleType === "UNIT_LOG_SCALE" || spec.scaleType === "UNIT_REVERSE_LOG_SCALE") && lo > 0;
  const f = log ? Math.log : (v) => v;
  const g = log ? Math.exp : (v) => v;
  const span = f(hi) - f(lo);
  const at = (v) => (typeof v !== "number" || !Number.isFinite(v) ? null : span === 0 ? 0.5 : (f(v) - f(lo)) / span);
  const invert = (t) => (span === 0 ? lo : g(f(lo) + t * span));
  const ticks = [0, 0.5, 1].map((t) => ({ t, label: num(invert(t)) }));
  return { name, categorical: false, log, at, invert, ticks };
}

/** The objective's scale over the values shown. */
function objectiveScale(metric, values) {
  return scaleOf({ parameterName: metric, type: "DOUBLE" }, values);
}

const colorOfRank = (rank) => ramp(1 - (rank ?? 1));

function mark(holder, kind, body, trials) {
  holder.dataset.chart = kind;
  holder.dataset.trials = [...new Set(trials)].sort((a, b) => a - b).join(" ");
  holder.dataset.sampled = String(body.sampled);
  holder.dataset.eligible = String(body.eligible);
}

/** A panel's loader: each call asks again, and only the latest answer is shown (one asked
 *  before a filter change may arrive after the next one's). */
function chartLoader(s, box, ask, show) {
  let request = 0;
  return async function load() {
    const mine = ++request;
    try {
      const found = await ask();
      if (s.gone || mine !== request) return;
      hide(box);
      show(found);
    } catch (error) {
      if (!s.gone) showError(box, error);
    }
  };
}

function sampledText(body, what) {
  if (!body.eligible) return `No ${what} among the ${num(body.matched)} trials the leaderboard selects.`;
  const shown = body.sampled < body.eligible ? `${num(body.sampled)} of ${num(body.eligible)} (sampled; the best always in)` : `all ${num(body.eligible)}`;
  return `${shown} ${what}, of the ${num(body.matched)} trials the leaderboard selects.`;
}

// -- parallel coordinates ---------------------------------------------------------------------

/**
 * Parallel coordinates of the leaderboard's COMPLETED trials: one axis per parameter and the
 * objective last, lines coloured by rank (darkest = best). Hovering shows a trial; dragging
 * along an axis brushes a range, which `onBrush(subject, expressions)` turns into the
 * leaderboard's filter (and so every chart's); a click on an axis clears its brush.
 */
export function parallelPanel(s, path, onGone, { query, onBrush }) {
  let how = "best:100";
  let body = null;
  const box = alertBox();
  const note = h("p", { class: "muted small" });
  const readout = h("p", { class: "readout", "aria-live": "polite", "data-readout": "parallel" });
  const holder = h("div", { class: "chart-holder parallel", "data-chart": "parallel" });
  const select = h(
    "select",
    { id: "parallel-top", onchange: () => { how = select.value; load(); } },
    [50, 100, 500].map((n) => h("option", { value: `best:${n}`, text: `best ${n}`, selected: `best:${n}` === how })),
    h("option", { value: "spread:2000", text: "all (2,000 at most, sampled)" })
  );
  const el = h(
    "section",
    { class: "panel wide", "aria-labelledby": "parallel-title" },
    h("h2", { id: "parallel-title", text: "Parameters against the objective" }),
    h("div", { class: "toolbar" }, h("label", { for: "parallel-top", text: "COMPLETED trials" }), select),
    box,
    holder,
    readout,
    note
  );
  let visible = false;

  const load = chartLoader(
    s,
    box,
    () => {
      const [pick, limit] = how.split(":");
      return get(`${path}/charts/parallel`, { ...query(), pick, limit });
    },
    (found) => {
      body = found;
      draw();
    }
  );

  function draw() {
    if (!s.study || !visible || !body) return;
    const specs = specParams(s.study.spec.hyperparameters).map((p) => p.spec);
    const rows = body.points.filter((p) => p.objective !== null);
    mark(holder, "parallel", body, rows.map((r) => r.number));
    note.textContent = `${sampledText(body, "COMPLETED trials")} Darker is better. Drag along an axis to filter the leaderboard by its range; click an axis to clear it.`;
    if (!rows.length) {
      holder.replaceChildren();
      return;
    }
    const metric = s.study.metric;
    const axes = [
      ...specs.map((p) => ({ subject: `param:${p.parameterName}`, spec: p, scale: scaleOf(p, rows.map((r) => r.params[p.parameterName])), value: (r) => r.params[p.parameterName] })),
      { subject: "objective", spec: null, scale: objectiveScale(metric, rows.map((r) => r.objective)), value: (r) => r.objective },
    ];
    const width = Math.max(320, holder.clientWidth - 4);
    const height = 320;
    const top = 34;
    const bottom = height - 26;
    const left = 60;
    const right = width - 60;
    const step = axes.length > 1 ? (right - left) / (axes.length - 1) : 0;
    const xOf = (i) => left + i * step;
    const yOf = (axis, v) => {
      const t = axis.scale.at(v);
      return t === null ? null : bottom - t * (bottom - top);
    };
    const lines = rows.map((r) => ({ row: r, ys: axes.map((a) => yOf(a, a.value(r))) }));
    const root = svg("svg", { class: "parallel", width, height, viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": `Parallel coordinates: ${axes.map((a) => a.scale.name).join(", ")} for ${rows.length} COMPLETED trials` });
    const linesGroup = svg("g", { class: "lines" });
    // Worst first, so the best lines are drawn on top.
    for (const line of [...lines].reverse()) {
      const pts = [];
      line.ys.forEach((y, i) => { if (y !== null) pts.push(`${xOf(i).toFixed(1)},${y.toFixed(1)}`); });
      const rank = line.row.rank ?? 1;
      linesGroup.append(svg("polyline", { points: pts.join(" "), "data-number": line.row.number, stroke: colorOfRank(rank), "stroke-opacity": 0.35 + 0.65 * (1 - rank), "stroke-width": rank === 0 ? 2.5 : 1.2 }));
    }
    root.append(linesGroup);
    axes.forEach((axis, i) => {
      const x = xOf(i);
      const g = svg("g", { class: "axis", "data-subject": axis.subject, "data-x": x.toFixed(1) });
      g.append(svg("line", { x1: x, x2: x, y1: top, y2: bottom }));
      g.append(svg("text", { x, y: 14, class: "title", "text-anchor": i === 0 ? "start" : i === axes.length - 1 ? "end" : "middle", text: axis.scale.name }));
      for (const tick of axis.scale.ticks) {
        const y = bottom - tick.t * (bottom - top);
        g.append(svg("text", { x: i === axes.length - 1 ? x - 5 : x + 5, y: Math.min(bottom + 14, Math.max(top - 4, y + 4)), "text-anchor": i === axes.length - 1 ? "end" : "start", text: tick.label }));
      }
      const range = s.brushes.get(axis.subject);
      if (range) {
        const ys = range.map((v) => (axis.scale.categorical ? null : yOf(axis, v)));
        if (ys.every((y) => y !== null)) {
          g.append(svg("rect", { class: "brush", x: x - 7, width: 14, y: Math.min(...ys), height: Math.max(2, Math.abs(ys[0] - ys[1])) }));
        }
      }
      root.append(g);
    });
    const highlight = svg("polyline", { class: "hover-line" });
    root.append(highlight);
    holder.replaceChildren(root);

    // Hover: the line nearest the pointer where it crosses the pointer's x.
    root.addEventListener("pointermove", (event) => {
      if (dragging) return;
      const at = pointer(event);
      const i = Math.max(0, Math.min(axes.length - 2, Math.floor((at.x - left) / (step || 1))));
      const f = step ? Math.max(0, Math.min(1, (at.x - xOf(i)) / step)) : 0;
      let best = null;
      for (const line of lines) {
        const a = line.ys[i];
        const b = axes.length > 1 ? line.ys[i + 1] : a;
        if (a === null || b === null) continue;
        const d = Math.abs(a + (b - a) * f - at.y);
        if (d < 10 && (!best || d < best.d)) best = { d, line };
      }
      if (!best) {
        highlight.setAttribute("points", "");
        readout.textContent = "";
        return;
      }
      const source = linesGroup.querySelector(`polyline[data-number="${best.line.row.number}"]`);
      highlight.setAttribute("points", source.getAttribute("points"));
      highlight.dataset.number = String(best.line.row.number);
      readout.textContent = `#${best.line.row.number}: ` + axes.map((a) => `${a.scale.name}=${a.subject === "objective" ? num(a.value(best.line.row)) : param(a.value(best.line.row) ?? "—")}`).join(", ");
    });
    root.addEventListener("pointerleave", () => {
      highlight.setAttribute("points", "");
    });

    // Brushing: a vertical drag that starts on an axis.
    let dragging = null;
    const band = svg("rect", { class: "brush live", width: 14, height: 0, hidden: true });
    root.append(band);
    root.addEventListener("pointerdown", (event) => {
      const at = pointer(event);
      const i = axes.findIndex((_a, k) => Math.abs(xOf(k) - at.x) <= 10);
      if (i < 0 || at.y < top - 6 || at.y > bottom + 6) return;
      event.preventDefault();
      root.setPointerCapture(event.pointerId);
      dragging = { i, y0: clampY(at.y) };
      band.setAttribute("x", xOf(i) - 7);
      band.setAttribute("y", dragging.y0);
      band.setAttribute("height", 0);
      band.removeAttribute("hidden");
    });
    root.addEventListener("pointermove", (event) => {
      if (!dragging) return;
      const y = clampY(pointer(event).y);
      band.setAttribute("y", Math.min(y, dragging.y0));
      band.setAttribute("height", Math.abs(y - dragging.y0));
    });
    root.addEventListener("pointerup", (event) => {
      if (!dragging) return;
      const { i, y0 } = dragging;
      dragging = null;
      band.setAttribute("hidden", "");
      const y1 = clampY(pointer(event).y);
      const axis = axes[i];
      if (Math.abs(y1 - y0) < 4) {
        onBrush(axis.subject, null, []);
        return;
      }
      const [tHi, tLo] = [y0, y1].sort((a, b) => a - b).map((y) => (bottom - y) / (bottom - top));
      onBrush(axis.subject, axis.scale.categorical ? null : [axis.scale.invert(tLo), axis.scale.invert(tHi)], brushExpressions(axis, tLo, tHi));
    });

    function clampY(y) {
      return Math.max(top, Math.min(bottom, y));
    }
    function pointer(event) {
      const rect = root.getBoundingClientRect();
      return { x: event.clientX - rect.left, y: event.clientY - rect.top };
    }
  }

  const refresh = throttle(() => visible && load(), 5000);
  onGone(refresh.cancel);
  const resize = new ResizeObserver(() => draw());
  resize.observe(el);
  onGone(() => resize.disconnect());
  return {
    el,
    refresh,
    reload: () => visible && load(),
    arm: () => onGone(whenVisible(el, () => { visible = true; load(); })),
  };
}

/** The filter expressions of a brushed range of normalized positions [tLo, tHi] of an axis. */
export function brushExpressions(axis, tLo, tHi) {
  const scale = axis.scale;
  if (scale.categorical) {
    // Categories inside the band stay: the others are each excluded (filters are ANDed).
    const inside = scale.cats.filter((c) => {
      const t = scale.at(c);
      return t >= tLo - 1e-9 && t <= tHi + 1e-9;
    });
    if (!inside.length) return [];
    return scale.cats.filter((c) => !inside.includes(c)).map((c) => `${axis.subject}!=${c}`);
  }
  const round = (v) => Number(v.toPrecision(6));
  return [`${axis.subject}>=${round(scale.invert(tLo))}`, `${axis.subject}<=${round(scale.invert(tHi))}`];
}

// -- contour, slice, EDF, rank, timeline -----------------------------------------------------

const PLOTS = [
  ["contour", "Contour"],
  ["slice", "Slice"],
  ["edf", "Empirical distribution (EDF)"],
  ["rank", "Rank"],
  ["timeline", "Timeline"],
];

/** One panel with a choice of plot; each request follows the leaderboard's state and filter. */
export function analysisPanel(s, path, onGone, { query }) {
  const opt = { plot: "contour", x: null, y: null };
  let body = null;
  const box = alertBox();
  const note = h("p", { class: "muted small" });
  const readout = h("p", { class: "readout", "aria-live": "polite", "data-readout": "analysis" });
  const holder = h("div", { class: "chart-holder analysis" });
  const plotSelect = h(
    "select",
    { id: "analysis-plot", onchange: () => { opt.plot = plotSelect.value; renderControls(); load(); } },
    PLOTS.map(([value, text]) => h("option", { value, text }))
  );
  const xSelect = h("select", { id: "analysis-x", onchange: () => { opt.x = xSelect.value; draw(); } });
  const ySelect = h("select", { id: "analysis-y", onchange: () => { opt.y = ySelect.value; draw(); } });
  const pair = h("span", { class: "toolbar" }, h("label", { for: "analysis-x", text: "x" }), xSelect, h("label", { for: "analysis-y", text: "y" }), ySelect);
  const el = h(
    "section",
    { class: "panel wide", "aria-labelledby": "analysis-title" },
    h("h2", { id: "analysis-title", text: "Analysis" }),
    h("div", { class: "toolbar" }, h("label", { for: "analysis-plot", text: "Plot" }), plotSelect, pair),
    box,
    holder,
    readout,
    note
  );
  let visible = false;

  function renderControls() {
    const names = s.study ? specParams(s.study.spec.hyperparameters).map((p) => p.name) : [];
    if (!opt.x || !names.includes(opt.x)) opt.x = names[0] || null;
    if (!opt.y || !names.includes(opt.y)) opt.y = names.find((n) => n !== opt.x) || opt.x;
    replace(xSelect, names.map((n) => h("option", { value: n, text: n, selected: n === opt.x })));
    replace(ySelect, names.map((n) => h("option", { value: n, text: n, selected: n === opt.y })));
    pair.hidden = opt.plot !== "contour";
  }

  const load = chartLoader(
    s,
    box,
    () => get(`${path}/charts/${opt.plot}`, { ...query(), limit: opt.plot === "timeline" ? 1000 : 2000 }),
    (found) => {
      body = found;
      draw();
    }
  );

  function draw() {
    if (!s.study || !visible || !body || body.chart !== opt.plot) return;
    const specs = new Map(specParams(s.study.spec.hyperparameters).map((p) => [p.name, p.spec]));
    const width = Math.max(320, holder.clientWidth - 4);
    readout.textContent = "";
    const drawn = {
      contour: () => contour(body, specs, width),
      slice: () => slice(body, specs, width),
      edf: () => edfPlot(body, width),
      rank: () => rankPlot(body, specs, width),
      timeline: () => timelinePlot(body, width),
    }[opt.plot]();
    holder.replaceChildren(...drawn.nodes);
    mark(holder, opt.plot, body, drawn.trials);
    note.textContent = drawn.note;
    for (const m of holder.querySelectorAll("[data-number]")) {
      m.addEventListener("pointerenter", () => { readout.textContent = m.querySelector("title")?.textContent || ""; });
      m.addEventListener("click", () => { location.hash = `#${path}/trials/${m.dataset.number}`; });
    }
  }

  function contour(body, specs, width) {
    const xs = specs.get(opt.x);
    const ys = specs.get(opt.y);
    const rows = body.points.filter((p) => p.state === "COMPLETED" && p.objective !== null && p.params[opt.x] !== undefined && p.params[opt.y] !== undefined);
    const text = `${sampledText(body, "COMPLETED trials")} Colour: ${s.study.metric}, interpolated between trials (darker is better); dots are trials.`;
    if (!xs || !ys || !rows.length) return { nodes: [h("p", { class: "muted", text: "No COMPLETED trial with both parameters." })], trials: [], note: text };
    const frame = frameOf(width, 340, scaleOf(xs, rows.map((r) => r.params[opt.x])), scaleOf(ys, rows.map((r) => r.params[opt.y])));
    const values = rows.map((r) => r.objective);
    const lo = Math.min(...values);
    const hi = Math.max(...values);
    const better = (v) => (hi === lo ? 1 : s.study.goal === "MAXIMIZE" ? (v - lo) / (hi - lo) : (hi - v) / (hi - lo));
    const known = rows.map((r) => ({ u: frame.sx.at(r.params[opt.x]), v: frame.sy.at(r.params[opt.y]), value: r.objective })).filter((k) => k.u !== null && k.v !== null);
    // The objective over a grid, by inverse-distance weighting of the trials (a sketch of the
    // surface: its colours are trials' values, never beyond them).
    const N = 28;
    const cells = svg("g", { class: "cells" });
    for (let i = 0; i < N; i++) {
      for (let j = 0; j < N; j++) {
        const u = (i + 0.5) / N;
        const v = (j + 0.5) / N;
        let wsum = 0;
        let vsum = 0;
        for (const k of known) {
          const d2 = (k.u - u) ** 2 + (k.v - v) ** 2 + 1e-6;
          const w = 1 / (d2 * d2);
          wsum += w;
          vsum += w * k.value;
        }
        const x0 = frame.x(i / N);
        const y1 = frame.y(j / N);
        cells.append(svg("rect", { x: x0, y: frame.y((j + 1) / N), width: frame.x((i + 1) / N) - x0 + 0.5, height: y1 - frame.y((j + 1) / N) + 0.5, fill: ramp(better(vsum / wsum)), "fill-opacity": 0.75 }));
      }
    }
    frame.plot.append(cells);
    for (const r of rows) {
      const u = frame.sx.at(r.params[opt.x]);
      const v = frame.sy.at(r.params[opt.y]);
      if (u === null || v === null) continue;
      frame.plot.append(svg("circle", { class: "dot", cx: frame.x(u), cy: frame.y(v), r: 3.5, fill: ramp(better(r.objective)), "data-number": r.number }, svg("title", { text: `#${r.number}: ${opt.x}=${param(r.params[opt.x])}, ${opt.y}=${param(r.params[opt.y])}, ${s.study.metric}=${num(r.objective)}` })));
    }
    frame.root.append(legend(frame, `${s.study.metric}: ${num(s.study.goal === "MAXIMIZE" ? lo : hi)} → ${num(s.study.goal === "MAXIMIZE" ? hi : lo)} (best)`));
    return { nodes: [frame.root], trials: rows.map((r) => r.number), note: text };
  }

  function slice(body, specs, width) {
    const rows = body.points.filter((p) => p.objective !== null);
    const text = `${sampledText(body, "COMPLETED trials")} The objective against each parameter; darker is better.`;
    if (!rows.length) return { nodes: [h("p", { class: "muted", text: "No COMPLETED trial." })], trials: [], note: text };
    const each = Math.max(260, Math.min(width, 360));
    const ys = objectiveScale(s.study.metric, rows.map((r) => r.objective));
    const nodes = [...specs.entries()].map(([name, spec]) => {
      const frame = frameOf(each, 240, scaleOf(spec, rows.map((r) => r.params[name])), ys, name);
      for (const r of rows) {
        const u = frame.sx.at(r.params[name]);
        if (u === null) continue;
        const jitter = frame.sx.categorical ? ((r.number * 37) % 11 - 5) / 400 : 0;
        frame.plot.append(svg("circle", { class: "dot", cx: frame.x(u + jitter), cy: frame.y(ys.at(r.objective)), r: 3, fill: colorOfRank(r.rank), "data-number": r.number }, svg("title", { text: `#${r.number}: ${name}=${param(r.params[name])}, ${s.study.metric}=${num(r.objective)}` })));
      }
      return frame.root;
    });
    return { nodes: [h("div", { class: "multiples" }, nodes)], trials: rows.map((r) => r.number), note: text };
  }

  function edfPlot(body, width) {
    const text = body.eligible
      ? `The share of the ${num(body.eligible)} COMPLETED trials (of ${num(body.matched)} the leaderboard selects) whose ${s.study.metric} is at or below each value${body.edf.length < body.eligible ? `, drawn from ${body.edf.length} quantiles` : ""}.`
      : `No COMPLETED trial among the ${num(body.matched)} the leaderboard selects.`;
    if (!body.edf.length) return { nodes: [h("p", { class: "muted", text: "No COMPLETED trial with an objective." })], trials: [], note: text };
    const xs = objectiveScale(s.study.metric, body.edf.map((p) => p.value));
    const ys = { name: "share of trials", categorical: false, at: (v) => v, ticks: [0, 0.5, 1].map((t) => ({ t, label: String(t) })) };
    const frame = frameOf(width, 300, xs, ys);
    let d = `M ${frame.x(xs.at(body.edf[0].value))} ${frame.y(0)}`;
    for (const p of body.edf) {
      const x = frame.x(xs.at(p.value));
      d += ` H ${x.toFixed(1)} V ${frame.y(p.share).toFixed(1)}`;
    }
    frame.plot.append(svg("path", { class: "edf", d, "data-points": body.edf.length }));
    return { nodes: [frame.root], trials: [], note: text };
  }

  function rankPlot(body, specs, width) {
    const rows = body.points.filter((p) => p.objective !== null);
    const names = [...specs.keys()].slice(0, 4);
    const text = `${sampledText(body, "COMPLETED trials")} Each pair of parameters (the first ${names.length}), trials coloured by their rank: darkest is best.`;
    if (!rows.length || names.length < 1) return { nodes: [h("p", { class: "muted", text: "No COMPLETED trial." })], trials: [], note: text };
    const pairs = [];
    for (let i = 0; i < names.length; i++) for (let j = i + 1; j < names.length; j++) pairs.push([names[i], names[j]]);
    if (!pairs.length) pairs.push([names[0], null]);
    const each = Math.max(240, Math.min(width, 320));
    const objective = { parameterName: s.study.metric, type: "DOUBLE" };
    const nodes = pairs.map(([a, b]) => {
      const sa = scaleOf(specs.get(a), rows.map((r) => r.params[a]));
      const sb = b ? scaleOf(specs.get(b), rows.map((r) => r.params[b])) : scaleOf(objective, rows.map((r) => r.objective));
      const frame = frameOf(each, 230, sa, sb, b ? `${a} × ${b}` : a);
      for (const r of [...rows].reverse()) {
        const u = sa.at(r.params[a]);
        const v = b ? sb.at(r.params[b]) : sb.at(r.objective);
        if (u === null || v === null) continue;
        frame.plot.append(svg("circle", { class: "dot", cx: frame.x(u), cy: frame.y(v), r: 3, fill: colorOfRank(r.rank), "data-number": r.number }, svg("title", { text: `#${r.number} (rank ${num(Math.round((r.rank ?? 0) * (body.eligible - 1)) + 1)} of ${num(body.eligible)}): ${a}=${param(r.params[a])}${b ? `, ${b}=${param(r.params[b])}` : ""}, ${s.study.metric}=${num(r.objective)}` })));
      }
      return frame.root;
    });
    return { nodes: [h("div", { class: "multiples" }, nodes)], trials: rows.map((r) => r.number), note: text };
  }

  function timelinePlot(body, width) {
    const rows = body.points;
    const text = body.matched
      ? `${body.sampled < body.matched ? `${num(body.sampled)} of ${num(body.matched)} trials (sampled evenly by number, the running ones always in)` : `All ${num(body.matched)} trials`} the leaderboard selects, from start to end, by state.`
      : "No trial the leaderboard selects.";
    if (!rows.length) return { nodes: [h("p", { class: "muted", text: "No trial." })], trials: [], note: text };
    const now = Date.now();
    const starts = rows.map((r) => Date.parse(r.startedAt));
    const ends = rows.map((r) => (r.endedAt ? Date.parse(r.endedAt) : now));
    const t0 = Math.min(...starts);
    const t1 = Math.max(t0 + 1000, ...ends);
    const height = Math.min(420, Math.max(160, rows.length * 6 + 60));
    const xs = { name: "time", categorical: false, at: (v) => (v - t0) / (t1 - t0), ticks: [0, 0.5, 1].map((t) => ({ t, label: new Date(t0 + t * (t1 - t0)).toLocaleTimeString() })) };
    const ys = { name: "trial", categorical: false, at: (i) => 1 - (i + 0.5) / rows.length, ticks: [] };
    const frame = frameOf(width, height, xs, ys);
    const bar = Math.max(1, (frame.bottom - frame.top) / rows.length - 1);
    rows.forEach((r, i) => {
      const x0 = frame.x(xs.at(starts[i]));
      const x1 = Math.max(x0 + 2, frame.x(xs.at(ends[i])));
      const y = frame.y(ys.at(i)) - bar / 2;
      frame.plot.append(svg("rect", { class: "bar", x: x0, y, width: x1 - x0, height: bar, fill: STATE_COLORS[r.state] || "#6b7280", "data-number": r.number, "data-state": r.state }, svg("title", { text: `#${r.number} ${r.state}: ${new Date(starts[i]).toLocaleString()} → ${r.endedAt ? new Date(ends[i]).toLocaleString() : "running"}` })));
    });
    const key = h("p", { class: "legend small" }, Object.entries(STATE_COLORS).map(([state, color]) => {
      const dot = h("span", { class: "swatch" });
      dot.style.background = color;
      return h("span", {}, dot, ` ${state} `);
    }));
    return { nodes: [frame.root, key], trials: rows.map((r) => r.number), note: text };
  }

  const refresh = throttle(() => visible && load(), 5000);
  onGone(refresh.cancel);
  const resize = new ResizeObserver(() => draw());
  resize.observe(el);
  onGone(() => resize.disconnect());
  return {
    el,
    refresh,
    reload: () => visible && load(),
    arm: () => onGone(whenVisible(el, () => { visible = true; renderControls(); load(); })),
  };
}

/** An SVG with a plot area, its two axes (ticks of `sx`, `sy`) and `x(t)`, `y(t)` for 0-1. */
function frameOf(width, height, sx, sy, title = null) {
  const left = 64;
  const right = width - 14;
  const top = title ? 26 : 12;
  const bottom = height - 34;
  const root = svg("svg", { class: "plot", width, height, viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": title || `${sy.name} against ${sx.name}` });
  const x = (t) => left + t * (right - left);
  const y = (t) => bottom - t * (bottom - top);
  root.append(svg("rect", { class: "frame", x: left, y: top, width: right - left, height: bottom - top }));
  if (title) root.append(svg("text", { x: left, y: 16, class: "title", text: title }));
  for (const tick of sx.ticks) {
    const px = x(tick.t);
    root.append(svg("line", { class: "tick", x1: px, x2: px, y1: bottom, y2: bottom + 4 }));
    root.append(svg("text", { x: px, y: bottom + 16, "text-anchor": tick.t === 0 ? "start" : tick.t === 1 ? "end" : "middle", text: tick.label }));
  }
  for (const tick of sy.ticks) {
    const py = y(tick.t);
    root.append(svg("text", { x: left - 6, y: py + 4, "text-anchor": "end", text: tick.label }));
  }
  root.append(svg("text", { x: (left + right) / 2, y: height - 4, "text-anchor": "middle", class: "axis-name", text: sx.name }));
  root.append(svg("text", { x: 12, y: (top + bottom) / 2, "text-anchor": "middle", class: "axis-name", transform: `rotate(-90 12 ${(top + bottom) / 2})`, text: sy.name }));
  const plot = svg("g", { class: "marks" });
  root.append(plot);
  return { root, plot, x, y, sx, sy, left, right, top, bottom };
}

function legend(frame, text) {
  return svg("text", { x: frame.right, y: frame.top - 2 > 10 ? frame.top - 2 : 10, "text-anchor": "end", class: "legend-text", text });
}
