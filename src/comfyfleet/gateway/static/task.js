// One task: status, live progress over its event stream, error (node by node), inputs, the
// timeline of its attempts, artifacts, webhook deliveries; cancel and retry.
import { el, api, badge, ago, seconds, errorText, taskLink, notice, sse } from "./core.js";
import { artifactGrid } from "./media.js";

const FINISHED = ["succeeded", "failed", "cancelled"];

function row(label, ...value) {
  return [el("dt", {}, label), el("dd", {}, ...value)];
}

export function nodeErrors(errors) {
  if (!errors || !errors.length) return "";
  return el("table", { class: "rows node-errors" },
    el("thead", {}, el("tr", {}, ["node", "class", "input", "problem"].map((h) => el("th", {}, h)))),
    el("tbody", {}, errors.map((e) => el("tr", { "data-node-error": e.node_id ?? "" },
      el("td", {}, el("code", {}, e.node_id ?? "")), el("td", {}, e.class_type || ""),
      el("td", {}, e.input_name || ""), el("td", {}, e.message || e.type || "")))));
}

function errorBlock(error) {
  if (!error) return "";
  const details = error.details || {};
  return el("div", { class: "notice error", id: "task-error" },
    el("b", {}, error.code || "error"), " ", error.message || "",
    details.node_id ? el("div", {}, "node ", el("code", {}, details.node_id), details.class_type ? ` (${details.class_type})` : "") : "",
    nodeErrors(details.node_errors));
}

// Attempts: the errors of earlier attempts (carried by the task) plus the last one.
function attempts(task) {
  const earlier = (task.result && task.result.attempt_errors) || (task.error && task.error.earlier) || [];
  const items = earlier.map((e, i) => ({ attempt: e.attempt ?? i + 1, status: "failed", error: e, backend: e.backend }));
  items.push({ attempt: task.attempts, status: task.status, error: task.error, backend: task.backend, last: true });
  return items.filter((a) => a.attempt > 0 || a.last);
}

function timeline(task, events) {
  const list = el("ol", { class: "timeline", id: "timeline" });
  list.append(el("li", {}, el("b", {}, "submitted"), " ", el("span", { class: "muted", title: task.created_at }, ago(task.created_at))));
  for (const a of attempts(task)) {
    list.append(el("li", { "data-attempt": a.attempt },
      el("b", {}, `attempt ${a.attempt}`), " ", badge(a.last ? task.status : "failed"),
      a.backend ? ` on ${a.backend}` : "",
      a.error && (!a.last || task.status !== "succeeded") ? el("div", { class: "error-cell" }, `${a.error.code || ""} ${errorText(a.error)}`) : ""));
  }
  for (const [name, data] of events) {
    if (name === "queued" && data.retry) list.append(el("li", { "data-event": "retry" }, el("b", {}, "retry queued"), " ", errorText(data.error)));
  }
  if (task.finished_at) list.append(el("li", {}, el("b", {}, "finished"), " ", el("span", { class: "muted", title: task.finished_at }, ago(task.finished_at))));
  return list;
}

function deliveries(task) {
  if (!task.webhook) return el("p", { class: "muted" }, "no webhook");
  const rows = task.webhook.deliveries || [];
  return el("div", {}, el("p", {}, "→ ", el("code", { id: "task-webhook" }, task.webhook.url)),
    rows.length ? el("table", { class: "rows", id: "deliveries" },
      el("thead", {}, el("tr", {}, ["delivery", "state", "attempts", "delivered", "last error"].map((h) => el("th", {}, h)))),
      el("tbody", {}, rows.map((d) => el("tr", {}, el("td", {}, String(d.id)), el("td", {}, badge(d.state)),
        el("td", {}, String(d.attempts)), el("td", {}, ago(d.delivered_at)), el("td", { class: "error-cell" }, d.last_error || "")))))
      : el("p", { class: "muted" }, "no delivery yet (sent when the task finishes)"));
}

