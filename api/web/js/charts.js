// Charts: eval curves and the optimization history with uPlot (vendored), and the colour ramp
// of ranks (the analysis plots, drawn as SVG, are in analysis.js).

import { ROOT } from "./api.js";
import { h, num } from "./dom.js";

let loading = null;

/** uPlot, loaded on the first chart (not on the first screen, which is the leaderboard). */
export function loadUPlot() {
  if (window.uPlot) return Promise.resolve(window.uPlot);
  if (!loading) {
    loading = new Promise((resolve, reject) => {
      const script = document.createElement("script");
      script.src = `${ROOT}/ui/vendor/uPlot.iife.min.js`;
      script.onload = () => resolve(window.uPlot);
      script.onerror = () => {
        loading = null;
        reject(new Error("could not load the charting library"));
      };
      document.head.append(script);
    });
  }
  return loading;
}

// Dark enough to stand out on white (3:1 or better for most), told apart by hue.
export const PALETTE = [
  "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#8c564b",
  "#c2185b", "#00838f", "#827717", "#e65100", "#455a64",
];
const DASH = { PRUNED: [7, 4], FAILED: [2, 3], STOPPED: [9, 3, 2, 3] };

// Whole numbers only on step and trial axes.
const INCRS = [1, 2, 5].flatMap((m) => [1, 10, 100, 1e3, 1e4, 1e5, 1e6, 1e7].map((p) => m * p)).sort((a, b) => a - b);

export function colorOf(number) {
  return PALETTE[number % PALETTE.length];
}

/** A uPlot chart that follows its container's width; `update(opts, data)` redraws it. */
export class Chart {
  constructor(container, { height = 260, label = "chart" } = {}) {
    this.container = container;
    this.height = height;
    this.plot = null;
    this.key = "";
    this.box = h("div", { class: "chart", role: "img", "aria-label": label });
    container.append(this.box);
    this.resize = new ResizeObserver(() => {
      if (this.plot) this.plot.setSize({ width: this.width(), height: this.height });
    });
    this.resize.observe(container);
  }

  width() {
    return Math.max(260, this.container.clientWidth - 4);
  }

  /** Rebuild when the series change, else only swap the data (keeps the cursor and legend). */
  update(opts, data, key) {
    if (!window.uPlot) {
      this.pending = [opts, data, key];
      loadUPlot().then(() => {
        if (this.pending) this.update(...this.pending);
      });
      return;
    }
    this.pending = null;
    for (const series of opts.series) {
      if (series.stepped) series.paths = window.uPlot.paths.stepped({ align: 1 });
    }
    if (this.plot && key === this.key) {
      this.plot.setData(data);
      return;
    }
    this.destroyPlot();
    this.key = key;
    this.plot = new window.uPlot({ width: this.width(), height: this.height, ...opts }, data, this.box);
  }

  label(text) {
    this.box.setAttribute("aria-label", text);
  }

  destroyPlot() {
    this.pending = null;
    if (this.plot) this.plot.destroy();
    this.plot = null;
  }

  destroy() {
    this.pending = null;
    this.resize.disconnect();
    this.destroyPlot();
  }
}

/**
 * Series of one metric against the global step. `trials` = [{number, state, bestStep,
 * points: Map(step -> value)}]; pruned, failed and stopped trials are dashed differently,
 * each trial's best step is ringed.
 */
