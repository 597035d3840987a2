"""Smart injection: put a job's prompt, images, seed, size and output prefix into a graph.

Each function changes ``graph`` in place and returns what it did, so a caller can report it.
Nodes are found by class and wiring, never by node id:

* **prompts** go into text-encode nodes (`TEXT_ENCODERS`). Which encoder is positive and which
  negative is read from the wiring: from every node that consumes conditioning without producing
  any (samplers, guiders), its ``negative`` input is followed back as negative and its other
  conditioning inputs as positive, through any conditioning nodes in between. A node whose
  outputs are named ``positive``/``negative`` (WanImageToVideo, ControlNetApplyAdvanced, ...) is
  followed only through its input of the same name. An encoder reached both ways (a negative made
  by ``ConditioningZeroOut`` of the positive) counts as positive only.
* **images** go into image-loading nodes (``LoadImage``, ``LoadImageMask``: a class whose
  ``image`` input is an upload combo of the input folder) in numeric node-id order ("2" before
  "10"), or into the node an image names explicitly.
* **seeds** are every literal ``seed``/``noise_seed`` input; ``"random"`` draws one per input in
  ``[min, min(max, 2**50)]`` (the frontend's own cap), an int is written as given.
* **sizes** go into nodes that create a latent or image of a given size: INT ``width`` and
  ``height`` inputs, no LATENT input, a LATENT output (or ``EmptyImage``); plus
  ``ModelSamplingFlux``/``Flux2Scheduler``, whose size must match the latent's. ``length`` goes
  into the same nodes when they have one.
* **filename prefixes**: every node with a ``filename_prefix`` input saves under
  ``<job folder>/<its original prefix>``, so all of a job's outputs land in one subfolder of
  ComfyUI's output directory, which the pipeline collects and then deletes.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from typing import Literal

from comfyfleet.errors import InvalidRequest
from comfyfleet.workflow.nodeinfo import (
    Graph,
    ObjectInfo,
    class_info,
    input_spec,
    input_specs,
    is_link,
    links,
    node_sort_key,
    output_names,
    output_types,
    sorted_ids,
)

TEXT_ENCODERS: dict[str, tuple[str, ...]] = {
    "CLIPTextEncode": ("text",),
    "CLIPTextEncodeSDXL": ("text_g", "text_l"),
    "CLIPTextEncodeSDXLRefiner": ("text",),
    "CLIPTextEncodeSD3": ("clip_l", "clip_g", "t5xxl"),
    "CLIPTextEncodeFlux": ("clip_l", "t5xxl"),
    "CLIPTextEncodeHunyuanDiT": ("bert", "mt5xl"),
    "CLIPTextEncodeHiDream": ("clip_l", "clip_g", "t5xxl", "llama"),
    "CLIPTextEncodePixArtAlpha": ("text",),
    "CLIPTextEncodeLumina2": ("user_prompt",),
    "CLIPTextEncodeKandinsky5": ("clip_l", "qwen25_7b"),
    "TextEncodeHunyuanVideo_ImageToVideo": ("prompt",),
    "TextEncodeQwenImageEdit": ("prompt",),
    "TextEncodeQwenImageEditPlus": ("prompt",),
    "TextEncodeAceStepAudio": ("tags",),
}
"""Text-encode classes and the text inputs a prompt goes into."""

SEED_INPUTS = ("seed", "noise_seed")
RANDOM_SEED_CAP = 2**50
SIZE_FOLLOWERS = frozenset({"ModelSamplingFlux", "Flux2Scheduler"})
_POSITIVE_INPUTS = frozenset({"positive", "cond1", "cond2", "conditioning"})
_SAFE_FOLDER = re.compile(r"[^A-Za-z0-9._-]+")

Role = Literal["positive", "negative"]


# --- prompts ------------------------------------------------------------------------------


def classify_encoders(graph: Graph, object_info: ObjectInfo) -> dict[Role, list[str]]:
    """Which text-encode nodes feed positive and which negative conditioning."""
    found: dict[Role, set[str]] = {"positive": set(), "negative": set()}
    for node in graph.values():
        info = class_info(object_info, node["class_type"])
        if info is None or "CONDITIONING" in output_types(info):
            continue
        specs = input_specs(info)
        for name, source, slot in links(node):
            spec = specs.get(name)
            if spec is None or spec.type != "CONDITIONING":
                continue
            if name == "negative":
                _trace(graph, object_info, source, slot, found["negative"])
            elif name in _POSITIVE_INPUTS:
                _trace(graph, object_info, source, slot, found["positive"])
    found["negative"] -= found["positive"]
    return {role: sorted(ids, key=node_sort_key) for role, ids in found.items()}


def _trace(graph: Graph, object_info: ObjectInfo, node_id: str, slot: int, acc: set[str]) -> None:
    stack, seen = [(node_id, slot)], set()
    while stack:
        node_id, slot = stack.pop()
        node = graph.get(node_id)
        if node is None or (node_id, slot) in seen:
            continue
        seen.add((node_id, slot))
        if node["class_type"] in TEXT_ENCODERS:
            acc.add(node_id)
            continue
        info = class_info(object_info, node["class_type"])
        if info is None:
            continue
        names = output_names(info)
        out_name = names[slot] if 0 <= slot < len(names) else None
        own = node["inputs"].get(out_name) if out_name in ("positive", "negative") else None
        if is_link(own):
            stack.append((own[0], own[1]))
            continue
        specs = input_specs(info)
        stack.extend(
            (src, src_slot)
            for name, src, src_slot in links(node)
            if name in specs and specs[name].type == "CONDITIONING"
        )


def inject_prompts(
    graph: Graph, object_info: ObjectInfo, positive: str | None, negative: str | None
) -> dict[Role, list[str]]:
    """Write ``positive``/``negative`` into the encoders of that role; returns the node ids."""
    if positive is None and negative is None:
        return {}
    roles = classify_encoders(graph, object_info)
    encoders = [nid for nid in sorted_ids(graph) if graph[nid]["class_type"] in TEXT_ENCODERS]
    if not roles["positive"] and not roles["negative"] and len(encoders) == 1:
        roles["positive"] = encoders  # an encoder not wired to a sampler: the only candidate
    done: dict[Role, list[str]] = {}
    for role, text in (("positive", positive), ("negative", negative)):
        if text is None:
            continue
        if not roles[role]:
            raise InvalidRequest(
                f"a {role} prompt was given but the workflow has no text-encode node wired to "
                f"a sampler's {role} input (looked for {', '.join(sorted(TEXT_ENCODERS))})",
                field="prompt" if role == "positive" else "negative",
            )
        for node_id in roles[role]:
            node = graph[node_id]
            for name in TEXT_ENCODERS[node["class_type"]]:
                node["inputs"][name] = text
        done[role] = roles[role]
    return done


# --- images -------------------------------------------------------------------------------


def image_loaders(graph: Graph, object_info: ObjectInfo) -> list[str]:
    """Nodes that load an uploaded image from ComfyUI's input folder, in numeric id order."""
    found = []
    for node_id in sorted_ids(graph):
        spec = input_spec(object_info, graph[node_id]["class_type"], "image")
        if (
            spec is not None
            and spec.options.get("image_upload")
            and spec.options.get("image_folder", "input") == "input"
        ):
            found.append(node_id)
    return found


