// Artifacts inline: images, videos and audio as blob: URLs fetched with the key, a download link
// for each; text outputs as text.
import { el, blobUrl } from "./core.js";

function kindOf(artifact) {
  const type = artifact.media_type || "";
  if (type.startsWith("image/")) return "image";
  if (type.startsWith("video/")) return "video";
  if (type.startsWith("audio/")) return "audio";
  return artifact.kind || "file";
}

export function artifactFigure(artifact) {
  const kind = kindOf(artifact);
  const figure = el("figure", { "data-artifact": artifact.filename, "data-kind": kind });
  const link = el("a", { href: artifact.url || "#", download: artifact.filename, class: "download" }, `⬇ ${artifact.filename}`);
  const size = artifact.size != null ? ` · ${(artifact.size / 1024).toFixed(1)} KiB` : "";
  let media = null;
  if (artifact.text != null) media = el("pre", {}, artifact.text);
  else if (kind === "image") media = el("img", { alt: artifact.filename });
  else if (kind === "video") media = el("video", { controls: true, loop: true, muted: true, playsinline: true });
  else if (kind === "audio") media = el("audio", { controls: true });
  if (media) figure.append(media);
  figure.append(el("figcaption", {}, link, el("span", { class: "muted" }, `${artifact.media_type || kind}${size}`)));
  if (artifact.url && media && artifact.text == null) {
    blobUrl(artifact.url).then((url) => {
      media.src = url;
      media.dataset.loaded = "true";
      link.href = url;
    }).catch((error) => figure.append(el("div", { class: "notice error" }, `could not load: ${error.message}`)));
  } else if (artifact.data && !artifact.url) {
    const url = `data:${artifact.media_type};base64,${artifact.data}`;
    if (media) { media.src = url; media.dataset.loaded = "true"; }
    link.href = url;
  }
  return figure;
}

export function artifactGrid(artifacts) {
  return el("div", { class: "artifacts", id: "artifacts" }, artifacts.map(artifactFigure));
}
