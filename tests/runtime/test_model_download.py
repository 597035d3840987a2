"""Downloads against a loopback server: resume, checksums, locking, host cache, HF hub."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import socket
from pathlib import Path

import aiohttp
import pytest

from comfyfleet.errors import ChecksumMismatch, ModelDownloadError
from comfyfleet.models import download as dl
from comfyfleet.models.hfcache import find_cached, parse_hf_url
from comfyfleet.models.manifest import ModelEntry
from comfyfleet.models.sync import Sources, status, sync
from comfyfleet.models.volumes import ModelRoot

BODY = bytes(range(256)) * 40  # 10 240 bytes
SHA = hashlib.sha256(BODY).hexdigest()


@pytest.fixture
async def session():
    async with aiohttp.ClientSession() as s:
        yield s


async def test_cut_connection_is_resumed_with_range(fileserver, session, tmp_path: Path) -> None:
    url = fileserver.add("/m.safetensors", BODY)
    fileserver.cut_after["/m.safetensors"] = [3000, 7000]  # two drops: at 3000, then 3000+7000
    dest = tmp_path / "loras/m.safetensors"
    got = await dl.download_url(url, dest, session=session, sha256=SHA, size=len(BODY))
    assert got == len(BODY) and dest.read_bytes() == BODY
    ranges = [h.headers.get("range") for h in fileserver.gets()]
    assert ranges == [None, "bytes=3000-", "bytes=10000-"]
    assert not dl.part_path(dest).exists()


async def test_interrupted_download_resumes_in_a_later_call(
    fileserver, session, tmp_path: Path
) -> None:
    url = fileserver.add("/m.bin", BODY)
    fileserver.cut_after["/m.bin"] = [4096]
    dest = tmp_path / "m.bin"
    with pytest.raises(ModelDownloadError, match="4096 bytes kept"):
        await dl.download_url(url, dest, session=session, sha256=SHA, attempts=1)
    assert dl.part_path(dest).stat().st_size == 4096 and not dest.exists()
    await dl.download_url(url, dest, session=session, sha256=SHA)  # new call, rehashes prefix
    assert dest.read_bytes() == BODY
    assert [h.headers.get("range") for h in fileserver.gets()] == [None, "bytes=4096-"]


async def test_server_ignoring_range_restarts_cleanly(fileserver, session, tmp_path: Path) -> None:
    url = fileserver.add("/m.bin", BODY)
    fileserver.cut_after["/m.bin"] = [1000]
    fileserver.ignore_range = True
    dest = tmp_path / "m.bin"
    await dl.download_url(url, dest, session=session, sha256=SHA)
    assert dest.read_bytes() == BODY


async def test_complete_part_file_is_finished_by_a_416(fileserver, session, tmp_path) -> None:
    url = fileserver.add("/m.bin", BODY)
    dest = tmp_path / "m.bin"
    dl.part_path(dest).write_bytes(BODY)  # crashed after the last byte, before the rename
    await dl.download_url(url, dest, session=session, sha256=SHA)
    assert dest.read_bytes() == BODY
    assert [h.headers.get("range") for h in fileserver.gets()] == [f"bytes={len(BODY)}-"]


async def test_checksum_mismatch_is_refused_and_cleaned_up(
    fileserver, session, tmp_path: Path
) -> None:
    url = fileserver.add("/m.bin", BODY)
    dest = tmp_path / "m.bin"
    wrong = "0" * 64
    with pytest.raises(ChecksumMismatch) as info:
        await dl.download_url(url, dest, session=session, sha256=wrong)
    assert f"expected {wrong}, got {SHA}" in info.value.message
    assert info.value.details["actual_sha256"] == SHA
    assert not dest.exists() and not dl.part_path(dest).exists()


async def test_size_mismatch_is_refused(fileserver, session, tmp_path: Path) -> None:
    url = fileserver.add("/m.bin", BODY)
    dest = tmp_path / "m.bin"
    with pytest.raises(ChecksumMismatch, match=f"expected 5 bytes, got {len(BODY)}"):
        await dl.download_url(url, dest, session=session, size=5)
    assert not dest.exists() and not dl.part_path(dest).exists()


async def test_http_404_is_not_retried(fileserver, session, tmp_path: Path) -> None:
    with pytest.raises(ModelDownloadError, match="HTTP 404") as info:
        await dl.download_url(fileserver.url + "/nope", tmp_path / "x", session=session)
    assert info.value.details["http"] == 404 and len(fileserver.gets()) == 1


async def test_two_concurrent_syncs_download_once(
    fileserver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two 'workers' (own sessions, own lock objects) want the same file at the same time."""
    url = fileserver.add("/big.safetensors", BODY)
    entry = ModelEntry(url=url, folder="checkpoints", sha256=SHA)
    root = ModelRoot(tmp_path / "vol/models")
    fileserver.gate = asyncio.Event()
    at_lock: list[Path] = []
    both_at_lock = asyncio.Event()
    real_lock = dl.file_lock

    @contextlib.asynccontextmanager
    async def spy_lock(dest: Path, **kw):
        at_lock.append(dest)
        if len(at_lock) == 2:
            both_at_lock.set()
        async with real_lock(dest, **kw):
            yield

    monkeypatch.setattr(dl, "file_lock", spy_lock)
    first = asyncio.create_task(sync([entry], root, sources=Sources()))
    await fileserver.got_get.wait()  # worker 1 holds the lock and is downloading
    second = asyncio.create_task(sync([entry], root, sources=Sources()))
    await both_at_lock.wait()  # worker 2 found no file and queued for the lock
    fileserver.gate.set()
    (a,), (b,) = await asyncio.gather(first, second)
    assert (a.how, b.how) == ("downloaded", "present")
    assert len(fileserver.gets()) == 1
    assert (root.path / "checkpoints/big.safetensors").read_bytes() == BODY