def inject_images(
    graph: Graph,
    object_info: ObjectInfo,
    names: Sequence[str],
    targets: Sequence[str | None] = (),
) -> dict[str, str]:
    """Put ``names[i]`` into node ``targets[i]`` when given, else into the next free image
    loader in numeric node-id order. Returns ``{node_id: name}``."""
    loaders = image_loaders(graph, object_info)
    wanted = list(targets) + [None] * (len(names) - len(targets))
    placed: dict[str, str] = {}
    for index, (name, target) in enumerate(zip(names, wanted, strict=False)):
        if target is None:
            continue
        if target not in graph:
            raise InvalidRequest(
                f"images[{index}].node_id: the workflow has no node {target!r}",
                field=f"images[{index}].node_id",
            )
        if target not in loaders:
            raise InvalidRequest(
                f"images[{index}].node_id: node {target!r} is a {graph[target]['class_type']}, "
                f"not an image loader (LoadImage nodes: {', '.join(loaders) or 'none'})",
                field=f"images[{index}].node_id",
            )
        if target in placed:
            raise InvalidRequest(
                f"images[{index}].node_id: node {target!r} is already given another image",
                field=f"images[{index}].node_id",
            )
        placed[target] = name
    free = [node_id for node_id in loaders if node_id not in placed]
    unplaced = [name for name, target in zip(names, wanted, strict=False) if target is None]
    if len(unplaced) > len(free):
        raise InvalidRequest(
            f"{len(names)} images were given but the workflow has only {len(loaders)} image "
            f"loader node(s) ({', '.join(loaders) or 'none'}) to put them in",
            field="images",
        )
    placed.update(zip(free, unplaced, strict=False))
    for node_id, name in placed.items():
        graph[node_id]["inputs"]["image"] = name
    return dict(sorted(placed.items(), key=lambda item: loaders.index(item[0])))


# --- seeds --------------------------------------------------------------------------------


