// A study with several objectives has a Pareto front (GET .../pareto), not one best trial: the
// front in place of the best trial, and a plot of every COMPLETED trial against the objectives:
// a scatter with the front's staircase for two, parallel coordinates for three or more. Drawn
// as SVG (a thousand marks at most): each trial is a link to its page, and tells its number and
// values on hover and focus.

import { get } from "./api.js";
import { alertBox, h, hide, num, replace, showError, throttle, whenVisible } from "./dom.js";

const SVG = "http://www.w3.org/2000/svg";
/** COMPLETED trials plotted (the best on the first objective), and every member of the front. */
const CAP = 1000;
const PAGE = 500;
/** Front members listed before "Show all". */
const LISTED = 12;
const HINT = "Hover or focus a trial for its values; click it to open the trial.";

/** The study's objectives (`[{metric, goal}]`, the first one ranking by default). */
export function objectivesOf(study) {
  return study && study.objectives && study.objectives.length
    ? study.objectives
    : study
      ? [{ metric: study.metric, goal: study.goal }]
      : [];
}

export function severalObjectives(study) {
  return objectivesOf(study).length > 1;
}

/** "memory_mb ≤ 320" for a safety metric `{metric, goal, threshold}`. */
export function constraintText(c) {
  return `${c.metric} ${c.goal === "MAXIMIZE" ? "≥" : "≤"} ${num(c.threshold)}`;
}

const better = (goal) => (goal === "MAXIMIZE" ? "higher" : "lower");

