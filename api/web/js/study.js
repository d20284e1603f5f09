// One study, live: the summary, its note and actions, the server-sorted leaderboard (with a CSV
// of it, a Stop on each running trial, failure reasons in full), eval curves, optimization
// history, parallel coordinates, the analysis plots and importances (and, with several
// objectives, the Pareto front and its plot), all kept current from the study's event stream
// (refetches are throttled, so a busy study costs a few requests a second). Every chart follows
// the leaderboard's state and filter; brushing a parallel-coordinates axis sets that filter.

import { auth, call, download, follow, get, post, query, studyPath } from "./api.js";
import { analysisPanel, parallelPanel } from "./analysis.js";
import { Chart, curvesData, historyData } from "./charts.js";
import {
  age, alertBox, badge, confirmDialog, duration, h, hide, num, paramShown, replace, scroller, showError, showInfo,
  specParams, throttle, whenVisible,
} from "./dom.js";
import { notesPanel } from "./notes.js";
import { constraintText, objectivesOf, paretoPanel, severalObjectives } from "./pareto.js";

const UNBOUNDED_TRIALS = 1000000; // a compute budget bounds the study instead of a count
const BUDGET_UNITS = { trainSteps: "steps", trialSeconds: "trial-seconds", wallSeconds: "s of wall time" };
const FINISHED = ["COMPLETED", "PRUNED", "FAILED"];
const TRIAL_STATES = ["RUNNING", "COMPLETED", "PRUNED", "FAILED", "STOPPED"];

/** The filter box's expressions: several are separated by commas, and all must hold (the
 * API's repeated `filter`). */
export function splitFilter(text) {
  return String(text || "")
    .split(/\s*,\s*(?=(?:param:|metric:|objective))/)
    .map((e) => e.trim())
    .filter(Boolean);
}

/** What an expression filters on: `param:lr` of `param:lr>=0.01`. */
const subjectOf = (expression) => expression.split(/<=|>=|!=|<|>|=/)[0].trim();

