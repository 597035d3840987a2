"""Manifest and MODELS parsing: good input parses; each mistake is named precisely."""

from __future__ import annotations

from pathlib import Path

import pytest

from comfyfleet.errors import ManifestError
from comfyfleet.models.manifest import load_manifest, parse_entries, parse_models_env

SHA = "a" * 64


def test_manifest_with_url_and_repo_entries(tmp_path: Path) -> None:
    path = tmp_path / "models.yaml"
    path.write_text(
        f"""
models:
  - url: https://example.com/files/v1/model%20x.safetensors?download=true
    folder: checkpoints
    sha256: {SHA.upper()}
    size: 10
  - repo: Comfy-Org/flux1-dev
    file: split_files/vae/ae.safetensors
    revision: main
    folder: vae
    filename: flux-ae.safetensors
"""
    )
    url, hf = load_manifest(path)
    assert url.name == "model x.safetensors" and url.sha256 == SHA and url.size == 10
    assert hf.name == "flux-ae.safetensors" and hf.source.startswith("hf://Comfy-Org/flux1-dev/")


def test_models_env_short_form() -> None:
    entries = parse_models_env("org/a:dir/a.safetensors:loras, ,org/b:b.gguf:unet")
    assert [(e.repo, e.file, e.folder, e.name) for e in entries] == [
        ("org/a", "dir/a.safetensors", "loras", "a.safetensors"),
        ("org/b", "b.gguf", "unet", "b.gguf"),
    ]
    assert parse_models_env(None) == [] and parse_models_env("") == []


@pytest.mark.parametrize(
    ("doc", "index", "field", "words"),
    [
        ([{"url": "https://x/a.bin"}], 0, "folder", "is required"),
        ([{"folder": "vae"}], 0, None, "exactly one of 'url' or 'repo'"),
        ([{"url": "https://x/a", "repo": "o/n", "file": "f", "folder": "v"}], 0, None, "exactly"),
        ([{"repo": "o/n", "folder": "vae"}], 0, None, "'repo' needs 'file'"),
        ([{"repo": "no-slash", "file": "f", "folder": "vae"}], 0, "repo", "org/name"),
        ([{"url": "ftp://x/a.bin", "folder": "vae"}], 0, "url", "http(s) URL"),
        ([{"url": "https://x/", "folder": "vae"}], 0, None, "add 'filename'"),
        ([{"url": "https://x/a", "file": "f", "folder": "vae"}], 0, None, "only go with 'repo'"),
        ([{"url": "https://x/a", "folder": "../etc"}], 0, "folder", "relative folder"),
        ([{"url": "https://x/a", "folder": "/abs"}], 0, "folder", "relative folder"),
        ([{"url": "https://x/a", "folder": "v", "filename": "a/b"}], 0, "filename", "bare file"),
        ([{"url": "https://x/a", "folder": "v", "sha256": "abc"}], 0, "sha256", "64 hex"),
        ([{"url": "https://x/a", "folder": "v", "size": 0}], 0, "size", "greater than 0"),
        ([{"url": "https://x/a", "folder": "v", "size": "big"}], 0, "size", "integer"),
        ([{"url": "https://x/a", "folder": "v", "colour": "red"}], 0, "colour", "unknown field"),
        ([{"url": "https://x/a", "folder": "v"}, "oops"], 1, None, "expected a mapping"),
        (
            [{"url": "https://x/a", "folder": "v"}, {"url": "https://y/a", "folder": "v"}],
            1,
            "filename",
            "also entry 0",
        ),
    ],
)
def test_each_entry_mistake_is_precise(
    doc: object, index: int, field: str | None, words: str
) -> None:
    with pytest.raises(ManifestError) as info:
        parse_entries(doc, "m.yaml")
    err = info.value
    assert err.details["index"] == index
    assert err.details.get("field") == field
    assert f"m.yaml: entry {index}" in err.message
    if field:
        assert f"field '{field}'" in err.message
    assert words in err.message


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("models: {a: 1}", "expected a list"),
        ("modles: []", "unknown top-level key(s) ['modles']"),
        ("models:\n  - url: [unclosed", "not valid YAML at line 2"),
    ],
)
def test_document_mistakes_are_precise(tmp_path: Path, text: str, words: str) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(text)
    with pytest.raises(ManifestError) as info:
        load_manifest(path)
    assert words in info.value.message and str(path) in info.value.message


def test_missing_manifest_file(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="cannot read"):
        load_manifest(tmp_path / "nope.yaml")


@pytest.mark.parametrize(
    ("value", "index", "words"),
    [
        ("org/a:a.bin", 0, "expected RepoID:Filename:Target"),
        ("org/a:a.bin:vae,org/b::vae", 1, "expected RepoID:Filename:Target"),
        ("org/a:a.bin:vae,org/b:b.bin:vae:extra", 1, "expected RepoID:Filename:Target"),
        ("bad repo:a.bin:vae", 0, "field 'repo'"),
        ("org/a:a.bin:../x", 0, "field 'folder'"),
    ],
)
def test_models_env_mistakes_are_precise(value: str, index: int, words: str) -> None:
    with pytest.raises(ManifestError) as info:
        parse_models_env(value)
    assert info.value.details["index"] == index
    assert info.value.message.startswith(f"MODELS: entry {index}")
    assert words in info.value.message
