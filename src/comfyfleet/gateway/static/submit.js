// Submit: a saved template (its parameters as a typed form) or a pasted/dropped workflow (API or
// UI format; the gateway converts UI format), input images, prompt, seed. An invalid workflow's
// errors are shown next to the nodes they name.
import { state, el, api, notice } from "./core.js";

function readFile(file, as = "text") {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    if (as === "url") reader.readAsDataURL(file); else reader.readAsText(file);
  });
}

// The nodes of an API-format graph ({id: {class_type, inputs}}) or a UI-format one ({nodes: [...]}).
function nodesOf(workflow) {
  if (Array.isArray(workflow.nodes)) {
    return workflow.nodes.map((n) => ({ id: String(n.id), class_type: n.type, summary: (n.widgets_values || []).slice(0, 4).map(String).join(", ") }));
  }
  return Object.entries(workflow).filter(([, n]) => n && typeof n === "object" && n.class_type).map(([id, n]) => ({
    id, class_type: n.class_type,
    summary: Object.entries(n.inputs || {}).filter(([, v]) => !Array.isArray(v)).slice(0, 4).map(([k, v]) => `${k}=${typeof v === "string" && v.length > 30 ? v.slice(0, 30) + "…" : JSON.stringify(v)}`).join(", "),
  }));
}

function paramField(param) {
  const id = `param-${param.name}`;
  let input;
  if (param.type === "boolean") input = el("input", { type: "checkbox", id, checked: param.default === true });
  else if (param.type === "integer" || param.type === "number") input = el("input", { type: "number", id, step: param.type === "integer" ? "1" : "any", value: param.default ?? "", required: param.required });
  else if (param.type === "json") input = el("textarea", { id, rows: "2", value: param.default == null ? "" : JSON.stringify(param.default), required: param.required });
  else input = el("input", { type: "text", id, value: param.default ?? "", required: param.required });
  input.dataset.param = param.name;
  input.dataset.type = param.type;
  return el("label", {}, el("span", {}, param.name, param.required ? " *" : "", el("small", { class: "muted" }, ` ${param.type}`)), input);
}

function paramValue(input) {
  const type = input.dataset.type;
  if (type === "boolean") return input.checked;
  if (input.value === "") return undefined;
  if (type === "integer") return parseInt(input.value, 10);
  if (type === "number") return Number(input.value);
  if (type === "json") { try { return JSON.parse(input.value); } catch { return input.value; } }
  return input.value;
}