function inputsBlock(inputs) {
  const spec = inputs.spec || {};
  const dl = el("dl", { class: "facts" });
  const add = (label, value) => { if (value != null && value !== "" && !(Array.isArray(value) && !value.length)) dl.append(...row(label, value)); };
  add("source", inputs.source);
  add("template", spec.template);
  if (spec.params && Object.keys(spec.params).length) add("params", el("code", {}, JSON.stringify(spec.params)));
  add("prompt", spec.prompt);
  add("negative", spec.negative);
  add("seed", spec.seed != null ? String(spec.seed) : null);
  add("size", spec.width || spec.height ? `${spec.width || "?"} × ${spec.height || "?"}` : null);
  add("images", (spec.images || []).map((i) => el("div", {}, i.name || "image", i.node_id ? ` → node ${i.node_id}` : "", el("span", { class: "muted" }, ` ${i.image}`))));
  add("models", (spec.models || []).map((m) => el("div", {}, `${m.folder || ""}/${m.filename || m.url}`)));
  if (inputs.retry_of) add("retry of", taskLink(inputs.retry_of));
  const box = el("div", {}, dl);
  if (spec.workflow) {
    box.append(el("details", {}, el("summary", {}, `workflow (${Object.keys(spec.workflow.nodes ? spec.workflow.nodes : spec.workflow).length} nodes)`),
      el("pre", {}, JSON.stringify(spec.workflow, null, 2))));
  }
  return box;
}

