"""Artifact collection from history entries, and the inline and local sinks."""

from __future__ import annotations

import base64
import os
from collections.abc import AsyncIterator

import pytest

from comfyfleet.comfy.messages import HistoryEntry
from comfyfleet.errors import PayloadTooLarge
from comfyfleet.jobs import Artifact
from comfyfleet.outputs.collect import collect
from comfyfleet.outputs.inline import InlineSink
from comfyfleet.outputs.local import LocalSink


def entry(outputs: dict) -> HistoryEntry:
    return HistoryEntry.from_response("p", {"p": {"outputs": outputs, "status": {}}})


def test_every_kind_of_output_is_collected_in_node_order() -> None:
    got = collect(
        entry(
            {
                "10": {"text": ["hello"]},
                "9": {
                    "gifs": [
                        {
                            "filename": "clip_00001.mp4",
                            "subfolder": "job",
                            "type": "output",
                            "format": "video/h264-mp4",
                        }
                    ]
                },
                "2": {"images": [{"filename": "a.png", "subfolder": "job", "type": "output"}]},
                "3": {
                    "images": [{"filename": "anim.webp", "subfolder": "", "type": "output"}],
                    "animated": [True],
                },
                "4": {"audio": [{"filename": "s.flac", "subfolder": "", "type": "output"}]},
                "5": {"latents": [{"filename": "l.latent", "subfolder": "", "type": "output"}]},
                "6": {"images": [{"filename": "prev.png", "subfolder": "", "type": "temp"}]},
            }
        )
    )
    summary = [(a.node_id, a.kind, a.filename, a.media_type) for a in got]
    assert summary == [
        ("2", "image", "a.png", "image/png"),
        ("3", "video", "anim.webp", "image/webp"),
        ("4", "audio", "s.flac", "audio/flac"),
        ("5", "file", "l.latent", "application/octet-stream"),
        ("9", "video", "clip_00001.mp4", "video/h264-mp4"),
        ("10", "text", "10_text_0.txt", "text/plain; charset=utf-8"),
    ]
    assert got[0].subfolder == "job"
    assert got[-1].text == "hello"


def test_temp_previews_only_when_asked() -> None:
    outputs = {"6": {"images": [{"filename": "prev.png", "subfolder": "", "type": "temp"}]}}
    assert collect(entry(outputs)) == []
    assert [a.type for a in collect(entry(outputs), include_temp=True)] == ["temp"]


async def stream(data: bytes, sizes: list[int]) -> AsyncIterator[bytes]:
    at = 0
    for size in sizes:
        yield data[at : at + size]
        at += size
    if at < len(data):
        yield data[at:]


@pytest.mark.parametrize("sizes", [[], [1], [1, 1, 1, 1], [5, 7, 2], [3, 3, 3], [1000]])
async def test_inline_sink_base64_equals_whole_file(sizes: list[int]) -> None:
    data = os.urandom(1001)
    got = await InlineSink().store(Artifact(node_id="1", filename="x"), stream(data, sizes))
    assert got.data == base64.b64encode(data).decode()
    assert got.size == 1001


async def test_inline_sink_cap() -> None:
    with pytest.raises(PayloadTooLarge, match="larger than the 10 bytes allowed inline"):
        await InlineSink(max_bytes=10).store(
            Artifact(node_id="1", filename="x"), stream(b"x" * 11, [4, 4])
        )


async def test_local_sink_never_overwrites_and_strips_paths(tmp_path) -> None:
    sink = LocalSink(tmp_path / "out")
    art = Artifact(node_id="1", filename="../../evil.png")
    first = await sink.store(art, stream(b"one", [2]))
    second = await sink.store(art, stream(b"two", [2]))
    assert first.path == str(tmp_path / "out" / "evil.png")
    assert second.path == str(tmp_path / "out" / "evil (1).png")
    assert (tmp_path / "out" / "evil.png").read_bytes() == b"one"
    assert (tmp_path / "out" / "evil (1).png").read_bytes() == b"two"
    assert second.size == 3


async def test_local_sink_removes_partial_file_on_failure(tmp_path) -> None:
    async def broken() -> AsyncIterator[bytes]:
        yield b"partial"
        raise RuntimeError("connection reset")

    with pytest.raises(RuntimeError):
        await LocalSink(tmp_path).store(Artifact(node_id="1", filename="a.png"), broken())
    assert list(tmp_path.iterdir()) == []
