// The REST API from the page: the bearer token (kept in localStorage, sent as a header, never
// in a URL), errors in the API's one shape, the event stream read with fetch (EventSource
// cannot send a header), and downloads saved from a fetched blob.

export const ROOT = document.querySelector('meta[name="tuner-root"]')?.content || "";
export const API = `${ROOT}/api/v1`;
const TOKEN_KEY = "estimator-tuner.token";

export const auth = {
  token: localStorage.getItem(TOKEN_KEY) || "",
  scope: null,
  publicReads: false,
  canRead: false,
  canWrite: false,
  problem: null,
};

export class ApiError extends Error {
  constructor(status, body) {
    super(body.message || `HTTP ${status}`);
    this.status = status;
    this.code = body.code || `HTTP_${status}`;
    this.details = body.details || [];
  }
}

function headers(extra = {}) {
  const out = new Headers(extra);
  if (auth.token) out.set("Authorization", `Bearer ${auth.token}`);
  return out;
}

async function failure(response) {
  let body = null;
  try {
    body = (await response.json()).error;
  } catch {
    body = null;
  }
  return new ApiError(response.status, body || { message: `HTTP ${response.status}` });
}

/** A query string; arrays repeat their key (`state=A&state=B`), empty values are left out. */
export function query(params = {}) {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    for (const item of Array.isArray(value) ? value : [value]) {
      if (item !== undefined && item !== null && item !== "") search.append(key, String(item));
    }
  }
  const text = search.toString();
  return text ? `?${text}` : "";
}

export function studyPath(study) {
  return `/studies/${encodeURIComponent(study)}`;
}

/** A request boot.js started for this URL and token, taken once. */
async function started(url, method, raw) {
  const early = window.tunerEarly || {};
  const found = early[url];
  if (!found || method !== "GET" || raw || found.token !== auth.token) return null;
  delete early[url];
  try {
    return await found.response;
  } catch {
    return null;
  }
}

export async function call(path, { method = "GET", body, type, signal, raw = false } = {}) {
  const extra = type ? { "Content-Type": type } : {};
  const response =
    (await started(API + path, method, raw)) ||
    (await fetch(API + path, {
      method,
      body,
      signal,
      headers: headers(extra),
      cache: "no-store",
    }));
  if (!response.ok) throw await failure(response);
  if (raw) return response;
  if (response.status === 204) return null;
  return response.json();
}

export const get = (path, params, signal) => call(path + query(params), { signal });
export const post = (path, json) =>
  call(path, {
    method: "POST",
    body: json === undefined ? undefined : JSON.stringify(json),
    type: json === undefined ? undefined : "application/json",
  });

export const put = (path, json) =>
  call(path, { method: "PUT", body: JSON.stringify(json), type: "application/json" });

/** What the token may do (`GET /api/v1/whoami`); a rejected token is dropped. */
export async function probe() {
  try {
    const found = await call("/whoami");
    Object.assign(auth, {
      scope: found.scope,
      publicReads: found.publicReads,
      canRead: found.canRead,
      canWrite: found.canWrite,
      problem: null,
    });
  } catch (error) {
    Object.assign(auth, { scope: null, canRead: false, canWrite: false, problem: error });
    if (error.status !== 401) throw error;
  }
  return auth;
}

export async function signIn(token) {
  const previous = auth.token;
  auth.token = token.trim();
  await probe();
  if (auth.problem) {
    const problem = auth.problem;
    auth.token = previous;
    await probe().catch(() => {});
    throw problem;
  }
  localStorage.setItem(TOKEN_KEY, auth.token);
}

export async function signOut() {
  auth.token = "";
  localStorage.removeItem(TOKEN_KEY);
  await probe();
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Follow a study's event stream: `onEvent({event, id, data})` for each message, `onStatus`
 * with "live", "reconnecting" or "ended", `onError` for an answer a retry cannot fix. A dropped
 * connection is resumed after the server's `retry:` delay with `Last-Event-ID`, so nothing is
 * lost or repeated. Returns `{close(), lastId()}`.
 */
export function follow(study, { onEvent, onStatus = () => {}, onError = () => {}, after = null }) {
  let lastId = after;
  let retry = 2000;
  let closed = false;
  let controller = null;

  async function run() {
    let failures = 0;
    while (!closed) {
      controller = new AbortController();
      const extra = { Accept: "text/event-stream" };
      if (lastId !== null) extra["Last-Event-ID"] = lastId;
      try {
        const response = await fetch(`${API}${studyPath(study)}/events`, {
          headers: headers(extra),
          signal: controller.signal,
          cache: "no-store",
        });
        if (!response.ok) {
          const error = await failure(response);
          if (response.status < 500 && response.status !== 429) {
            onError(error);
            return;
          }
          throw error;
        }
        onStatus("live");
        failures = 0;
        if (await read(response.body)) {
          onStatus("ended");
          return;
        }
      } catch (error) {
        if (closed || error.name === "AbortError") return;
      }
      if (closed) return;
      onStatus("reconnecting");
      failures += 1;
      await sleep(Math.min(retry * failures, 30000));
    }
  }

  /** Parse the stream (WHATWG server-sent events); true once the `end` event came. */
  async function read(body) {
    const reader = body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    let data = [];
    let event = "";
    let id = null;
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return false;
      buffer += value;
      const lines = buffer.split(/\r\n|\r|\n/);
      buffer = lines.pop();
      for (const line of lines) {
        if (line === "") {
          if (id !== null) lastId = id;
          if (data.length) {
            const message = { event: event || "message", id: lastId, data: parse(data.join("\n")) };
            if (!closed) onEvent(message);
            if (message.event === "end") {
              reader.cancel().catch(() => {});
              return true;
            }
          }
          data = [];
          event = "";
          id = null;
          continue;
        }
        if (line.startsWith(":")) continue;
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        let text = colon < 0 ? "" : line.slice(colon + 1);
        if (text.startsWith(" ")) text = text.slice(1);
        if (field === "data") data.push(text);
        else if (field === "event") event = text;
        else if (field === "id" && !text.includes("\0")) id = text;
        else if (field === "retry" && /^\d+$/.test(text)) retry = Number(text);
      }
    }
  }

  run();
  return {
    close() {
      closed = true;
      if (controller) controller.abort();
    },
    lastId: () => lastId,
  };
}

function parse(text) {
  try {
    return JSON.parse(text);
  } catch {
    return { text };
  }
}

/**
 * Download a file with the bearer header and save it from a blob (a plain link could not
 * send the token). `progress(done, total)` is told as bytes arrive.
 */
export async function download(path, fallbackName, progress = () => {}) {
  const response = await call(path, { raw: true });
  const total = Number(response.headers.get("Content-Length")) || null;
  const disposition = response.headers.get("Content-Disposition") || "";
  const name = /filename="?([^";]+)"?/.exec(disposition)?.[1] || fallbackName;
  const reader = response.body.getReader();
  const parts = [];
  let done = 0;
  for (;;) {
    const chunk = await reader.read();
    if (chunk.done) break;
    parts.push(chunk.value);
    done += chunk.value.length;
    progress(done, total);
  }
  const blob = new Blob(parts, { type: response.headers.get("Content-Type") || "" });
  const url = URL.createObjectURL(blob);
  const link = document.createElement("a");
  link.href = url;
  link.download = name;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60000);
  return { name, size: done };
}
