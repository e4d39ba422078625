// The /v1 API from the browser: the bearer key kept in this tab, JSON calls, cursor paging, and
// following a job's metrics or events live (server-sent events read with fetch, else polling).

const KEY = "xmodal.apiKey";
const POLL_MS = 2000;
const RETRY_MS = 2000;
const PAGE = 100; // the API's default api_page_limit

export class ApiError extends Error {
  constructor(status, body) {
    const error = (body && body.error) || {};
    super(error.message || `HTTP ${status}`);
    this.status = status;
    this.code = error.code;
  }
}

export const getKey = () => sessionStorage.getItem(KEY);
export const setKey = (key) => sessionStorage.setItem(KEY, key);
export const clearKey = () => sessionStorage.removeItem(KEY);

export function toLogin() {
  const next = location.pathname + location.search;
  location.replace(`/dashboard/login?next=${encodeURIComponent(next)}`);
}

/** The key, or null and a trip to the login page; also wires the header's key hint and log-out button. */
export function requireKey() {
  const key = getKey();
  if (!key) {
    toLogin();
    return null;
  }
  document.getElementById("who").textContent = `${key.slice(0, 12)}…`;
  const logout = document.getElementById("logout");
  logout.hidden = false;
  logout.addEventListener("click", () => { clearKey(); toLogin(); });
  return key;
}

function headers(extra = {}) {
  return { Authorization: `Bearer ${getKey()}`, ...extra };
}

export async function api(path, { method = "GET", params, key } = {}) {
  const url = new URL(path, location.origin);
  for (const [name, value] of Object.entries(params || {})) {
    if (value !== undefined && value !== null && value !== "") url.searchParams.set(name, value);
  }
  const auth = key ? { Authorization: `Bearer ${key}` } : headers();
  const response = await fetch(url, { method, headers: { Accept: "application/json", ...auth } });
  const body = await response.json().catch(() => null);
  if (response.status === 401 && !key) {
    clearKey();
    toLogin();
  }
  if (!response.ok) throw new ApiError(response.status, body);
  return body;
}

/** Every item of a cursor-paged list, following `last_id` while `has_more`. */
export async function listAll(path, params = {}) {
  const items = [];
  let after;
  for (;;) {
    const page = await api(path, { params: { ...params, limit: PAGE, after } });
    items.push(...page.data);
    if (!page.has_more || page.last_id == null) return items;
    after = page.last_id;
  }
}

/** A file download through fetch (it needs the Authorization header), saved via a blob URL. */
export async function download(path, filename) {
  const response = await fetch(path, { headers: headers() });
  if (!response.ok) throw new ApiError(response.status, await response.json().catch(() => null));
  const url = URL.createObjectURL(await response.blob());
  const link = Object.assign(document.createElement("a"), { href: url, download: filename });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

let openapi;
/** Which optional routes this server has, read from its OpenAPI document (asking a missing route
 * would log a 404 in the console). */
export async function features() {
  openapi ??= fetch("/openapi.json").then((r) => (r.ok ? r.json() : { paths: {} })).catch(() => ({ paths: {} }));
  const paths = Object.keys((await openapi).paths || {});
  const has = (pattern) => paths.some((path) => pattern.test(path));
  return {
    metricsStream: has(/^\/v1\/fine_tuning\/jobs\/\{[^}]+\}\/metrics\/stream$/),
    eventsStream: has(/^\/v1\/fine_tuning\/jobs\/\{[^}]+\}\/events\/stream$/),
    experiments: has(/^\/v1\/experiments$/),
  };
}

/** Parse a text/event-stream body, calling onMessage({event, id, data}) per dispatched message. */
export async function readEventStream(body, onMessage) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let message = { event: "message", id: null, data: [] };
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    const lines = buffer.split(/\r\n|\n|\r(?!$)/);
    buffer = lines.pop();
    for (const line of lines) {
      if (line === "") {
        if (message.data.length) onMessage({ ...message, data: message.data.join("\n") });
        message = { event: "message", id: message.id, data: [] };
        continue;
      }
      if (line.startsWith(":")) continue; // a comment: keep-alive
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      const text = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
      if (field === "data") message.data.push(text);
      else if (field === "event") message.event = text;
      else if (field === "id") message.id = text;
    }
  }
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Follow a job's `metrics` or `events` from after id `after`: onItems(items) for each new batch.
 * Uses the `/stream` route when the server has one (resuming with Last-Event-ID after a dropped
 * connection) and polls `?after=` otherwise. Stops when the stream sends `end`, or, when
 * polling, once isFinished() is true and a last poll found nothing new. Returns how it followed.
 */
export async function follow(jobId, kind, after, onItems, isFinished) {
  const base = `/v1/fine_tuning/jobs/${encodeURIComponent(jobId)}/${kind}`;
  const streamed = (await features())[kind === "metrics" ? "metricsStream" : "eventsStream"];
  let last = after;
  const take = (items) => {
    const fresh = items.filter((item) => last == null || item.id > last);
    if (fresh.length) {
      last = fresh[fresh.length - 1].id;
      onItems(fresh);
    }
  };
  const run = async () => {
    if (streamed && (await stream(`${base}/stream`, () => last, take))) return;
    for (;;) {
      const finished = isFinished();
      take(await listAll(base, { after: last }).catch(() => []));
      if (finished) return;
      await sleep(POLL_MS);
    }
  };
  run();
  return streamed ? "stream" : "polling";
}

/** Read one stream until `end`; reconnect after a dropped connection. False: no such route. */
async function stream(url, lastId, take) {
  const wanted = { event: true, metric: true };
  for (;;) {
    let ended = false;
    try {
      const resumeFrom = lastId();
      const response = await fetch(url, {
        headers: headers({ Accept: "text/event-stream", ...(resumeFrom != null ? { "Last-Event-ID": String(resumeFrom) } : {}) }),
      });
      if (response.status === 404 || response.status === 405) return false;
      if (response.status === 401) { clearKey(); toLogin(); return true; }
      if (response.ok) {
        let batch = [];
        await readEventStream(response.body, (message) => {
          if (message.event === "end") ended = true;
          else if (wanted[message.event]) batch.push(JSON.parse(message.data));
          if (batch.length) { take(batch); batch = []; }
        });
      }
    } catch (error) {
      console.warn("stream interrupted, reconnecting:", error.message);
    }
    if (ended) return true;
    await sleep(RETRY_MS);
  }
}