function svg(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value !== undefined && value !== null && value !== false) el.setAttribute(key, String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

/**
 * The front's summary (for the study's summary, where a best trial would be) and its plot
 * panel; both hidden for a study with one objective. `show()` once the study is known to have
 * several, `arm()` with the other panels, `refresh()` when a trial completes.
 */
export function paretoPanel(s, path, onGone, { query }) {
  const st = { front: null, rows: [], count: 0, visible: false, shown: false, all: false, log: false };
  const link = (number) => `#${path}/trials/${number}`;

  // -- the front, where a best trial would be ----------------------------------------------
  const size = h("span", { text: "…" });
  const frontBox = alertBox();
  const intro = h("p", { class: "front-intro" });
  const list = h("ol", { class: "front-list", "aria-label": "Pareto front" });
  const more = h("button", { type: "button", hidden: true, onclick: () => { st.all = !st.all; renderFront(); } });
  const pull = h("p", { class: "small" });
  const summaryEl = h(
    "section",
    { class: "front", hidden: true, "aria-labelledby": "front-title" },
    h("h2", { id: "front-title", text: "Pareto front" }),
    frontBox,
    intro,
    list,
    more,
    pull
  );

  function renderFront() {
    const f = st.front;
    const study = s.study;
    if (!f || !study) return;
    const objectives = f.objectives.length ? f.objectives : objectivesOf(study);
    const goals = objectives.map((o) => `${o.metric} (${better(o.goal)} is better)`).join(", ");
    size.textContent = `${num(f.count)} trial${f.count === 1 ? "" : "s"}${f.filtered ? " (filtered)" : ""}`;
    // The leaderboard's filter narrows the trials: the front is theirs.
    const among = f.filtered ? ` Of the ${num(f.matchedCount)} trial${f.matchedCount === 1 ? "" : "s"} the leaderboard's state and filter keep,` : "";
    const left = f.infeasibleCount
      ? ` ${num(f.infeasibleCount)} of the ${num(f.rankedCount)} COMPLETED trials miss a safety threshold (${f.constraints.map(constraintText).join(", ")}) and cannot be on it.`
      : "";
    intro.textContent = f.count
      ? `No one trial is best: this study has ${objectives.length} objectives, ${goals}.${among} ${among ? "the" : "Its"} Pareto front has ${num(f.count)} trial${f.count === 1 ? "" : "s"}, none better than another on every objective.${left}`
      : `No one trial is best: this study has ${objectives.length} objectives, ${goals}.${among} ${among ? "no" : "No"} trial is on ${among ? "the" : "its"} Pareto front yet (none COMPLETED with every objective${f.constraints.length ? " and every safety threshold met" : ""}).${left}`;
    const members = st.all ? f.data : f.data.slice(0, LISTED);
    replace(
      list,
      members.map((m) =>
        h(
          "li",
          { "data-number": m.number },
          h("a", { href: link(m.number), text: `#${m.number}` }),
          " ",
          h("span", { text: objectives.map((o) => `${o.metric} ${num(m.objectives[o.metric] ?? null)}`).join(" · ") })
        )
      )
    );
    list.hidden = !f.count;
    more.hidden = f.count <= LISTED;
    more.textContent = st.all ? "Show fewer" : `Show all ${num(f.count)}`;
    const first = f.data.length ? f.data[0].number : "N";
    replace(
      pull,
      f.count
        ? [
            "Compare them on the plot below or in the leaderboard (sort by any objective), then pull the one you choose: ",
            h("code", { text: `tuner pull ${study.name} --trial N` }),
            ", e.g. ",
            h("code", { text: `tuner pull ${study.name} --trial ${first}` }),
            ".",
          ]
        : []
    );
  }

  // -- the plot ----------------------------------------------------------------------------
  const plotBox = alertBox();
  const holder = h("div", { class: "chart-holder" });
  const readout = h("p", { class: "readout small", text: HINT });
  const legend = h(
    "p",
    { class: "legend small" },
    h("span", { class: "key front" }),
    " on the Pareto front ",
    h("span", { class: "key dominated" }),
    " dominated ",
    h("span", { class: "key infeasible" }),
    " infeasible (misses a safety threshold)"
  );
  const note = h("p", { class: "muted small" });
  const title = h("h2", { id: "pareto-title", text: "Objectives and the Pareto front" });
  const logBox = h("input", { id: "pareto-log", type: "checkbox", onchange: () => { st.log = logBox.checked; draw(); } });
  const el = h(
    "section",
    { class: "panel wide", hidden: true, "aria-labelledby": "pareto-title" },
    title,
    h("div", { class: "toolbar" }, h("span", {}, logBox, h("label", { for: "pareto-log", text: " log scales (objectives above 0)" }))),
    plotBox,
    holder,
    readout,
    legend,
    note
  );

  let request = 0;
  async function load() {
    const mine = ++request;
    await Promise.all([loadFront(mine), st.visible ? loadRows(mine) : null]);
    if (!s.gone && mine === request) draw();
  }
  const refresh = throttle(() => st.shown && load(), 3000);
  onGone(refresh.cancel);
  /** The leaderboard's state or filter changed: the front and the plot of what it keeps. */
  const reload = () => st.shown && load();

  async function loadFront(mine) {
    try {
      const found = await get(`${path}/pareto`, query());
      if (s.gone || mine !== request) return;
      st.front = found;
      hide(frontBox);
      renderFront();
    } catch (error) {
      if (!s.gone) showError(frontBox, error);
    }
  }

  async function loadRows(mine) {
    // The COMPLETED trials the leaderboard keeps (none when it selects another state).
    const selected = query();
    const completed = !selected.state || selected.state === "COMPLETED";
    try {
      const rows = [];
      let count = 0;
      for (let offset = 0; completed && offset < CAP; offset += PAGE) {
        const page = await get(`${path}/trials`, { sort: "objective", state: "COMPLETED", filter: selected.filter, limit: Math.min(PAGE, CAP - offset), offset });
        if (s.gone || mine !== request) return;
        count = page.count;
        rows.push(...page.data);
        if (offset + PAGE >= page.count) break;
      }
      st.rows = rows;
      st.count = count;
      hide(plotBox);
    } catch (error) {
      if (!s.gone) showError(plotBox, error);
    }
  }

  let drawnWidth = 0;
  function draw() {
    if (!st.visible || !s.study) return;
    const objectives = objectivesOf(s.study);
    const metrics = objectives.map((o) => o.metric);
    const members = st.front ? st.front.data : [];
    const onFront = new Set(members.map((m) => m.number));
    const points = new Map();
    let missing = 0;
    for (const r of st.rows) {
      const values = metrics.map((m) => (r.objectives ? r.objectives[m] ?? null : null));
      if (values.some((v) => v === null)) {
        missing += 1;
        continue;
      }
      points.set(r.number, { number: r.number, values, feasible: r.feasible, front: onFront.has(r.number) });
    }
    // Members beyond the plotted rows (or finished since): the front is drawn whole.
    for (const m of members) {
      if (!points.has(m.number)) points.set(m.number, { number: m.number, values: metrics.map((k) => m.objectives[k]), feasible: true, front: true });
    }
    const shown = [...points.values()];
    const filtered = Boolean(st.front && st.front.filtered);
    if (!shown.length) {
      holder.replaceChildren();
      legend.hidden = true;
      readout.hidden = true;
      note.textContent = filtered
        ? "No COMPLETED trial with every objective among those the leaderboard's state and filter keep."
        : "No COMPLETED trial with every objective yet: the plot fills as trials complete.";
      return;
    }
    const describe = (p) =>
      `Trial #${p.number}: ${metrics.map((m, i) => `${m} ${num(p.values[i])}`).join(", ")}` +
      (p.front ? " · on the Pareto front" : "") +
      (p.feasible === false ? " · infeasible (misses a safety threshold)" : "");
    const hover = (p) => {
      readout.textContent = p ? `${describe(p)}. Click to open it.` : HINT;
    };
    drawnWidth = holder.clientWidth;
    const width = Math.max(300, drawnWidth - 4);
    const options = { width, height: 340, link, describe, hover, log: st.log };
    const chart = objectives.length === 2 ? scatter(shown, objectives, options) : parallel(shown, objectives, options);
    const front = shown.filter((p) => p.front).length;
    const infeasible = shown.filter((p) => p.feasible === false).length;
    chart.dataset.chart = "pareto";
    chart.dataset.points = String(shown.length);
    chart.dataset.front = String(front);
    chart.dataset.infeasible = String(infeasible);
    replace(holder, chart);
    legend.hidden = false;
    readout.hidden = false;
    readout.textContent = HINT;
    const of = st.count > st.rows.length ? `the ${num(st.rows.length)} best on ${metrics[0]} of ${num(st.count)} COMPLETED trials and every front member` : `${num(shown.length)} COMPLETED trial${shown.length === 1 ? "" : "s"}`;
    note.textContent =
      (objectives.length === 2
        ? `${metrics[0]} against ${metrics[1]}: ${of}; ${num(front)} on the front, joined by its staircase (every point above it is dominated).`
        : `One axis per objective, its better end at the top; one line per trial: ${of}; ${num(front)} on the front.`) +
      (infeasible ? ` ${num(infeasible)} infeasible.` : "") +
      (missing ? ` ${num(missing)} without every objective are left out.` : "") +
      (filtered ? " Only the trials the leaderboard's state and filter keep, and their front." : "");
  }

  const resize = new ResizeObserver(() => {
    if (st.visible && Math.abs(holder.clientWidth - drawnWidth) > 2) draw();
  });
  resize.observe(holder);
  onGone(() => resize.disconnect());

  return {
    el,
    summaryEl,
    size,
    refresh,
    reload,
    /** The study has several objectives: show the front (it stands where the best trial would). */
    show() {
      if (st.shown || !severalObjectives(s.study)) return;
      st.shown = true;
      summaryEl.hidden = false;
      el.hidden = false;
      title.textContent = objectivesOf(s.study).length === 2 ? "Pareto plot" : "Objectives in parallel coordinates";
      load();
    },
    arm() {
      if (!st.shown) return;
      onGone(whenVisible(el, () => { st.visible = true; load(); }));
    },
  };
}

// -- drawing ----------------------------------------------------------------------------------

/** One objective's scale: `at(v)` from 0 (its low end) to 1, linear or (all values above 0,
 * asked for) logarithmic, and a few round values to mark on it. */
function scaleOf(values, log) {
  const logged = log && values.every((v) => v > 0);
  const f = logged ? Math.log10 : (v) => v;
  const [lo, hi] = extent(values.map(f));
  const at = (v) => (f(v) - lo) / (hi - lo);
  const marks = logged ? logTicks(10 ** lo, 10 ** hi) : ticks(lo, hi);
  return { at, marks, min: Math.min(...values), max: Math.max(...values) };
}

function logTicks(lo, hi) {
  const out = [];
  for (let d = Math.floor(Math.log10(lo)); d <= Math.ceil(Math.log10(hi)); d++) {
    for (const m of [1, 2, 5]) {
      const v = Number((m * 10 ** d).toPrecision(12));
      if (v >= lo && v <= hi) out.push(v);
    }
  }
  return out.length >= 3 ? out : ticks(lo, hi).filter((v) => v > 0);
}

function extent(values) {
  let lo = Math.min(...values);
  let hi = Math.max(...values);
  if (!Number.isFinite(lo) || !Number.isFinite(hi)) return [0, 1];
  if (lo === hi) {
    const pad = Math.abs(lo) * 0.1 || 1;
    return [lo - pad, hi + pad];
  }
  const pad = (hi - lo) * 0.06;
  lo -= pad;
  hi += pad;
  return [lo, hi];
}

/** Round values between `lo` and `hi`, about `count` of them (steps of 1, 2 or 5 × 10^k). */
function ticks(lo, hi, count = 5) {
  const raw = (hi - lo) / count;
  if (!(raw > 0) || !Number.isFinite(raw)) return [lo];
  const magnitude = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * magnitude).find((v) => v >= raw);
  const out = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(Number(v.toPrecision(12)));
  return out;
}