export function studyView(container, { study: name }) {
  const path = studyPath(name);
  const s = {
    study: null,
    running: new Set(),
    tags: new Set(),
    board: { sort: "objective", state: "", filter: "", limit: 50, offset: 0, rows: [], count: 0 },
    stream: null,
    streamEnded: false,
    gone: false,
    brushes: new Map(), // a brushed parallel-coordinates axis: subject -> [low, high]
    openReasons: new Set(), // trials whose whole failure reason is shown
  };
  const cleanups = [];
  const onGone = (fn) => cleanups.push(fn);

  // -- summary and actions ----------------------------------------------------------------
  const heading = h("h1", { tabindex: -1 }, name);
  const live = h("span", { class: "live", role: "status", text: "connecting…" });
  const summary = h("dl", { class: "summary" });
  const reason = h("p", { class: "reason", hidden: true });
  const actionBox = alertBox();
  const actions = h("div", { class: "actions", "aria-label": "Actions", role: "group" });
  const specBox = h("pre", { class: "spec" });
  const pageBox = alertBox();
  const studyNote = notesPanel({ id: "study-note", title: "Notes", path });

  async function loadStudy() {
    try {
      const before = s.study ? s.study.counts.COMPLETED || 0 : null;
      s.study = await get(path);
      if (s.gone) return;
      hide(pageBox);
      if (before !== null && (s.study.counts.COMPLETED || 0) !== before) {
        parallel.refresh();
        analysis.refresh();
        importances.refresh();
        pareto.refresh();
      }
      renderSummary();
      if (s.study.state === "RUNNING" && s.streamEnded) startStream();
    } catch (error) {
      if (s.gone) return;
      showError(pageBox, error);
      if (error.status === 404) stopAll();
    }
  }
  const refreshStudy = throttle(loadStudy, 1000);
  onGone(refreshStudy.cancel);

  function renderSummary() {
    const st = s.study;
    document.title = `${st.name} · estimator-tuner`;
    replace(heading, st.name, " ", badge(st.state));
    const finished = FINISHED.reduce((sum, k) => sum + (st.counts[k] || 0), 0);
    const item = (term, ...value) => h("div", {}, h("dt", { text: term }), h("dd", {}, ...value));
    const counts = TRIAL_STATES.filter((k) => st.counts[k]).map((k) => `${st.counts[k]} ${k}`).join(", ");
    const objectives = objectivesOf(st);
    const several = objectives.length > 1;
    replace(
      summary,
      several
        ? item("Objectives", h("span", { title: objectives.map((o) => `${o.metric}: ${o.goal}`).join(", "), text: objectives.map((o) => `${o.metric} (${o.goal === "MAXIMIZE" ? "max" : "min"})`).join(", ") }))
        : item("Objective", `${st.metric} (${st.goal})`),
      st.constraints && st.constraints.length
        ? item("Safety thresholds", st.constraints.map(constraintText).join(", "))
        : null,
      item(
        "Progress",
        `${finished} / ${st.maxTrials >= UNBOUNDED_TRIALS ? "∞" : st.maxTrials} finished `,
        st.maxTrials >= UNBOUNDED_TRIALS
          ? null
          : h("progress", { max: st.maxTrials, value: Math.min(finished, st.maxTrials), "aria-label": "trials finished" })
      ),
      st.budget && st.budget.measures.length ? budgetItem(item, st.budget) : null,
      item("Running", String(st.counts.RUNNING || 0)),
      several
        ? item("Pareto front", pareto.size)
        : item(
            "Best",
            st.best
              ? [num(st.best.objective), " ", h("a", { href: `#${path}/trials/${st.best.number}`, text: `trial #${st.best.number}` }), st.best.bestStep !== null ? ` at step ${num(st.best.bestStep)}` : ""]
              : "—"
          ),
      item("Trials", counts || "none yet"),
      item("Trainer", st.trainer),
      item("Created", h("span", { title: st.createdAt, text: age(st.createdAt) }))
    );
    reason.hidden = !st.stateReason;
    reason.textContent = st.stateReason || "";
    reason.className = st.state === "FAILED" ? "reason bad" : "reason";
    specBox.textContent = JSON.stringify(st.spec, null, 2);
    studyNote.show(st.note);
    renderActions();
    if (several) pareto.show();
  }

  function budgetItem(item, budget) {
    // The binding measure (the API lists it first) against its limit, the others in its title.
    const [top, ...rest] = budget.measures;
    const share = top.limit ? Math.min(1, top.used / top.limit) : 0;
    const title = budget.measures.map((m) => `${BUDGET_UNITS[m.measure] || m.measure}: ${num(m.used)} of ${num(m.limit)}`).join("; ")
      + `; ${budget.trialsSinceProgress} trial(s) since the last improvement`;
    return item(
      "Compute budget",
      h("span", { title, "data-budget": top.measure, text: `${num(top.used)} / ${num(top.limit)} ${BUDGET_UNITS[top.measure] || ""} (${Math.round(share * 100)}%) ` }),
      h("progress", { max: 1, value: share, "aria-label": "compute budget spent" }),
      rest.length ? h("span", { class: "muted", text: ` +${rest.length} more` }) : null
    );
  }

  function renderActions() {
    if (!auth.canWrite) {
      actions.hidden = true;
      return;
    }
    const st = s.study;
    const running = st.state === "RUNNING";
    const budget = h("input", {
      id: "resume-budget",
      type: "number",
      min: 1,
      max: 100000,
      value: String(st.maxTrials),
      inputmode: "numeric",
    });
    replace(
      actions,
      running
        ? h("button", { type: "button", class: "danger", text: "Stop", onclick: () => act("Stop", () => post(`${path}/stop`)) })
        : h(
            "form",
            {
              class: "inline",
              onsubmit: (event) => {
                event.preventDefault();
                const max = Number(budget.value);
                act("Resume", () => post(`${path}/resume`, max && max !== st.maxTrials ? { maxTrials: max } : undefined));
              },
            },
            h("label", { for: "resume-budget", text: "Budget (max trials)" }),
            budget,
            h("button", { type: "submit", class: "primary", text: "Resume" })
          ),
      st.counts.FAILED
        ? h("button", { type: "button", text: `Retry ${st.counts.FAILED} failed`, onclick: () => act("Retry failed", () => post(`${path}/retry`)) })
        : null,
      h("button", { type: "button", class: "danger", text: "Delete…", onclick: confirmDelete })
    );
    actions.hidden = false;
  }

  async function act(label, work) {
    hide(actionBox);
    for (const b of actions.querySelectorAll("button")) b.disabled = true;
    try {
      s.study = await work();
      renderSummary();
      showInfo(actionBox, `${label}: done. The study is ${s.study.state}.`);
      if (s.study.state === "RUNNING" && s.streamEnded) startStream();
      refreshBoard();
    } catch (error) {
      showError(actionBox, error);
      renderActions();
    }
  }

  function confirmDelete() {
    const artifacts = h("input", { type: "checkbox", id: "delete-artifacts" });
    const dialog = h(
      "dialog",
      { class: "confirm", "aria-labelledby": "delete-title" },
      h(
        "form",
        { method: "dialog" },
        h("h2", { id: "delete-title", text: `Delete study ${name}?` }),
        h("p", { text: "Its records are deleted; its trial dirs stay unless you tick the box. A study with running trials cannot be deleted: stop it first." }),
        h("p", {}, artifacts, " ", h("label", { for: "delete-artifacts", text: "also delete its artifacts (checkpoints, exports, logs)" })),
        h(
          "div",
          { class: "row" },
          h("button", { value: "cancel", text: "Cancel", autofocus: true }),
          h("button", { value: "delete", class: "danger", text: "Delete" })
        )
      )
    );
    dialog.addEventListener("close", async () => {
      const confirmed = dialog.returnValue === "delete";
      dialog.remove();
      if (!confirmed) return;
      try {
        await call(path + query({ deleteArtifacts: artifacts.checked ? "true" : "" }), { method: "DELETE" });
        location.hash = "#/";
      } catch (error) {
        showError(actionBox, error);
      }
    });
    document.body.append(dialog);
    dialog.showModal();
  }

  // -- leaderboard ------------------------------------------------------------------------
  const boardBox = alertBox();
  const boardTable = h("table", { class: "grid leaderboard", "aria-label": "Leaderboard" });
  const boardPager = h("div", { class: "pager" });
  const stateSelect = h(
    "select",
    { id: "board-state", onchange: () => { s.board.state = stateSelect.value; s.board.offset = 0; loadBoard(); } },
    h("option", { value: "", text: "every state" }),
    TRIAL_STATES.map((k) => h("option", { value: k, text: k }))
  );
  const filterInput = h("input", { id: "board-filter", type: "search", placeholder: "metric:rmse<0.5", spellcheck: "false", "aria-describedby": "board-filter-help" });
  const sizeSelect = h(
    "select",
    { id: "board-size", onchange: () => { s.board.limit = Number(sizeSelect.value); s.board.offset = 0; loadBoard(); } },
    [25, 50, 100].map((n) => h("option", { value: String(n), text: String(n), selected: n === 50 }))
  );
  const boardControls = h(
    "form",
    {
      class: "toolbar",
      onsubmit: (event) => {
        event.preventDefault();
        s.board.filter = filterInput.value.trim();
        s.board.offset = 0;
        // A brushed axis whose expressions were taken out of the box is no longer brushed.
        const subjects = new Set(splitFilter(s.board.filter).map(subjectOf));
        for (const subject of [...s.brushes.keys()]) if (!subjects.has(subject)) s.brushes.delete(subject);
        loadBoard();
      },
    },
    h("label", { for: "board-state", text: "State" }),
    stateSelect,
    h("label", { for: "board-filter", text: "Filter" }),
    filterInput,
    h("button", { type: "submit", text: "Apply" }),
    h("label", { for: "board-size", text: "Rows" }),
    sizeSelect,
    h("button", { type: "button", text: "Download CSV", title: "Every trial the state and filter select, with every param and objective", onclick: downloadCsv }),
    h("span", { id: "board-filter-help", class: "muted small", text: "e.g. param:lr>=0.001, metric:loss<2, objective<=0.3 (commas: all must hold); the charts below follow it" })
  );

  /** The leaderboard's selection, as the trial list and the charts take it. */
  function boardQuery() {
    return { state: s.board.state, filter: splitFilter(s.board.filter) };
  }
  const filterListeners = [];
  let filterKey = null;

  /** A brushed parallel-coordinates axis: its range replaces the filter's terms on it. */
  function brushed(subject, range, expressions) {
    const kept = splitFilter(s.board.filter).filter((e) => subjectOf(e) !== subject);
    if (range && expressions.length) s.brushes.set(subject, range);
    else s.brushes.delete(subject);
    s.board.filter = [...kept, ...expressions].join(", ");
    filterInput.value = s.board.filter;
    s.board.offset = 0;
    loadBoard();
  }

  async function downloadCsv(event) {
    const button = event.currentTarget;
    button.disabled = true;
    hide(boardBox);
    try {
      const q = { sort: s.board.sort, ...boardQuery() };
      const saved = await download(`${path}/trials.csv${query(q)}`, `${name}-trials.csv`);
      showInfo(boardBox, `Saved ${saved.name}: the ${num(s.board.count)} trials the leaderboard selects.`);
    } catch (error) {
      showError(boardBox, error);
    } finally {
      button.disabled = false;
    }
  }

  let boardRequest = 0;
  async function loadBoard() {
    const b = s.board;
    const mine = ++boardRequest;
    try {
      const page = await get(`${path}/trials`, { sort: b.sort, ...boardQuery(), limit: b.limit, offset: b.offset });
      if (s.gone || mine !== boardRequest) return;
      hide(boardBox);
      const key = `${b.state}|${b.filter}`;
      if (filterKey !== null && key !== filterKey) for (const fn of filterListeners) fn();
      filterKey = key;
      b.rows = page.data;
      b.count = page.count;
      b.loaded = true;
      if (b.offset > 0 && b.offset >= page.count) {
        b.offset = Math.max(0, Math.floor((page.count - 1) / b.limit) * b.limit);
        return loadBoard();
      }
      renderBoard();
      if (page.data.length && !performance.getEntriesByName("leaderboard-painted").length) {
        performance.mark("leaderboard-rendered");
        // After the next frame: when the rows are on screen (what bench/web.py times).
        requestAnimationFrame(() => setTimeout(() => performance.mark("leaderboard-painted")));
      }
      for (const row of page.data) if (row.state === "RUNNING") s.running.add(row.number);
    } catch (error) {
      if (!s.gone) showError(boardBox, error);
    }
  }
  const refreshBoard = throttle(loadBoard, 1000);
  onGone(refreshBoard.cancel);

  /** Every parameter, conditional ones included (a trial lacks those its parents left out). */
  function paramEntries() {
    return s.study ? specParams(s.study.spec.hyperparameters) : [];
  }

  /** A sortable column; `alias` is another key that sorts the same (`objective` for the first
   * objective's `objective:<metric>`). */
  function sortHeader(label, key, extra = {}, alias = null) {
    const b = s.board;
    const keys = alias ? [key, alias] : [key];
    const descending = keys.some((k) => b.sort === `-${k}`);
    const active = descending || keys.includes(b.sort);
    const ariaSort = active ? (descending ? "descending" : "ascending") : "none";
    return h(
      "th",
      { scope: "col", "aria-sort": ariaSort, ...extra },
      h(
        "button",
        {
          type: "button",
          class: "sort",
          "data-sort": key,
          title: key === "objective" || key.startsWith("objective:") ? "ascending = best first" : `sort by ${key}`,
          onclick: () => {
            b.sort = active && !descending ? `-${key}` : key;
            b.offset = 0;
            loadBoard();
          },
        },
        label,
        h("span", { class: "arrow", "aria-hidden": "true", text: active ? (descending ? " ▼" : " ▲") : "" })
      )
    );
  }

  function renderBoard() {
    const b = s.board;
    const params = paramEntries();
    const metric = s.study ? s.study.metric : "objective";
    // Several objectives: a column each, sorted better first by `objective:<metric>`.
    const objectives = severalObjectives(s.study) ? objectivesOf(s.study) : [];
    const constraints = (s.study && s.study.constraints) || [];
    const safeTitle = `meets every safety threshold at its ranking step: ${constraints.map(constraintText).join(", ")}`;
    const columns = 9 + Math.max(0, objectives.length - 1) + (constraints.length ? 1 : 0) + params.length;
    const head = h(
      "thead",
      {},
      h(
        "tr",
        {},
        h("th", { scope: "col", text: "#" }),
        sortHeader("Trial", "number"),
        sortHeader("State", "state"),
        objectives.length
          ? objectives.map((o, i) => sortHeader(o.metric, `objective:${o.metric}`, { class: "n", title: `${o.metric} (${o.goal}) at the ranking step` }, i === 0 ? "objective" : null))
          : sortHeader(metric, "objective", { class: "n" }),
        constraints.length ? h("th", { scope: "col", title: safeTitle, text: "safe" }) : null,
        h("th", { scope: "col", class: "n", title: `${metric} at the latest eval step`, text: objectives.length ? `latest ${metric}` : "latest" }),
        sortHeader("Best step", "bestStep", { class: "n" }),
        sortHeader("Last step", "lastStep", { class: "n" }),
        params.map((p) => sortHeader(p.name, `param:${p.name}`, p.parent ? { title: `active when ${p.parent.name} is ${p.parent.values.join(" or ")}` } : {})),
        sortHeader("Duration", "duration", { class: "n" }),
        h("th", { scope: "col", text: "Failure reason" })
      )
    );
    const paramCell = (r, p) => {
      const shown = paramShown(r.params, p);
      return h("td", { class: shown.inactive ? "inactive" : null, title: shown.title || null, text: shown.text });
    };
    const safeCell = (r) =>
      h("td", {
        class: r.feasible === false ? "unsafe" : null,
        title: r.feasible === false ? `infeasible: misses a safety threshold (${constraints.map(constraintText).join(", ")})` : null,
        text: r.feasible === true ? "yes" : r.feasible === false ? "no" : "—",
      });
    const body = h(
      "tbody",
      {},
      b.rows.length
        ? b.rows.map((r, i) =>
            h(
              "tr",
              { "data-number": r.number, "data-state": r.state, "data-feasible": r.feasible === null || r.feasible === undefined ? null : String(r.feasible) },
              h("td", { class: "n muted", text: String(b.offset + i + 1) }),
              h("th", { scope: "row" }, h("a", { href: `#${path}/trials/${r.number}`, text: `#${r.number}` })),
              h(
                "td",
                {},
                badge(r.state),
                r.state === "RUNNING" && auth.canWrite
                  ? h("button", { type: "button", class: "danger inline-action", text: "Stop", "aria-label": `Stop trial #${r.number}`, onclick: () => confirmStopTrial(r.number) })
                  : null
              ),
              objectives.length
                ? objectives.map((o) => h("td", { class: "n", text: num(r.objectives ? r.objectives[o.metric] ?? null : null) }))
                : h("td", { class: "n", text: num(r.objective) }),
              constraints.length ? safeCell(r) : null,
              h("td", { class: "n muted", text: num(r.lastObjective ?? null) }),
              h("td", { class: "n", text: num(r.bestStep) }),
              h("td", { class: "n", text: num(r.lastStep) }),
              params.map((p) => paramCell(r, p)),
              h("td", { class: "n", text: r.state === "RUNNING" ? `${duration((Date.now() - Date.parse(r.startedAt)) / 1000)}…` : duration(r.durationSeconds) }),
              reasonCell(r)
            )
          )
        : h("tr", {}, h("td", { colspan: columns, class: "muted", text: b.filter || b.state ? "No trial matches." : "No trial yet: the leaderboard fills as trials start." }))
    );
    // A live refresh rebuilds the table: keep the keyboard focus on the same sort button.
    const focused = boardTable.contains(document.activeElement) ? document.activeElement.dataset.sort : null;
    replace(boardTable, head, body);
    if (focused) boardTable.querySelector(`button[data-sort="${CSS.escape(focused)}"]`)?.focus();
    const last = Math.min(b.offset + b.limit, b.count);
    replace(
      boardPager,
      h("span", { text: b.count ? `${num(b.offset + 1)}–${num(last)} of ${num(b.count)} trials` : "" }),
      h("button", { type: "button", text: "First", disabled: b.offset === 0, onclick: () => { b.offset = 0; loadBoard(); } }),
      h("button", { type: "button", text: "Previous", disabled: b.offset === 0, onclick: () => { b.offset = Math.max(0, b.offset - b.limit); loadBoard(); } }),
      h("button", { type: "button", text: "Next", disabled: last >= b.count, onclick: () => { b.offset += b.limit; loadBoard(); } })
    );
  }

  /** A failure reason: its first line, the whole of it (the log's last lines) on a click. A
   * live refresh keeps what was opened open. */
  function reasonCell(r) {
    const text = r.failureReason || "";
    const lines = text.split("\n");
    if (lines.length === 1 && text.length <= 90) return h("td", { class: "reason-cell", text });
    const details = h(
      "details",
      { class: "reason-more", open: s.openReasons.has(r.number) },
      h("summary", { title: "Show the whole reason", text: lines[0] || "(reason)" }),
      h("pre", { class: "reason-full", text })
    );
    details.addEventListener("toggle", () => {
      if (details.open) s.openReasons.add(r.number);
      else s.openReasons.delete(r.number);
    });
    return h("td", { class: "reason-cell" }, details);
  }

  async function confirmStopTrial(number) {
    const ok = await confirmDialog({
      title: `Stop trial #${number}?`,
      text: "Its trainer is stopped now. It ends PRUNED, with a reason saying it was stopped by hand: it is not run again, and it counts toward the study's budget like a pruned trial.",
      confirm: "Stop trial",
    });
    if (!ok) return;
    hide(boardBox);
    try {
      await post(`${path}/trials/${number}/stop`);
      showInfo(boardBox, `Trial #${number}: stopping; it ends PRUNED, stopped by hand.`);
      refreshBoard();
    } catch (error) {
      showError(boardBox, error);
    }
  }

  // -- charts -----------------------------------------------------------------------------
  const curves = curvesPanel(s, path, onGone, { query: boardQuery });
  const history = historyPanel(s, path, onGone, { query: boardQuery });
  const parallel = parallelPanel(s, path, onGone, { query: boardQuery, onBrush: brushed });
  const analysis = analysisPanel(s, path, onGone, { query: boardQuery });
  const importances = importancePanel(s, path, onGone, { query: boardQuery });
  const pareto = paretoPanel(s, path, onGone, { query: boardQuery });
  // A new state or filter on the leaderboard: every chart follows it.
  filterListeners.push(curves.reload, history.reload, parallel.reload, analysis.reload, importances.reload, pareto.reload);

  // -- the event stream -------------------------------------------------------------------
  function onEvent({ event, data }) {
    if (event === "snapshot") {
      s.running = new Set(data.running || []);
      // What changed between the first requests and the snapshot (nothing, once it ended).
      if (data.state === "RUNNING" || (s.study && s.study.state !== data.state)) {
        refreshStudy();
        refreshBoard();
      }
      curves.runningChanged();
    } else if (event === "created") {
      s.running.add(data.number);
      refreshStudy();
      refreshBoard();
      curves.created(data);
    } else if (event === "eval") {
      for (const tag of Object.keys(data.metrics || {})) curves.addTag(tag);
      curves.evaluated(data);
      refreshBoard();
    } else if (event === "state") {
      s.running.delete(data.number);
      refreshStudy();
      refreshBoard();
      curves.ended(data);
      history.ended(data);
    } else if (event === "study") {
      refreshStudy();
    } else if (event === "end") {
      refreshStudy();
    }
  }

  function startStream() {
    const after = s.stream ? s.stream.lastId() : null;
    if (s.stream) s.stream.close();
    s.streamEnded = false;
    s.stream = follow(name, {
      after,
      onEvent,
      onStatus: (status) => {
        if (s.gone) return;
        s.streamEnded = status === "ended";
        live.className = `live ${status}`;
        live.textContent = { live: "● live", reconnecting: "reconnecting…", ended: "not running" }[status];
      },
      onError: (error) => {
        if (s.gone) return;
        live.className = "live ended";
        live.textContent = "no live updates";
        showError(pageBox, error);
      },
    });
  }

  const authChanged = () => s.study && renderActions();
  window.addEventListener("tuner-auth", authChanged);
  onGone(() => window.removeEventListener("tuner-auth", authChanged));

  function stopAll() {
    s.gone = true;
    if (s.stream) s.stream.close();
    for (const fn of cleanups) fn();
  }

  replace(
    container,
    h("nav", { class: "crumbs", "aria-label": "Breadcrumbs" }, h("a", { href: "#/", text: "Studies" }), " › ", name),
    h("div", { class: "title" }, heading, live),
    pageBox,
    summary,
    studyNote.el,
    pareto.summaryEl,
    reason,
    actions,
    actionBox,
    h("details", { class: "spec-box" }, h("summary", { text: "Spec" }), specBox),
    h(
      "section",
      { "aria-labelledby": "board-title" },
      h("h2", { id: "board-title", text: "Leaderboard" }),
      boardControls,
      boardBox,
      scroller("Leaderboard table", boardTable),
      boardPager
    ),
    h("div", { class: "panels" }, pareto.el, curves.el, history.el, importances.el, parallel.el, analysis.el)
  );
  actions.hidden = true;
  const studyLoaded = loadStudy().then(() => {
    if (!s.gone && s.board.loaded) renderBoard(); // its parameter columns
  });
  // The panels load when scrolled to, once the leaderboard has its height: the first screen
  // costs the study and one page of the leaderboard, whatever the study's size.
  Promise.all([studyLoaded, loadBoard()]).then(() => {
    if (s.gone) return;
    // The stream after the first paint (its snapshot tells what changed meanwhile).
    startStream();
    if (!s.study) return;
    pareto.arm();
    curves.arm();
    history.arm();
    parallel.arm();
    analysis.arm();
    importances.arm();
  });
  return stopAll;
}

