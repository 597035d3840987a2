"""Provider cases for the contract suite: local processes, RunPod pods against the stand-in
(and Docker containers against the real daemon, see `docker_case`)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from comfyfleet.config import Settings

from .cases import CRASH, Case, local_options
from .docker_image import CRASH_COMMAND, build_image, mounts, server_command
from .runpod_standin import RunPodStandIn

PROVIDERS = ["local", "runpod", "docker"]


@pytest.fixture
async def runpod_standin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[RunPodStandIn]:
    async with RunPodStandIn(tmp_path / "pods") as standin:
        monkeypatch.setenv("RUNPOD_API_BASE_URL", standin.url)  # the SDK's own variable
        yield standin


@contextlib.asynccontextmanager
async def _case(kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Case]:
    data = tmp_path / "data"
    if kind == "local":
        yield Case("local", data, local_options(), {**local_options(), "command": CRASH})
    elif kind == "runpod":
        async with RunPodStandIn(tmp_path / "pods") as standin:
            monkeypatch.setenv("RUNPOD_API_BASE_URL", standin.url)
            settings = Settings(runpod_api_key=standin.api_key)
            yield Case(
                "runpod",
                data,
                {"image": "comfyfleet/worker"},
                {"image": "crash"},
                settings=settings,
                has_logs=False,
            )
    elif kind == "docker":
        client = docker_client()
        image = build_image(client)
        common = {"image": image, "volumes": mounts()}
        yield Case(
            "docker",
            data,
            {**common, "command": server_command()},
            {**common, "command": CRASH_COMMAND},
        )
        client.close()
    else:  # pragma: no cover
        raise ValueError(kind)


def docker_client():  # type: ignore[no-untyped-def]
    """The Docker daemon these tests need (`.ci/run` installs and starts it): a failure, not
    a skip, when it is not there."""
    import docker

    try:
        client = docker.from_env()
        client.ping()
    except Exception as exc:
        pytest.fail(f"the Docker provider's tests need a running Docker daemon: {exc}")
    return client


@pytest.fixture(params=PROVIDERS)
async def case(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Case]:
    async with _case(request.param, tmp_path, monkeypatch) as made:
        yield made
        for provider in made.made:
            for handle in await provider.list_owned():
                with contextlib.suppress(Exception):
                    await provider.stop(handle)
            await provider.close()
