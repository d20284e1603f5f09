// Building elements and formatting values. Text always goes in as text (never as HTML):
// study names, params and failure reasons come from users and trainers.

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") el.className = value;
    else if (key === "text") el.textContent = value;
    else if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key in PROPS) el[key] = value;
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  append(el, children);
  return el;
}

const PROPS = { value: 1, checked: 1, disabled: 1, hidden: 1, selected: 1, htmlFor: 1 };

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

export function replace(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

export function badge(state) {
  return h("span", { class: `badge s-${String(state).toLowerCase()}`, text: state });
}

export function num(value) {
  if (value === null || value === undefined) return "—";
  if (typeof value !== "number") return String(value);
  if (Number.isInteger(value)) return value.toLocaleString("en-US");
  const abs = Math.abs(value);
  if (abs !== 0 && (abs >= 1e6 || abs < 1e-3)) return value.toExponential(3);
  return String(parseFloat(value.toPrecision(4)));
}

export function param(value) {
  return typeof value === "number" ? num(value) : String(value);
}

/**
 * Every parameter of a spec's `hyperparameters`, conditional ones included, parents first (as
 * the server lists them): `[{name, spec, parent}]`, `parent` being `{name, values}` (the
 * parent's values that activate it) for a conditional parameter, else null.
 */
export function specParams(hyperparameters) {
  const out = [];
  const visit = (spec, parent) => {
    out.push({ name: spec.parameterName, spec, parent });
    for (const child of spec.conditionalParameterSpecs || []) {
      const given = child.parentCategoricalValues || child.parentDiscreteValues || child.parentIntValues;
      visit(child.parameterSpec, { name: spec.parameterName, values: given ? given.values : [] });
    }
  };
  for (const spec of (hyperparameters && hyperparameters.params) || []) visit(spec, null);
  return out;
}

/**
 * A trial's value of one parameter (an entry of `specParams`), for a table cell: `{text,
 * title, inactive}`. A conditional parameter its parent's value did not activate is absent
 * from the trial's params: shown as "—", said to be inactive, not an error.
 */
export function paramShown(params, entry) {
  if (params && entry.name in params) return { text: param(params[entry.name]), title: "", inactive: false };
  if (!entry.parent) return { text: "—", title: "", inactive: false };
  const parentValue = params && entry.parent.name in params ? `${entry.parent.name}=${param(params[entry.parent.name])}` : null;
  return {
    text: "—",
    title: parentValue
      ? `inactive: its parent's value (${parentValue}) does not use it`
      : "inactive: its parent's value does not use it",
    inactive: true,
  };
}

export function duration(seconds) {
  if (seconds === null || seconds === undefined) return "—";
  const s = Math.round(seconds);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${String(s % 60).padStart(2, "0")}s`;
  return `${Math.floor(s / 3600)}h ${String(Math.floor((s % 3600) / 60)).padStart(2, "0")}m`;
}

export function age(iso) {
  const seconds = (Date.now() - Date.parse(iso)) / 1000;
  if (!Number.isFinite(seconds)) return "—";
  if (seconds < 60) return "just now";
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ago`;
  if (seconds < 86400) return `${Math.floor(seconds / 3600)} h ago`;
  return `${Math.floor(seconds / 86400)} d ago`;
}

export function time(iso) {
  if (!iso) return "—";
  const el = h("time", { datetime: iso, title: iso, text: new Date(iso).toLocaleString() });
  return el;
}

export function bytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} kB`;
  return `${(n / 1024 / 1024).toFixed(1)} MB`;
}

/** Call `fn` at most once per `ms`, the last call winning (for refetches driven by events). */
export function throttle(fn, ms) {
  let timer = null;
  let pending = false;
  let last = 0;
  const run = () => {
    timer = null;
    pending = false;
    last = Date.now();
    fn();
  };
  const call = () => {
    pending = true;
    if (timer) return;
    timer = setTimeout(run, Math.max(0, last + ms - Date.now()));
  };
  call.cancel = () => {
    clearTimeout(timer);
    timer = null;
    pending = false;
  };
  call.pending = () => pending;
  return call;
}

/** A status line for errors and results, announced to screen readers. */
export function alertBox() {
  return h("div", { class: "alert", role: "alert", hidden: true });
}

export function showError(box, error) {
  box.hidden = false;
  box.className = "alert error";
  const details = (error && error.details) || [];
  replace(
    box,
    h("p", { text: (error && error.message) || String(error) }),
    details.length
      ? h(
          "ul",
          { class: "details" },
          details.map((d) =>
            h("li", {}, d.field ? h("code", { text: d.field }) : null, d.field ? ": " : "", d.message)
          )
        )
      : null
  );
}

export function showInfo(box, text) {
  box.hidden = false;
  box.className = "alert info";
  replace(box, h("p", { text }));
}

export function hide(box) {
  box.hidden = true;
  box.replaceChildren();
}

/** A horizontally scrollable wrapper for a wide table, reachable with the keyboard. */
export function scroller(label, table) {
  return h("div", { class: "scroll", role: "region", "aria-label": label, tabindex: 0 }, table);
}

/** Run `load` once, when `el` first comes near the viewport (charts below the fold). */
export function whenVisible(el, load) {
  if (!("IntersectionObserver" in window)) {
    load();
    return () => {};
  }
  const observer = new IntersectionObserver(
    (entries) => {
      if (entries.some((e) => e.isIntersecting)) {
        observer.disconnect();
        load();
      }
    },
    { rootMargin: "150px" }
  );
  observer.observe(el);
  return () => observer.disconnect();
}

/** Ask before an action: a modal dialog; resolves true when `confirm` is chosen. */
export function confirmDialog({ title, text, confirm = "OK" }) {
  return new Promise((resolve) => {
    const id = `confirm-${Math.random().toString(36).slice(2, 8)}`;
    const dialog = h(
      "dialog",
      { class: "confirm", "aria-labelledby": id },
      h(
        "form",
        { method: "dialog" },
        h("h2", { id, text: title }),
        h("p", { text }),
        h(
          "div",
          { class: "row" },
          h("button", { value: "cancel", text: "Cancel", autofocus: true }),
          h("button", { value: "confirm", class: "danger", text: confirm })
        )
      )
    );
    dialog.addEventListener("close", () => {
      dialog.remove();
      resolve(dialog.returnValue === "confirm");
    });
    document.body.append(dialog);
    dialog.showModal();
  });
}
