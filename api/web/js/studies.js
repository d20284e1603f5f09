// Every study, a page at a time, refreshed every few seconds; and the form that submits one.

import { auth, call, get, studyPath } from "./api.js";
import { age, alertBox, badge, h, hide, num, replace, scroller, showError } from "./dom.js";

const PAGE = 50;
const STATES = ["RUNNING", "COMPLETED", "FAILED", "STOPPED"];
const FINISHED = ["COMPLETED", "PRUNED", "FAILED"];

export function studiesView(container) {
  let state = "";
  let offset = 0;
  let timer = null;
  let gone = false;
  const box = alertBox();
  const body = h("tbody");
  const pager = h("div", { class: "pager" });
  const select = h(
    "select",
    {
      id: "studies-state",
      onchange: () => {
        state = select.value;
        offset = 0;
        load();
      },
    },
    h("option", { value: "", text: "every state" }),
    STATES.map((s) => h("option", { value: s, text: s }))
  );
  const table = h(
    "table",
    { class: "grid", "aria-label": "Studies" },
    h(
      "thead",
      {},
      h(
        "tr",
        {},
        ["Study", "State", "Progress", "Running", "Best", "Trainer", "Age"].map((t) =>
          h("th", { scope: "col", text: t })
        )
      )
    ),
    body
  );

  async function load() {
    clearTimeout(timer);
    try {
      const page = await get("/studies", { state, limit: PAGE, offset });
      if (gone) return;
      hide(box);
      renderRows(page);
    } catch (error) {
      if (!gone) showError(box, error);
    }
    if (!gone) timer = setTimeout(load, 5000);
  }

  function renderRows(page) {
    if (!page.data.length) {
      replace(body, h("tr", {}, h("td", { colspan: 7, class: "muted", text: state ? `No ${state} study.` : "No study yet." })));
    } else {
      replace(body, page.data.map(row));
    }
    const last = Math.min(offset + PAGE, page.count);
    replace(
      pager,
      h("span", { text: page.count ? `${offset + 1}–${last} of ${num(page.count)}` : "" }),
      h("button", { type: "button", text: "Previous", disabled: offset === 0, onclick: () => { offset = Math.max(0, offset - PAGE); load(); } }),
      h("button", { type: "button", text: "Next", disabled: last >= page.count, onclick: () => { offset += PAGE; load(); } })
    );
  }

  const toolbar = h("div", { class: "toolbar" }, h("label", { for: "studies-state", text: "State" }), select);
  const writeTools = () => {
    if (auth.canWrite && !toolbar.querySelector(".new-study-box")) toolbar.append(newStudy());
  };
  writeTools();
  window.addEventListener("tuner-auth", writeTools);
  replace(
    container,
    h("h1", { tabindex: -1, text: "Studies" }),
    toolbar,
    box,
    scroller("Studies table", table),
    pager
  );
  load();
  return () => {
    gone = true;
    clearTimeout(timer);
    window.removeEventListener("tuner-auth", writeTools);
  };
}

function row(study) {
  const finished = FINISHED.reduce((sum, s) => sum + (study.counts[s] || 0), 0);
  const running = study.counts.RUNNING || 0;
  const best = study.best;
  return h(
    "tr",
    {},
    h("th", { scope: "row" }, h("a", { href: `#${studyPath(study.name)}`, text: study.name })),
    h("td", {}, badge(study.state)),
    h(
      "td",
      { class: "progress-cell" },
      h("span", { text: `${num(finished)} / ${num(study.maxTrials)}` }),
      h("progress", { max: study.maxTrials, value: Math.min(finished, study.maxTrials), "aria-label": `${study.name}: ${finished} of ${study.maxTrials} trials finished` })
    ),
    h("td", { class: "n", text: num(running) }),
    h(
      "td",
      { class: "n" },
      (study.objectives || []).length > 1
        ? h("span", { class: "muted", title: `${study.objectives.length} objectives: no one trial is best, see its Pareto front`, text: "Pareto front" })
        : best
          ? h("span", { title: `trial ${best.number}, step ${best.bestStep}` }, `${num(best.objective)} `, h("span", { class: "muted", text: `#${best.number}` }))
          : "—"
    ),
    h("td", { text: study.trainer }),
    h("td", { title: study.createdAt, text: age(study.createdAt) })
  );
}

/** The "new study" form: a spec pasted or read from a file, refused inline with field paths. */
function newStudy() {
  const box = alertBox();
  const text = h("textarea", {
    id: "spec-text",
    rows: 14,
    spellcheck: "false",
    required: true,
    "aria-describedby": "spec-help spec-errors",
    placeholder: "name: my-study\ntrainer: synthetic\nhyperparameters:\n  goal: MINIMIZE\n  hyperparameterMetricTag: rmse\n  maxTrials: 10\n  params:\n    - {parameterName: x, type: DOUBLE, minValue: -1, maxValue: 1}",
  });
  box.id = "spec-errors";
  const file = h("input", {
    id: "spec-file",
    type: "file",
    accept: ".yaml,.yml,.json,application/json,application/yaml,text/yaml",
    onchange: async () => {
      const chosen = file.files && file.files[0];
      if (chosen) text.value = await chosen.text();
    },
  });
  const submit = h("button", { type: "submit", class: "primary", text: "Submit study" });
  const form = h(
    "form",
    {
      class: "new-study",
      "aria-label": "New study",
      onsubmit: async (event) => {
        event.preventDefault();
        hide(box);
        text.removeAttribute("aria-invalid");
        submit.disabled = true;
        const spec = text.value;
        let type = "application/yaml";
        try {
          JSON.parse(spec);
          type = "application/json";
        } catch {
          type = "application/yaml";
        }
        try {
          const created = await call("/studies", { method: "POST", body: spec, type });
          location.hash = `#${studyPath(created.name)}`;
        } catch (error) {
          text.setAttribute("aria-invalid", "true");
          showError(box, error);
        } finally {
          submit.disabled = false;
        }
      },
    },
    h("label", { for: "spec-text", text: "Spec (YAML or JSON)" }),
    h("p", { id: "spec-help", class: "muted small", text: "AI Platform's hyperparameters block plus the trainer's registered name; see docs/spec.md." }),
    text,
    h("div", { class: "row" }, h("label", { for: "spec-file", text: "or read it from a file" }), file),
    box,
    h("div", { class: "row" }, submit)
  );
  return h("details", { class: "new-study-box" }, h("summary", { class: "button primary", text: "New study" }), form);
}
