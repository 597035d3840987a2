"""Every way a submission can be wrong gets its own precise 4xx in the one error shape, and no
task row is written for any of them."""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from comfyfleet.config import Settings
from comfyfleet.gateway.app import create_app

from .gateway_helpers import ENGINES, WORKFLOW, Served, drop_schema, serve

LIMIT = 4096


# One gateway per engine for the whole module: these requests must not change anything, and
# each test checks that the number of tasks is the same after its request as before.
pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module", params=ENGINES)
async def gateway(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Served]:
    root = tmp_path_factory.mktemp("bad-requests")
    templates = root / "templates"
    templates.mkdir()
    (templates / "portrait.json").write_text(json.dumps(WORKFLOW))
    database: dict[str, Any] = {}
    if request.param == "postgres":
        database = {
            "database_url": request.getfixturevalue("pg_url"),
            "database_schema": f"gw_bad_{uuid.uuid4().hex[:8]}",
        }
    settings = Settings(
        host="127.0.0.1",
        data_dir=root / "data",
        backends=[],
        templates_dir=templates,
        max_request_bytes=LIMIT,
        api_keys=["sub:submit", "ro:read"],
        **database,
    )
    try:
        async with serve(create_app(settings)) as served:
            yield served
    finally:
        if database:
            drop_schema(database["database_url"], database["database_schema"])


@contextlib.asynccontextmanager
async def creates_nothing(served: Served) -> AsyncIterator[None]:
    before = await served.count_tasks()
    yield
    assert await served.count_tasks() == before


def error_of(response: Any) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}, body
    assert {"code", "message"} <= set(body["error"]), body
    return body["error"]


CASES: list[tuple[str, Any, int, str]] = [
    ("not json", b"{nope", 400, "invalid_request"),
    ("empty body", b"", 400, "invalid_request"),
    ("not an object", [1, 2], 400, "invalid_request"),
    ("no workflow", {"prompt": "x"}, 400, "invalid_request"),
    (
        "workflow and template",
        {"workflow": WORKFLOW, "template": "portrait"},
        400,
        "invalid_request",
    ),
    ("unknown field", {"workflow": WORKFLOW, "colour": "red"}, 400, "invalid_request"),
    ("priority too high", {"workflow": WORKFLOW, "priority": 101}, 400, "invalid_request"),
    ("priority not a number", {"workflow": WORKFLOW, "priority": "high"}, 400, "invalid_request"),
    ("negative timeout", {"workflow": WORKFLOW, "timeout": -1}, 400, "invalid_request"),
    # A deadline the queue cannot store (the fuzzer's 1e300 made a later claim fail with 500).
    ("timeout beyond 30 days", {"workflow": WORKFLOW, "timeout": 1e300}, 400, "invalid_request"),
    (
        "runpod executionTimeout beyond 30 days",
        {"input": {"workflow": WORKFLOW}, "policy": {"executionTimeout": 10**18}},
        400,
        "invalid_request",
    ),
    ("max_attempts zero", {"workflow": WORKFLOW, "max_attempts": 0}, 400, "invalid_request"),
    ("unknown template", {"template": "landscape"}, 404, "template_not_found"),
    ("template path escape", {"template": "../secrets"}, 404, "template_not_found"),
    (
        "seed body unknown template",
        {"workflow_id": "landscape", "priority": 1},
        404,
        "template_not_found",
    ),
    ("seed body bad payload", {"workflow_id": "x", "payload": "graph"}, 400, "invalid_request"),
    ("runpod action is not a task", {"input": {"action": "health"}}, 400, "invalid_request"),
    ("runpod input not an object", {"input": 5}, 400, "invalid_request"),
    (
        "webhook ftp",
        {"workflow": WORKFLOW, "webhook": "ftp://example.com/hook"},
        400,
        "forbidden_url",
    ),
    ("webhook no host", {"workflow": WORKFLOW, "webhook": "http:///hook"}, 400, "forbidden_url"),
    ("webhook relative", {"workflow": WORKFLOW, "webhook": "/hook"}, 400, "forbidden_url"),
    (
        "webhook credentials",
        {"workflow": WORKFLOW, "webhook": "https://u:p@example.com/"},
        400,
        "forbidden_url",
    ),
    (
        "webhook bad port",
        {"workflow": WORKFLOW, "webhook": "http://example.com:99999/"},
        400,
        "forbidden_url",
    ),
]


