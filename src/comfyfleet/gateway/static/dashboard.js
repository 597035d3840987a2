// comfyfleet dashboard: reads the public API (with the token from the login form, if the
// gateway needs one). Task data is user-controlled, so everything is rendered as text nodes.
"use strict";

const REFRESH_MS = 2000;
const state = { token: localStorage.getItem("comfyfleet.token") || "", detail: null, stream: null };

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children) {
    node.append(child instanceof Node ? child : document.createTextNode(child ?? ""));
  }
  return node;
}

function headers() {
  return state.token ? { Authorization: `Bearer ${state.token}` } : {};
}

async function api(path, options = {}) {
  const response = await fetch(path, { ...options, headers: { ...headers(), ...(options.headers || {}) } });
  if (response.status === 401 || response.status === 403) {
    document.getElementById("login").hidden = false;
    throw new Error(`HTTP ${response.status}`);
  }
  if (!response.ok) throw new Error(`HTTP ${response.status}`);
  return response.json();
}

function statusBadge(status) {
  return el("span", { class: `status ${status}` }, status);
}

function ago(iso) {
  if (!iso) return "";
  const seconds = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
  if (seconds < 60) return `${seconds.toFixed(0)}s ago`;
  if (seconds < 3600) return `${(seconds / 60).toFixed(0)}m ago`;
  return `${(seconds / 3600).toFixed(1)}h ago`;
}

function fill(tbody, rows) {
  tbody.replaceChildren(...rows);
}

function renderQueue(metrics) {
  const q = metrics.queue;
  const cards = [
    ["queued", q.pending_tasks], ["running", q.running_tasks], ["succeeded", q.completed_tasks],
    ["failed", q.failed_tasks], ["cancelled", q.cancelled_tasks],
    ["oldest queued", q.oldest_queued_age_seconds == null ? "–" : `${q.oldest_queued_age_seconds.toFixed(0)}s`],
  ];
  document.getElementById("queue").replaceChildren(
    ...cards.map(([label, value]) => el("div", { class: "card", "data-metric": label }, el("b", {}, String(value)), label)),
  );
  const depth = Object.entries(q.depth_by_priority).sort((a, b) => Number(b[0]) - Number(a[0]));
  fill(document.querySelector("#depth tbody"),
    depth.length ? depth.map(([p, n]) => el("tr", {}, el("td", {}, p), el("td", {}, String(n))))
      : [el("tr", {}, el("td", { colspan: "2", class: "muted" }, "queue is empty"))]);
  fill(document.querySelector("#backends tbody"), metrics.backends.length
    ? metrics.backends.map((b) => el("tr", { "data-backend": b.name },
      el("td", {}, b.name, b.label ? el("span", { class: "badge demo" }, " DEMO") : ""),
      el("td", {}, b.kind),
      el("td", { title: b.last_seen_ago != null ? `last call ${b.last_seen_ago.toFixed(0)}s ago` : "" },
        statusBadge(b.state)),
      el("td", {}, (b.running || []).join(", ")), el("td", {}, `${b.executed} / ${b.failed}`),
      el("td", { class: "muted" }, b.last_error || "")))
    : [el("tr", {}, el("td", { colspan: "6", class: "muted" }, "no backends (remote agents can join)"))]);
}

function renderTasks(page) {
  fill(document.querySelector("#tasks tbody"), page.items.map((t) => el("tr",
    { class: "clickable", "data-task": t.id, onclick: () => openTask(t.id) },
    el("td", {}, el("code", {}, t.id.slice(0, 12))), el("td", {}, statusBadge(t.status)),
    el("td", {}, String(t.priority)), el("td", {}, t.workflow_id || t.source || ""),
    el("td", {}, t.backend || ""), el("td", {}, ago(t.created_at)),
    el("td", {}, t.timings.run_seconds != null ? `${t.timings.run_seconds.toFixed(1)}s` : ""))));
}

async function refresh() {
  try {
    const ready = await fetch("/readyz").then((r) => r.json());
    const demo = document.getElementById("demo");
    demo.hidden = !ready.demo;
    demo.textContent = ready.demo || "";
    const filter = document.getElementById("status-filter").value;
    const [metrics, page] = await Promise.all([
      api("/api/v1/metrics"),
      api(`/api/v1/tasks?limit=25${filter ? `&status=${filter}` : ""}`),
    ]);
    renderQueue(metrics);
    renderTasks(page);
    document.getElementById("conn").textContent = `updated ${new Date().toLocaleTimeString()}`;
  } catch (error) {
    document.getElementById("conn").textContent = `offline: ${error.message}`;
  }
  setTimeout(refresh, REFRESH_MS);
}