async def test_host_cache_takes_precedence(fileserver, hf_cache, tmp_path: Path) -> None:
    cache = tmp_path / "huggingface-cache"
    snap = hf_cache(cache, "org/model", "split/vae.safetensors", BODY)
    fileserver.add_hf("org/model", "split/vae.safetensors", BODY)  # would serve it, must not
    entries = [ModelEntry(repo="org/model", file="split/vae.safetensors", folder="vae", sha256=SHA)]
    root = ModelRoot(tmp_path / "models")
    sources = Sources(hf_cache_dir=cache, hf_endpoint=fileserver.url)
    (out,) = await sync(entries, root, sources=sources)
    assert out.how == "linked" and out.error is None
    assert out.path.is_symlink() and out.path.resolve() == snap.resolve()
    assert fileserver.hits == []
    (again,) = await sync(entries, root, sources=sources)
    assert again.how == "present" and fileserver.hits == []


async def test_cache_blob_with_other_sha_is_not_linked(fileserver, hf_cache, tmp_path) -> None:
    cache = tmp_path / "hf"
    hf_cache(cache, "org/model", "m.bin", b"stale bytes")
    fileserver.add_hf("org/model", "m.bin", BODY)
    entries = [ModelEntry(repo="org/model", file="m.bin", folder="vae", sha256=SHA)]
    sources = Sources(hf_cache_dir=cache, hf_endpoint=fileserver.url)
    (out,) = await sync(entries, ModelRoot(tmp_path / "models"), sources=sources)
    assert out.how == "downloaded" and not out.path.is_symlink()
    assert out.path.read_bytes() == BODY


async def test_hf_download_through_huggingface_hub(fileserver, tmp_path: Path) -> None:
    fileserver.add_hf("org/model", "sub/ae.safetensors", BODY)
    entries = [
        ModelEntry(repo="org/model", file="sub/ae.safetensors", folder="clip", sha256=SHA),
        ModelEntry(repo="org/model", file="sub/ae.safetensors", folder="vae", sha256="1" * 64),
    ]
    root = ModelRoot(tmp_path / "models")
    ok, bad = await sync(entries, root, sources=Sources(hf_endpoint=fileserver.url))
    assert ok.how == "downloaded" and ok.path == root.path / "text_encoders/ae.safetensors"
    assert ok.path.read_bytes() == BODY
    assert isinstance(bad.error, ChecksumMismatch) and not bad.path.exists()
    staged = list((root.path / "vae").rglob("*.safetensors"))
    assert staged == []  # the mismatching staged file was deleted too


