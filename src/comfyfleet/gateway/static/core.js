// Shared pieces of the dashboard: API calls with the session's key, DOM building (text only:
// task data is user-controlled, so nothing is ever parsed as HTML), formatting, SSE over fetch.

export const state = {
  token: sessionStorage.getItem("comfyfleet.key") || "",
  boot: JSON.parse(document.getElementById("boot")?.textContent || "{}"),
};

export class ApiError extends Error {
  constructor(status, body) {
    const error = (body && body.error) || {};
    super(error.message || `HTTP ${status}`);
    this.status = status;
    this.code = error.code;
    this.details = error.details || {};
  }
}

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value == null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "value") node.value = value;
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child == null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export function headers() {
  return state.token ? { Authorization: `Bearer ${state.token}` } : {};
}

export function needKey(message) {
  const form = document.getElementById("login");
  form.hidden = false;
  if (message) document.getElementById("login-note").textContent = message;
}

export async function api(path, options = {}) {
  const init = { ...options, headers: { ...headers(), ...(options.headers || {}) } };
  if (options.json !== undefined) {
    init.body = JSON.stringify(options.json);
    init.headers["Content-Type"] = "application/json";
  }
  const response = await fetch(path, init);
  const text = await response.text();
  let body = null;
  try { body = text ? JSON.parse(text) : null; } catch { body = null; }
  if (response.status === 401) needKey("This gateway needs an API key.");
  if (!response.ok) throw new ApiError(response.status, body);
  return body;
}

export function badge(status) {
  return el("span", { class: `status ${status}`, "data-state": status }, status);
}

export function ago(iso) {
  if (!iso) return "";
  const seconds = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
  if (seconds < 60) return `${seconds.toFixed(0)}s ago`;
  if (seconds < 3600) return `${(seconds / 60).toFixed(0)}m ago`;
  if (seconds < 86400) return `${(seconds / 3600).toFixed(1)}h ago`;
  return new Date(iso).toLocaleString();
}

export function seconds(value) {
  if (value == null) return "";
  return value < 10 ? `${value.toFixed(2)}s` : value < 600 ? `${value.toFixed(1)}s` : `${(value / 60).toFixed(1)}m`;
}

export function duration(task) {
  const t = task.timings || {};
  if (t.run_seconds != null) return seconds(t.run_seconds);
  if (task.started_at) return `${seconds((Date.now() - Date.parse(task.started_at)) / 1000)}…`;
  return "";
}

export function errorText(error) {
  if (!error) return "";
  return error.message || error.code || JSON.stringify(error);
}

export function taskLink(id, text) {
  return el("a", { href: `#/task/${encodeURIComponent(id)}`, "data-task-link": id }, el("code", {}, text || id.slice(0, 12)));
}

// A message line that replaces its previous content: errors and notices of a page.
export function notice(box, message, kind = "error") {
  box.replaceChildren(message ? el("div", { class: `notice ${kind}` }, message) : "");
}

// Server-sent events over fetch(): EventSource cannot send the Authorization header.
export async function* sse(path, signal) {
  const response = await fetch(path, { headers: { ...headers(), Accept: "text/event-stream" }, signal });
  if (!response.ok || !response.body) throw new ApiError(response.status, null);
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value.replace(/\r\n/g, "\n");
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      let name = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) name = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
      }
      if (data.length) yield [name, JSON.parse(data.join("\n"))];
    }
  }
}

// Bytes of an artifact as a blob: URL (<img>, <video> and downloads cannot send the key).
export async function blobUrl(url) {
  const response = await fetch(url, { headers: headers() });
  if (!response.ok) throw new ApiError(response.status, null);
  return URL.createObjectURL(await response.blob());
}

// Calls ``tick`` now and then every ``ms`` while the page is shown; returns a stopper.
export function every(ms, tick) {
  let timer = null;
  let stopped = false;
  const run = async () => {
    if (stopped) return;
    if (!document.hidden) await tick().catch(() => {});
    if (!stopped) timer = setTimeout(run, ms);
  };
  timer = setTimeout(run, ms);
  return () => { stopped = true; clearTimeout(timer); };
}
