// comfyfleet dashboard: a hash router over one module per page. No build step: plain ES modules
// served by the gateway. The first screen's data comes embedded in the HTML (see routes/dashboard.py).
import { state, el, needKey } from "./core.js";
import { onLive, reconnect } from "./live.js";
import * as submit from "./submit.js";
import * as tasks from "./tasks.js";
import * as task from "./task.js";
import * as fleet from "./fleet.js";
import * as models from "./models.js";

const pages = { submit, tasks, task, fleet, models };
const view = document.getElementById("view");
let stop = null;

function route() {
  const hash = location.hash.replace(/^#\/?/, "");
  const legacy = new URLSearchParams(location.hash.slice(1)).get("task");
  if (legacy) return ["task", legacy];
  const [name, ...rest] = hash.split("/");
  return [pages[name] ? name : "tasks", decodeURIComponent(rest.join("/"))];
}

function show() {
  if (stop) stop();
  stop = null;
  const [name, arg] = route();
  for (const link of document.querySelectorAll("nav a")) {
    link.classList.toggle("active", link.dataset.nav === (name === "task" ? "tasks" : name));
  }
  const root = el("section", { class: `page page-${name}`, "data-page": name });
  view.replaceChildren(root);
  stop = pages[name].mount(root, arg) || null;
}

const demo = document.getElementById("demo");
demo.hidden = !state.boot.demo;
demo.textContent = state.boot.demo || "";
if (state.boot.auth && !state.token) needKey("This gateway needs an API key (role read or higher).");

document.getElementById("key-toggle").addEventListener("click", () => {
  const form = document.getElementById("login");
  form.hidden = !form.hidden;
});
document.getElementById("login").addEventListener("submit", (event) => {
  event.preventDefault();
  state.token = document.getElementById("token").value.trim();
  sessionStorage.setItem("comfyfleet.key", state.token);
  state.boot = {};  // embedded data was for a caller without a key
  document.getElementById("login").hidden = true;
  show();
  reconnect();
});
document.getElementById("forget").addEventListener("click", () => {
  state.token = "";
  sessionStorage.removeItem("comfyfleet.key");
  document.getElementById("token").value = "";
});

window.addEventListener("hashchange", show);
show();
onLive(() => {});  // open the live feed (the header shows whether it is connected)