/** Infeasible first, then the dominated, then the front on top. */
function layer(p) {
  return p.front ? 2 : p.feasible === false ? 0 : 1;
}

function classOf(p) {
  return p.front ? "front" : p.feasible === false ? "infeasible" : "dominated";
}

/** One trial's mark: a link to its page that tells its values on hover and focus. */
function mark(p, shape, { link, describe, hover }) {
  const a = svg(
    "a",
    {
      href: link(p.number),
      class: `mark ${classOf(p)}`,
      "data-number": p.number,
      "aria-label": describe(p),
      // Only the front's members are in the tab order (a study may plot a thousand trials).
      tabindex: p.front ? null : -1,
    },
    svg("title", {}, describe(p)),
    shape
  );
  a.addEventListener("mouseenter", () => hover(p));
  a.addEventListener("focus", () => hover(p));
  a.addEventListener("mouseleave", () => hover(null));
  a.addEventListener("blur", () => hover(null));
  return a;
}

/** Two objectives: every trial as a point, the front's members joined by their staircase. */
function scatter(points, objectives, options) {
  const { width, height } = options;
  const m = { left: 70, right: 18, top: 14, bottom: 46 };
  const sx = scaleOf(points.map((p) => p.values[0]), options.log);
  const sy = scaleOf(points.map((p) => p.values[1]), options.log);
  const X = (v) => m.left + sx.at(v) * (width - m.left - m.right);
  const Y = (v) => height - m.bottom - sy.at(v) * (height - m.top - m.bottom);
  const [ox, oy] = objectives;
  const root = svg("svg", {
    class: "pareto",
    width,
    height,
    viewBox: `0 0 ${width} ${height}`,
    role: "group",
    "aria-label": `Pareto plot: ${ox.metric} (${better(ox.goal)} is better) against ${oy.metric} (${better(oy.goal)} is better) for ${points.length} COMPLETED trials, ${points.filter((p) => p.front).length} on the front`,
  });
  const axes = svg("g", { class: "axes", "aria-hidden": "true" });
  for (const t of sx.marks) {
    axes.append(
      svg("line", { class: "grid", x1: X(t), x2: X(t), y1: m.top, y2: height - m.bottom }),
      svg("text", { x: X(t), y: height - m.bottom + 16, "text-anchor": "middle" }, num(t))
    );
  }
  for (const t of sy.marks) {
    axes.append(
      svg("line", { class: "grid", x1: m.left, x2: width - m.right, y1: Y(t), y2: Y(t) }),
      svg("text", { x: m.left - 6, y: Y(t) + 4, "text-anchor": "end" }, num(t))
    );
  }
  axes.append(
    svg("line", { class: "axis", x1: m.left, x2: width - m.right, y1: height - m.bottom, y2: height - m.bottom }),
    svg("line", { class: "axis", x1: m.left, x2: m.left, y1: m.top, y2: height - m.bottom }),
    svg("text", { class: "title", x: (m.left + width - m.right) / 2, y: height - 8, "text-anchor": "middle" }, `${ox.metric} (${better(ox.goal)} is better)`),
    svg("text", { class: "title", x: 14, y: (m.top + height - m.bottom) / 2, "text-anchor": "middle", transform: `rotate(-90 14 ${(m.top + height - m.bottom) / 2})` }, `${oy.metric} (${better(oy.goal)} is better)`)
  );
  root.append(axes);

  // The staircase: between two neighbours on the front, the corner at the worse of both values
  // (what the front dominates lies on its far side).
  const worse = (goal) => (goal === "MAXIMIZE" ? Math.min : Math.max);
  const front = points.filter((p) => p.front).sort((a, b) => a.values[0] - b.values[0] || a.values[1] - b.values[1]);
  if (front.length > 1) {
    const d = [`M${X(front[0].values[0])},${Y(front[0].values[1])}`];
    for (let i = 1; i < front.length; i++) {
      const [a, b] = [front[i - 1].values, front[i].values];
      d.push(`L${X(worse(ox.goal)(a[0], b[0]))},${Y(worse(oy.goal)(a[1], b[1]))}`, `L${X(b[0])},${Y(b[1])}`);
    }
    root.append(svg("path", { class: "staircase", d: d.join(" "), "aria-hidden": "true" }));
  }
  const marks = svg("g", { class: "marks" });
  for (const p of [...points].sort((a, b) => layer(a) - layer(b) || a.number - b.number)) {
    const x = X(p.values[0]);
    const y = Y(p.values[1]);
    marks.append(mark(p, svg("circle", { cx: x, cy: y, r: p.front ? 6 : 4.5 }), options));
  }
  // The front's trial numbers beside their points, while they are few enough to read.
  if (front.length <= 15) {
    for (const p of front) {
      marks.append(svg("text", { class: "number", x: X(p.values[0]) + 8, y: Y(p.values[1]) - 7, "aria-hidden": "true" }, `#${p.number}`));
    }
  }
  root.append(marks);
  return root;
}

