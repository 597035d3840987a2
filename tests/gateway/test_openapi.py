"""The OpenAPI schema describes the gateway as it runs (with or without API keys), and the
requests a fuzzer found answered wrongly get their documented 400."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from comfyfleet.config import Settings
from comfyfleet.gateway.app import create_app

from .gateway_helpers import serve

PROTECTED = ("/api/v1/tasks", "/api/v1/backends", "/api/v1/metrics", "/api/v1/agent/claim")


def operations(schema: dict) -> dict[tuple[str, str], dict]:
    return {
        (method.upper(), path): operation
        for path, item in schema["paths"].items()
        for method, operation in item.items()
    }


@pytest.mark.parametrize("keys", [[], ["t:admin"]], ids=["keys-off", "keys-on"])
async def test_the_schema_describes_the_mode_the_gateway_runs_in(
    make_settings: Callable[..., Settings], keys: list[str]
) -> None:
    async with serve(create_app(make_settings(api_keys=keys))) as gateway, gateway.client() as http:
        schema = (await http.get("/openapi.json", headers={"Authorization": "Bearer t"})).json()
    ops = operations(schema)
    protected = [op for (_m, path), op in ops.items() if path.startswith(PROTECTED)]
    assert protected
    if keys:
        assert all(op["security"] == [{"HTTPBearer": []}] for op in protected)
        assert all("401" in op["responses"] for op in protected)
        assert "HTTPBearer" in schema["components"]["securitySchemes"]
    else:  # nothing to send: no security requirement, no 401 a caller could get
        assert not any("security" in op for op in ops.values())
        assert not any("401" in op["responses"] for op in ops.values())
        assert "securitySchemes" not in schema.get("components", {})
    # Validation errors are 400 in the error shape, never FastAPI's undocumented 422.
    for (method, path), op in ops.items():
        if op.get("parameters") or op.get("requestBody"):
            assert "400" in op["responses"], (method, path)
        if (method, path) != ("POST", "/api/v1/tasks"):  # 422: workflow_invalid
            assert "422" not in op["responses"], (method, path)
    assert "HTTPValidationError" not in schema["components"]["schemas"]


async def test_readyz_rejects_an_unknown_backend_mode_with_a_documented_400(gateway) -> None:
    async with gateway.client() as http:
        response = await http.get("/readyz", params={"backend": "AAA"})
        schema = (await http.get("/openapi.json")).json()
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_request"
    assert "400" in operations(schema)[("GET", "/readyz")]["responses"]


@pytest.mark.parametrize(
    "identity",
    [
        {"agent_id": "a/b", "agent_name": "ok"},
        {"agent_id": "ok", "agent_name": "-starts-badly"},
        {"agent_id": "ok", "agent_name": "ý\x98Ì1²"},  # what the fuzzer sent
    ],
)
async def test_an_upload_with_a_malformed_agent_identity_is_400_not_500(
    gateway, identity: dict[str, str]
) -> None:
    async with gateway.client() as http:
        response = await http.put(
            "/api/v1/agent/tasks/t1/artifacts/out.png", params=identity, content=b"x"
        )
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "invalid_request"
