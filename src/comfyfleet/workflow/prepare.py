"""The pipeline's one call into this package: a `JobSpec` in, a graph ready to submit out.

    prepare(spec, object_info, *, templates_dir, image_names, job_id=None, rng=None)
        -> PreparedWorkflow

1. **Source**: ``spec.workflow`` (API or UI format), or template ``spec.template`` from
   ``templates_dir`` rendered with ``spec.params`` over these built-in parameters: ``PROMPT``,
   ``NEGATIVE_PROMPT``, ``WIDTH``, ``HEIGHT``, ``LENGTH``, ``SEED`` (``"random"`` draws one),
   ``INPUT_IMAGE`` (the first image name), ``INPUT_IMAGE_1``..``_N``, ``JOB_ID``.
2. **Inject** (`inject`): prompt/negative, images (``image_names[i]``, already uploaded, goes to
   ``spec.images[i].node_id`` or the next LoadImage in numeric node-id order), seed, size.
   A template that places a value itself (mentions ``{{ PROMPT }}``, ``{{ INPUT_IMAGE }}``,
   ``{{ SEED }}``, ``{{ WIDTH }}``...) owns it, and smart injection leaves that value alone.
3. **Output prefix**: every save node writes under ``<job folder>/...`` (the job id made safe as a
   folder name). ComfyUI then reports those files with ``subfolder`` ``<job folder>`` (or below
   it), so the pipeline knows which outputs are this job's, and deletes
   ``output/<job folder>/`` when the job is done.
4. **Validate** against ``object_info`` (`validate`): one `WorkflowValidationError` with
   every problem.

Errors: `TemplateNotFound`, `TemplateParameterMissing`, `WorkflowFormatError`,
`WorkflowValidationError`, and `InvalidRequest` when the request does not fit the workflow (a
prompt but no text encoder, more images than LoadImage nodes, a width but no latent node).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from comfyfleet.jobs import JobSpec
from comfyfleet.workflow.graph import parse_workflow
from comfyfleet.workflow.inject import (
    RANDOM_SEED_CAP,
    inject_images,
    inject_prompts,
    job_folder,
    output_node_ids,
    set_filename_prefixes,
    set_seeds,
    set_size,
)
from comfyfleet.workflow.nodeinfo import Graph, ObjectInfo
from comfyfleet.workflow.templates import load_template, placeholders, render_template
from comfyfleet.workflow.validate import validate_workflow


@dataclass(frozen=True)
class PreparedWorkflow:
    """A graph ready for ``POST /prompt`` and what was put into it."""

    graph: Graph
    output_folder: str
    """Subfolder of ComfyUI's output directory that holds every file this job saves."""
    prefixes: dict[str, str] = field(default_factory=dict)
    """``{save_node_id: filename_prefix}``."""
    output_nodes: list[str] = field(default_factory=list)
    images: dict[str, str] = field(default_factory=dict)
    """``{load_image_node_id: image_name}``."""
    seeds: dict[str, dict[str, int]] = field(default_factory=dict)
    """Every literal seed in the final graph: ``{node_id: {"seed" | "noise_seed": value}}``."""
    prompts: dict[str, list[str]] = field(default_factory=dict)
    """``{"positive" | "negative": [encoder node ids that received the text]}``."""
    sizes: dict[str, dict[str, int]] = field(default_factory=dict)
    template: str | None = None


def prepare(
    spec: JobSpec,
    object_info: ObjectInfo,
    *,
    templates_dir: Path | None,
    image_names: Sequence[str],
    job_id: str | None = None,
    rng: random.Random | None = None,
) -> PreparedWorkflow:
    """Build the graph for ``spec`` (see the module docstring for the steps and errors)."""
    if len(spec.images) > len(image_names):
        raise ValueError(f"{len(spec.images)} images in the spec but {len(image_names)} names")
    job_id = job_id or spec.id
    rng = rng or random.Random()
    owned: set[str] = set()
    if spec.template is not None:
        text = load_template(templates_dir, spec.template)
        owned = placeholders(text)
        params = {**builtin_params(spec, image_names, job_id, rng, owned), **spec.params}
        source: Any = render_template(text, params, name=spec.template)
    else:
        source = spec.workflow
    graph = parse_workflow(source, object_info)

    prompts = inject_prompts(
        graph,
        object_info,
        None if "PROMPT" in owned else spec.prompt,
        None if "NEGATIVE_PROMPT" in owned else spec.negative,
    )
    images: dict[str, str] = {}
    if not any(name.startswith("INPUT_IMAGE") for name in owned):
        targets = [image.node_id for image in spec.images]
        images = inject_images(graph, object_info, list(image_names), targets)
    seeds = set_seeds(graph, object_info, None if "SEED" in owned else spec.seed, rng)
    sizes = set_size(
        graph,
        object_info,
        width=None if "WIDTH" in owned else spec.width,
        height=None if "HEIGHT" in owned else spec.height,
        length=None if "LENGTH" in owned else spec.length,
    )
    prefixes = set_filename_prefixes(graph, object_info, job_id)
    validate_workflow(graph, object_info)
    return PreparedWorkflow(
        graph=graph,
        output_folder=job_folder(job_id),
        prefixes=prefixes,
        output_nodes=output_node_ids(graph, object_info),
        images=images,
        seeds=seeds,
        prompts=dict(prompts),
        sizes=sizes,
        template=spec.template,
    )


def builtin_params(
    spec: JobSpec,
    image_names: Sequence[str],
    job_id: str,
    rng: random.Random,
    wanted: set[str] | None = None,
) -> dict[str, Any]:
    """The parameters every template may use, from the job's own fields."""
    params: dict[str, Any] = {"JOB_ID": job_id}
    fields = {
        "PROMPT": spec.prompt,
        "NEGATIVE_PROMPT": spec.negative,
        "WIDTH": spec.width,
        "HEIGHT": spec.height,
        "LENGTH": spec.length,
    }
    params.update({k: v for k, v in fields.items() if v is not None})
    if image_names:
        params["INPUT_IMAGE"] = image_names[0]
        params.update({f"INPUT_IMAGE_{i}": n for i, n in enumerate(image_names, start=1)})
    if isinstance(spec.seed, int):
        params["SEED"] = spec.seed
    elif spec.seed == "random" and (wanted is None or "SEED" in wanted):
        params["SEED"] = rng.randint(0, RANDOM_SEED_CAP)
    return params
