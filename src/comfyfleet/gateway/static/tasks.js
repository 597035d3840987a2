// Tasks: queue counts, then the task list with status/time filters and cursor paging.
import { state, el, api, badge, ago, duration, errorText, taskLink, notice, every } from "./core.js";
import { onLive, debounce } from "./live.js";

const SINCE = [["", "any time"], ["3600", "last hour"], ["86400", "last 24 h"], ["604800", "last 7 days"]];
const PAGE = 25;

export function queueCards(metrics) {
  const q = metrics.queue;
  const cards = [
    ["queued", q.pending_tasks], ["running", q.running_tasks], ["succeeded", q.completed_tasks],
    ["failed", q.failed_tasks], ["cancelled", q.cancelled_tasks],
    ["oldest queued", q.oldest_queued_age_seconds == null ? "–" : `${q.oldest_queued_age_seconds.toFixed(0)}s`],
  ];
  return el("div", { class: "cards" }, cards.map(([label, value]) =>
    el("div", { class: "card", "data-metric": label }, el("b", {}, String(value)), label)));
}

export function mount(root) {
  const filters = { status: "", since: "", cursor: null, older: [] };
  const cards = el("div", { id: "queue" });
  const message = el("div");
  const status = el("select", { id: "status-filter", "aria-label": "status" },
    ["", "queued", "running", "succeeded", "failed", "cancelled"].map((s) => el("option", { value: s }, s || "any status")));
  const since = el("select", { id: "since-filter", "aria-label": "created" },
    SINCE.map(([value, label]) => el("option", { value }, label)));
  const body = el("tbody");
  const newer = el("button", { type: "button", class: "secondary", id: "page-newer" }, "← Newer");
  const older = el("button", { type: "button", class: "secondary", id: "page-older" }, "Older →");
  root.append(
    el("h2", {}, "Queue"), cards,
    el("h2", {}, "Tasks"),
    el("div", { class: "filters" }, status, since, el("span", { class: "spacer" }), newer, older),
    message,
    el("div", { class: "scroll" }, el("table", { id: "tasks", class: "rows" },
      el("thead", {}, el("tr", {}, ["task", "status", "priority", "workflow", "backend", "created", "duration", "error"].map((h) => el("th", {}, h)))),
      body)),
  );

  function render(page) {
    body.replaceChildren(...(page.items.length ? page.items.map((t) => el("tr", { "data-task": t.id },
      el("td", { "data-label": "task" }, taskLink(t.id)),
      el("td", { "data-label": "status" }, badge(t.status),
        el("span", { class: "muted percent" }, t.status === "running" && t.progress && t.progress.percent != null ? ` ${t.progress.percent.toFixed(0)}%` : "")),
      el("td", { "data-label": "priority" }, String(t.priority)),
      el("td", { "data-label": "workflow" }, t.workflow_id || t.source || ""),
      el("td", { "data-label": "backend" }, t.backend || ""),
      el("td", { "data-label": "created", title: t.created_at }, ago(t.created_at)),
      el("td", { "data-label": "duration" }, duration(t)),
      el("td", { "data-label": "error", class: "error-cell" }, errorText(t.error)),
    )) : [el("tr", {}, el("td", { colspan: "8", class: "muted" }, "no tasks match"))]));
    older.disabled = !page.next_cursor;
    newer.disabled = !filters.older.length;
    older.onclick = () => { filters.older.push(filters.cursor); filters.cursor = page.next_cursor; load(); };
  }

  async function load() {
    const query = new URLSearchParams({ limit: String(PAGE) });
    if (filters.status) query.set("status", filters.status);
    if (filters.since) query.set("created_after", new Date(Date.now() - Number(filters.since) * 1000).toISOString());
    if (filters.cursor) query.set("cursor", filters.cursor);
    try {
      const [metrics, page] = await Promise.all([api("/api/v1/metrics"), api(`/api/v1/tasks?${query}`)]);
      cards.replaceChildren(queueCards(metrics));
      render(page);
      notice(message, "");
    } catch (error) {
      notice(message, `Could not load tasks: ${error.message}`);
    }
  }

  const reset = () => { filters.cursor = null; filters.older = []; load(); };
  status.onchange = () => { filters.status = status.value; reset(); };
  since.onchange = () => { filters.since = since.value; reset(); };
  newer.onclick = () => { filters.cursor = filters.older.pop() ?? null; load(); };

  if (state.boot.metrics && state.boot.tasks) {  // first paint from the embedded data
    cards.replaceChildren(queueCards(state.boot.metrics));
    render(state.boot.tasks);
    state.boot.tasks = null;
  } else {
    load();
  }
  // Live: the queue's counts and every task's status come over the dashboard's feed.
  const reload = debounce(load);
  const stopLive = onLive((name, data) => {
    if (name === "queue") { cards.replaceChildren(queueCards({ queue: data })); reload(); }
    else if (name === "task" && data.type === "status") reload();
    else if (name === "task" && data.type === "progress" && data.percent != null) {
      const cell = body.querySelector(`tr[data-task="${CSS.escape(data.task_id)}"] .percent`);
      if (cell) cell.textContent = ` ${data.percent.toFixed(0)}%`;
    }
  });
  const stopPoll = every(30000, load);  // a safety net, not the live path
  return () => { stopLive(); stopPoll(); };
}