export function mount(root) {
  let templates = state.boot.templates || null;
  let workflow = null;
  const images = [];
  const message = el("div", { id: "submit-message" });

  const mode = el("div", { class: "tabs", role: "tablist" });
  const templateSelect = el("select", { id: "template", "aria-label": "template" });
  const paramsBox = el("div", { class: "params", id: "params" });
  const templatePane = el("div", { id: "template-pane" }, el("label", {}, el("span", {}, "Template"), templateSelect), paramsBox);
  const text = el("textarea", { id: "workflow", rows: "8", spellcheck: "false", placeholder: "Paste an API-format workflow (Workflow → Export (API)) or a saved UI-format workflow, or drop a .json file here" });
  const nodes = el("div", { id: "nodes" });
  const workflowPane = el("div", { id: "workflow-pane", class: "drop" }, text,
    el("input", { type: "file", accept: ".json,application/json", id: "workflow-file", onchange: (e) => e.target.files[0] && loadWorkflowFile(e.target.files[0]) }), nodes);
  let current = "template";
  const tab = (name, label) => el("button", { type: "button", role: "tab", "data-tab": name, onclick: () => choose(name) }, label);
  mode.append(tab("template", "Saved template"), tab("workflow", "Workflow JSON"));

  const prompt = el("textarea", { id: "prompt", rows: "2", placeholder: "positive prompt (goes into the text encoders)" });
  const negative = el("input", { type: "text", id: "negative", placeholder: "negative prompt" });
  const seed = el("input", { type: "number", id: "seed", min: "0", step: "1", placeholder: "keep the workflow's" });
  const randomSeed = el("input", { type: "checkbox", id: "seed-random" });
  const priority = el("input", { type: "number", id: "priority", value: "0", min: "-100", max: "100" });
  const webhook = el("input", { type: "url", id: "webhook", placeholder: "https://… (optional)" });
  const webhookProgress = el("input", { type: "checkbox", id: "webhook-progress" });
  const thumbs = el("div", { class: "thumbs", id: "images" });
  const imageInput = el("input", { type: "file", accept: "image/*", multiple: true, id: "image-files", onchange: (e) => addImages(e.target.files) });
  const imageDrop = el("div", { class: "drop small" }, "Drop input images here (they go into the LoadImage nodes in node-id order) or ", imageInput, thumbs);
  const submit = el("button", { type: "submit", id: "submit" }, "Submit");

  const form = el("form", { id: "submit-form", class: "submit-form" },
    el("h2", {}, "Submit a task"), mode, templatePane, workflowPane,
    el("div", { class: "grid2" },
      el("label", { class: "wide" }, el("span", {}, "Prompt"), prompt),
      el("label", { class: "wide" }, el("span", {}, "Negative"), negative),
      el("label", {}, el("span", {}, "Seed"), el("div", { class: "inline" }, seed, el("label", { class: "check" }, randomSeed, "random"))),
      el("label", {}, el("span", {}, "Priority"), priority),
      el("label", { class: "wide" }, el("span", {}, "Webhook"), webhook),
      el("label", { class: "check wide" }, webhookProgress, "also send progress callbacks (task.progress, rate-limited)"),
    ),
    el("div", {}, el("span", { class: "label" }, "Input images"), imageDrop),
    el("div", { class: "actions" }, submit), message);
  root.append(form);

  function choose(name) {
    current = name;
    for (const b of mode.children) b.setAttribute("aria-selected", String(b.dataset.tab === name));
    templatePane.hidden = name !== "template";
    workflowPane.hidden = name !== "workflow";
  }

  function renderTemplates() {
    if (!templates.length) {
      templateSelect.replaceChildren(el("option", { value: "" }, "no templates (COMFYFLEET_TEMPLATES_DIR)"));
      if (current === "template") choose("workflow");
      return;
    }
    templateSelect.replaceChildren(...templates.map((t) => el("option", { value: t.name }, t.name)));
    renderParams();
  }

  function renderParams() {
    const t = templates.find((x) => x.name === templateSelect.value);
    if (!t) return paramsBox.replaceChildren();
    const own = t.params.filter((p) => !p.builtin);
    const builtin = t.params.filter((p) => p.builtin && p.name !== "JOB_ID").map((p) => p.name);
    paramsBox.replaceChildren(
      t.error ? el("div", { class: "notice error" }, t.error) : "",
      ...own.map(paramField),
      builtin.length ? el("p", { class: "muted" }, `Filled from the fields below: ${builtin.join(", ")}`) : "",
      !own.length && !builtin.length ? el("p", { class: "muted" }, "This template has no parameters.") : "");
  }
  templateSelect.onchange = renderParams;

  function parseWorkflow() {
    nodes.replaceChildren();
    workflow = null;
    if (!text.value.trim()) return;
    try {
      workflow = JSON.parse(text.value);
    } catch (e) {
      nodes.append(el("div", { class: "notice error" }, `not JSON: ${e.message}`));
      return;
    }
    if (workflow && typeof workflow.prompt === "object" && !Array.isArray(workflow.nodes)) workflow = workflow.prompt;  // a /prompt body
    const list = nodesOf(workflow);
    const ui = Array.isArray(workflow.nodes);
    nodes.append(el("p", { class: "muted" }, `${list.length} nodes, ${ui ? "UI format (the gateway converts it)" : "API format"}`),
      el("table", { class: "rows", id: "node-table" },
        el("thead", {}, el("tr", {}, ["node", "class", "inputs", ""].map((h) => el("th", {}, h)))),
        el("tbody", {}, list.map((n) => el("tr", { "data-node": n.id },
          el("td", {}, el("code", {}, n.id)), el("td", {}, n.class_type || ""), el("td", { class: "muted" }, n.summary), el("td", { class: "node-error" }))))));
  }
  text.addEventListener("input", parseWorkflow);

  async function loadWorkflowFile(file) {
    text.value = await readFile(file);
    choose("workflow");
    parseWorkflow();
  }

  async function addImages(files) {
    for (const file of files) {
      if (!file.type.startsWith("image/")) continue;
      const url = await readFile(file, "url");
      const entry = { name: file.name, image: url };
      images.push(entry);
      const thumb = el("figure", { "data-image": file.name }, el("img", { src: url, alt: file.name }),
        el("figcaption", {}, file.name, " ", el("button", { type: "button", class: "link", onclick: () => { images.splice(images.indexOf(entry), 1); thumb.remove(); } }, "✕")));
      thumbs.append(thumb);
    }
  }

  for (const [zone, handle] of [[workflowPane, (f) => (f.name.endsWith(".json") || f.type === "application/json") && loadWorkflowFile(f)], [imageDrop, (f) => addImages([f])]]) {
    zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
    zone.addEventListener("dragleave", () => zone.classList.remove("over"));
    zone.addEventListener("drop", (e) => { e.preventDefault(); zone.classList.remove("over"); for (const f of e.dataTransfer.files) handle(f); });
  }

  function showErrors(error) {
    const details = error.details || {};
    const list = details.node_errors || [];
    const parts = [el("b", {}, error.code || `HTTP ${error.status}`), " ", error.message];
    let unplaced = [];
    if (current === "workflow" && list.length) {
      for (const e of list) {
        const cell = nodes.querySelector(`tr[data-node="${CSS.escape(String(e.node_id))}"] .node-error`);
        if (cell) {
          cell.append(el("div", { class: "node-problem", "data-error-node": e.node_id, "data-input": e.input_name || "" }, e.input_name ? el("b", {}, `${e.input_name}: `) : "", e.message || e.type));
          cell.closest("tr").classList.add("has-error");
        } else unplaced.push(e);
      }
    } else unplaced = list;
    if (unplaced.length) parts.push(el("ul", {}, unplaced.map((e) => el("li", { "data-error-node": e.node_id }, `node ${e.node_id} (${e.class_type || "?"}) ${e.input_name || ""}: ${e.message || e.type}`))));
    if (details.errors) parts.push(el("ul", {}, details.errors.map((e) => el("li", {}, `${(e.loc || []).join(".")}: ${e.message}`))));
    if (details.field) parts.push(el("div", {}, "field ", el("code", {}, details.field)));
    if (details.missing) parts.push(el("div", {}, "missing: ", details.missing.join(", ")));
    notice(message, "");
    message.append(el("div", { class: "notice error", id: "submit-error" }, parts));
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    for (const cell of nodes.querySelectorAll(".node-error")) cell.replaceChildren();
    for (const r of nodes.querySelectorAll("tr.has-error")) r.classList.remove("has-error");
    const body = { priority: Number(priority.value || 0) };
    if (current === "template") {
      if (!templateSelect.value) return notice(message, "choose a template");
      body.template = templateSelect.value;
      const params = {};
      for (const input of paramsBox.querySelectorAll("[data-param]")) {
        const value = paramValue(input);
        if (value !== undefined) params[input.dataset.param] = value;
      }
      body.params = params;
    } else {
      parseWorkflow();
      if (!workflow) return notice(message, "paste or drop a workflow first");
      body.workflow = workflow;
    }
    if (prompt.value.trim()) body.prompt = prompt.value;
    if (negative.value.trim()) body.negative = negative.value;
    if (randomSeed.checked) body.seed = "random";
    else if (seed.value !== "") body.seed = parseInt(seed.value, 10);
    if (images.length) body.images = images.map(({ name, image }) => ({ name, image }));
    if (webhook.value.trim()) {
      body.webhook = webhook.value.trim();
      if (webhookProgress.checked) body.webhook_progress = true;
    }
    submit.disabled = true;
    notice(message, "submitting…", "info");
    try {
      const task = await api("/api/v1/tasks", { method: "POST", json: body });
      location.hash = `#/task/${encodeURIComponent(task.id)}`;
    } catch (error) {
      showErrors(error);
    } finally {
      submit.disabled = false;
    }
  });

  choose("template");
  if (templates) renderTemplates();
  else api("/api/v1/templates").then((list) => { templates = list; renderTemplates(); })
    .catch((e) => { templates = []; renderTemplates(); notice(message, `templates: ${e.message}`); });
}
