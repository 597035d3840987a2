"""`prepare`: the one call the pipeline makes, end to end on real fixture workflows."""

from __future__ import annotations

import random
import re
from typing import Any

import pytest
from wf_helpers import DATA, load

from comfyfleet.errors import (
    InvalidRequest,
    TemplateNotFound,
    TemplateParameterMissing,
    WorkflowFormatError,
    WorkflowValidationError,
)
from comfyfleet.jobs import InputImage, JobSpec
from comfyfleet.workflow import PreparedWorkflow, prepare

TEMPLATES = DATA / "templates"
OI = dict[str, Any]


def _prepare(spec: JobSpec, object_info: OI, names: list[str] | None = None) -> PreparedWorkflow:
    return prepare(
        spec,
        object_info,
        templates_dir=TEMPLATES,
        image_names=names or [],
        job_id="job1",
        rng=random.Random(3),
    )


def test_txt2img_workflow(object_info_models: OI) -> None:
    spec = JobSpec(
        workflow=load("txt2img_api.json"),
        prompt="a red fox",
        negative="lowres",
        seed="random",
        width=768,
        height=512,
    )
    prepared = _prepare(spec, object_info_models)
    graph = prepared.graph
    assert graph["6"]["inputs"]["text"] == "a red fox"
    assert graph["7"]["inputs"]["text"] == "lowres"
    assert graph["5"]["inputs"] == {"width": 768, "height": 512, "batch_size": 1}
    assert graph["9"]["inputs"]["filename_prefix"] == "job1/ComfyUI"
    assert prepared.output_folder == "job1"
    assert prepared.prefixes == {"9": "job1/ComfyUI"}
    assert prepared.output_nodes == ["9"]
    assert prepared.prompts == {"positive": ["6"], "negative": ["7"]}
    assert prepared.sizes == {"5": {"width": 768, "height": 512}}
    seed = prepared.seeds["3"]["seed"]
    assert graph["3"]["inputs"]["seed"] == seed != 156680208700286
    assert prepared.images == {}
    assert spec.workflow is not None and spec.workflow["6"]["inputs"]["text"] != "a red fox"


def test_job_id_defaults_to_the_spec_id(object_info_models: OI) -> None:
    spec = JobSpec(id="abc", workflow=load("txt2img_api.json"))
    prepared = prepare(spec, object_info_models, templates_dir=None, image_names=[])
    assert prepared.output_folder == "abc"
    assert prepared.seeds == {"3": {"seed": 156680208700286}}  # no seed asked: left as is


def test_qwen_edit_with_two_images(object_info_models: OI) -> None:
    spec = JobSpec(
        workflow=load("qwen_edit_api.json"),
        prompt="swap the backgrounds",
        images=[InputImage(image="aGk="), InputImage(image="aGk=")],
    )
    prepared = _prepare(spec, object_info_models, ["job1_0.png", "job1_1.png"])
    assert prepared.images == {"78": "job1_0.png", "106": "job1_1.png"}
    assert prepared.graph["111"]["inputs"]["prompt"] == "swap the backgrounds"
    assert prepared.graph["110"]["inputs"]["prompt"] == ""
    assert prepared.prefixes == {"60": "job1/qwen/edit"}


def test_image_for_an_explicit_node(object_info_models: OI) -> None:
    spec = JobSpec(
        workflow=load("qwen_edit_api.json"), images=[InputImage(image="aGk=", node_id="106")]
    )
    prepared = _prepare(spec, object_info_models, ["job1_0.png"])
    assert prepared.images == {"106": "job1_0.png"}
    assert prepared.graph["78"]["inputs"]["image"] == "example.png"


def test_more_images_than_loaders(object_info_models: OI) -> None:
    spec = JobSpec(workflow=load("txt2img_api.json"), images=[InputImage(image="aGk=")])
    with pytest.raises(InvalidRequest, match="1 images were given but the workflow has only 0"):
        _prepare(spec, object_info_models, ["job1_0.png"])


def test_image_names_must_cover_the_spec_images(object_info_models: OI) -> None:
    spec = JobSpec(workflow=load("qwen_edit_api.json"), images=[InputImage(image="aGk=")])
    with pytest.raises(ValueError, match="1 images in the spec but 0 names"):
        _prepare(spec, object_info_models, [])