/** Curves of one metric by step: the best N trials (server-sorted) and the running ones, of
 * those the leaderboard's state and filter select. */
function curvesPanel(s, path, onGone, { query: boardQuery }) {
  const opt = { metric: null, pick: "best:10", running: true, log: false };
  const trials = new Map();
  const metricSelect = h("select", { id: "curve-metric", onchange: () => { opt.metric = metricSelect.value; reload(); } });
  const topSelect = h(
    "select",
    { id: "curve-top", onchange: () => { opt.pick = topSelect.value; reload(); } },
    [5, 10, 20, 50].map((n) => h("option", { value: `best:${n}`, text: `best ${n}`, selected: n === 10 })),
    [10, 20, 50].map((n) => h("option", { value: `latest:${n}`, text: `latest ${n} (failed too)` }))
  );
  const runningBox = h("input", { id: "curve-running", type: "checkbox", checked: true, onchange: () => { opt.running = runningBox.checked; reload(); } });
  const logBox = h("input", { id: "curve-log", type: "checkbox", onchange: () => { opt.log = logBox.checked; draw(); } });
  const box = alertBox();
  const note = h("p", { class: "muted small" });
  const holder = h("div", { class: "chart-holder" });
  const el = h(
    "section",
    { class: "panel wide", "aria-labelledby": "curves-title" },
    h("h2", { id: "curves-title", text: "Eval curves" }),
    h(
      "div",
      { class: "toolbar" },
      h("label", { for: "curve-metric", text: "Metric" }),
      metricSelect,
      h("label", { for: "curve-top", text: "Trials" }),
      topSelect,
      h("span", {}, runningBox, h("label", { for: "curve-running", text: " and running" })),
      h("span", {}, logBox, h("label", { for: "curve-log", text: " log scale" }))
    ),
    box,
    holder,
    note
  );
  const chart = new Chart(holder, { height: 300, label: "Eval curves" });
  holder.firstChild.dataset.chart = "curves";
  onGone(() => chart.destroy());
  let started = false;

  function addTag(tag) {
    if (s.tags.has(tag)) return;
    s.tags.add(tag);
    const tags = [...s.tags].sort();
    replace(metricSelect, tags.map((t) => h("option", { value: t, text: t, selected: t === opt.metric })));
  }

  async function start() {
    if (started || !s.study) return;
    started = true;
    opt.metric = s.study.metric;
    addTag(opt.metric);
    // The tags a trial wrote: from the best trial (or else the leaderboard's first row).
    const first = s.study.best ? s.study.best.number : s.board.rows.find((r) => r.lastStep !== null)?.number;
    if (first !== undefined) {
      get(`${path}/trials/${first}`).then((detail) => {
        for (const step of detail.steps) for (const tag of Object.keys(step.metrics)) addTag(tag);
      }).catch(() => {});
    }
    reload();
  }

  let request = 0;
  async function reload() {
    const mine = ++request;
    try {
      const [how, n] = opt.pick.split(":");
      const selected = boardQuery();
      const top = await get(`${path}/trials`, { sort: how === "latest" ? "-number" : "objective", limit: Number(n), ...selected });
      const rows = new Map(top.data.map((r) => [r.number, r]));
      if (opt.running && !filtered()) {
        for (const n of s.running) if (!rows.has(n)) rows.set(n, { number: n, state: "RUNNING", bestStep: null });
      } else if (opt.running && (!selected.state || selected.state === "RUNNING")) {
        // Only the running trials the filter keeps.
        const running = await get(`${path}/trials`, { sort: "number", state: "RUNNING", filter: selected.filter, limit: 100 });
        for (const r of running.data) if (!rows.has(r.number)) rows.set(r.number, r);
      }
      const numbers = [...rows.keys()];
      const found = numbers.length
        ? await get(`${path}/metrics/${encodeURIComponent(opt.metric)}/history`, { trials: numbers, limit: Math.min(500, numbers.length), maxPoints: 500 })
        : { data: [] };
      if (s.gone || mine !== request) return;
      hide(box);
      trials.clear();
      for (const n of numbers) {
        const row = rows.get(n);
        trials.set(n, { number: n, state: row.state, bestStep: row.bestStep, evalName: null, points: new Map() });
      }
      for (const item of found.data) {
        const t = trials.get(item.number);
        if (!t) continue;
        t.state = item.state;
        t.evalName = item.evalName;
        for (const p of item.points) if (p.value !== null) t.points.set(p.step, p.value);
      }
      draw();
    } catch (error) {
      if (!s.gone) showError(box, error);
    }
  }
  const refresh = throttle(reload, 3000);
  onGone(refresh.cancel);
  const filtered = () => Boolean(s.board.state || s.board.filter);
  const redraw = throttle(draw, 250);
  onGone(redraw.cancel);

  function draw() {
    const shown = [...trials.values()].filter((t) => t.points.size).sort((a, b) => a.number - b.number);
    const points = shown.reduce((sum, t) => sum + t.points.size, 0);
    const holderChart = holder.firstChild;
    holderChart.dataset.points = String(points);
    holderChart.dataset.trials = shown.map((t) => `${t.number}:${t.state}`).join(" ");
    if (!shown.length) {
      chart.destroyPlot();
      chart.key = "";
      note.textContent = `No ${opt.metric} value yet: curves appear as evals are written.`;
      return;
    }
    const positive = shown.every((t) => [...t.points.values()].every((v) => v > 0));
    const { opts, data, key } = curvesData(shown, { metric: opt.metric, logScale: opt.log && positive });
    chart.update(opts, data, key);
    chart.label(`Eval curves of ${opt.metric} by global step for ${shown.length} trials`);
    note.textContent = "Dashed: PRUNED · dotted: FAILED · dash-dot: STOPPED · ringed: each trial's best step (its kept checkpoint). Click a legend entry to hide a trial.";
  }

  function evaluated(data) {
    let t = trials.get(data.number);
    if (!t && opt.running && started && s.running.has(data.number) && !filtered()) {
      t = { number: data.number, state: "RUNNING", bestStep: null, evalName: null, points: new Map() };
      trials.set(data.number, t);
    }
    if (!t || !data.metrics || !(opt.metric in data.metrics)) return;
    if (t.evalName && data.evalName !== t.evalName) return;
    t.evalName = data.evalName;
    const value = data.metrics[opt.metric];
    if (value !== null) t.points.set(data.step, value);
    if (opt.metric === s.study.metric && t.state === "RUNNING") t.bestStep = bestOf(t, s.study);
    redraw();
  }

  return {
    el,
    arm: () => onGone(whenVisible(el, start)),
    addTag,
    evaluated,
    reload: () => { if (started) reload(); },
    created: () => {},
    runningChanged: () => { if (started) refresh(); },
    ended(data) {
      const t = trials.get(data.number);
      if (t) {
        t.state = data.state;
        redraw();
      }
      refresh();
    },
  };
}