/** Three or more objectives: one vertical axis each (the better end at the top), one line per trial. */
function parallel(points, objectives, options) {
  const { width, height } = options;
  const m = { left: 56, right: 56, top: 36, bottom: 28 };
  const step = (width - m.left - m.right) / (objectives.length - 1);
  const xOf = (i) => m.left + i * step;
  const scales = objectives.map((o, i) => {
    const scale = scaleOf(points.map((p) => p.values[i]), options.log);
    const y = (v) => {
      const up = o.goal === "MAXIMIZE" ? scale.at(v) : 1 - scale.at(v);
      return height - m.bottom - up * (height - m.top - m.bottom);
    };
    return { min: scale.min, max: scale.max, y };
  });
  const root = svg("svg", {
    class: "pareto parallel",
    width,
    height,
    viewBox: `0 0 ${width} ${height}`,
    role: "group",
    "aria-label": `Objectives in parallel coordinates (${objectives.map((o) => o.metric).join(", ")}) for ${points.length} COMPLETED trials, ${points.filter((p) => p.front).length} on the front`,
  });
  const lines = svg("g", { class: "marks" });
  for (const p of [...points].sort((a, b) => layer(a) - layer(b) || a.number - b.number)) {
    const at = objectives.map((_o, i) => `${xOf(i)},${scales[i].y(p.values[i])}`).join(" ");
    lines.append(mark(p, svg("polyline", { points: at }), options));
  }
  const axes = svg("g", { class: "axes", "aria-hidden": "true" });
  objectives.forEach((o, i) => {
    const x = xOf(i);
    const { min, max, y } = scales[i];
    const [top, bottom] = o.goal === "MAXIMIZE" ? [max, min] : [min, max];
    const anchor = i === 0 ? "start" : i === objectives.length - 1 ? "end" : "middle";
    axes.append(
      svg("line", { class: "axis", x1: x, x2: x, y1: m.top, y2: height - m.bottom }),
      svg("text", { class: "title", x, y: 14, "text-anchor": anchor }, o.metric),
      svg("text", { x, y: 28, "text-anchor": anchor }, `${better(o.goal)} is better ↑`),
      svg("text", { x: x + 5, y: y(top) + 4 }, num(top)),
      svg("text", { x: x + 5, y: y(bottom) - 2 }, num(bottom))
    );
  });
  root.append(lines, axes);
  return root;
}
