"""Parsing ComfyUI's bodies and messages (samples copied from the 0.8.0 recordings)."""

from __future__ import annotations

import json
import struct

from comfyfleet.comfy.messages import HistoryEntry, parse_binary, parse_text, rejection
from comfyfleet.errors import (
    ComfyRejected,
    JobInterrupted,
    NodeExecutionError,
    WorkflowValidationError,
)

MISSING_CKPT = {
    "error": {
        "type": "prompt_outputs_failed_validation",
        "message": "Prompt outputs failed validation",
        "details": "",
        "extra_info": {},
    },
    "node_errors": {
        "4": {
            "errors": [
                {
                    "type": "value_not_in_list",
                    "message": "Value not in list",
                    "details": "ckpt_name: 'does_not_exist.safetensors' not in []",
                    "extra_info": {"input_name": "ckpt_name", "received_value": "x"},
                }
            ],
            "dependent_outputs": ["9"],
            "class_type": "CheckpointLoaderSimple",
        }
    },
}


def test_node_errors_name_node_class_and_input() -> None:
    error = rejection(MISSING_CKPT, {})
    assert isinstance(error, WorkflowValidationError)
    assert error.node_errors == [
        {
            "node_id": "4",
            "class_type": "CheckpointLoaderSimple",
            "input_name": "ckpt_name",
            "type": "value_not_in_list",
            "message": "Value not in list: ckpt_name: 'does_not_exist.safetensors' not in []",
        }
    ]
    assert "node 4 (CheckpointLoaderSimple) input 'ckpt_name'" in error.message


def test_unknown_class_names_the_node_from_the_graph() -> None:
    body = {
        "error": {
            "type": "invalid_prompt",
            "message": "Cannot execute because node NoSuchNodeClass does not exist.",
            "details": "Node ID '#1'",
            "extra_info": {},
        },
        "node_errors": {},
    }
    error = rejection(body, {"1": {"class_type": "NoSuchNodeClass", "inputs": {}}})
    assert isinstance(error, WorkflowValidationError)
    assert error.node_errors[0]["node_id"] == "1"
    assert error.node_errors[0]["class_type"] == "NoSuchNodeClass"


def test_no_outputs_is_a_plain_rejection() -> None:
    body = {"error": {"type": "prompt_no_outputs", "message": "Prompt has no outputs"}}
    error = rejection(body, {})
    assert isinstance(error, ComfyRejected)
    assert error.message == "ComfyUI rejected the prompt: Prompt has no outputs"


def test_history_entry_failures() -> None:
    err = {
        "prompt_id": "p",
        "node_id": "2",
        "node_type": "ImageToMask",
        "exception_message": "index 3 is out of bounds for dimension 3 with size 3\n",
        "exception_type": "IndexError",
        "traceback": ["..."],
    }
    body = {"p": {"outputs": {}, "status": {"status_str": "error", "messages": [
        ["execution_start", {"prompt_id": "p"}], ["execution_error", err]]}}}  # fmt: skip
    failure = HistoryEntry.from_response("p", body).failure()
    assert isinstance(failure, NodeExecutionError)
    assert failure.message == (
        "node 2 (ImageToMask) failed: IndexError: index 3 is out of bounds for dimension 3 "
        "with size 3"
    )
    assert failure.details["class_type"] == "ImageToMask"
    stop = {"prompt_id": "p", "node_id": "3", "node_type": "ImageInvert", "executed": []}
    body = {"p": {"status": {"status_str": "error", "messages": [["execution_interrupted", stop]]}}}
    assert isinstance(HistoryEntry.from_response("p", body).failure(), JobInterrupted)
    assert HistoryEntry.from_response("p", {}) is None


def test_text_and_binary_frames() -> None:
    event = parse_text(json.dumps({"type": "executing", "data": {"node": None, "prompt_id": "p"}}))
    assert event is not None and event.is_done and event.prompt_id == "p"
    assert parse_text("not json") is None
    meta = json.dumps({"node_id": "4", "prompt_id": "p", "image_type": "image/jpeg"}).encode()
    frame = struct.pack(">II", 4, len(meta)) + meta + b"\xff\xd8jpeg"
    preview = parse_binary(frame)
    assert preview is not None
    assert (preview.prompt_id, preview.node_id, preview.image) == ("p", "4", b"\xff\xd8jpeg")
    assert parse_binary(struct.pack(">II", 1, 2) + b"png").media_type == "image/png"