function bestOf(trial, study) {
  if (study.spec.objective === "final") return Math.max(...trial.points.keys());
  let best = null;
  for (const [step, value] of trial.points) {
    const better = best === null || (study.goal === "MAXIMIZE" ? value > best[1] : value < best[1]);
    if (better) best = [step, value];
  }
  return best ? best[0] : null;
}

/** Objective by trial number with the best so far: the first finished trials by number that
 * the leaderboard's state and filter select, a page at a time. */
function historyPanel(s, path, onGone, { query: boardQuery }) {
  const PAGE = 500;
  let cap = PAGE;
  const rows = new Map();
  let count = 0;
  const box = alertBox();
  const note = h("p", { class: "muted small" });
  const more = h("button", { type: "button", hidden: true, text: "Load more trials", onclick: () => { cap += PAGE; load(); } });
  const holder = h("div", { class: "chart-holder" });
  const el = h(
    "section",
    { class: "panel", "aria-labelledby": "history-title" },
    h("h2", { id: "history-title", text: "Optimization history" }),
    box,
    holder,
    h("div", { class: "row" }, note, more)
  );
  const chart = new Chart(holder, { height: 260, label: "Optimization history" });
  onGone(() => chart.destroy());
  let loaded = false;

  let request = 0;
  async function load() {
    const mine = ++request;
    const selected = boardQuery();
    const states = selected.state ? [selected.state].filter((k) => ["COMPLETED", "PRUNED"].includes(k)) : ["COMPLETED", "PRUNED"];
    rows.clear();
    count = 0;
    try {
      for (let offset = 0; states.length && offset < cap; offset += PAGE) {
        const page = await get(`${path}/trials`, { sort: "number", state: states, filter: selected.filter, limit: PAGE, offset });
        if (s.gone || mine !== request) return;
        count = page.count;
        for (const r of page.data) rows.set(r.number, r);
        if (offset + PAGE >= page.count) break;
      }
      loaded = true;
      hide(box);
      draw();
    } catch (error) {
      if (!s.gone) showError(box, error);
    }
  }

  function draw() {
    if (!s.study) return;
    const shown = [...rows.values()].filter((r) => r.objective !== null);
    if (!shown.length) {
      chart.destroyPlot();
      chart.key = "";
      note.textContent = "No finished trial with an objective yet.";
      more.hidden = true;
      return;
    }
    const { opts, data, key } = historyData(shown, { metric: s.study.metric, goal: s.study.goal });
    chart.update(opts, data, key);
    chart.label(`Optimization history: ${s.study.metric} of ${shown.length} finished trials by number, with the best so far`);
    note.textContent = rows.size < count ? `The first ${num(rows.size)} of ${num(count)} finished trials by number.` : `${num(count)} finished trials.`;
    more.hidden = rows.size >= count;
  }
  const redraw = throttle(draw, 1000);
  onGone(redraw.cancel);

  const reloadSoon = throttle(load, 2000);
  onGone(reloadSoon.cancel);
  return {
    el,
    arm: () => onGone(whenVisible(el, load)),
    reload: () => { if (loaded) { cap = PAGE; load(); } },
    async ended(data) {
      if (!loaded || !["COMPLETED", "PRUNED"].includes(data.state)) return;
      if (s.board.state || s.board.filter) {
        reloadSoon(); // whether it passes the filter is the server's to say
        return;
      }
      try {
        const detail = await get(`${path}/trials/${data.number}`);
        if (s.gone) return;
        rows.set(detail.number, detail);
        count = Math.max(count, rows.size);
        redraw();
      } catch {
        // shown at the next full load
      }
    },
  };
}