def test_template_owns_what_it_places(object_info_models: OI) -> None:
    spec = JobSpec(template="txt2img", prompt="a red fox", seed=7, width=640)
    prepared = _prepare(spec, object_info_models)
    graph = prepared.graph
    # {{ PROMPT }} sits inside a longer string: smart injection must not overwrite it.
    assert graph["6"]["inputs"]["text"] == "masterpiece, a red fox"
    assert graph["7"]["inputs"]["text"] == "text, watermark"  # the placeholder's default
    assert graph["5"]["inputs"] == {"width": 640, "height": 512, "batch_size": 1}
    assert graph["3"]["inputs"]["seed"] == 7
    assert graph["3"]["inputs"]["steps"] == 20
    assert graph["9"]["inputs"]["filename_prefix"] == "job1/t2i/job1"
    assert prepared.template == "txt2img"
    assert prepared.prompts == {}


def test_template_params_override_builtins(object_info_models: OI) -> None:
    spec = JobSpec(
        template="txt2img",
        prompt="ignored",
        params={"PROMPT": "a fox", "STEPS": 30, "NEGATIVE_PROMPT": "blur"},
    )
    graph = _prepare(spec, object_info_models).graph
    assert graph["6"]["inputs"]["text"] == "masterpiece, a fox"
    assert graph["7"]["inputs"]["text"] == "blur"
    assert graph["3"]["inputs"]["steps"] == 30


def test_template_with_input_image_and_custom_parameter(object_info_models: OI) -> None:
    spec = JobSpec(
        template="wan_i2v",
        params={"VIDEO_PROMPT": "the cat jumps"},
        images=[InputImage(image="aGk=")],
        negative="static",
        length=33,
    )
    prepared = _prepare(spec, object_info_models, ["job1_0.png"])
    graph = prepared.graph
    assert graph["52"]["inputs"]["image"] == "job1_0.png"
    assert prepared.images == {}  # placed by the template's {{ INPUT_IMAGE }}
    assert graph["7"]["inputs"]["text"] == "the cat jumps"
    assert graph["6"]["inputs"]["text"] == "static"
    assert graph["50"]["inputs"]["length"] == 33
    assert prepared.prefixes == {"58": "job1/video/ComfyUI"}


def test_missing_template_parameter(object_info_models: OI) -> None:
    with pytest.raises(TemplateParameterMissing) as info:
        _prepare(JobSpec(template="txt2img"), object_info_models)
    assert info.value.message == "template 'txt2img' needs a value for PROMPT"


def test_unknown_template(object_info_models: OI) -> None:
    with pytest.raises(TemplateNotFound) as info:
        _prepare(JobSpec(template="sdxl"), object_info_models)
    assert info.value.message == "no template named 'sdxl' (available: txt2img, wan_i2v)"


def test_traversal_in_template_name(object_info_models: OI) -> None:
    with pytest.raises(
        TemplateNotFound, match=re.escape("invalid template name '../templates/txt2img'")
    ):
        _prepare(JobSpec(template="../templates/txt2img", prompt="x"), object_info_models)


def test_validation_runs_last(object_info: OI) -> None:
    spec = JobSpec(workflow=load("txt2img_api.json"), seed=-5)
    with pytest.raises(WorkflowValidationError) as info:
        _prepare(spec, object_info)
    found = [(e["node_id"], e["input_name"], e["type"]) for e in info.value.node_errors]
    assert found == [
        ("3", "seed", "value_smaller_than_min"),
        ("4", "ckpt_name", "value_not_in_list"),
    ]


def test_ui_format_workflow_is_converted(object_info_models: OI) -> None:
    spec = JobSpec(workflow=load("ui_txt2img.json"), prompt="a red fox")
    prepared = _prepare(spec, object_info_models)
    assert prepared.graph["6"]["inputs"]["text"] == "a red fox"
    assert prepared.prefixes == {"9": "job1/ComfyUI"}


def test_ui_format_workflow_that_cannot_be_converted(object_info_models: OI) -> None:
    ui = load("ui_txt2img.json") | {"extra": {"groupNodes": {"g": {}}}}
    with pytest.raises(WorkflowFormatError, match="Workflow → Export \\(API\\)"):
        _prepare(JobSpec(workflow=ui), object_info_models)