export function mount(root, taskId) {
  const controller = new AbortController();
  const events = [];
  let task = null;
  let artifactsShown = -1;
  let webhookChecks = 0;
  let webhookTimer = null;
  const message = el("div");
  const head = el("div", { class: "task-head" });
  const bar = el("div", { class: "progress", id: "progress", role: "progressbar", "aria-valuemin": "0", "aria-valuemax": "100" }, el("div"));
  const stage = el("div", { class: "muted", id: "stage" });
  const facts = el("dl", { class: "facts", id: "facts" });
  const error = el("div");
  const inputs = el("div", { id: "inputs" }, el("p", { class: "muted" }, "loading…"));
  const line = el("div");
  const artifacts = el("div", { id: "artifact-box" });
  const hooks = el("div");
  root.append(head, message, bar, stage, error,
    el("div", { class: "columns" },
      el("div", {}, el("h3", {}, "Details"), facts, el("h3", {}, "Timeline"), line),
      el("div", {}, el("h3", {}, "Inputs"), inputs)),
    el("h3", {}, "Outputs"), artifacts, el("h3", {}, "Webhook"), hooks);

  function setProgress(percent, text) {
    if (percent != null) {
      const value = Math.max(0, Math.min(100, percent));
      bar.firstChild.style.width = `${value}%`;
      bar.setAttribute("aria-valuenow", value.toFixed(0));
      bar.dataset.percent = value.toFixed(1);
    }
    if (text != null) stage.textContent = text;
  }

  function progressText(p, status) {
    if (!p) return "";
    const parts = [status === "failed" || status === "cancelled" ? `stopped in: ${p.stage}` : p.stage];
    if (p.class_type || p.node) parts.push(`node ${p.node || ""}${p.class_type ? ` (${p.class_type})` : ""}`);
    if (p.value != null && p.max) parts.push(`step ${p.value}/${p.max}`);
    if (p.percent != null) parts.push(`${p.percent.toFixed(0)}%`);
    return parts.filter(Boolean).join(" · ");
  }

  function render(next) {
    task = next;
    const done = FINISHED.includes(task.status);
    const cancel = el("button", { type: "button", id: "cancel", class: "danger", hidden: done, onclick: onCancel }, "Cancel");
    const retry = el("button", { type: "button", id: "retry", hidden: !done, onclick: onRetry }, "Retry as new task");
    head.replaceChildren(el("h2", {}, "Task ", el("code", { id: "task-id" }, task.id), " ", el("span", { id: "task-status" }, badge(task.status)), el("span", { class: "spacer" }), cancel, retry));
    facts.replaceChildren(
      ...row("priority", String(task.priority)),
      ...row("backend", task.backend || "–"),
      ...row("attempts", `${task.attempts} of ${task.max_attempts}`),
      ...(task.position != null ? row("queue position", String(task.position)) : []),
      ...row("created", el("span", { title: task.created_at }, ago(task.created_at))),
      ...(task.timings.queued_seconds != null ? row("waited", seconds(task.timings.queued_seconds)) : []),
      ...(task.timings.run_seconds != null ? row("ran", seconds(task.timings.run_seconds)) : []),
      ...(task.cancel_requested && !done ? row("cancel", "requested") : []),
    );
    error.replaceChildren(task.status === "succeeded" ? "" : errorBlock(task.error));
    line.replaceChildren(timeline(task, events));
    hooks.replaceChildren(deliveries(task));
    // The final webhook is sent after the task finished: look again until it was delivered.
    const owed = done && task.webhook && (!task.webhook.deliveries.length || task.webhook.deliveries.some((d) => d.state === "pending"));
    if (owed && webhookChecks < 60 && !controller.signal.aborted) {
      webhookChecks += 1;
      clearTimeout(webhookTimer);
      webhookTimer = setTimeout(refresh, 1000);
    }
    if (task.progress) setProgress(task.status === "succeeded" ? 100 : task.progress.percent, progressText(task.progress, task.status));
    bar.dataset.status = task.status;
    const list = (task.result && task.result.artifacts) || [];
    if (list.length !== artifactsShown) {
      artifactsShown = list.length;
      artifacts.replaceChildren(list.length ? artifactGrid(list) : el("p", { class: "muted" }, done ? "no outputs" : "outputs appear here when the task finishes"));
    }
  }

  async function onCancel() {
    try { render(await api(`/api/v1/tasks/${encodeURIComponent(taskId)}/cancel`, { method: "POST" })); notice(message, "cancel requested", "info"); }
    catch (e) { notice(message, `Cancel failed: ${e.message}`); }
  }

  async function onRetry() {
    try {
      const created = await api(`/api/v1/tasks/${encodeURIComponent(taskId)}/retry`, { method: "POST" });
      location.hash = `#/task/${encodeURIComponent(created.id)}`;
    } catch (e) { notice(message, `Retry failed: ${e.message}`); }
  }

  async function follow() {
    for (let attempt = 0; attempt < 5 && !controller.signal.aborted; attempt++) {
      try {
        for await (const [name, data] of sse(`/api/v1/tasks/${encodeURIComponent(taskId)}/events`, controller.signal)) {
          events.push([name, data]);
          if (name === "progress") setProgress(data.percent, progressText(data));
          else if (name === "started") { stage.textContent = `running on ${data.backend || "?"}`; refresh(); }
          else if (name === "queued" && data.retry) { setProgress(0, "queued again for a retry"); refresh(); }
          else if (name === "finished") { render(data); return; }
        }
      } catch (e) {
        if (controller.signal.aborted) return;
      }
      await refresh();
      if (task && FINISHED.includes(task.status)) return;
    }
  }

  async function refresh() {
    try { render(await api(`/api/v1/tasks/${encodeURIComponent(taskId)}`)); }
    catch (e) { notice(message, `Could not load task: ${e.message}`); }
  }

  (async () => {
    await refresh();
    if (!task) return;
    api(`/api/v1/tasks/${encodeURIComponent(taskId)}/inputs`).then((data) => inputs.replaceChildren(inputsBlock(data)))
      .catch((e) => inputs.replaceChildren(el("p", { class: "muted" }, `inputs: ${e.message}`)));
    follow();
  })();
  return () => { controller.abort(); clearTimeout(webhookTimer); };
}
