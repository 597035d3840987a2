// Fleet: every backend with the one state the API and metrics give it (a silent remote agent is
// "offline", its last call on hover), current tasks, last error, drain/undrain; then the worker
// manager's pools and workers when pools are configured.
import { state, el, api, badge, seconds, taskLink, notice, every } from "./core.js";
import { onLive, debounce } from "./live.js";

function backendRows(backends, act) {
  if (!backends.length) return [el("tr", {}, el("td", { colspan: "7", class: "muted" }, "no backends (remote agents can join)"))];
  return backends.map((b) => {
    const tasks = [...(b.running || []), ...(b.delivering || [])];
    const drained = b.draining || b.state === "draining" || b.state === "drained";
    const canDrain = b.kind !== "remote" || b.state !== "offline";
    return el("tr", { "data-backend": b.name },
      el("td", { "data-label": "backend" }, el("b", {}, b.name), b.label ? el("span", { class: "badge demo" }, " DEMO") : "",
        b.url ? el("div", { class: "muted small" }, b.url) : ""),
      el("td", { "data-label": "kind" }, b.kind),
      el("td", { "data-label": "state", title: b.last_seen_ago != null ? `last call ${b.last_seen_ago.toFixed(0)}s ago` : "" }, badge(b.state)),
      el("td", { "data-label": "current task" }, tasks.length ? tasks.map((id) => el("div", {}, taskLink(id))) : el("span", { class: "muted" }, "–")),
      el("td", { "data-label": "done / failed" }, `${b.executed ?? 0} / ${b.failed ?? 0}`),
      el("td", { "data-label": "last error", class: "error-cell" }, b.last_error || ""),
      el("td", { "data-label": "" }, canDrain ? el("button", {
        type: "button", class: drained ? "" : "secondary", "data-action": drained ? "undrain" : "drain",
        onclick: () => act(b.name, drained ? "undrain" : "drain"),
      }, drained ? "Undrain" : "Drain") : ""));
  });
}

function poolsBlock(workers) {
  if (!workers || (!workers.pools.length && !workers.workers.length)) {
    return el("p", { class: "muted" }, "No worker pools configured (comfyfleet serve --pool …); the backends above are all there is.");
  }
  return el("div", {},
    workers.leader != null ? el("p", { class: "muted" }, `scaling leader: ${workers.leader ? "this replica" : "another replica"}`) : "",
    el("div", { class: "scroll" }, el("table", { class: "rows", id: "pools" },
      el("thead", {}, el("tr", {}, ["pool", "provider", "spec", "workers", "started / stopped / failed"].map((h) => el("th", {}, h)))),
      el("tbody", {}, workers.pools.map((p) => el("tr", { "data-pool": p.pool },
        el("td", {}, el("b", {}, p.pool)), el("td", {}, p.provider), el("td", {}, el("code", {}, p.spec)),
        el("td", {}, Object.entries(p.states || {}).map(([s, n]) => el("span", {}, badge(s), ` ${n} `))),
        el("td", {}, `${p.started} / ${p.stopped} / ${p.failed}${p.crash_loop ? ` (crash loop ×${p.crash_loop})` : ""}`)))))),
    el("div", { class: "scroll" }, el("table", { class: "rows", id: "workers" },
      el("thead", {}, el("tr", {}, ["worker", "pool", "state", "current task", "age", "executed", "last error"].map((h) => el("th", {}, h)))),
      el("tbody", {}, workers.workers.map((w) => el("tr", { "data-worker": w.id },
        el("td", {}, el("code", {}, w.id), w.adopted ? el("span", { class: "muted" }, " adopted") : ""),
        el("td", {}, w.pool), el("td", {}, badge(w.state)),
        el("td", {}, (w.current_tasks || []).map((id) => el("div", {}, taskLink(id)))),
        el("td", {}, seconds(w.age_seconds)), el("td", {}, String(w.executed ?? 0)),
        el("td", { class: "error-cell" }, w.last_error || "")))))));
}

export function mount(root) {
  const message = el("div");
  const body = el("tbody");
  const pools = el("div", { id: "pool-box" });
  root.append(el("h2", {}, "Backends"), message,
    el("div", { class: "scroll" }, el("table", { id: "backends", class: "rows" },
      el("thead", {}, el("tr", {}, ["backend", "kind", "state", "current task", "done / failed", "last error", ""].map((h) => el("th", {}, h)))),
      body)),
    el("h2", {}, "Worker pools"), pools);

  async function act(name, action) {
    try {
      await api(`/api/v1/backends/${encodeURIComponent(name)}/${action}`, { method: "POST" });
      notice(message, `${name}: ${action} requested`, "info");
      await load();
    } catch (e) {
      notice(message, `${action} ${name}: ${e.message}${e.status === 403 ? " (needs an admin key)" : ""}`);
    }
  }

  function render(backends, workers) {
    body.replaceChildren(...backendRows(backends, act));
    pools.replaceChildren(poolsBlock(workers));
  }

  async function load() {
    const [backends, workers] = await Promise.all([api("/api/v1/backends"), api("/api/v1/workers")]);
    render(backends, workers);
  }

  if (state.boot.metrics && state.boot.workers) {
    render(state.boot.metrics.backends, state.boot.workers);
    state.boot.workers = null;
  } else {
    load().catch((e) => notice(message, `Could not load the fleet: ${e.message}`));
  }
  // Live: backend snapshots come over the dashboard's feed when they change; worker pools
  // (no feed of their own) are read again then and on every task status change.
  const reload = debounce(() => load().catch(() => {}));
  const stopLive = onLive((name, data) => {
    if (name === "fleet" || (name === "task" && data.type === "status")) reload();
  });
  const stopPoll = every(10000, load);
  return () => { stopLive(); stopPoll(); };
}
