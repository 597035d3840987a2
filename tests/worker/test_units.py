"""The worker's pure parts: request shapes, output shape, cgroup reading, log lines."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from comfyfleet.errors import InvalidRequest, ResourceExhausted, WorkflowValidationError
from comfyfleet.jobs import Artifact, JobResult, JobSpec, Progress
from comfyfleet.worker import formats, logs, resources, response
from comfyfleet.worker.progress import Reporter

WF = {"1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8}}}


def parse(body, **kw):
    return formats.parse(body, job_id="job-1", **kw)


# --- formats ---------------------------------------------------------------------------------
def test_reference_worker_shape_is_a_jobspec_with_its_api_key():
    spec = parse(
        {"workflow": WF, "images": [{"name": "a.png", "image": "AAAA"}], "api_key_comfy_org": "k"}
    )
    assert isinstance(spec, JobSpec)
    assert spec.id == "job-1" and spec.workflow == WF
    assert spec.images[0].name == "a.png" and spec.seed is None
    assert spec.extra_data == {"api_key_comfy_org": "k"}


def test_reference_images_go_to_the_loader_that_names_them():
    wf = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "b.png"}},
        "2": {"class_type": "LoadImage", "inputs": {"image": "a.png"}},
    }
    images = [{"name": "a.png", "image": "AAAA"}, {"name": "b.png", "image": "BBBB"}]
    spec = parse({"workflow": wf, "images": images})
    assert [(i.name, i.node_id) for i in spec.images] == [("a.png", "2"), ("b.png", "1")]


def test_reference_input_given_as_a_json_string():
    spec = parse(json.dumps({"workflow": WF}))
    assert isinstance(spec, JobSpec) and spec.workflow == WF


def test_seed_001_video_request_becomes_a_template_job():
    spec = parse(
        {
            "prompt": "a cat surfing",
            "image": "data:image/png;base64,AAAA",
            "width": 480,
            "height": 320,
            "length": 33,
            "comfyui_workflow_name": "video_i2v",
            "comfy_org_api_key": "secret",
        }
    )
    assert isinstance(spec, JobSpec)
    assert spec.template == "video_i2v"
    assert spec.params == {"VIDEO_PROMPT": "a cat surfing", "PROMPT": "a cat surfing"}
    assert [i.name for i in spec.images] == ["input_image.png"]
    assert (spec.width, spec.height, spec.length) == (480, 320, 33)
    assert spec.extra_data == {"api_key_comfy_org": "secret"}


def test_seed_001_without_workflow_name_uses_the_default_or_says_what_is_missing():
    body = {"prompt": "p", "image": "AAAA"}
    assert parse(body, default_template="wan_i2v").template == "wan_i2v"
    with pytest.raises(InvalidRequest, match="comfyui_workflow_name"):
        parse(body)


def test_seed_002_bare_images_and_random_seed():
    spec = parse({"workflow": WF, "images": ["AAAA", "BBBB"], "prompt": "x", "debug": True})
    assert isinstance(spec, JobSpec)
    assert [i.image for i in spec.images] == ["AAAA", "BBBB"]
    assert all(i.name is None for i in spec.images)
    assert spec.seed == "random" and spec.prompt == "x" and spec.debug
    assert parse({"workflow": WF, "images": ["AAAA"], "seed": 7}).seed == 7


def test_comfyfleet_jobspec_shape():
    spec = parse(
        {
            "template": "t",
            "params": {"A": 1},
            "outputs": {"include_temp": True},
            "timeout": 30,
            "seed": 5,
        }
    )
    assert isinstance(spec, JobSpec)
    assert spec.template == "t" and spec.params == {"A": 1} and spec.outputs.include_temp
    assert spec.timeout == 30 and spec.seed == 5


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (None, "no input"),
        ([1], "must be a JSON object"),
        ("{nope", "not valid JSON"),
        ({"action": "reboot"}, "unknown action 'reboot'; expected one of health"),
        ({"action": "swarm_api"}, "swarm_api.path: Field required"),
        ({"action": "swarm_api", "path": "http://evil/x"}, "swarm_api.path: String should match"),
        ({"workflow": WF, "images": [{"image": "A", "nam": "x"}]}, "images.0.nam: Extra inputs"),
        ({"workflow": WF, "template": "t"}, "exactly one of 'workflow' or 'template'"),
        ({"prompt": "p", "image": "A", "width": 0, "comfyui_workflow_name": "w"}, "width:"),
    ],
)
def test_bad_requests_name_the_field(body, message):
    with pytest.raises(InvalidRequest, match=message.replace("(", r"\(")):
        parse(body)


def test_actions():
    assert parse({"action": "health"}).action == "health"
    swarm = parse({"action": "swarm_api", "method": "GET", "path": "/API/ListModels"})
    assert (swarm.method, swarm.path, swarm.timeout) == ("GET", "/API/ListModels", 600.0)
    assert parse({"action": "keepalive", "duration": 5}).duration == 5


# --- response --------------------------------------------------------------------------------
def test_success_shape_and_no_duplicate_bytes():
    result = JobResult(
        job_id="j",
        artifacts=[
            Artifact(node_id="2", filename="a.png", data="QUJD", size=3),
            Artifact(node_id="3", filename="v.webp", kind="video", url="http://s3/v.webp"),
            Artifact(node_id="4", filename="4_text_0.txt", kind="text", text="hi", data="aGk="),
        ],
    )
    out = response.success(result)
    assert out["images"] == [{"filename": "a.png", "type": "base64", "data": "QUJD"}]
    assert out["videos"] == [{"filename": "v.webp", "type": "s3_url", "data": "http://s3/v.webp"}]
    assert out["text"] == [{"filename": "4_text_0.txt", "type": "text", "data": "hi"}]
    assert "QUJD" not in json.dumps(out["comfyfleet"])
    assert out["comfyfleet"]["artifacts"][0]["size"] == 3


def test_failure_shape_keeps_details():
    err = WorkflowValidationError(
        [{"node_id": "5", "class_type": "ImageScale", "input_name": "width", "message": "bad"}]
    )
    out = response.failure(err)
    assert out["error"] == "workflow is invalid: node 5 (ImageScale) input 'width': bad"
    assert out["code"] == "workflow_invalid" and out["node_errors"][0]["node_id"] == "5"


# --- resources -------------------------------------------------------------------------------
def test_cgroup_v2_limit_minus_usage_plus_reclaimable(tmp_path: Path):
    (tmp_path / "memory.max").write_text("1073741824\n")
    (tmp_path / "memory.current").write_text("805306368\n")
    (tmp_path / "memory.stat").write_text("anon 1\ninactive_file 104857600\n")
    assert resources.cgroup_free_memory(tmp_path) == 2**30 - (768 - 100) * 2**20


def test_cgroup_unlimited_and_v1(tmp_path: Path):
    (tmp_path / "memory.max").write_text("max\n")
    assert resources.cgroup_free_memory(tmp_path) is None
    v1 = tmp_path / "memory"
    v1.mkdir()
    (v1 / "memory.limit_in_bytes").write_text(str(2**31))
    (v1 / "memory.usage_in_bytes").write_text(str(2**30))
    assert resources.cgroup_free_memory(tmp_path) == 2**30


def test_resource_refusal_is_precise(tmp_path: Path):
    with pytest.raises(ResourceExhausted, match=r"not enough free memory before the job: \d+ MiB"):
        resources.check([tmp_path], min_memory=2**62, min_disk=0, when="before")
    with pytest.raises(ResourceExhausted, match=rf"free on {tmp_path}, \d+ MiB required") as e:
        resources.check([tmp_path], min_memory=0, min_disk=2**62, when="after")
    assert e.value.retryable and e.value.details["resource"] == "disk"


# --- progress and logs -----------------------------------------------------------------------
def test_progress_is_throttled_per_node_but_keeps_node_changes():
    sent: list[dict] = []
    rep = Reporter({"id": "j"}, lambda job, body: sent.append(body), min_interval=3600)
    for step in range(1, 11):
        rep(Progress(job_id="j", node="3", class_type="KSampler", value=step, max=10))
    rep(Progress(job_id="j", node="4", class_type="VAEDecode"))
    assert [(b["node"], b.get("step")) for b in sent] == [("3", 1), ("3", 10), ("4", None)]
    assert sent[0] == {
        "stage": "running",
        "node": "3",
        "class_type": "KSampler",
        "step": 1,
        "steps": 10,
    }


@pytest.fixture
def restore_logging():
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for h in list(root.handlers):
        root.removeHandler(h)
    for h in handlers:
        root.addHandler(h)
    root.setLevel(level)


def test_log_lines_carry_the_job_id(capsys, restore_logging):
    logs.configure("INFO")
    log = logging.getLogger("comfyfleet.test")
    with logs.job_context("job-42"):
        log.info("hello world", extra={"node": "5"})
    log.info("outside")
    err = capsys.readouterr().err.splitlines()
    assert 'job_id=job-42 msg="hello world" node=5' in err[0]
    assert "job_id=- msg=outside" in err[1]
    logs.configure("INFO", json_lines=True)
    with logs.job_context("job-43"):
        log.info("x")
    assert json.loads(capsys.readouterr().err)["job_id"] == "job-43"


# --- extra_model_paths.yaml ------------------------------------------------------------------
def test_model_paths_go_to_comfy_dir_unless_a_hand_written_file_is_there(tmp_path: Path):
    from comfyfleet.config import Settings
    from comfyfleet.worker.launch import write_model_paths

    volume = tmp_path / "volume" / "models"
    (volume / "loras").mkdir(parents=True)
    comfy = tmp_path / "ComfyUI"
    comfy.mkdir()
    settings = Settings(comfy_dir=comfy, model_roots=[volume], data_dir=tmp_path / "data")
    assert write_model_paths(settings) == comfy / "extra_model_paths.yaml"
    assert f"base_path: {volume}" in (comfy / "extra_model_paths.yaml").read_text()
    (comfy / "extra_model_paths.yaml").write_text("mine:\n  base_path: /x\n")
    assert write_model_paths(settings) == (tmp_path / "data" / "extra_model_paths.yaml")
    assert (comfy / "extra_model_paths.yaml").read_text() == "mine:\n  base_path: /x\n"
