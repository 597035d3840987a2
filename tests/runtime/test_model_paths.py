"""Volume detection and extra_model_paths.yaml / symlink wiring on fake volume trees."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

from comfyfleet.models.folders import ALL_FOLDERS, CORE_FOLDERS, LEGACY_ALIASES
from comfyfleet.models.paths import build_config, generate, link_folders, render
from comfyfleet.models.volumes import ModelRoot, detect_roots

PROTOCOL = (
    Path(__file__).resolve().parents[1] / "fixtures" / "comfyui-protocol" / "h_endpoints.json"
)


def comfy_reads(text: str) -> dict[str, list[str]]:
    """Resolve a YAML the way ComfyUI's utils/extra_config.py does: folder -> absolute dirs,
    with folder_paths.map_legacy applied."""
    out: dict[str, list[str]] = {}
    for conf in yaml.safe_load(text).values():
        conf = dict(conf)
        base = conf.pop("base_path", None)
        conf.pop("is_default", None)
        for name, value in conf.items():
            for rel in value.split("\n"):
                if rel:
                    full = os.path.normpath(os.path.join(base, rel) if base else rel)
                    out.setdefault(LEGACY_ALIASES.get(name, name), []).append(full)
    return out


def mkdirs(base: Path, *rels: str) -> None:
    for rel in rels:
        (base / rel).mkdir(parents=True, exist_ok=True)


@pytest.mark.parametrize(
    ("mount", "rel", "layout"),
    [
        ("runpod-volume", "comfyui/models", "comfyui"),  # seed 001, serverless
        ("workspace", "comfyui/models", "comfyui"),  # seed 001, pod
        ("workspace", "ComfyUI/models", "comfyui"),  # ComfyUI installed on the volume
        ("runpod-volume", "models", "comfyui"),  # plain models dir
        ("workspace", "models", "comfyui"),  # seed 003
        ("runpod-volume", "SwarmUI/Models", "swarmui"),  # seed 000
        ("runpod-volume", "SwarmUI/dlbackend/ComfyUI/models", "comfyui"),  # seed 000 backend
    ],
)
def test_each_seed_layout_is_detected(tmp_path: Path, mount: str, rel: str, layout: str) -> None:
    bases = [tmp_path / "runpod-volume", tmp_path / "workspace"]
    mkdirs(tmp_path / mount, rel)
    found = detect_roots(bases=bases)
    assert [(r.path, r.layout) for r in found.roots] == [(tmp_path / mount / rel, layout)]


def test_no_volume_means_no_roots(tmp_path: Path) -> None:
    assert detect_roots(bases=[tmp_path / "runpod-volume"]).roots == []


def test_configured_roots_come_first_and_same_dir_counts_once(tmp_path: Path) -> None:
    vol = tmp_path / "runpod-volume"
    mkdirs(vol, "comfyui/models", "models")
    (tmp_path / "workspace").symlink_to(vol)  # one volume under both mount points
    mine = tmp_path / "mine"
    found = detect_roots([mine], bases=[vol, tmp_path / "workspace"], create=True)
    assert [r.path for r in found.roots] == [mine, vol / "comfyui/models", vol / "models"]
    assert found.roots[0].source == "configured"


def test_missing_configured_root_is_reported(tmp_path: Path) -> None:
    found = detect_roots([tmp_path / "nope"], bases=[])
    assert found.roots == [] and found.missing == [tmp_path / "nope"]


@pytest.mark.parametrize(
    ("rel", "layout"),
    [
        ("comfyui/models", "comfyui"),
        ("ComfyUI/models", "comfyui"),
        ("models", "comfyui"),
        ("SwarmUI/Models", "swarmui"),
    ],
)
def test_a_root_given_one_level_too_high_finds_the_models_below(
    tmp_path: Path, rel: str, layout: str
) -> None:
    mkdirs(tmp_path / "vol", f"{rel}/loras")
    found = detect_roots([tmp_path / "vol"], bases=[])
    assert [(r.path, r.layout) for r in found.roots] == [(tmp_path / "vol" / rel, layout)]
    assert found.descended == {tmp_path / "vol": tmp_path / "vol" / rel}
    assert found.empty == []


def test_a_root_with_model_folders_is_used_as_given(tmp_path: Path) -> None:
    mkdirs(tmp_path / "vol", "checkpoints", "models/loras")  # its own folders win
    found = detect_roots([tmp_path / "vol"], bases=[])
    assert [r.path for r in found.roots] == [tmp_path / "vol"] and found.descended == {}


def test_a_root_without_models_anywhere_is_reported_empty(tmp_path: Path) -> None:
    mkdirs(tmp_path / "vol", "notes")
    found = detect_roots([tmp_path / "vol"], bases=[])
    assert [r.path for r in found.roots] == [tmp_path / "vol"]
    assert found.empty == [tmp_path / "vol"]


def test_yaml_covers_every_folder_comfyui_lists(tmp_path: Path) -> None:
    recorded = next(
        e["response"]["json"]
        for e in json.loads(PROTOCOL.read_text())["exchanges"]
        if e["request"]["path"] == "/models"
    )
    root = ModelRoot(tmp_path / "models")
    seen = comfy_reads(render(build_config([root])))
    assert set(recorded) - {"custom_nodes"} <= set(seen)
    assert "custom_nodes" not in seen
    assert set(CORE_FOLDERS) == set(recorded) - {"custom_nodes"}  # our list is the recorded one
    for name in [
        "ultralytics_bbox",
        "ultralytics_segm",
        "sams",
        "insightface",
        "LLM",
        "facerestore_models",
        "florence2",
        "mmdets",
        "onnx",
        "ipadapter",
        "animatediff_models",
    ]:
        assert name in seen, name
    assert seen["ultralytics_bbox"] == [str(root.path / "ultralytics/bbox")]
    # legacy names reach the new folders, as ComfyUI's own defaults do
    assert str(root.path / "clip") in seen["text_encoders"]
    assert str(root.path / "unet") in seen["diffusion_models"]


def test_yaml_first_root_is_default_and_extra_dirs_are_kept(tmp_path: Path) -> None:
    a, b = ModelRoot(tmp_path / "a"), ModelRoot(tmp_path / "b")
    mkdirs(b.path, "my_custom_folder", ".hidden", "custom_nodes")
    config = yaml.safe_load(render(build_config([a, b])))
    first, second = config.values()
    assert first["is_default"] is True and "is_default" not in second
    assert second["my_custom_folder"] == "my_custom_folder"
    assert ".hidden" not in second and "custom_nodes" not in second


def test_swarmui_root_maps_its_names(tmp_path: Path) -> None:
    swarm = ModelRoot(tmp_path / "SwarmUI/Models", "swarmui")
    mkdirs(swarm.path, "Stable-Diffusion", "Loras", "VAE", "ControlNet", "Output-ish")
    seen = comfy_reads(render(build_config([swarm])))
    assert seen["checkpoints"] == [str(swarm.path / "Stable-Diffusion")]
    assert seen["loras"] == [str(swarm.path / "Loras")]
    assert seen["controlnet"] == [str(swarm.path / "ControlNet")]
    assert "upscale_models" not in seen  # SwarmUI roots list only what exists


def test_generate_is_idempotent_and_creates_folders(tmp_path: Path) -> None:
    root = ModelRoot(tmp_path / "vol/comfyui/models")
    root.path.mkdir(parents=True)
    out = tmp_path / "comfy/extra_model_paths.yaml"
    text1, created, _ = generate([root], write=out, create=True)
    assert {p.relative_to(root.path).as_posix() for p in created} == {
        dirs[0] for dirs in ALL_FOLDERS.values()
    }
    mtime = out.stat().st_mtime_ns
    text2, created2, _ = generate([root], write=out, create=True)
    assert text1 == text2 == out.read_text() and created2 == []
    assert out.stat().st_mtime_ns == mtime  # unchanged file is not rewritten


def test_only_root_dirs_are_listed_never_model_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = ModelRoot(tmp_path / "models")
    for i in range(50):
        d = root.path / "loras" / f"sub{i}"
        d.mkdir(parents=True)
        (d / "x.safetensors").write_bytes(b"")
    scanned: list[str] = []
    real = os.scandir

    def spy(path: object = ".") -> object:
        scanned.append(str(path))
        return real(path)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "scandir", spy)
    monkeypatch.setattr(os, "walk", lambda *a, **k: pytest.fail("walked files"))
    build_config([root])
    link_folders([root], tmp_path / "comfy/models")
    assert set(scanned) <= {str(root.path), str(tmp_path / "comfy/models/loras")}


def test_symlink_mode_reproduces_seed_001(tmp_path: Path) -> None:
    vol = tmp_path / "runpod-volume/comfyui/models"
    mkdirs(
        vol,
        "vae",
        "clip",
        "checkpoints",
        "unet",
        "loras",
        "upscale_models",
        "text_encoders",
        "diffusion_models",
        "custom_nodes",
    )
    local = tmp_path / "comfyui/models"
    mkdirs(local, "vae", "loras")
    (local / "vae/put_vae_here").write_text("")  # ComfyUI's git placeholder
    report = link_folders([ModelRoot(vol)], local)
    assert len(report.linked) == 8 and not report.skipped
    for name in ["vae", "clip", "checkpoints", "unet", "loras", "diffusion_models"]:
        assert (local / name).is_symlink()
        assert (local / name).resolve() == (vol / name).resolve()
    assert not (local / "custom_nodes").exists()
    again = link_folders([ModelRoot(vol)], local)  # idempotent: nothing re-made or duplicated
    assert again.linked == [] and len(again.kept) == 8
    assert sorted(p.name for p in local.iterdir()) == sorted(
        [
            "vae",
            "clip",
            "checkpoints",
            "unet",
            "loras",
            "upscale_models",
            "text_encoders",
            "diffusion_models",
        ]
    )


def test_symlink_mode_never_removes_a_local_folder_with_files(tmp_path: Path) -> None:
    vol = tmp_path / "vol"
    mkdirs(vol, "loras")
    local = tmp_path / "models"
    (local / "loras").mkdir(parents=True)
    (local / "loras/mine.safetensors").write_bytes(b"keep")
    report = link_folders([ModelRoot(vol)], local)
    assert local / "loras" in report.skipped
    assert (local / "loras/mine.safetensors").read_bytes() == b"keep"


def test_symlink_mode_repoints_a_stale_link(tmp_path: Path) -> None:
    old, new = tmp_path / "old", tmp_path / "new"
    mkdirs(old, "vae")
    mkdirs(new, "vae")
    local = tmp_path / "models"
    link_folders([ModelRoot(old)], local)
    report = link_folders([ModelRoot(new)], local)
    assert report.linked == [local / "vae"]
    assert (local / "vae").resolve() == (new / "vae").resolve()