/** Importances from the server (Optuna's evaluators) over the COMPLETED trials the
 * leaderboard's state and filter keep, asked again when trials finish or the filter changes. */
function importancePanel(s, path, onGone, { query: boardQuery }) {
  let evaluator = "PED_ANOVA";
  const box = alertBox();
  const list = h("ol", { class: "bars", "aria-label": "Importances" });
  const note = h("p", { class: "muted small" });
  // Evaluators this server cannot run, with why and what to install.
  const unavailable = h("ul", { class: "muted small", "aria-label": "Unavailable evaluators" });
  const select = h(
    "select",
    { id: "importance-evaluator", onchange: () => { evaluator = select.value; load(); } },
    h("option", { value: "PED_ANOVA", text: "PED-ANOVA" })
  );
  const el = h(
    "section",
    { class: "panel", "aria-labelledby": "importance-title" },
    h("h2", { id: "importance-title", text: "Hyperparameter importances" }),
    h("div", { class: "toolbar" }, h("label", { for: "importance-evaluator", text: "Evaluator" }), select),
    box,
    list,
    note,
    unavailable
  );
  let visible = false;
  const NAMES = { PED_ANOVA: "PED-ANOVA", FANOVA: "fANOVA", MEAN_DECREASE_IMPURITY: "mean decrease impurity" };

  let request = 0;
  async function load() {
    const mine = ++request;
    if (s.study && (s.study.counts.COMPLETED || 0) < 2) {
      // The server would answer 409: say so without asking.
      note.textContent = "Importances need at least 2 COMPLETED trials.";
      return;
    }
    try {
      const found = await get(`${path}/importances`, { evaluator, ...boardQuery() });
      if (s.gone || mine !== request) return;
      el.dataset.trials = String(found.trialCount);
      hide(box);
      const missing = found.unavailableEvaluators || {};
      replace(select, [
        ...found.availableEvaluators.map((e) => h("option", { value: e, text: NAMES[e] || e, selected: e === evaluator })),
        ...Object.keys(missing).map((e) => h("option", { value: e, text: `${NAMES[e] || e} (unavailable)`, disabled: true, title: missing[e] })),
      ]);
      replace(
        unavailable,
        Object.entries(missing).map(([e, why]) => h("li", { text: `${NAMES[e] || e}: ${why}` }))
      );
      replace(
        list,
        found.importances.map((item) => {
          const bar = h("span", { class: "fill" });
          bar.style.width = `${(item.importance * 100).toFixed(1)}%`;
          return h(
            "li",
            {},
            h("span", { class: "name", text: item.param }),
            h("span", { class: "bar", "aria-hidden": "true" }, bar),
            h("span", { class: "value", text: `${(item.importance * 100).toFixed(1)}%` })
          );
        })
      );
      const over = found.filtered
        ? `${num(found.trialCount)} COMPLETED trial${found.trialCount === 1 ? "" : "s"} the leaderboard's state and filter keep (of ${num(found.matchedCount)} they select)`
        : `${num(found.trialCount)} COMPLETED trial${found.trialCount === 1 ? "" : "s"}`;
      note.textContent = `${NAMES[found.evaluator] || found.evaluator} (optuna.importance) over ${over}; recomputed when a trial finishes.`;
    } catch (error) {
      if (s.gone || mine !== request) return;
      list.replaceChildren();
      delete el.dataset.trials;
      if (error.code === "STUDY_STATE_CONFLICT") {
        hide(box);
        note.textContent = error.message;
      } else {
        showError(box, error);
      }
    }
  }
  const refresh = throttle(() => visible && load(), 5000);
  onGone(refresh.cancel);
  return {
    el,
    refresh,
    /** The leaderboard's state or filter changed: computed again over the trials it keeps. */
    reload: () => visible && load(),
    arm: () => onGone(whenVisible(el, () => { visible = true; load(); })),
  };
}
