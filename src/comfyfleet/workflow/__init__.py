"""Pure functions on ComfyUI API-format graphs: parse, template, inject, validate, prepare.

Nothing here does I/O except `load_template`/`list_templates`, which read a given directory.
The pipeline calls `prepare`; the other functions are its parts, public for the CLI, the
gateway (template listing, early validation) and tests.
"""

from comfyfleet.workflow.graph import load_json, parse_workflow
from comfyfleet.workflow.inject import (
    TEXT_ENCODERS,
    classify_encoders,
    image_loaders,
    inject_images,
    inject_prompts,
    job_folder,
    output_node_ids,
    set_filename_prefixes,
    set_seeds,
    set_size,
    size_nodes,
)
from comfyfleet.workflow.nodeinfo import Graph, InputSpec, ObjectInfo, is_link, node_sort_key
from comfyfleet.workflow.prepare import PreparedWorkflow, builtin_params, prepare
from comfyfleet.workflow.templates import (
    list_templates,
    load_template,
    placeholders,
    render_template,
)
from comfyfleet.workflow.uiformat import UI_FORMAT_MESSAGE, is_ui_workflow, ui_to_api
from comfyfleet.workflow.validate import find_errors, validate_workflow

__all__ = [
    "TEXT_ENCODERS",
    "UI_FORMAT_MESSAGE",
    "Graph",
    "InputSpec",
    "ObjectInfo",
    "PreparedWorkflow",
    "builtin_params",
    "classify_encoders",
    "find_errors",
    "image_loaders",
    "inject_images",
    "inject_prompts",
    "is_link",
    "is_ui_workflow",
    "job_folder",
    "list_templates",
    "load_json",
    "load_template",
    "node_sort_key",
    "output_node_ids",
    "parse_workflow",
    "placeholders",
    "prepare",
    "render_template",
    "set_filename_prefixes",
    "set_seeds",
    "set_size",
    "size_nodes",
    "ui_to_api",
    "validate_workflow",
]
