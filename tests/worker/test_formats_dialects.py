"""ComfyUI's own ``/prompt`` body as RunPod input: a ``prompt`` that is an object is the API
graph; a string stays the text prompt. Parsed in-process, then run by the real worker."""

from __future__ import annotations

import pytest

from comfyfleet.errors import InvalidRequest
from comfyfleet.jobs import JobSpec
from comfyfleet.testing import ComfyTestServer
from comfyfleet.worker import formats

from .worker_helpers import WorkerProcess

GRAPH = {
    "1": {
        "class_type": "EmptyImage",
        "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 255},
    },
    "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "blue"}},
}


def parse(body: object) -> object:
    return formats.parse(body, job_id="job-1")


def test_object_prompt_is_the_graph_and_comfy_only_keys_are_dropped():
    spec = parse(
        {
            "prompt": GRAPH,
            "client_id": "abc",
            "prompt_id": "p-1",
            "front": False,
            "number": 3,
            "extra_data": {"api_key_comfy_org": "k"},
        }
    )
    assert isinstance(spec, JobSpec)
    assert spec.workflow == GRAPH and spec.prompt is None
    assert spec.id == "job-1"  # RunPod's job id wins over ComfyUI's prompt_id
    assert spec.extra_data == {"api_key_comfy_org": "k"}


def test_string_prompt_stays_the_text_prompt():
    spec = parse({"workflow": GRAPH, "prompt": "a red fox"})
    assert isinstance(spec, JobSpec) and spec.prompt == "a red fox" and spec.workflow == GRAPH


def test_object_prompt_and_workflow_together_is_refused_naming_prompt():
    with pytest.raises(InvalidRequest) as caught:
        parse({"prompt": GRAPH, "workflow": GRAPH})
    assert caught.value.details["field"] == "prompt"
    assert "'workflow' is set too" in caught.value.message


def test_object_prompt_with_a_template_is_refused():
    with pytest.raises(InvalidRequest, match="'template' is set too"):
        parse({"prompt": GRAPH, "template": "invert"})


def test_fold_leaves_other_bodies_alone():
    body = {"workflow": GRAPH, "client_id": "kept-for-jobspec-to-judge"}
    assert formats.fold_graph_prompt(body) is body


@pytest.fixture(scope="module")
def worker(tmp_path_factory):
    comfy = ComfyTestServer.start_subprocess(root=tmp_path_factory.mktemp("comfy"))
    env = {
        "COMFYUI_URL": comfy.url,
        "COMFYFLEET_MIN_FREE_MEMORY_BYTES": "0",
        "COMFYFLEET_MIN_FREE_DISK_BYTES": "0",
    }
    proc = WorkerProcess(env, tmp_path_factory.mktemp("worker") / "worker.log")
    yield proc
    proc.stop()
    comfy.stop()


def test_worker_runs_comfyui_body_unchanged(worker):
    answer = worker.runsync({"prompt": GRAPH, "client_id": "my-client"})
    assert answer["status"] == "COMPLETED", answer
    assert [i["filename"] for i in answer["output"]["images"]] == ["blue_00001_.png"]


def test_worker_reports_invalid_graph_in_object_prompt_with_node_and_input(worker):
    bad = {**GRAPH, "1": {**GRAPH["1"], "inputs": {**GRAPH["1"]["inputs"], "width": 0}}}
    answer = worker.runsync({"prompt": bad})
    assert answer["status"] == "FAILED", answer
    assert "node 1 (EmptyImage) input 'width'" in answer["error"]
