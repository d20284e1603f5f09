// One trial: params as the trainer received them (and the conditional ones it did not get),
// every metric of every eval step (curves and a table), its objectives where the study has
// several, its note, a Stop while it runs, the kept checkpoint and exports with downloads, and
// the log followed while it runs.

import { auth, call, download, follow, get, post, query, studyPath } from "./api.js";
import { Chart, curvesData } from "./charts.js";
import { alertBox, badge, bytes, confirmDialog, duration, h, hide, num, param, paramShown, replace, scroller, showError, showInfo, specParams, throttle, time } from "./dom.js";
import { notesPanel } from "./notes.js";
import { constraintText, objectivesOf, severalObjectives } from "./pareto.js";

const LOG_BYTES = 64 * 1024;
const LOG_LINES = 2000;

export function trialView(container, { study, number }) {
  const path = `${studyPath(study)}/trials/${number}`;
  let detail = null;
  let studyInfo = null; // its spec: every parameter, the objectives and safety thresholds
  let gone = false;
  let missing = false;
  let stream = null;
  const charts = [];

  const heading = h("h1", { tabindex: -1 }, `Trial #${number}`);
  const pageBox = alertBox();
  const summary = h("dl", { class: "summary" });
  const actions = h("div", { class: "row", role: "group", "aria-label": "Actions" });
  const actionBox = alertBox();
  const note = notesPanel({ id: "trial-note", title: "Notes", path });
  const failure = h("section", { class: "failure", hidden: true, "aria-labelledby": "failure-title" });
  const params = h("section", { class: "panel", "aria-labelledby": "params-title" });
  const artifacts = h("section", { class: "panel", "aria-labelledby": "artifacts-title" });
  const curves = h("div", { class: "small-multiples" });
  const metricsTable = h("div");
  const downloadBox = alertBox();
  const logBox = h("pre", { class: "log", role: "log", tabindex: 0, "aria-label": "Log" });
  const logNote = h("p", { class: "muted small" });

  async function load() {
    try {
      detail = await get(path);
      if (gone) return;
      hide(pageBox);
      render();
    } catch (error) {
      if (gone) return;
      showError(pageBox, error);
      missing = error.status === 404;
    }
  }
  const refresh = throttle(load, 1000);

  function executorText(executor) {
    if (!executor || executor.name === "local") return "this worker (local)";
    return `${executor.name}: node ${String(executor.nodeId || "?").slice(0, 12)}…, task ${String(executor.taskId || "?").slice(0, 12)}…`;
  }

  /** The metrics at the ranking step (the best step: with several objectives under `final`,
   * the last one is kept as the best). */
  function rankingMetrics() {
    const at = detail.steps.filter((st) => st.step === detail.bestStep);
    return Object.assign({}, ...at.map((st) => st.metrics));
  }

  function objectiveItems(item) {
    if (!severalObjectives(studyInfo)) return [item("Objective", num(detail.objective))];
    const values = rankingMetrics();
    return objectivesOf(studyInfo).map((o) =>
      item(`${o.metric} (${o.goal === "MAXIMIZE" ? "max" : "min"})`, num(detail.objectives?.[o.metric] ?? values[o.metric] ?? null))
    );
  }

  function safetyItem(item) {
    const constraints = (studyInfo && studyInfo.constraints) || [];
    if (!constraints.length || detail.bestStep === null) return null;
    const values = rankingMetrics();
    const met = constraints.map((c) => {
      const v = values[c.metric];
      return v === null || v === undefined ? null : c.goal === "MAXIMIZE" ? v >= c.threshold : v <= c.threshold;
    });
    const feasible = detail.feasible ?? (met.includes(null) ? null : met.every(Boolean));
    const text = constraints.map((c) => `${c.metric} ${num(values[c.metric] ?? null)} (${constraintText(c)})`).join(", ");
    return item("Safe", feasible === null ? "—" : feasible ? `yes: ${text}` : `no: ${text}`);
  }

  async function stopTrial(event) {
    const button = event.currentTarget;
    const ok = await confirmDialog({
      title: `Stop trial #${number}?`,
      text: "Its trainer is stopped now. It ends PRUNED, with a reason saying it was stopped by hand: it is not run again, and it counts toward the study's budget like a pruned trial.",
      confirm: "Stop trial",
    });
    if (!ok) return;
    button.disabled = true;
    hide(actionBox);
    try {
      detail = await post(`${path}/stop`);
      render();
      showInfo(actionBox, `Stopping trial #${number}: it ends PRUNED, stopped by hand.`);
    } catch (error) {
      showError(actionBox, error);
      button.disabled = false;
    }
  }

  function render() {
    const d = detail;
    document.title = `${study} #${number} · estimator-tuner`;
    replace(heading, `Trial #${number} `, badge(d.state));
    const item = (term, ...value) => h("div", {}, h("dt", { text: term }), h("dd", {}, ...value));
    replace(
      summary,
      objectiveItems(item),
      safetyItem(item),
      item("Best step", num(d.bestStep)),
      item("Last step", num(d.lastStep)),
      item("Started", time(d.startedAt)),
      item("Ended", d.endedAt ? time(d.endedAt) : "running"),
      item("Duration", d.state === "RUNNING" ? `${duration((Date.now() - Date.parse(d.startedAt)) / 1000)}…` : duration(d.durationSeconds)),
      item("Exit code", d.exitCode === null ? "—" : String(d.exitCode)),
      item("Worker", d.worker || "—"),
      item("Ran on", executorText(d.executor)),
      d.stopRequestedAt ? item("Stop asked", time(d.stopRequestedAt), d.stopRequestedBy ? ` by ${d.stopRequestedBy}` : "") : null
    );
    replace(
      actions,
      d.state === "RUNNING" && auth.canWrite && !d.stopRequestedAt
        ? h("button", { type: "button", class: "danger", text: "Stop trial", onclick: stopTrial })
        : null
    );
    note.show(d.note);
    failure.hidden = !d.failureReason && !d.problems.length;
    replace(
      failure,
      h("h2", { id: "failure-title", text: { STOPPED: "Why it stopped", FAILED: "Why it failed", PRUNED: "Why it was pruned" }[d.state] || "Problems" }),
      d.failureReason ? h("pre", { class: "reason", text: d.failureReason }) : null,
      d.problems.length ? h("ul", {}, d.problems.map((p) => h("li", { text: p }))) : null
    );
    replace(
      params,
      h("h2", { id: "params-title", text: "Params" }),
      h("p", {
        class: "muted small",
        text: Object.keys(d.params).length < (studyInfo ? specParams(studyInfo.spec.hyperparameters).length : 0)
          ? "As the trainer received them (--name=value). —: inactive, a conditional parameter its parent's value does not use (not passed)."
          : "As the trainer received them (--name=value).",
      }),
      h(
        "table",
        { class: "grid", "aria-label": "Params" },
        h("thead", {}, h("tr", {}, h("th", { scope: "col", text: "Parameter" }), h("th", { scope: "col", text: "Value" }))),
        h("tbody", {}, paramRows(d.params))
      )
    );
    renderArtifacts();
    renderMetrics();
  }

  /** In the spec's order, with the conditional parameters its parents left out ("—"). */
  function paramRows(params) {
    const entries = studyInfo ? specParams(studyInfo.spec.hyperparameters) : [];
    const known = new Set(entries.map((e) => e.name));
    const rows = entries.map((e) => {
      const shown = paramShown(params, e);
      return h(
        "tr",
        { class: shown.inactive ? "inactive" : null },
        h("th", { scope: "row", text: e.name, title: e.parent ? `active when ${e.parent.name} is ${e.parent.values.join(" or ")}` : null }),
        h("td", { title: shown.title || null, text: shown.text })
      );
    });
    // What the trainer got that the spec does not list (none, normally).
    for (const [k, v] of Object.entries(params)) {
      if (!known.has(k)) rows.push(h("tr", {}, h("th", { scope: "row", text: k }), h("td", { text: param(v) })));
    }
    return rows;
  }

  function renderArtifacts() {
    const d = detail;
    const kept = d.checkpoints.find((c) => c.step === d.bestStep);
    const exported = d.exports.filter((e) => e.step === d.bestStep);
    const button = (label, what, enabled, why) =>
      h("button", {
        type: "button",
        class: "primary",
        disabled: !enabled,
        title: enabled ? "" : why,
        text: label,
        onclick: async (event) => {
          const b = event.currentTarget;
          b.disabled = true;
          hide(downloadBox);
          try {
            const saved = await download(`${path}/${what}`, `${study}-trial${number}-${what}.tar.gz`, (done, total) => {
              showInfo(downloadBox, `Downloading ${bytes(done)}${total ? ` of ${bytes(total)}` : ""}…`);
            });
            showInfo(downloadBox, `Saved ${saved.name} (${bytes(saved.size)}).`);
          } catch (error) {
            showError(downloadBox, error);
          } finally {
            b.disabled = false;
          }
        },
      });
    replace(
      artifacts,
      h("h2", { id: "artifacts-title", text: "Kept checkpoint and exports" }),
      h(
        "div",
        { class: "row" },
        button(`Download SavedModel${d.bestStep !== null ? ` (step ${num(d.bestStep)})` : ""}`, "model", exported.length > 0, "no SavedModel export of the best step"),
        button(`Download checkpoint${kept ? ` (step ${num(kept.step)})` : ""}`, "checkpoint", Boolean(kept), "no kept checkpoint of the best step")
      ),
      downloadBox,
      d.deleted ? h("p", { class: "muted", text: `Retention: ${d.deleted.message}. Its metrics and log remain.` }) : null,
      h("h3", { text: "Checkpoint" }),
      d.checkpoints.length
        ? h("ul", {}, d.checkpoints.map((c) => h("li", {}, `step ${num(c.step)}: `, h("code", { text: c.path }))))
        : h("p", { class: "muted", text: "None kept (yet)." }),
      h("h3", { text: "Exports" }),
      d.exports.length
        ? h(
            "ul",
            {},
            d.exports.map((e) =>
              h("li", {}, `${e.exporter}/${e.version}, step ${num(e.step)}${e.matchedBy ? ` (matched by ${e.matchedBy})` : ""}: `, h("code", { text: e.path }))
            )
          )
        : h("p", { class: "muted", text: "None." })
    );
  }

  function renderMetrics() {
    const d = detail;
    const tags = [...new Set(d.steps.flatMap((st) => Object.keys(st.metrics)))].sort();
    const evalNames = [...new Set(d.steps.map((st) => st.evalName))];
    for (const c of charts.splice(0)) c.destroy();
    curves.replaceChildren();
    for (const tag of tags) {
      const holder = h("div", { class: "chart-holder" });
      const figure = h("figure", { class: "panel" }, h("figcaption", { text: tag }), holder);
      curves.append(figure);
      const series = evalNames
        .map((name, i) => {
          const points = new Map();
          for (const st of d.steps) if (st.evalName === name && st.metrics[tag] !== null && st.metrics[tag] !== undefined) points.set(st.step, st.metrics[tag]);
          return { number: i, state: d.state === "RUNNING" ? "RUNNING" : "COMPLETED", bestStep: d.bestStep, points, label: name };
        })
        .filter((t) => t.points.size);
      if (!series.length) continue;
      const chart = new Chart(holder, { height: 200, label: `${tag} by global step` });
      const { opts, data, key } = curvesData(series, { metric: tag });
      opts.series.forEach((one, i) => {
        if (i > 0) one.label = series[i - 1].label;
      });
      chart.update(opts, data, key);
      charts.push(chart);
    }
    if (!tags.length) curves.append(h("p", { class: "muted", text: "No eval written yet." }));
    const table = h(
      "table",
      { class: "grid", "aria-label": "Metrics by eval step" },
      h("thead", {}, h("tr", {}, h("th", { scope: "col", text: "Eval dir" }), h("th", { scope: "col", class: "n", text: "Step" }), tags.map((t) => h("th", { scope: "col", class: "n", text: t })), h("th", { scope: "col", text: "Written" }))),
      h(
        "tbody",
        {},
        d.steps.map((st) =>
          h(
            "tr",
            { class: st.step === d.bestStep ? "best" : "" },
            h("td", { text: st.evalName }),
            h("th", { scope: "row", class: "n", text: `${num(st.step)}${st.step === d.bestStep ? " ★" : ""}`, title: st.step === d.bestStep ? "best step" : "" }),
            tags.map((t) => h("td", { class: "n", text: num(st.metrics[t] ?? null) })),
            h("td", { text: new Date(st.wallTime * 1000).toLocaleTimeString() })
          )
        )
      )
    );
    replace(metricsTable, scroller("Metrics table", table));
  }

  // -- the log, followed from a byte offset while the trial runs --------------------------
  let logOffset = null;
  let logTimer = null;
  let logText = "";

  async function readLog() {
    clearTimeout(logTimer);
    try {
      if (logOffset === null) {
        const sized = await call(`${path}/log${query({ offset: "4611686018427387904" })}`, { raw: true });
        await sized.text();
        const size = Number(sized.headers.get("X-Log-Size")) || 0;
        logOffset = Math.max(0, size - LOG_BYTES);
      }
      const response = await call(`${path}/log${query({ offset: logOffset })}`, { raw: true });
      const chunk = await response.text();
      if (gone) return;
      const size = Number(response.headers.get("X-Log-Size"));
      const startsMidLine = logText === "" && logOffset > 0;
      logOffset = Number.isFinite(size) ? Math.max(logOffset, size) : logOffset + new TextEncoder().encode(chunk).length;
      let text = chunk;
      if (startsMidLine) text = text.slice(text.indexOf("\n") + 1);
      if (text) appendLog(text);
      // New output while it runs: the trial moved on (events may lag behind a busy server).
      if (chunk && detail && detail.state === "RUNNING") refresh();
      logNote.textContent = detail && detail.state === "RUNNING" ? "Following the log while the trial runs." : `The last ${bytes(Math.min(LOG_BYTES, logOffset))} of the log.`;
    } catch (error) {
      if (gone) return;
      logNote.textContent = error.code === "ARTIFACT_NOT_FOUND" ? "No log yet." : error.message;
    }
    if (!gone && !missing && (!detail || detail.state === "RUNNING")) logTimer = setTimeout(readLog, 1500);
  }

  function appendLog(text) {
    const atBottom = logBox.scrollTop + logBox.clientHeight >= logBox.scrollHeight - 8;
    logText += text;
    const lines = logText.split("\n");
    if (lines.length > LOG_LINES) logText = lines.slice(-LOG_LINES).join("\n");
    logBox.textContent = logText;
    if (atBottom) logBox.scrollTop = logBox.scrollHeight;
  }

  replace(
    container,
    h("nav", { class: "crumbs", "aria-label": "Breadcrumbs" }, h("a", { href: "#/", text: "Studies" }), " › ", h("a", { href: `#${studyPath(study)}`, text: study }), " › ", `trial #${number}`),
    heading,
    pageBox,
    summary,
    actions,
    actionBox,
    failure,
    note.el,
    h("div", { class: "panels" }, params, artifacts),
    h("section", { "aria-labelledby": "metrics-title" }, h("h2", { id: "metrics-title", text: "Metrics by eval step" }), curves, metricsTable),
    h("section", { "aria-labelledby": "log-title" }, h("h2", { id: "log-title", text: "Log" }), logNote, logBox)
  );
  get(studyPath(study))
    .then((found) => {
      studyInfo = found;
      if (!gone && detail) render();
    })
    .catch(() => {}); // the params as the trial got them, without the inactive ones
  load().then(readLog);
  stream = follow(study, {
    onEvent: ({ event, data }) => {
      if (data && data.number === number && (event === "eval" || event === "state")) {
        refresh();
        if (event === "state") setTimeout(readLog, 500);
      }
    },
  });
  return () => {
    gone = true;
    refresh.cancel();
    clearTimeout(logTimer);
    stream.close();
    for (const c of charts) c.destroy();
  };
}
