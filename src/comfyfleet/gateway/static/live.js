// The dashboard's one live feed (GET /api/v1/dashboard/events, read with fetch() so the key
// goes in a header): queue counts, backend snapshots and every task's status/progress events.
// Pages subscribe with onLive(); the stream reconnects with backoff.
import { sse } from "./core.js";

const listeners = new Set();
let started = false;
let wake = () => {};

function status(text) {
  const conn = document.getElementById("conn");
  if (conn) { conn.textContent = text; conn.dataset.live = text === "live" ? "true" : "false"; }
}

async function run() {
  let delay = 500;
  for (;;) {
    try {
      for await (const [name, data] of sse("/api/v1/dashboard/events")) {
        status("live");
        delay = 500;
        for (const listener of listeners) listener(name, data);
      }
    } catch { /* reconnect below */ }
    status("reconnecting…");
    await new Promise((resolve) => { wake = resolve; setTimeout(resolve, delay); });
    delay = Math.min(delay * 2, 10000);
  }
}

// Try again now (a key was just entered) instead of after the backoff.
export function reconnect() {
  wake();
}

export function onLive(listener) {
  listeners.add(listener);
  if (!started) { started = true; run(); }
  return () => listeners.delete(listener);
}

// Calls ``fn`` once after a burst of calls has settled for ``ms``.
export function debounce(fn, ms = 250) {
  let timer = null;
  return () => { clearTimeout(timer); timer = setTimeout(fn, ms); };
}