def set_seeds(
    graph: Graph,
    object_info: ObjectInfo,
    seed: int | Literal["random"] | None,
    rng: random.Random | None = None,
) -> dict[str, dict[str, int]]:
    """Set every literal seed input (``None`` leaves them) and return all seeds now in the graph,
    ``{node_id: {input_name: seed}}``."""
    rng = rng or random.Random()
    seeds: dict[str, dict[str, int]] = {}
    for node_id in sorted_ids(graph):
        node = graph[node_id]
        for name in SEED_INPUTS:
            if name not in node["inputs"] or is_link(node["inputs"][name]):
                continue
            spec = input_spec(object_info, node["class_type"], name)
            if spec is not None and spec.type != "INT":
                continue
            if seed == "random":
                opts = spec.options if spec else {}
                low = max(int(opts.get("min", 0)), 0)
                high = min(int(opts.get("max", RANDOM_SEED_CAP)), RANDOM_SEED_CAP)
                node["inputs"][name] = rng.randint(low, max(low, high))
            elif seed is not None:
                node["inputs"][name] = seed
            value = node["inputs"][name]
            if isinstance(value, int) and not isinstance(value, bool):
                seeds.setdefault(node_id, {})[name] = value
    return seeds


# --- sizes --------------------------------------------------------------------------------


def size_nodes(graph: Graph, object_info: ObjectInfo) -> list[str]:
    """Nodes whose width/height decide the size of what the workflow generates."""
    found = []
    for node_id in sorted_ids(graph):
        class_type = graph[node_id]["class_type"]
        info = class_info(object_info, class_type)
        if info is None:
            continue
        specs = input_specs(info)
        sized = all(n in specs and specs[n].type == "INT" for n in ("width", "height"))
        creates = "LATENT" in output_types(info) or class_type == "EmptyImage"
        consumes_latent = any(s.type == "LATENT" for s in specs.values())
        if sized and (class_type in SIZE_FOLLOWERS or (creates and not consumes_latent)):
            found.append(node_id)
    return found


def set_size(
    graph: Graph,
    object_info: ObjectInfo,
    width: int | None = None,
    height: int | None = None,
    length: int | None = None,
) -> dict[str, dict[str, int]]:
    """Set width/height/length on every size node; returns ``{node_id: {input: value}}``."""
    given = (("width", width), ("height", height), ("length", length))
    wanted = {name: value for name, value in given if value is not None}
    if not wanted:
        return {}
    nodes = size_nodes(graph, object_info)
    changed: dict[str, dict[str, int]] = {}
    for name, value in wanted.items():
        targets = [n for n in nodes if input_spec(object_info, graph[n]["class_type"], name)]
        if not targets:
            raise InvalidRequest(
                f"{name} was given but the workflow has no node to set it on (such as "
                "EmptyLatentImage, EmptySD3LatentImage, EmptyHunyuanLatentVideo, "
                "WanImageToVideo or EmptyImage)",
                field=name,
            )
        for node_id in targets:
            graph[node_id]["inputs"][name] = value
            changed.setdefault(node_id, {})[name] = value
    return changed


# --- output prefixes ----------------------------------------------------------------------


def job_folder(job_id: str) -> str:
    """A job id made safe as one folder name under ComfyUI's output directory."""
    folder = _SAFE_FOLDER.sub("_", job_id).lstrip(".")
    if not folder:
        raise InvalidRequest(f"job id {job_id!r} cannot name an output folder", field="id")
    return folder


def set_filename_prefixes(graph: Graph, object_info: ObjectInfo, job_id: str) -> dict[str, str]:
    """Point every save node into the job's folder: ``<job folder>/<original prefix>``.

    The original prefix (or the class default when it is linked or absent) is kept below the
    job folder with ``..`` and leading slashes removed. Running this twice changes nothing.
    Returns ``{node_id: new_prefix}``.
    """
    folder = job_folder(job_id)
    prefixes: dict[str, str] = {}
    for node_id in sorted_ids(graph):
        node = graph[node_id]
        spec = input_spec(object_info, node["class_type"], "filename_prefix")
        if spec is None and "filename_prefix" not in node["inputs"]:
            continue
        current = node["inputs"].get("filename_prefix")
        default = str(spec.options.get("default", "ComfyUI")) if spec else "ComfyUI"
        original = current if isinstance(current, str) else default
        if original.startswith(folder + "/"):
            prefixes[node_id] = original
            continue
        parts = [p for p in original.replace("\\", "/").split("/") if p not in ("", ".", "..")]
        prefix = f"{folder}/{'/'.join(parts) or default}"
        node["inputs"]["filename_prefix"] = prefix
        prefixes[node_id] = prefix
    return prefixes


def output_node_ids(graph: Graph, object_info: ObjectInfo) -> list[str]:
    """Nodes of an output class (those ComfyUI runs the graph for)."""
    return [
        node_id
        for node_id in sorted_ids(graph)
        if (class_info(object_info, graph[node_id]["class_type"]) or {}).get("output_node")
    ]
