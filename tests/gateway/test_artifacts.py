"""The artifact store: stable URLs, correct content types, no way out of a task's folder."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from comfyfleet.errors import NotFound, StorageError
from comfyfleet.jobs import Artifact
from comfyfleet.outputs.artifacts import ArtifactStore, safe_name

from .gateway_helpers import WORKFLOW, Served


async def chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def submitted(served: Served) -> str:
    async with served.client() as http:
        return (await http.post("/api/v1/tasks", json={"workflow": WORKFLOW})).json()["id"]


async def test_artifacts_are_served_with_their_media_type(gateway: Served) -> None:
    task_id = await submitted(gateway)
    sink = gateway.gateway.artifacts.sink(task_id)
    stored = {}
    for filename, data in (("a.png", b"\x89PNGdata"), ("clip.mp4", b"mp4"), ("notes.txt", b"hi")):
        artifact = Artifact(node_id="9", filename=filename)
        stored[filename] = await sink.store(artifact, chunks(data[:2], data[2:]))
    assert stored["a.png"].url == f"/api/v1/tasks/{task_id}/artifacts/a.png"
    assert stored["a.png"].size == 8
    assert stored["a.png"].path is None  # the gateway's disk layout is not published
    async with gateway.client() as http:
        png = await http.get(stored["a.png"].url)
        mp4 = await http.get(stored["clip.mp4"].url)
        txt = await http.get(stored["notes.txt"].url)
    assert png.content == b"\x89PNGdata"
    assert png.headers["content-type"] == "image/png"
    assert mp4.headers["content-type"] == "video/mp4"
    assert txt.headers["content-type"].startswith("text/plain")
    assert png.headers["x-content-type-options"] == "nosniff"
    assert "sandbox" in png.headers["content-security-policy"]


async def test_same_named_outputs_get_distinct_names(tmp_path: Path) -> None:
    sink = ArtifactStore(tmp_path).sink("task1")
    first, second, third = await asyncio.gather(
        *(
            sink.store(Artifact(node_id=node, filename="ComfyUI_00001_.png"), chunks(node.encode()))
            for node in ("9", "10", "9")
        )
    )
    names = {a.url.rsplit("/", 1)[1] for a in (first, second, third)}
    assert len(names) == 3
    assert "ComfyUI_00001_.png" in names
    contents = {(tmp_path / "task1" / name).read_bytes() for name in names}
    assert contents == {b"9", b"10"}
    assert not list((tmp_path / "task1").glob(".*"))  # no partial files left


async def test_a_failed_upload_leaves_nothing(tmp_path: Path) -> None:
    async def broken() -> AsyncIterator[bytes]:
        yield b"part"
        raise RuntimeError("connection dropped")

    sink = ArtifactStore(tmp_path).sink("task1")
    with pytest.raises(RuntimeError):
        await sink.store(Artifact(node_id="1", filename="x.png"), broken())
    assert list((tmp_path / "task1").iterdir()) == []


@pytest.mark.parametrize("blocked", ["artifacts dir", "task folder"])
async def test_an_unusable_artifacts_dir_is_a_storage_error(tmp_path: Path, blocked: str) -> None:
    """A file where a folder must be: the store's mkdir fails, and that is retryable."""
    root = tmp_path / "artifacts"
    in_the_way = root if blocked == "artifacts dir" else root / "task1"
    in_the_way.parent.mkdir(parents=True, exist_ok=True)
    in_the_way.write_bytes(b"not a folder")
    sink = ArtifactStore(root).sink("task1")
    with pytest.raises(StorageError) as caught:
        await sink.store(Artifact(node_id="9", filename="x.png"), chunks(b"x"))
    assert caught.value.retryable
    assert caught.value.details == {"task_id": "task1", "path": str(root / "task1")}
    assert isinstance(caught.value.__cause__, OSError)


async def test_a_name_the_filesystem_refuses_is_a_storage_error(tmp_path: Path) -> None:
    """Reserving the name fails (too long once the node id is prefixed): nothing is left."""
    sink = ArtifactStore(tmp_path).sink("task1")
    long = "a" * 146 + ".png"
    await sink.store(Artifact(node_id="9", filename=long), chunks(b"first"))
    with pytest.raises(StorageError) as caught:
        await sink.store(Artifact(node_id="n" * 150, filename=long), chunks(b"second"))
    assert caught.value.details["path"] == str(tmp_path / "task1")
    assert [p.name for p in (tmp_path / "task1").iterdir()] == [long]


