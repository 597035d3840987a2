"""Bearer keys and roles; without keys, loopback only (and no start on another address)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import httpx
import pytest
from typer.testing import CliRunner

from comfyfleet.cli import build_app
from comfyfleet.config import Settings
from comfyfleet.gateway.app import create_app
from comfyfleet.gateway.auth import BadKeyConfig, InsecureBinding, KeyRing

from .gateway_helpers import WORKFLOW, Served, serve

KEYS = ["r-token:read", "s-token:submit", "a-token:admin", "g-token:agent"]


@pytest.fixture
async def gateway(make_settings: Callable[..., Settings]) -> AsyncIterator[Served]:
    async with serve(create_app(make_settings(api_keys=KEYS))) as served:
        yield served


# (method, path, role needed); {id} is a queued task.
ROUTES = [
    ("GET", "/api/v1/tasks", "read"),
    ("GET", "/api/v1/tasks/{id}", "read"),
    ("GET", "/api/v1/metrics", "read"),
    ("GET", "/metrics", "read"),
    ("GET", "/api/v1/backends", "read"),
    ("POST", "/api/v1/tasks", "submit"),
    ("POST", "/api/v1/tasks/{id}/cancel", "submit"),
    ("POST", "/api/v1/backends/nope/drain", "admin"),
]
ALLOWED = {
    "r-token": {"read"},
    "s-token": {"read", "submit"},
    "a-token": {"read", "submit", "admin"},
    "g-token": set(),
}


async def test_roles(gateway: Served) -> None:
    async with gateway.client("a-token") as admin:
        task_id = (await admin.post("/api/v1/tasks", json={"workflow": WORKFLOW})).json()["id"]
    for token, allowed in ALLOWED.items():
        async with gateway.client(token) as http:
            for method, path, role in ROUTES:
                kwargs = {"json": {"workflow": WORKFLOW}} if path == "/api/v1/tasks" else {}
                url = path.format(id=task_id)
                response = await http.request(method, url, **kwargs)
                if role in allowed:
                    # Allowed: whatever the route answers, it is not an auth refusal.
                    assert response.status_code not in (401, 403), (token, method, url)
                else:
                    assert response.status_code == 403, (token, method, url, response.text)
                    assert response.json()["error"]["code"] == "forbidden"
                if method == "POST" and url.endswith("/cancel") and role in allowed:
                    async with gateway.client("a-token") as admin:
                        created = await admin.post("/api/v1/tasks", json={"workflow": WORKFLOW})
                        task_id = created.json()["id"]


async def test_agent_role_reaches_the_agent_protocol_only(gateway: Served) -> None:
    ident = {"agent_id": "a1", "name": "box"}
    async with gateway.client("g-token") as agent, gateway.client("r-token") as reader:
        assert (await agent.post("/api/v1/agent/claim", json=ident)).status_code == 204
        refused = await reader.post("/api/v1/agent/claim", json=ident)
    assert refused.status_code == 403


@pytest.mark.parametrize("header", ["", "Bearer", "Bearer nope", "Basic czpz", "s-token"])
async def test_missing_or_unknown_token_is_401(gateway: Served, header: str) -> None:
    async with gateway.client() as http:
        response = await http.get("/api/v1/tasks", headers={"Authorization": header})
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"


async def test_probes_and_dashboard_need_no_token(gateway: Served) -> None:
    async with gateway.client() as http:
        for path in ("/healthz", "/readyz", "/", "/static/app.js", "/openapi.json"):
            assert (await http.get(path)).status_code == 200, path


async def test_no_keys_answers_loopback_clients_only(
    make_settings: Callable[..., Settings],
) -> None:
    app = create_app(make_settings())
    async with app.router.lifespan_context(app):
        for client, status in ((("127.0.0.1", 5000), 200), (("10.1.2.3", 5000), 403)):
            transport = httpx.ASGITransport(app=app, client=client)
            async with httpx.AsyncClient(transport=transport, base_url="http://gw") as http:
                response = await http.get("/api/v1/tasks")
            assert response.status_code == status, client


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.10", "gateway.example.com"])
def test_refuses_to_start_open_on_a_non_loopback_address(
    make_settings: Callable[..., Settings], host: str
) -> None:
    with pytest.raises(InsecureBinding, match="without API keys"):
        create_app(make_settings(host=host))
    create_app(make_settings(host=host, api_keys=["t:admin"]))  # with keys it may


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "localhost", "127.0.0.5"])
def test_loopback_hosts_need_no_keys(make_settings: Callable[..., Settings], host: str) -> None:
    create_app(make_settings(host=host))


def test_serve_command_refuses_with_a_clear_message(tmp_path: object) -> None:
    result = CliRunner().invoke(
        build_app(), ["serve", "--host", "0.0.0.0", "--data-dir", str(tmp_path)]
    )
    assert result.exit_code == 2
    assert "refusing to listen on 0.0.0.0 without API keys" in result.output
    assert "COMFYFLEET_API_KEYS" in result.output


@pytest.mark.parametrize("entry", ["token", "token:root", ":admin", "token:"])
def test_malformed_key_entries_are_rejected(entry: str) -> None:
    with pytest.raises(BadKeyConfig):
        KeyRing.parse([entry])


def test_tokens_may_contain_colons() -> None:
    ring = KeyRing.parse(["a:b:c:submit"])
    assert ring.authenticate("Bearer a:b:c", "10.0.0.1").role == "submit"
