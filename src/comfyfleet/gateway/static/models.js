// Models: the files each backend's loader nodes offer (its cached object_info) and the manifest.
import { el, api, notice } from "./core.js";

export function mount(root) {
  const message = el("div");
  const box = el("div", { id: "model-box" }, el("p", { class: "muted" }, "loading…"));
  root.append(el("h2", {}, "Models"), message, box);
  api("/api/v1/models").then((data) => {
    const backends = data.backends.map((b) => {
      const filled = b.loaders.filter((l) => l.options.length);
      const files = new Set(filled.flatMap((l) => l.options));
      return el("div", { class: "panel", "data-models-backend": b.name },
        el("h3", {}, b.name, " ", el("span", { class: "muted" }, b.known ? `${files.size} model files` : "catalogue not fetched yet")),
        filled.length ? el("table", { class: "rows" },
          el("thead", {}, el("tr", {}, ["loader", "input", "files"].map((h) => el("th", {}, h)))),
          el("tbody", {}, filled.map((l) => el("tr", {}, el("td", {}, l.class_type), el("td", {}, el("code", {}, l.input)),
            el("td", {}, l.options.map((o) => el("div", { "data-model": o }, o)))))))
          : el("p", { class: "muted" }, b.known ? "no model files in its loaders' lists" : ""));
    });
    box.replaceChildren(
      ...(backends.length ? backends : [el("p", { class: "muted" }, "No local backends. Remote agents and RunPod endpoints report no catalogue.")]),
      el("h3", {}, "Manifest (MODELS)"),
      data.manifest_error ? el("div", { class: "notice error" }, data.manifest_error) : "",
      data.manifest.length ? el("table", { class: "rows", id: "manifest" },
        el("thead", {}, el("tr", {}, ["file", "folder", "source"].map((h) => el("th", {}, h)))),
        el("tbody", {}, data.manifest.map((m) => el("tr", {}, el("td", {}, m.name), el("td", {}, m.folder), el("td", {}, el("code", {}, m.source))))))
        : el("p", { class: "muted" }, "No manifest configured."),
      el("p", { class: "muted" }, "Downloads a task asks for (its models list) run on the backend that claims it; their progress shows as that task's stage."),
    );
  }).catch((e) => notice(message, `Could not load models: ${e.message}`));
}