@pytest.mark.parametrize(
    "path",
    [
        "..%2F..%2Fqueue.db",
        "%2e%2e%2fwebhook_secret",
        "%2E%2E",
        ".a.png.partial",
        "a.png%00.txt",
        "..%5C..%5Cqueue.db",
    ],
)
async def test_traversal_attempts_are_404(gateway: Served, path: str) -> None:
    task_id = await submitted(gateway)
    sink = gateway.gateway.artifacts.sink(task_id)
    await sink.store(Artifact(node_id="9", filename="a.png"), chunks(b"x"))
    async with gateway.client() as http:
        response = await http.get(f"/api/v1/tasks/{task_id}/artifacts/{path}")
        up = await http.get("/api/v1/tasks/..%2F..%2F/artifacts/queue.db")
    assert response.status_code == 404
    assert up.status_code == 404
    assert "error" in response.json()


async def test_unknown_task_or_artifact_is_404(gateway: Served) -> None:
    task_id = await submitted(gateway)
    async with gateway.client() as http:
        no_task = await http.get("/api/v1/tasks/nope/artifacts/a.png")
        no_artifact = await http.get(f"/api/v1/tasks/{task_id}/artifacts/a.png")
    assert no_task.status_code == no_artifact.status_code == 404
    assert no_task.json()["error"]["details"]["task_id"] == "nope"


def test_unsafe_task_ids_cannot_get_a_sink(tmp_path: Path) -> None:
    with pytest.raises(StorageError):
        ArtifactStore(tmp_path).sink("../x")
    with pytest.raises(NotFound):
        ArtifactStore(tmp_path).path("task", "../../etc/passwd")


@pytest.mark.parametrize(
    ("given", "safe"),
    [
        ("../../etc/passwd", "passwd"),
        ("sub\\dir\\x.png", "x.png"),
        (".hidden.png", "hidden.png"),
        ("a b?.png", "a_b_.png"),
        ("..", "artifact"),
        ("", "artifact"),
        ("x..y.png", "x_y.png"),
    ],
)
def test_safe_name(given: str, safe: str) -> None:
    assert safe_name(given) == safe


RAM_DISK = Path("/dev/shm")


@pytest.mark.parametrize("across_filesystems", [False, True])
async def test_an_output_file_on_this_host_is_moved_not_read(
    tmp_path: Path, across_filesystems: bool
) -> None:
    """A local ComfyUI's output goes into the store by rename (same inode: no byte was read
    or written), or, from another filesystem, by a kernel copy; the source is gone either way
    and the same name rules apply as for streamed bytes."""
    if across_filesystems and not RAM_DISK.is_dir():
        pytest.fail("needs /dev/shm as a second filesystem")
    source_root = Path(tempfile.mkdtemp(dir=RAM_DISK)) if across_filesystems else tmp_path
    try:
        outputs = source_root / "output" / "job"
        outputs.mkdir(parents=True)
        first, second = outputs / "img_00001_.png", outputs / "img_00001_.txt"
        first.write_bytes(b"\x89PNG first")
        second.write_bytes(b"second")
        inode = first.stat().st_ino
        store = ArtifactStore(tmp_path / "artifacts")
        sink = store.sink("t1")
        art = Artifact(node_id="9", filename="img_00001_.png", subfolder="job", type="output")
        moved = await sink.move(art, first)
        again = await sink.move(art, second)  # the same name again: a distinct one
        gone = await sink.move(art, outputs / "missing.png")
    finally:
        if across_filesystems:
            shutil.rmtree(source_root)
    assert moved is not None and again is not None and gone is None
    stored = store.path("t1", "img_00001_.png")
    assert stored.read_bytes() == b"\x89PNG first" and moved.size == 10
    assert (stored.stat().st_ino == inode) is not across_filesystems
    assert not first.exists() and not second.exists()
    assert moved.url == "/api/v1/tasks/t1/artifacts/img_00001_.png"
    assert again.filename == "img_00001_.png" and again.url.endswith("/9_img_00001_.png")
    assert sorted(p.name for p in (tmp_path / "artifacts" / "t1").iterdir()) == [
        "9_img_00001_.png",
        "img_00001_.png",
    ]