// --- task detail, live over server-sent events ----------------------------------------------

function renderDetail(task) {
  document.getElementById("detail").hidden = false;
  document.getElementById("detail-id").textContent = task.id;
  const badge = document.getElementById("detail-status");
  badge.className = `status ${task.status}`;
  badge.textContent = task.status;
  document.getElementById("cancel").hidden = ["succeeded", "failed", "cancelled"].includes(task.status);
  document.getElementById("detail-json").textContent = JSON.stringify(task, null, 2);
  renderArtifacts((task.result && task.result.artifacts) || []);
}

async function renderArtifacts(artifacts) {
  const box = document.getElementById("detail-artifacts");
  if (box.dataset.count === String(artifacts.length)) return;
  box.dataset.count = String(artifacts.length);
  box.replaceChildren();
  for (const artifact of artifacts) {
    const link = el("a", { href: artifact.url, target: "_blank", rel: "noopener" }, artifact.filename);
    const figure = el("figure", { "data-artifact": artifact.filename });
    if (artifact.url && (artifact.media_type || "").startsWith("image/")) {
      const img = el("img", { alt: artifact.filename });
      figure.append(img);
      // <img> cannot send the bearer token, so fetch the bytes and show a blob URL.
      fetch(artifact.url, { headers: headers() }).then((r) => r.blob())
        .then((blob) => { img.src = URL.createObjectURL(blob); img.dataset.loaded = "true"; });
    }
    figure.append(el("figcaption", {}, link));
    box.append(figure);
  }
}

function addEvent(name, data) {
  const list = document.getElementById("detail-events");
  let text = name;
  if (name === "progress" && data.percent != null) text += ` ${data.percent.toFixed(0)}%`;
  if (name === "progress" && data.stage) text += ` ${data.stage}`;
  if (name === "started" && data.backend) text += ` on ${data.backend}`;
  list.append(el("li", { "data-event": name }, text));
  if (name === "progress" && data.percent != null) {
    document.querySelector("#detail-progress div").style.width = `${data.percent}%`;
  }
}

async function follow(taskId, signal) {
  const response = await fetch(`/api/v1/tasks/${taskId}/events`, { headers: headers(), signal });
  if (!response.ok || !response.body) return;
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value;
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      let name = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event: ")) name = line.slice(7);
        else if (line.startsWith("data: ")) data.push(line.slice(6));
      }
      if (!data.length) continue;
      const payload = JSON.parse(data.join("\n"));
      addEvent(name, payload);
      if (name === "finished") {
        renderDetail(payload);
        if (payload.status === "succeeded") document.querySelector("#detail-progress div").style.width = "100%";
      }
    }
  }
}

async function openTask(taskId) {
  if (state.stream) state.stream.abort();
  state.detail = taskId;
  history.replaceState(null, "", `#task=${taskId}`);
  document.getElementById("detail-events").replaceChildren();
  document.getElementById("detail-artifacts").dataset.count = "";
  document.querySelector("#detail-progress div").style.width = "0";
  try {
    renderDetail(await api(`/api/v1/tasks/${encodeURIComponent(taskId)}`));
  } catch (error) {
    document.getElementById("detail-json").textContent = String(error);
    return;
  }
  state.stream = new AbortController();
  follow(encodeURIComponent(taskId), state.stream.signal).catch(() => {});
}

document.getElementById("cancel").addEventListener("click", async () => {
  if (!state.detail) return;
  try {
    renderDetail(await api(`/api/v1/tasks/${encodeURIComponent(state.detail)}/cancel`, { method: "POST" }));
  } catch (error) {
    document.getElementById("detail-json").textContent = String(error);
  }
});

document.getElementById("login").addEventListener("submit", (event) => {
  event.preventDefault();
  state.token = document.getElementById("token").value.trim();
  localStorage.setItem("comfyfleet.token", state.token);
  document.getElementById("login").hidden = true;
});

const linked = new URLSearchParams(location.hash.slice(1)).get("task");
if (linked) openTask(linked);
refresh();