@pytest.mark.parametrize(("name", "body", "status", "code"), CASES, ids=[c[0] for c in CASES])
async def test_bad_submission(
    gateway: Served, name: str, body: Any, status: int, code: str
) -> None:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    async with creates_nothing(gateway), gateway.client("sub") as http:
        response = await http.post(
            "/api/v1/tasks", content=content, headers={"Content-Type": "application/json"}
        )
    assert response.status_code == status, response.text
    assert error_of(response)["code"] == code


async def test_schema_errors_name_the_field(gateway: Served) -> None:
    async with creates_nothing(gateway), gateway.client("sub") as http:
        response = await http.post("/api/v1/tasks", json={"workflow": WORKFLOW, "priority": 500})
    error = error_of(response)
    assert "priority" in error["message"]
    assert error["details"]["errors"][0]["loc"] == ["priority"]


async def test_known_template_is_accepted(gateway: Served) -> None:
    async with gateway.client("sub") as http:
        response = await http.post("/api/v1/tasks", json={"template": "portrait"})
    assert response.status_code == 201


async def test_oversized_body_by_content_length_is_413_before_reading(gateway: Served) -> None:
    body = json.dumps({"workflow": WORKFLOW, "prompt": "x" * LIMIT}).encode()
    async with creates_nothing(gateway), gateway.client("sub") as http:
        response = await http.post(
            "/api/v1/tasks", content=body, headers={"Content-Type": "application/json"}
        )
    assert response.status_code == 413
    assert error_of(response)["code"] == "payload_too_large"


async def test_oversized_chunked_body_is_413(gateway: Served) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"workflow": {}, "prompt": "'
        for _ in range(LIMIT // 512 + 2):
            yield b"x" * 512
        yield b'"}'

    async with creates_nothing(gateway), gateway.client("sub") as http:
        response = await http.post(
            "/api/v1/tasks", content=chunks(), headers={"Content-Type": "application/json"}
        )
    assert response.status_code == 413
    assert error_of(response)["code"] == "payload_too_large"


@pytest.mark.parametrize(
    ("token", "status", "code"),
    [(None, 401, "unauthorized"), ("wrong", 401, "unauthorized"), ("ro", 403, "forbidden")],
)
async def test_wrong_token(gateway: Served, token: str | None, status: int, code: str) -> None:
    async with creates_nothing(gateway), gateway.client(token) as http:
        response = await http.post("/api/v1/tasks", json={"workflow": WORKFLOW})
    assert response.status_code == status
    assert error_of(response)["code"] == code
    if status == 401:
        assert response.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize(
    ("query", "field"), [("wait=-1", "wait"), ("wait=301", "wait"), ("wait=soon", "wait")]
)
async def test_bad_query_parameters(gateway: Served, query: str, field: str) -> None:
    async with creates_nothing(gateway), gateway.client("sub") as http:
        response = await http.post(f"/api/v1/tasks?{query}", json={"workflow": WORKFLOW})
    assert response.status_code == 400
    assert field in error_of(response)["message"]


async def test_unknown_route_and_method_use_the_error_shape(gateway: Served) -> None:
    async with gateway.client("sub") as http:
        missing = await http.get("/api/v1/nothing")
        wrong_method = await http.delete("/api/v1/tasks")
    assert missing.status_code == 404 and error_of(missing)["code"] == "not_found"
    assert wrong_method.status_code == 405
    assert error_of(wrong_method)["code"] == "method_not_allowed"
