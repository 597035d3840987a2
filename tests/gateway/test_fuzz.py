"""An OpenAPI fuzzer (schemathesis) over the gateway's own schema, every route, with API keys
off and on: no request may get a 5xx, and every status must be one the schema documents.

The gateway is served by uvicorn on loopback in a thread of its own (schemathesis calls it
synchronously over real HTTP). The seed is fixed and the examples bounded, so a run is the same
every time and short. Long-polls (``?wait``) are narrowed to a fraction of a second in the
fuzzer's copy of the schema: the fuzzer tests what a request may say, not how long it waits.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
import uvicorn
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import Failure, FailureGroup
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import status_code_conformance

from comfyfleet.config import Settings
from comfyfleet.gateway.app import create_app

ADMIN = "fuzz-admin-token"
SEED = 20261204
EXAMPLES = 12

MAX_WAIT = 0.2  # seconds any long-poll may hold a fuzzed request


def no_server_error(ctx: Any, response: Any, case: Any) -> bool | None:
    """Schemathesis' 5xx check, except `/readyz`'s documented 503: "not ready" is its answer
    (``?backend=required`` on a gateway without backends), not a failure."""
    if case.operation.path == "/readyz" and response.status_code == 503:
        return None
    return not_a_server_error(ctx, response, case)


# 5xx, and statuses the schema does not list for the operation.
CHECKS = [no_server_error, status_code_conformance]


class ThreadedGateway:
    """A gateway app served by uvicorn on a free loopback port in a background thread."""

    def __init__(self, settings: Settings) -> None:
        self.app = create_app(settings)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        config = uvicorn.Config(self.app, log_level="warning", lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self._run, name="fuzz-gateway", daemon=True)

    def _run(self) -> None:
        asyncio.run(self.server.serve(sockets=[self.sock]))

    def __enter__(self) -> ThreadedGateway:
        self.thread.start()
        # The socket already listens: this waits in the backlog until the app has started.
        httpx.get(f"{self.url}/healthz", timeout=60).raise_for_status()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(30)
        self.sock.close()
        assert not self.thread.is_alive(), "the gateway did not stop"


def narrowed(schema: dict[str, Any], url: str) -> dict[str, Any]:
    """The gateway's schema with every ``wait`` parameter capped at `MAX_WAIT` seconds."""
    for item in schema["paths"].values():
        for operation in item.values():
            for parameter in operation.get("parameters", []):
                if parameter.get("name") == "wait":
                    parameter["schema"] = {"type": "number", "minimum": 0, "maximum": MAX_WAIT}
    return {**schema, "servers": [{"url": url}]}


@pytest.fixture(scope="module", params=["keys-off", "keys-on"])
def served(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    keys = [f"{ADMIN}:admin"] if request.param == "keys-on" else []
    root = tmp_path_factory.mktemp(f"fuzz-{request.param}")
    settings = Settings(
        host="127.0.0.1",
        data_dir=root / "data",
        backends=[],
        api_keys=keys,
        webhook_secret="fuzz",
        max_request_bytes=64 * 1024,
    )
    with ThreadedGateway(settings) as gateway:
        yield gateway, bool(keys), Path(root)


def fuzz(
    operation: Any, mode: GenerationMode, headers: dict[str, str] | None, sent: list[int]
) -> list[str]:
    """Run up to `EXAMPLES` generated requests against one operation (counted in ``sent``);
    the failures, described."""
    failures: list[str] = []

    @seed(SEED)
    @settings(
        max_examples=EXAMPLES,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: Any) -> None:
        sent[0] += 1
        try:
            case.call_and_validate(headers=headers, checks=CHECKS, timeout=30)
        except (Failure, FailureGroup) as exc:
            failures.append(f"{operation.label} [{mode.value}]: {exc}")

    try:
        run()
    except Unsatisfiable:  # negative mode on an operation that takes nothing to get wrong
        assert mode is GenerationMode.NEGATIVE, operation.label
    return failures


@pytest.mark.timeout(300)
def test_no_server_errors_and_no_undocumented_statuses(served: Any) -> None:
    gateway, keys, _root = served
    raw = httpx.get(f"{gateway.url}/openapi.json", timeout=30).json()
    schema = schemathesis.openapi.from_dict(narrowed(raw, gateway.url))
    schema.config.update(base_url=gateway.url)
    headers = {"Authorization": f"Bearer {ADMIN}"} if keys else None
    failures: list[str] = []
    operations, sent = 0, [0]
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            failures += fuzz(operation, mode, headers, sent)
    print(f"fuzzed {operations} operations with {sent[0]} requests, {len(failures)} failures")
    assert operations >= 18  # every route is in the schema, so every route is fuzzed
    assert sent[0] >= 10 * operations  # the fuzzer really generated requests
    # The names it claimed with are agents for a while, then forgotten: no phantom workers.
    # (One whose claim got a fuzzed task holds its lease until that expires, and stays.)
    remotes = gateway.app.state.gateway.fleet.remotes
    claimed = len(remotes)
    assert claimed > 0
    remotes.clock = lambda: time.monotonic() + remotes.expire_after + 1
    listed = httpx.get(f"{gateway.url}/api/v1/metrics", headers=headers or {}, timeout=30).json()
    assert all(backend["running"] for backend in listed["backends"]), listed["backends"]
    assert listed["workers"]["total_workers"] == len(listed["backends"]) < claimed
    assert listed["expired_agents"]["agents"] == claimed - len(listed["backends"])
    if failures:
        pytest.fail(f"{len(failures)} failures:\n" + "\n\n".join(failures), pytrace=False)