export function curvesData(trials, { metric, logScale = false }) {
  const steps = new Set();
  for (const t of trials) for (const step of t.points.keys()) steps.add(step);
  const xs = [...steps].sort((a, b) => a - b);
  const data = [xs, ...trials.map((t) => xs.map((x) => (t.points.has(x) ? t.points.get(x) : null)))];
  const series = [
    { label: "step" },
    ...trials.map((t) => ({
      label: `#${t.number} ${t.state}`,
      stroke: colorOf(t.number),
      width: t.state === "RUNNING" ? 2.5 : 1.5,
      dash: DASH[t.state],
      spanGaps: true,
      points: { show: xs.length < 40, size: 4 },
      value: (_u, v) => num(v),
    })),
  ];
  const best = trials.map((t) => t.bestStep);
  const opts = {
    scales: { x: { time: false }, y: logScale ? { distr: 3 } : {} },
    series,
    axes: [{ label: "global step", incrs: INCRS }, { label: metric, size: 60, values: (_u, ticks) => ticks.map(num) }],
    legend: { live: true },
    hooks: { draw: [(u) => ringBestSteps(u, best)] },
  };
  const key = `${metric}|${logScale}|${series.map((s) => s.label).join(",")}`;
  return { opts, data, key };
}

function ringBestSteps(u, bestSteps) {
  const ctx = u.ctx;
  const xs = u.data[0];
  ctx.save();
  bestSteps.forEach((step, i) => {
    const series = u.series[i + 1];
    if (step === null || step === undefined || !series.show) return;
    const index = xs.indexOf(step);
    const value = index < 0 ? null : u.data[i + 1][index];
    if (value === null || value === undefined) return;
    const x = u.valToPos(step, "x", true);
    const y = u.valToPos(value, "y", true);
    const r = 6 * devicePixelRatio;
    ctx.beginPath();
    ctx.arc(x, y, r, 0, 2 * Math.PI);
    ctx.fillStyle = "#fff";
    ctx.fill();
    ctx.lineWidth = 2.5 * devicePixelRatio;
    ctx.strokeStyle = series._stroke || "#000";
    ctx.stroke();
    ctx.beginPath();
    ctx.arc(x, y, r / 3, 0, 2 * Math.PI);
    ctx.fillStyle = series._stroke || "#000";
    ctx.fill();
  });
  ctx.restore();
}

/** Objective by trial number (COMPLETED and PRUNED apart) with the best-so-far line. */
export function historyData(rows, { metric, goal }) {
  const sorted = [...rows].sort((a, b) => a.number - b.number);
  const xs = sorted.map((r) => r.number);
  const completed = sorted.map((r) => (r.state === "COMPLETED" ? r.objective : null));
  const other = sorted.map((r) => (r.state !== "COMPLETED" ? r.objective : null));
  let best = null;
  const better = goal === "MAXIMIZE" ? (a, b) => a > b : (a, b) => a < b;
  const bestSoFar = sorted.map((r) => {
    if (r.state === "COMPLETED" && r.objective !== null && (best === null || better(r.objective, best))) {
      best = r.objective;
    }
    return best;
  });
  const dots = (stroke) => ({ stroke, fill: stroke, paths: () => null, points: { show: true, size: 6, fill: stroke } });
  const opts = {
    scales: { x: { time: false } },
    series: [
      { label: "trial" },
      { label: "COMPLETED", ...dots("#1f77b4"), value: (_u, v) => num(v) },
      { label: "PRUNED", ...dots("#e65100"), value: (_u, v) => num(v) },
      {
        label: "best so far",
        stroke: "#2ca02c",
        width: 2,
        stepped: true,
        points: { show: false },
        value: (_u, v) => num(v),
      },
    ],
    axes: [{ label: "trial number", incrs: INCRS }, { label: metric, size: 60, values: (_u, ticks) => ticks.map(num) }],
  };
  return { opts, data: [xs, completed, other, bestSoFar], key: "history" };
}

const RAMP = [
  [253, 174, 97],
  [215, 48, 39],
  [117, 20, 110],
  [33, 16, 80],
];

/** 0 = worst (light orange) .. 1 = best (dark violet). */
export function ramp(t) {
  const x = Math.min(1, Math.max(0, t)) * (RAMP.length - 1);
  const i = Math.min(RAMP.length - 2, Math.floor(x));
  const f = x - i;
  const c = RAMP[i].map((v, k) => Math.round(v + (RAMP[i + 1][k] - v) * f));
  return `rgb(${c[0]}, ${c[1]}, ${c[2]})`;
}
