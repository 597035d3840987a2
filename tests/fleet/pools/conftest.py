"""Provider cases for the contract suite: local processes, RunPod pods against the stand-in
(and Docker containers against the real daemon, see `docker_case`)."""

from __future__ import annotations

import atexit
import contextlib
import shutil
import subprocess
import tempfile
import time
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


DOCKER_PACKAGE = "docker.io"  # Debian's package with dockerd
_started_daemon: list[subprocess.Popen[bytes]] = []


def _stop_daemon() -> None:
    for proc in _started_daemon:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=30)


def _start_daemon() -> None:
    """Start Debian's dockerd for this test run (stopped when the run ends), like the
    throwaway PostgreSQL: a machine with the package needs no set-up step."""
    dockerd = shutil.which("dockerd")
    if dockerd is None:
        pytest.fail(
            "the Docker provider's tests need a Docker daemon and no dockerd was found: "
            f"apt-get install -y {DOCKER_PACKAGE}"
        )
    log = Path(tempfile.gettempdir()) / "comfyfleet-tests-dockerd.log"
    with log.open("ab") as out:
        proc = subprocess.Popen([dockerd], stdout=out, stderr=out, start_new_session=True)
    _started_daemon.append(proc)
    atexit.register(_stop_daemon)


def docker_client():  # type: ignore[no-untyped-def]
    """The Docker daemon these tests need: the running one, else one this run starts; a
    failure naming what to install, never a skip."""
    import docker

    try:
        client = docker.from_env()
        client.ping()
        return client
    except Exception as exc:
        if _started_daemon:  # ours is there but does not answer: do not start a second
            pytest.fail(f"the Docker daemon this test run started does not answer: {exc}")
    _start_daemon()
    deadline = time.monotonic() + 60
    while True:  # readiness: the daemon answers its socket once it has set itself up
        try:
            client = docker.from_env()
            client.ping()
            return client
        except Exception as exc:
            if _started_daemon[0].poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"dockerd started by this test run did not come up: {exc}")
            time.sleep(0.2)


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
