"""Image and model URLs that are wrong without any DNS lookup are refused at submit (400
``forbidden_url`` naming the field, no task); names are left to the fetch-time check."""

from __future__ import annotations

import base64
from collections.abc import Callable

import pytest

from comfyfleet.config import Settings
from comfyfleet.errors import ForbiddenURL
from comfyfleet.gateway.app import create_app
from comfyfleet.models.ondemand import check_public_url
from comfyfleet.urls import check_url

from .gateway_helpers import WORKFLOW, serve

FORBIDDEN = [
    "ftp://example.com/a.png",
    "file:///etc/passwd",
    "gopher://example.com/",
    "http:///no-host.png",
    "https://user:secret@example.com/a.png",
    "https://token@example.com/a.png",
    "http://example.com/a b.png",
    "http://127.0.0.1/a.png",
    "http://127.1/a.png",  # short form
    "http://2130706433/a.png",  # one decimal integer
    "http://0x7f000001/a.png",  # hex
    "http://0x7f.0.0.1/a.png",
    "http://0177.0.0.1/a.png",  # octal
    "http://017700000001/a.png",
    "http://127.0.0.1./a.png",  # trailing dot
    "http://0.0.0.0:8188/a.png",  # unspecified
    "http://0/a.png",
    "http://10.1.2.3/a.png",
    "http://172.16.0.1/a.png",
    "http://192.168.1.1/a.png",
    "http://169.254.169.254/latest/meta-data/",  # cloud metadata (link-local)
    "http://100.64.0.1/a.png",  # shared address space
    "http://[::1]/a.png",
    "http://[::]/a.png",
    "http://[::ffff:127.0.0.1]/a.png",  # IPv4-mapped
    "http://[::ffff:7f00:1]/a.png",
    "http://[fe80::1%25eth0]/a.png",  # link-local with a zone
    "http://[fc00::1]/a.png",  # unique local
    "http://[2002:7f00:1::]/a.png",  # 6to4 around 127.0.0.1
    "http://[64:ff9b::a9fe:a9fe]/a.png",  # NAT64 around 169.254.169.254
    "http://224.0.0.1/a.png",  # multicast
]
ALLOWED = [
    "https://example.com/a.png",
    "http://8.8.8.8/a.png",
    "http://134744072/a.png",  # 8.8.8.8 as one integer: public, so not ours to refuse
    "http://[2606:4700:4700::1111]/a.png",
    "https://cafe.babe/a.png",  # hex letters, but a name
    "https://localhost.example.com/a.png",  # a name: resolved (and judged) at fetch time
]


@pytest.mark.parametrize("url", FORBIDDEN)
def test_forbidden_without_dns(url: str) -> None:
    with pytest.raises(ForbiddenURL) as caught:
        check_url(url, field="images[0].image")
    assert caught.value.details["field"] == "images[0].image"


@pytest.mark.parametrize("url", ALLOWED)
def test_public_or_named_hosts_pass(url: str) -> None:
    check_url(url, field="images[0].image")


def test_private_addresses_pass_when_allowed_but_credentials_never() -> None:
    check_url("http://127.0.0.1:8188/a.png", field="f", allow_private=True)
    with pytest.raises(ForbiddenURL):
        check_url("http://u:p@127.0.0.1/a.png", field="f", allow_private=True)
    with pytest.raises(ForbiddenURL):
        check_url("file:///etc/passwd", field="f", allow_private=True)


PNG = base64.b64encode(bytes.fromhex("89504e470d0a1a0a")).decode()  # never decoded at submit


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (
            {"images": [{"image": PNG}, {"image": "http://2130706433/x.png"}]},
            "images[1].image",
        ),
        ({"images": [{"image": "file:///etc/passwd"}]}, "images[0].image"),
        (
            {"models": [{"url": "http://[::ffff:127.0.0.1]/m.safetensors", "folder": "loras"}]},
            "models[0].url",
        ),
        (
            {"models": [{"url": "https://u:p@example.com/m.bin", "folder": "loras"}]},
            "models[0].url",
        ),
    ],
)
async def test_submit_refuses_and_leaves_no_task(
    make_settings: Callable[..., Settings], body: dict, field: str
) -> None:
    async with serve(create_app(make_settings())) as gateway, gateway.client() as http:
        native = await http.post("/api/v1/tasks", json={"workflow": WORKFLOW, **body})
        runpod = await http.post("/api/v1/tasks", json={"input": {"workflow": WORKFLOW, **body}})
        assert await gateway.count_tasks() == 0
    for response in (native, runpod):
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert error["code"] == "forbidden_url"
        assert error["details"]["field"] == field
        assert field in error["message"]


async def test_a_private_url_is_accepted_when_the_gateway_allows_them(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(allow_private_urls=True)
    body = {"workflow": WORKFLOW, "images": [{"image": "http://127.0.0.1:9/x.png"}]}
    async with serve(create_app(settings)) as gateway, gateway.client() as http:
        response = await http.post("/api/v1/tasks", json=body)
        assert response.status_code == 201, response.text
        assert await gateway.count_tasks() == 1


@pytest.mark.parametrize("url", ["http://127.0.0.1/m.bin", "http://[::ffff:10.0.0.1]/m.bin"])
async def test_model_downloads_apply_the_same_address_policy_at_fetch_time(url: str) -> None:
    with pytest.raises(ForbiddenURL, match="non-public address"):
        await check_public_url(url)
