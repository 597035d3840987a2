"""The dashboard in a real Chromium (Debian's /usr/bin/chromium driven by Playwright) against a
gateway whose backend is the ComfyUI test server: submitting from the form, node-precise errors,
live progress, cancel, the fleet and models pages. Every wait is on a selector or condition.

``COMFYFLEET_SCREENSHOTS=1`` makes the tests save each page to docs/img/ (so the pictures in
the docs are the pages as tested); without it nothing is written."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from PIL import Image
from playwright.async_api import Page, async_playwright, expect

from comfyfleet.config import Settings
from comfyfleet.gateway.app import create_app
from comfyfleet.testing import ComfyTestServer

from .gateway_helpers import WORKFLOW, Served, serve

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
SHOTS = Path(__file__).resolve().parents[2] / "docs" / "img"
WAIT_MS = 30_000
TEMPLATE = """{
  "1": {"class_type": "EmptyImage",
        "inputs": {"width": "{{ WIDTH | 96 }}", "height": {{ HEIGHT | 64 }}, "batch_size": 1,
                   "color": {{ COLOR | 16711680 }}}},
  "2": {"class_type": "SaveImage",
        "inputs": {"images": ["1", 0], "filename_prefix": "{{ PREFIX | swatch }}"}}
}"""


def slow(steps: int, seconds_per_step: float) -> dict[str, Any]:
    """A workflow whose middle node reports ``steps`` progress steps (the test server's slow
    node, like a sampler)."""
    return {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": 32, "height": 32, "batch_size": 1, "color": 0},
        },
        "2": {
            "class_type": "FleetTestSlow",
            "inputs": {"image": ["1", 0], "steps": steps, "seconds_per_step": seconds_per_step},
        },
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "s"}},
    }


def chromium() -> str:
    """The browser is part of the suite: missing, the test fails and says how to get it."""
    if shutil.which(CHROMIUM):
        return CHROMIUM
    pytest.fail(
        f"{CHROMIUM} is missing: `make browser` installs Debian's chromium "
        "(or set CHROMIUM to a Chromium binary)",
        pytrace=False,
    )


async def shot(page: Page, name: str | None) -> None:
    """docs/img/dashboard-NAME.png (None: dashboard.png), with COMFYFLEET_SCREENSHOTS=1."""
    if os.environ.get("COMFYFLEET_SCREENSHOTS") == "1":
        SHOTS.mkdir(parents=True, exist_ok=True)
        path = SHOTS / (f"dashboard-{name}.png" if name else "dashboard.png")
        await page.screenshot(path=str(path), full_page=True)


@pytest.fixture
async def gateway(
    make_settings: Callable[..., Settings], comfy_server: ComfyTestServer, tmp_path: Path
) -> AsyncIterator[Served]:
    templates = tmp_path / "templates"
    templates.mkdir()
    (templates / "swatch.json").write_text(TEMPLATE)
    comfy_server.add_model("checkpoints", "sd_xl_base_1.0.safetensors")
    comfy_server.add_model("loras", "pixel-art.safetensors")
    settings = make_settings(
        backends=[f"comfy={comfy_server.url}"],
        templates_dir=templates,
        models="stabilityai/stable-diffusion-xl-base-1.0:sd_xl_base_1.0.safetensors:checkpoints",
    )
    async with serve(create_app(settings)) as served:
        yield served


@pytest.fixture
async def page() -> AsyncIterator[Page]:
    """A fresh browser page; any uncaught script error fails the test."""
    errors: list[str] = []
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=chromium(), args=["--no-sandbox", "--disable-gpu"]
        )
        context = await browser.new_context(viewport={"width": 1280, "height": 860})
        context.set_default_timeout(WAIT_MS)
        tab = await context.new_page()
        tab.on("pageerror", lambda exc: errors.append(str(exc)))
        yield tab
        await browser.close()
    assert not errors, errors


async def test_page_and_assets_are_local(gateway: Served) -> None:
    async with gateway.client() as http:
        page = await http.get("/")
        scripts = re.findall(r'src="(/static/[^"]+)"', page.text)
        modules = [
            *("app.js", "core.js", "live.js", "media.js", "submit.js", "tasks.js", "task.js"),
            *("fleet.js", "models.js"),
        ]
        sources = {name: await http.get(f"/static/{name}") for name in modules}
        style = await http.get("/static/style.css")
    assert page.headers["content-type"].startswith("text/html")
    assert scripts == ["/static/app.js"]
    assert style.status_code == 200
    for name, response in sources.items():
        assert response.status_code == 200, name
        assert response.headers["content-type"].startswith(
            ("text/javascript", "application/javascript")
        )
        assert "innerHTML" not in response.text, name  # task data is rendered as text only
    # No CDN: every script and stylesheet comes from this gateway.
    assert not re.search(r'(src|href)="https?://', page.text)
    # The first screen's data is in the first response (no round trip before the first paint).
    boot = json.loads(
        re.search(r'<script type="application/json" id="boot">(.*?)</script>', page.text).group(1)
    )
    assert boot["auth"] is False
    assert boot["templates"][0]["name"] == "swatch"
    assert [b["name"] for b in boot["metrics"]["backends"]] == ["comfy"]


async def test_templates_api_types_the_parameters(gateway: Served) -> None:
    async with gateway.client() as http:
        listing = (await http.get("/api/v1/templates")).json()
    params = {p["name"]: p for p in listing[0]["params"]}
    assert listing[0]["name"] == "swatch"
    assert params["COLOR"] == {
        "name": "COLOR",
        "type": "integer",
        "default": 16711680,
        "required": False,
        "builtin": False,
    }
    assert params["PREFIX"]["type"] == "string"
    assert params["WIDTH"]["builtin"] is True  # filled from the task's width field


async def test_template_submit_through_the_form(gateway: Served, page: Page) -> None:
    await page.goto(f"{gateway.url}/#/submit")
    await expect(page.locator("#template")).to_have_value("swatch")
    await page.fill("#param-COLOR", str(0x00FF00))
    await page.fill("#param-PREFIX", "green")
    await page.fill("#prompt", "")
    await shot(page, "submit")
    await page.click("#submit")

    await page.wait_for_url(re.compile(r"#/task/"))
    await expect(page.locator("#task-status [data-state]")).to_have_text("succeeded")
    image = page.locator('#artifacts figure[data-kind="image"] img[data-loaded="true"]')
    await expect(image).to_be_visible()
    # The picture is the rendered template: 96 px wide (its WIDTH default).
    assert await image.evaluate("img => img.naturalWidth") == 96
    await expect(page.locator("#artifacts a.download")).to_have_attribute(
        "href", re.compile("^blob:")
    )
    await expect(page.locator("#inputs")).to_contain_text("swatch")
    await shot(page, "task")
    await page.set_viewport_size({"width": 390, "height": 800})  # a phone: one column
    assert await page.evaluate("document.documentElement.scrollWidth <= innerWidth")
    await shot(page, "task-phone")
    task_id = await page.locator("#task-id").inner_text()
    async with gateway.client() as http:
        task = (await http.get(f"/api/v1/tasks/{task_id}")).json()
    assert task["status"] == "succeeded"
    assert task["result"]["artifacts"][0]["filename"].startswith("green")


UI_WORKFLOW = {
    "last_node_id": 3,
    "last_link_id": 2,
    "nodes": [
        {
            "id": 1,
            "type": "LoadImage",
            "inputs": [],
            "outputs": [
                {"name": "IMAGE", "type": "IMAGE", "links": [1]},
                {"name": "MASK", "type": "MASK", "links": None},
            ],
            "widgets_values": ["example.png", "image"],
        },
        {
            "id": 2,
            "type": "ImageInvert",
            "inputs": [{"name": "image", "type": "IMAGE", "link": 1}],
            "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": [2]}],
            "widgets_values": [],
        },
        {
            "id": 3,
            "type": "SaveImage",
            "inputs": [{"name": "images", "type": "IMAGE", "link": 2}],
            "outputs": [],
            "widgets_values": ["inverted"],
        },
    ],
    "links": [[1, 1, 0, 2, 0, "IMAGE"], [2, 2, 0, 3, 0, "IMAGE"]],
    "version": 0.4,
}


async def test_ui_format_file_and_an_input_image(
    gateway: Served, page: Page, tmp_path: Path
) -> None:
    """A UI-format workflow file and an image picked in the form: converted by the gateway,
    the image goes into LoadImage, the inverted picture comes back."""
    workflow_file = tmp_path / "invert.json"
    workflow_file.write_text(json.dumps(UI_WORKFLOW))
    photo = tmp_path / "red.png"
    Image.new("RGB", (40, 20), (255, 0, 0)).save(photo)
    await page.goto(f"{gateway.url}/#/submit")
    await page.click('[data-tab="workflow"]')
    await page.set_input_files("#workflow-file", str(workflow_file))
    await expect(page.locator("#nodes")).to_contain_text("UI format")
    await page.set_input_files("#image-files", str(photo))
    await expect(page.locator('#images [data-image="red.png"] img')).to_be_visible()
    await page.click("#submit")

    await page.wait_for_url(re.compile(r"#/task/"))
    await expect(page.locator("#task-status [data-state]")).to_have_text("succeeded")
    image = page.locator('#artifacts img[data-loaded="true"]')
    await expect(image).to_be_visible()
    assert await image.evaluate("img => [img.naturalWidth, img.naturalHeight]") == [40, 20]
    task_id = await page.locator("#task-id").inner_text()
    async with gateway.client() as http:
        task = (await http.get(f"/api/v1/tasks/{task_id}")).json()
        artifact = await http.get(task["result"]["artifacts"][0]["url"])
    assert Image.open(io.BytesIO(artifact.content)).convert("RGB").getpixel((0, 0)) == (0, 255, 255)


async def test_invalid_workflow_shows_the_error_at_its_node(gateway: Served, page: Page) -> None:
    bad = json.loads(json.dumps(WORKFLOW))
    bad["1"]["inputs"]["width"] = 0  # below EmptyImage's minimum
    await page.goto(f"{gateway.url}/#/submit")
    await page.click('[data-tab="workflow"]')
    await page.fill("#workflow", json.dumps(bad, indent=1))
    await expect(page.locator('#node-table tr[data-node="2"]')).to_contain_text("SaveImage")
    await page.click("#submit")

    problem = page.locator('#node-table tr[data-node="1"] .node-problem[data-input="width"]')
    await expect(problem).to_be_visible()
    await expect(page.locator('#node-table tr[data-node="1"]')).to_have_class(
        re.compile("has-error")
    )
    await expect(page.locator('#node-table tr[data-node="2"] .node-problem')).to_have_count(0)
    await expect(page.locator("#submit-error")).to_contain_text("workflow_invalid")
    await shot(page, "invalid-workflow")
    assert await gateway.count_tasks() == 0  # nothing was queued


async def test_progress_moves_without_reload(gateway: Served, page: Page) -> None:
    # The page is open before the task starts (its backend drained until then), so the bar
    # is seen to move however slowly the machine runs.
    async with gateway.client() as http:
        await http.post("/api/v1/backends/comfy/drain")
        task = (await http.post("/api/v1/tasks", json={"workflow": slow(40, 0.1)})).json()
    await page.goto(f"{gateway.url}/#/task/{task['id']}")
    await expect(page.locator("#task-status [data-state]")).to_have_text("queued")
    await page.evaluate("window.__sameDocument = true")
    async with gateway.client() as http:
        await http.post("/api/v1/backends/comfy/undrain")
    bar = page.locator("#progress")
    await page.wait_for_function(
        "() => Number(document.querySelector('#progress').dataset.percent) > 0"
        " && document.querySelector('#progress').dataset.status === 'running'"
    )
    first = float(await bar.get_attribute("data-percent"))
    await page.wait_for_function(
        f"() => Number(document.querySelector('#progress').dataset.percent) > {first}"
    )
    await expect(page.locator("#stage")).to_contain_text("FleetTestSlow")
    await shot(page, "task-running")
    await expect(page.locator("#task-status [data-state]")).to_have_text("succeeded")
    assert await bar.get_attribute("data-percent") == "100.0"
    assert await page.evaluate("window.__sameDocument") is True  # no reload happened


async def test_cancel_from_the_task_page(gateway: Served, page: Page) -> None:
    async with gateway.client() as http:
        task = (await http.post("/api/v1/tasks", json={"workflow": slow(600, 0.1)})).json()
    await page.goto(f"{gateway.url}/#/task/{task['id']}")
    await page.wait_for_function(
        "() => Number(document.querySelector('#progress').dataset.percent) > 0"
    )
    await page.click("#cancel")
    await expect(page.locator("#task-status [data-state]")).to_have_text("cancelled")
    await expect(page.locator("#cancel")).to_be_hidden()
    await expect(page.locator("#retry")).to_be_visible()
    async with gateway.client() as http:
        after = (await http.get(f"/api/v1/tasks/{task['id']}")).json()
    assert after["status"] == "cancelled"
    # Retry: the same request as a new task, whose page says where it came from.
    await page.click("#retry")
    await expect(page.locator("#task-id")).not_to_have_text(task["id"])
    await expect(page.locator("#inputs [data-task-link]")).to_have_attribute(
        "data-task-link", task["id"]
    )
    again = await page.locator("#task-id").inner_text()
    async with gateway.client() as http:
        assert (await http.get(f"/api/v1/tasks/{again}/inputs")).json()["retry_of"] == task["id"]
        await http.post(f"/api/v1/tasks/{again}/cancel")


async def test_tasks_page_lists_errors_and_filters(gateway: Served, page: Page) -> None:
    failing = slow(1, 0.0)
    failing["2"] = {
        "class_type": "FleetTestFail",
        "inputs": {"image": ["1", 0], "message": "boom on purpose"},
    }
    async with gateway.client() as http:
        ok = (await http.post("/api/v1/tasks?wait=60", json={"workflow": WORKFLOW})).json()
        bad = (
            await http.post("/api/v1/tasks?wait=60", json={"workflow": failing, "max_attempts": 1})
        ).json()
    assert (ok["status"], bad["status"]) == ("succeeded", "failed")
    await page.goto(f"{gateway.url}/#/tasks")
    await expect(page.locator(f'tr[data-task="{bad["id"]}"] .error-cell')).to_contain_text(
        "boom on purpose"
    )
    await expect(page.locator(f'tr[data-task="{ok["id"]}"]')).to_be_visible()
    await expect(page.locator('[data-metric="failed"] b')).to_have_text("1")
    await page.evaluate("window.__sameDocument = true")
    # Live: a task submitted elsewhere shows up without a reload (the dashboard's feed).
    async with gateway.client() as http:
        third = (await http.post("/api/v1/tasks?wait=60", json={"workflow": WORKFLOW})).json()
    await expect(page.locator(f'tr[data-task="{third["id"]}"] [data-state]')).to_have_text(
        "succeeded"
    )
    await expect(page.locator('[data-metric="succeeded"] b')).to_have_text("2")
    await expect(page.locator("#conn")).to_have_text("live")
    assert await page.evaluate("window.__sameDocument") is True
    await shot(page, "tasks")
    await shot(page, None)  # README's picture
    await page.select_option("#status-filter", "failed")
    await expect(page.locator(f'tr[data-task="{ok["id"]}"]')).to_have_count(0)
    await expect(page.locator(f'tr[data-task="{bad["id"]}"]')).to_be_visible()
    # The failed task's page lays out its error, attempts and inputs.
    await page.click(f'tr[data-task="{bad["id"]}"] a')
    await expect(page.locator("#task-error")).to_contain_text("boom on purpose")
    await expect(page.locator('#timeline [data-attempt="1"]')).to_contain_text("failed")
    await expect(page.locator("#inputs")).to_contain_text("FleetTestFail")
    await shot(page, "task-failed")
    # A phone-sized screen gets the stacked layout.
    await page.set_viewport_size({"width": 390, "height": 800})
    await page.goto(f"{gateway.url}/#/tasks")
    await expect(page.locator(f'tr[data-task="{bad["id"]}"]')).to_be_visible()
    assert await page.locator("#tasks thead").is_hidden()
    await shot(page, "tasks-phone")


async def test_fleet_page_shows_a_drained_backend(gateway: Served, page: Page) -> None:
    async with gateway.client() as http:
        assert (await http.post("/api/v1/backends/comfy/drain")).status_code == 200
        # A remote agent that called in once, then went silent: offline, and only that.
        claim = await http.post("/api/v1/agent/claim", json={"agent_id": "a1", "name": "gpu-r"})
        assert claim.status_code == 204
    remotes = gateway.gateway.fleet.remotes
    remotes.clock = lambda: time.monotonic() + remotes.offline_after + 1

    await page.goto(f"{gateway.url}/#/fleet")
    comfy = page.locator('#backends tr[data-backend="comfy"]')
    await expect(comfy.locator("[data-state]")).to_have_text("drained")
    await expect(page.locator('#backends tr[data-backend="gpu-r"] [data-state]')).to_have_text(
        "offline"
    )
    await shot(page, "fleet")
    await comfy.locator('[data-action="undrain"]').click()
    await expect(comfy.locator("[data-state]")).to_have_text("idle")
    async with gateway.client() as http:
        states = {b["name"]: b["state"] for b in (await http.get("/api/v1/backends")).json()}
    assert states == {"comfy": "idle", "gpu-r": "offline"}


async def test_models_page(gateway: Served, page: Page) -> None:
    await page.goto(f"{gateway.url}/#/models")
    backend = page.locator('[data-models-backend="comfy"]')
    await expect(backend.locator('[data-model="sd_xl_base_1.0.safetensors"]').first).to_be_visible()
    await expect(backend.locator('[data-model="pixel-art.safetensors"]').first).to_be_visible()
    await expect(page.locator("#manifest")).to_contain_text(
        "hf://stabilityai/stable-diffusion-xl-base-1.0"
    )
    await shot(page, "models")


async def test_api_key_stays_in_the_session_and_out_of_urls(
    make_settings: Callable[..., Settings], comfy_server: ComfyTestServer, page: Page
) -> None:
    key = "dash-key-7f3a"
    settings = make_settings(backends=[f"comfy={comfy_server.url}"], api_keys=[f"{key}:submit"])
    async with serve(create_app(settings)) as served:
        async with served.client(key) as http:
            done = (await http.post("/api/v1/tasks?wait=60", json={"workflow": WORKFLOW})).json()
            html = (await served.client().get("/")).text
        assert '"auth":true' in html and '"metrics"' not in html  # nothing embedded without a key
        requests: list[str] = []
        page.on("request", lambda request: requests.append(request.url))

        await page.goto(f"{served.url}/#/task/{done['id']}")
        await expect(page.locator("#login")).to_be_visible()
        await page.fill("#token", key)
        await page.click("#login button[type=submit], #login button:not([type])")
        await expect(page.locator("#login")).to_be_hidden()
        await expect(page.locator("#task-status [data-state]")).to_have_text("succeeded")
        await expect(page.locator("#artifacts img[data-loaded='true']")).to_be_visible()
        await expect(page.locator("#conn")).to_have_text("live")  # the feed, with the key
        assert await page.evaluate("sessionStorage.getItem('comfyfleet.key')") == key
        assert await page.evaluate("localStorage.length") == 0
        assert requests and not [url for url in requests if key in url]
    # (The gateway stopped with the page's live feed still open: the feed ends on shutdown.)


async def test_tasks_page_pages_through_older_tasks(gateway: Served, page: Page) -> None:
    async with gateway.client() as http:
        await http.post("/api/v1/backends/comfy/drain")  # they stay queued: no runs needed
        ids = [
            (await http.post("/api/v1/tasks", json={"workflow": WORKFLOW})).json()["id"]
            for _ in range(27)
        ]
    await page.goto(f"{gateway.url}/#/tasks")
    rows = page.locator("#tasks tbody tr[data-task]")
    await expect(rows).to_have_count(25)
    await expect(rows.first).to_have_attribute("data-task", ids[-1])  # newest first
    await expect(page.locator("#page-newer")).to_be_disabled()
    await page.click("#page-older")
    await expect(rows).to_have_count(2)
    assert [await r.get_attribute("data-task") for r in await rows.all()] == ids[1::-1]
    await expect(page.locator("#page-older")).to_be_disabled()
    await page.click("#page-newer")
    await expect(rows).to_have_count(25)


async def test_task_page_shows_its_webhook_delivery(gateway: Served, page: Page) -> None:
    calls: list[bytes] = []

    async def hook(request: web.Request) -> web.Response:
        calls.append(await request.read())
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        url = f"http://127.0.0.1:{port}/hook"
        await page.goto(f"{gateway.url}/#/submit")
        await page.fill("#webhook", url)
        await page.check("#webhook-progress")
        await page.click("#submit")
        await page.wait_for_url(re.compile(r"#/task/"))
        await expect(page.locator("#task-status [data-state]")).to_have_text("succeeded")
        await expect(page.locator("#deliveries [data-state]")).to_have_text("delivered")
        assert await page.locator("#task-webhook").inner_text() == url
    finally:
        await runner.cleanup()
    events = [json.loads(body)["event"] for body in calls]
    assert events[-1] == "task.finished"
