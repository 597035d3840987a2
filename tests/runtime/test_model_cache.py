"""Models requested by jobs: fetched once, LRU-evicted within a byte budget, never while used."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest

from comfyfleet.errors import ForbiddenURL, ManifestError, ResourceExhausted
from comfyfleet.jobs import JobSpec
from comfyfleet.models import download as dl
from comfyfleet.models.ondemand import ModelCache, ensure_models
from comfyfleet.models.volumes import ModelRoot

SIZE = 1000


@pytest.fixture
async def cache_for(tmp_path: Path):
    made: list[ModelCache] = []

    def make(max_bytes: int = 10 * SIZE, **kw) -> ModelCache:
        cache = ModelCache(
            ModelRoot(tmp_path / "models"), max_bytes=max_bytes, allow_private_urls=True, **kw
        )
        made.append(cache)
        return cache

    yield make
    for cache in made:
        await cache.close()


def req(fileserver, name: str, folder: str = "loras", size: bool = True) -> dict:
    url = fileserver.add(f"/{name}", name.encode().ljust(SIZE, b"."))
    return {"url": url, "folder": folder, **({"size": SIZE} if size else {})}


async def test_fetches_into_the_folder_and_reuses(fileserver, cache_for, tmp_path) -> None:
    cache = cache_for()
    spec = JobSpec(workflow={"1": {}}, models=[req(fileserver, "a.safetensors")])
    async with ensure_models(spec.models, cache) as paths:
        assert paths == [tmp_path / "models/loras/a.safetensors"]
        assert paths[0].stat().st_size == SIZE
    async with ensure_models(spec.models, cache):
        pass
    assert len(fileserver.gets()) == 1
    assert cache.cached_bytes() == SIZE


async def test_same_file_asked_by_three_jobs_at_once_downloads_once(
    fileserver, cache_for, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = cache_for()
    r = req(fileserver, "same.bin")
    fileserver.gate = asyncio.Event()
    calls, all_asked = 0, asyncio.Event()
    real_fetch = cache.fetch

    async def counting_fetch(entry):
        nonlocal calls
        calls += 1
        if calls == 3:
            all_asked.set()
        return await real_fetch(entry)

    monkeypatch.setattr(cache, "fetch", counting_fetch)

    async def job() -> Path:
        async with ensure_models([r], cache) as (path,):
            return path

    jobs = asyncio.gather(job(), job(), job())
    await all_asked.wait()  # all three asked while the download is held open
    fileserver.gate.set()
    assert len(set(await jobs)) == 1
    assert len(fileserver.gets()) == 1


async def test_two_workers_on_one_volume_download_once(
    fileserver, cache_for, monkeypatch: pytest.MonkeyPatch
) -> None:
    one, two = cache_for(), cache_for()
    r = req(fileserver, "shared.bin")
    fileserver.gate = asyncio.Event()
    waiting, both = [], asyncio.Event()
    real_lock = dl.file_lock

    @contextlib.asynccontextmanager
    async def spy(dest: Path, **kw):
        if dest.name == "shared.bin":
            waiting.append(dest)
            if len(waiting) == 2:
                both.set()
        async with real_lock(dest, **kw):
            yield

    monkeypatch.setattr(dl, "file_lock", spy)

    async def job(cache: ModelCache) -> None:
        async with ensure_models([r], cache):
            pass

    first = asyncio.create_task(job(one))
    await fileserver.got_get.wait()
    second = asyncio.create_task(job(two))
    await both.wait()  # worker two is queued on the file's lock
    fileserver.gate.set()
    await asyncio.gather(first, second)
    assert len(fileserver.gets()) == 1


async def test_least_recently_used_file_is_evicted(fileserver, cache_for, tmp_path) -> None:
    cache = cache_for(max_bytes=2 * SIZE)
    a, b, c = (req(fileserver, n) for n in ("a.bin", "b.bin", "c.bin"))
    for r in (a, b, a):  # a is used again after b: b is now the least recent
        async with ensure_models([r], cache):
            pass
    async with ensure_models([c], cache):
        pass
    loras = tmp_path / "models/loras"
    assert sorted(p.name for p in loras.iterdir() if not p.name.startswith(".")) == [
        "a.bin",
        "c.bin",
    ]
    assert cache.cached_bytes() == 2 * SIZE


async def test_unknown_size_is_evicted_after_download(fileserver, cache_for, tmp_path) -> None:
    cache = cache_for(max_bytes=SIZE)
    for name in ("a.bin", "b.bin"):
        async with ensure_models([req(fileserver, name, size=False)], cache):
            pass
    assert not (tmp_path / "models/loras/a.bin").exists()
    assert (tmp_path / "models/loras/b.bin").exists()


async def test_file_in_use_is_never_evicted(fileserver, cache_for, tmp_path) -> None:
    cache = cache_for(max_bytes=SIZE + SIZE // 2)
    a, b = req(fileserver, "a.bin"), req(fileserver, "b.bin")
    async with ensure_models([a], cache) as (path,):
        with pytest.raises(ResourceExhausted, match="model cache full"):
            async with ensure_models([b], cache):
                pass
        assert path.exists()
    async with ensure_models([b], cache):  # once released, a can go
        pass
    assert not path.exists()


async def test_file_used_by_another_worker_is_never_evicted(fileserver, cache_for) -> None:
    one, two = cache_for(max_bytes=SIZE), cache_for(max_bytes=SIZE)
    a, b = req(fileserver, "a.bin"), req(fileserver, "b.bin")
    async with ensure_models([a], one) as (path,):
        with pytest.raises(ResourceExhausted):
            async with ensure_models([b], two):  # two has no refs of its own: flock tells it
                pass
        assert path.exists()


async def test_files_not_downloaded_by_the_cache_are_never_evicted(
    fileserver, cache_for, tmp_path
) -> None:
    mine = tmp_path / "models/loras/mine.bin"
    mine.parent.mkdir(parents=True)
    mine.write_bytes(b"m" * SIZE)
    cache = cache_for(max_bytes=SIZE)
    url = fileserver.add("/mine.bin", b"never fetched")
    async with ensure_models([{"url": url, "folder": "loras"}], cache) as (path,):
        assert path == mine
    for name in ("x.bin", "y.bin"):
        async with ensure_models([req(fileserver, name)], cache):
            pass
    assert mine.read_bytes() == b"m" * SIZE
    assert [h.path for h in fileserver.gets()] == ["/x.bin", "/y.bin"]


async def test_private_addresses_are_refused_by_default(fileserver, tmp_path) -> None:
    cache = ModelCache(ModelRoot(tmp_path), max_bytes=SIZE)
    with pytest.raises(ForbiddenURL, match=r"non-public address 127\.0\.0\.1"):
        async with ensure_models([req(fileserver, "a.bin")], cache):
            pass
    assert fileserver.hits == []


async def test_bad_request_names_the_field(cache_for) -> None:
    with pytest.raises(ManifestError, match=r"models\[1\]\.sha256: must be 64 hex"):
        async with ensure_models(
            [
                {"url": "https://x/a.bin", "folder": "loras"},
                {"url": "https://x/b.bin", "folder": "loras", "sha256": "nope"},
            ],
            cache_for(),
        ):
            pass