async def test_sync_reports_each_failure_and_keeps_going(fileserver, tmp_path: Path) -> None:
    good = ModelEntry(url=fileserver.add("/a.bin", BODY), folder="loras")
    missing = ModelEntry(url=fileserver.url + "/gone.bin", folder="loras")
    a, b = await sync([good, missing], ModelRoot(tmp_path), sources=Sources())
    assert a.how == "downloaded" and a.error is None
    assert isinstance(b.error, ModelDownloadError) and b.how is None


def test_status_present_missing_corrupt(tmp_path: Path) -> None:
    root = ModelRoot(tmp_path)
    (tmp_path / "vae").mkdir()
    (tmp_path / "vae/ok.bin").write_bytes(BODY)
    (tmp_path / "vae/short.bin").write_bytes(BODY[:10])
    (tmp_path / "vae/bad.bin").write_bytes(b"x" * len(BODY))
    (tmp_path / "vae/dangling.bin").symlink_to(tmp_path / "nowhere")
    mk = lambda name: ModelEntry(  # noqa: E731
        url=f"https://example.com/{name}", folder="vae", sha256=SHA, size=len(BODY)
    )
    entries = [mk(n) for n in ["ok.bin", "short.bin", "bad.bin", "dangling.bin", "none.bin"]]
    fast = [(s.state, s.detail.split(",")[0]) for s in status(entries, [root])]
    assert fast == [
        ("present", ""),
        ("corrupt", "size 10"),
        ("present", ""),  # same size; sha only checked with verify
        ("missing", "broken link"),
        ("missing", ""),
    ]
    assert status(entries, [root], verify=True)[2].state == "corrupt"


def test_hf_url_and_cache_lookup(hf_cache, tmp_path: Path) -> None:
    assert parse_hf_url("https://huggingface.co/org/n/resolve/main/a/b.bin?download=true") == (
        "org/n",
        "main",
        "a/b.bin",
    )
    assert parse_hf_url("https://example.com/org/n/resolve/main/b.bin") is None
    snap = hf_cache(tmp_path, "org/n", "a/b.bin", BODY)
    commit = snap.parent.parent.name
    assert find_cached(tmp_path, "org/n", "a/b.bin", None) == snap
    assert find_cached(tmp_path / "hub", "org/n", "a/b.bin", commit) == snap
    assert find_cached(tmp_path, "org/n", "a/b.bin", "v2") is None
    assert find_cached(tmp_path, "org/other", "a/b.bin", None) is None


def closed_port() -> int:
    """A loopback port nobody listens on (connections to it are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def test_unreachable_hub_fails_at_once_with_what_to_do(tmp_path: Path) -> None:
    """huggingface_hub alone retries for ~23 s and then prints a page; we say it in a line."""
    port = closed_port()
    entry = ModelEntry(repo="org/model", file="m.bin", folder="vae")
    sources = Sources(hf_endpoint=f"http://127.0.0.1:{port}")
    (out,) = await sync([entry], ModelRoot(tmp_path), sources=sources)
    assert isinstance(out.error, ModelDownloadError) and out.how is None
    assert out.error.message == (
        f"hf://org/model/m.bin: connection to 127.0.0.1:{port} refused; check the network "
        "(or HF_ENDPOINT), or pre-seed the host cache (COMFYFLEET_HF_CACHE_DIR)"
    )
    assert out.error.details["reason"] == "unreachable"


async def test_unreachable_url_is_not_retried(tmp_path: Path) -> None:
    port = closed_port()
    url = f"http://127.0.0.1:{port}/a.bin"
    (out,) = await sync(
        [ModelEntry(url=url, folder="loras")], ModelRoot(tmp_path), sources=Sources()
    )
    dest = tmp_path / "loras/a.bin"
    assert isinstance(out.error, ModelDownloadError)
    assert out.error.message == (
        f"{url}: connection to 127.0.0.1:{port} refused; check the network and the URL, "
        f"or put the file at {dest}"
    )
    assert not dest.exists() and not dl.part_path(dest).exists()


async def test_a_file_the_hub_does_not_have_is_one_line(fileserver, tmp_path: Path) -> None:
    entry = ModelEntry(repo="org/model", file="nope.bin", folder="vae")
    sources = Sources(hf_endpoint=fileserver.url)
    (out,) = await sync([entry], ModelRoot(tmp_path), sources=sources)
    assert isinstance(out.error, ModelDownloadError)
    assert out.error.message == (
        "hf://org/model/nope.bin: no such file in the repository: check 'file' and 'revision'"
    )
