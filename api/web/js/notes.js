// Notes on a study or a trial: markdown rendered safely, edited in place with a write token.
// Raw HTML in a note is shown as text (never parsed), and what marked renders goes through
// DOMPurify before it reaches the page (links such as `javascript:` are dropped too). Both
// libraries are vendored and loaded with the first note, not with the page.

import { ROOT, auth, put } from "./api.js";
import { alertBox, h, hide, replace, showError, time } from "./dom.js";

let libraries = null;

function load() {
  if (!libraries) {
    libraries = Promise.all([
      import(`${ROOT}/ui/vendor/marked.esm.js`),
      import(`${ROOT}/ui/vendor/purify.es.js`),
    ]).then(([markedModule, purifyModule]) => {
      const { Marked } = markedModule;
      const escape = (text) => text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");
      const marked = new Marked({ gfm: true, breaks: true, async: false });
      marked.use({ renderer: { html: (token) => escape(token.text ?? token.raw ?? "") } });
      return { marked, purify: purifyModule.default };
    });
    libraries.catch(() => {
      libraries = null;
    });
  }
  return libraries;
}

/** Render `text` (markdown) into `el`. */
export async function renderMarkdown(el, text) {
  const { marked, purify } = await load();
  const html = purify.sanitize(marked.parse(text || ""), { USE_PROFILES: { html: true } });
  el.innerHTML = html; // sanitized just above
  for (const link of el.querySelectorAll("a[href]")) {
    link.target = "_blank";
    link.rel = "noopener noreferrer";
  }
}

/**
 * A notes section: the note rendered, an Edit button when the page has a write token, and an
 * editor that saves with `PUT <path>/note`. `onSaved(answer)` is told `{note, updatedAt}`.
 * Returns `{el, show(note, updatedAt)}`.
 */
export function notesPanel({ id, title, path, onSaved = () => {} }) {
  let current = "";
  let editing = false;
  const box = alertBox();
  const body = h("div", { class: "note-body", "data-note": "" });
  const meta = h("p", { class: "muted small" });
  const edit = h("button", { type: "button", text: "Edit note", onclick: () => open() });
  const area = h("textarea", { id: `${id}-text`, rows: 6, spellcheck: "true" });
  const form = h(
    "form",
    {
      class: "note-form",
      hidden: true,
      onsubmit: async (event) => {
        event.preventDefault();
        hide(box);
        const save = form.querySelector("button[type=submit]");
        save.disabled = true;
        try {
          const answer = await put(`${path}/note`, { note: area.value });
          editing = false;
          form.hidden = true;
          show(answer.note, answer.updatedAt);
          onSaved(answer);
        } catch (error) {
          showError(box, error);
        } finally {
          save.disabled = false;
        }
      },
    },
    h("label", { for: area.id, text: "Note (markdown)" }),
    area,
    h(
      "div",
      { class: "row" },
      h("button", { type: "submit", class: "primary", text: "Save note" }),
      h("button", { type: "button", text: "Cancel", onclick: () => { editing = false; form.hidden = true; hide(box); show(current); } })
    )
  );
  const el = h("section", { class: "notes", "aria-labelledby": `${id}-title` }, h("h2", { id: `${id}-title`, text: title }), body, meta, edit, form, box);

  function open() {
    editing = true;
    area.value = current;
    form.hidden = false;
    edit.hidden = true;
    area.focus();
  }

  function show(note, updatedAt = null) {
    current = note || "";
    if (editing) return; // a live refresh does not overwrite what is being typed
    edit.hidden = !auth.canWrite;
    edit.textContent = current ? "Edit note" : "Add a note";
    meta.hidden = !updatedAt;
    if (updatedAt) replace(meta, "Edited ", time(updatedAt));
    if (!current) {
      replace(body, h("p", { class: "muted", text: auth.canWrite ? "No note yet." : "No note." }));
      return;
    }
    renderMarkdown(body, current).catch((error) => {
      body.textContent = current; // the text itself, unrendered, if the library cannot load
      showError(box, error);
    });
  }

  return { el, show };
}
