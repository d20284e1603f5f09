// The page's shell: hash routes (so any --root-path works without server rewrites), the
// sign-in control, and mounting one view at a time.

import { auth, probe, signIn, signOut } from "./api.js";
import { alertBox, h, hide, replace, showError } from "./dom.js";
import { studiesView } from "./studies.js";
import { studyView } from "./study.js";
import { trialView } from "./trial.js";

const main = document.getElementById("main");
const authBox = document.getElementById("auth");
let unmount = () => {};
let firstRoute = true;

function route() {
  const hash = location.hash || "#/";
  if (!hash.startsWith("#/")) return null;
  const parts = hash.slice(2).split("/").filter(Boolean).map(decodeURIComponent);
  if (parts.length === 0) return { view: studiesView, params: {} };
  if (parts[0] === "studies" && parts.length === 2) {
    return { view: studyView, params: { study: parts[1] } };
  }
  if (parts[0] === "studies" && parts.length === 4 && parts[2] === "trials") {
    return { view: trialView, params: { study: parts[1], number: Number(parts[3]) } };
  }
  return { view: notFound, params: {} };
}

function notFound(container) {
  replace(
    container,
    h("h1", { tabindex: -1, text: "Not found" }),
    h("p", {}, "No page here. ", h("a", { href: "#/", text: "See the studies" }), ".")
  );
  return () => {};
}

function render() {
  const found = route();
  if (!found) return;
  unmount();
  main.replaceChildren();
  if (!auth.canRead) {
    unmount = signInPrompt(main);
  } else {
    unmount = found.view(main, found.params) || (() => {});
  }
  if (!firstRoute) {
    const heading = main.querySelector("h1");
    (heading || main).focus({ preventScroll: false });
  }
  firstRoute = false;
}

function signInPrompt(container) {
  const problem = auth.problem;
  replace(
    container,
    h("h1", { tabindex: -1, text: "Sign in" }),
    h("p", {
      text:
        problem && problem.status === 401 && auth.token
          ? "The saved token was refused (unknown or revoked). Sign in with another one."
          : "This server needs a token to read studies. Create one with `tuner token create --scope read` (or --scope write to steer studies) and paste it here.",
    }),
    signInForm()
  );
  container.querySelector("input")?.focus();
  return () => {};
}

function signInForm(onDone = () => {}) {
  const box = alertBox();
  const input = h("input", {
    id: `token-${Math.random().toString(36).slice(2, 8)}`,
    type: "password",
    autocomplete: "off",
    spellcheck: "false",
    required: true,
    placeholder: "tnr_…",
  });
  const form = h(
    "form",
    {
      class: "signin",
      onsubmit: async (event) => {
        event.preventDefault();
        hide(box);
        try {
          await signIn(input.value);
          onDone();
          renderAuth();
          render();
        } catch (error) {
          showError(box, error);
          input.focus();
        }
      },
    },
    h("label", { for: input.id, text: "API token" }),
    input,
    h("button", { type: "submit", class: "primary", text: "Sign in" }),
    h("p", { class: "muted small", text: "Kept in this browser (localStorage) and sent as a bearer header." }),
    box
  );
  return form;
}

function renderAuth() {
  const label = auth.scope
    ? `${auth.scope} token`
    : auth.publicReads
      ? "public reads"
      : "not signed in";
  const children = [h("span", { class: "who", text: label, title: "What this browser may do here" })];
  if (auth.token && auth.scope) {
    children.push(
      h("button", {
        type: "button",
        text: "Sign out",
        onclick: async () => {
          await signOut();
          renderAuth();
          render();
        },
      })
    );
  } else {
    const details = h(
      "details",
      { class: "signin-menu" },
      h("summary", { text: "Sign in" }),
      signInForm(() => {
        details.open = false;
      })
    );
    children.push(details);
  }
  replace(authBox, children);
}

document.getElementById("skip").addEventListener("click", (event) => {
  event.preventDefault();
  (main.querySelector("h1") || main).focus();
});

window.addEventListener("hashchange", render);

async function start() {
  // With a saved token the view starts at once, beside the probe (one round trip less before
  // the first rows); what the probe finds is then applied: sign-in, or the write actions.
  const optimistic = Boolean(auth.token);
  if (optimistic) {
    auth.canRead = true;
    render();
  }
  try {
    await probe();
  } catch (error) {
    replace(main, h("h1", { text: "The server does not answer" }), h("p", { text: error.message }));
    return;
  }
  renderAuth();
  if (!optimistic || !auth.canRead) render();
  else window.dispatchEvent(new Event("tuner-auth"));
}

start();
