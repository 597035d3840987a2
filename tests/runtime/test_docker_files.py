"""The container files, checked without a Docker engine: the Dockerfile's stages and
references, the bake matrix against those stages, pinned custom nodes (and the installer run
on a local git repository), and the entrypoint's commands against our CLI."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"
HEX40 = re.compile(r"^[0-9a-f]{40}$")


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)


def parse_dockerfile(text: str) -> tuple[dict[str, str], list[Stage]]:
    """(global ARG defaults, stages): continuation lines joined, comments dropped."""
    logical, buf = [], ""
    for line in text.splitlines():
        if not buf and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            buf += line.rstrip()[:-1] + " "
            continue
        logical.append(buf + line)
        buf = ""
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        op, _, rest = line.strip().partition(" ")
        op, rest = op.upper(), rest.strip()
        if op == "FROM":
            m = re.fullmatch(r"(\S+)\s+AS\s+(\S+)", rest, re.IGNORECASE)
            assert m, f"every stage is named: {line}"
            stages.append(Stage(m.group(2), m.group(1)))
        elif not stages:
            assert op == "ARG", f"only ARG before the first FROM: {line}"
            name, _, default = rest.partition("=")
            global_args[name] = default
        else:
            stages[-1].instructions.append((op, rest))
    return global_args, stages


@pytest.fixture(scope="module")
def dockerfile() -> tuple[dict[str, str], dict[str, Stage]]:
    args, stages = parse_dockerfile((DOCKER / "Dockerfile").read_text())
    names = [s.name for s in stages]
    assert len(names) == len(set(names)), "stage names are unique"
    return args, {s.name: s for s in stages}


def stage_args(stage: Stage) -> dict[str, str]:
    return dict(r.partition("=")[::2] for op, r in stage.instructions if op == "ARG")


def test_stages_and_references(dockerfile) -> None:
    args, stages = dockerfile
    assert {"base", "build", "runtime", "dev", "nodes-minimal", "nodes-standard"} <= set(stages)
    cuda = "nvidia/cuda:${CUDA_VERSION}-cudnn-runtime-ubuntu${UBUNTU_VERSION}"
    assert stages["base"].base == cuda
    assert re.fullmatch(r"\d+\.\d+\.\d+", args["CUDA_VERSION"])
    order = list(stages)
    for i, (name, stage) in enumerate(stages.items()):
        base = stage.base.replace("${VARIANT}", args["VARIANT"])
        if base in stages:
            assert order.index(base) < i, f"{name} builds on a later stage"
        for op, rest in stage.instructions:
            m = re.match(r"--from=(\S+)", rest)
            if op == "COPY" and m:
                assert m.group(1) in order[:i], f"{name}: COPY --from={m.group(1)}"
            elif op == "COPY":
                for src in shlex.split(rest)[:-1]:
                    assert (REPO / src).exists(), f"{name}: COPY source {src} missing"


def test_every_variant_has_a_node_stage(dockerfile) -> None:
    _, stages = dockerfile
    assert stages["nodes"].base == "nodes-${VARIANT}"
    for variant in bake()["variants"]:
        if variant != "dev":
            assert f"nodes-{variant}" in stages


def test_comfyui_is_pinned_to_the_recorded_release(dockerfile) -> None:
    _, stages = dockerfile
    build = stage_args(stages["build"])
    assert build["COMFYUI_VERSION"] == "v0.8.0"
    assert HEX40.match(build["COMFYUI_COMMIT"])
    provenance = (REPO / "tests/fixtures/comfyui-protocol/README.md").read_text()
    assert f"`{build['COMFYUI_COMMIT']}`" in provenance  # the commit the recordings come from


def test_runtime_runs_the_worker_and_bakes_no_models(dockerfile) -> None:
    _, stages = dockerfile
    runtime = dict(stages["runtime"].instructions)
    assert runtime["CMD"] == '["worker"]'
    assert "comfyfleet-entrypoint" in runtime["ENTRYPOINT"]
    for stage in stages.values():
        for _op, rest in stage.instructions:
            assert not re.search(r"\.(safetensors|ckpt|gguf|pth|sft)\b", rest), rest
            assert "models sync" not in rest and "hf_hub_download" not in rest, rest


def bake() -> dict:
    text = (DOCKER / "docker-bake.hcl").read_text()
    cudas = re.findall(r'\{ short = "([\d.]+)", version = "([\d.]+)", torch = "(\w+)" \}', text)
    variants = re.findall(r'"(\w+)"', re.search(r"variant = \[(.*?)\]", text).group(1))
    groups = {
        g: re.findall(r'"([\w-]+)"', body)
        for g, body in re.findall(r'group "([\w-]+)" \{\s*targets = \[(.*?)\]', text, re.S)
    }
    targets = re.findall(r'target\s+=\s+variant == "dev" \? "(\w+)" : "(\w+)"', text)
    arg_keys = set(re.findall(r"^\s+([A-Z_]+)\s+=", text, re.M))
    return {
        "cudas": cudas,
        "variants": variants,
        "groups": groups,
        "targets": targets,
        "arg_keys": arg_keys,
        "text": text,
    }


def test_bake_matrix_is_consistent(dockerfile) -> None:
    args, stages = dockerfile
    b = bake()
    assert [c[0] for c in b["cudas"]] == ["12.4", "12.6", "12.8"]
    for short, version, torch in b["cudas"]:
        assert version.startswith(short + ".") and torch == "cu" + short.replace(".", "")
    assert b["variants"] == ["minimal", "standard", "dev"]
    assert b["targets"] == [("dev", "runtime")] and {"dev", "runtime"} <= set(stages)
    declared = set(args) | {k for s in stages.values() for k in stage_args(s)}
    assert b["arg_keys"] <= declared, b["arg_keys"] - declared  # every bake arg is a real ARG
    generated = {f"{v}-cuda{c[0].replace('.', '')}" for v in b["variants"] for c in b["cudas"]}
    for group, members in b["groups"].items():
        for member in members:
            assert member in generated or member in b["groups"], f"{group}: {member}"
    assert 'dockerfile = "docker/Dockerfile"' in b["text"] and 'context    = "."' in b["text"]


def node_lines() -> list[list[str]]:
    lines = (DOCKER / "custom_nodes.txt").read_text().splitlines()
    return [ln.split() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]


def test_custom_nodes_are_pinned() -> None:
    rows = node_lines()
    names = [r[0] for r in rows]
    assert len(names) == len(set(names))
    assert {"ComfyUI-VideoHelperSuite", "ComfyUI-Frame-Interpolation", "ComfyUI-GGUF"} <= set(names)
    for row in rows:
        assert len(row) in (3, 4), row
        assert re.fullmatch(r"https://github\.com/[\w.-]+/[\w.-]+", row[1]), row
        assert HEX40.match(row[2]), f"{row[0]}: commit must be a 40-hex SHA"


def git(*args: str, cwd: Path) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@t",
    }
    return subprocess.run(
        ["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True
    ).stdout.strip()


def test_node_installer_checks_out_the_pinned_commit(tmp_path: Path) -> None:
    src = tmp_path / "node-src"
    src.mkdir()
    git("init", "-q", cwd=src)
    (src / "nodes.py").write_text("v1")
    git("add", ".", cwd=src)
    git("commit", "-qm", "v1", cwd=src)
    pinned = git("rev-parse", "HEAD", cwd=src)
    (src / "nodes.py").write_text("v2")
    git("commit", "-qam", "v2", cwd=src)
    dest = tmp_path / "custom_nodes"
    dest.mkdir()
    listing = tmp_path / "nodes.txt"
    listing.write_text(f"# comment\n\nMyNode file://{src} {pinned}\n")
    run = subprocess.run(
        ["sh", str(DOCKER / "install_nodes.sh"), str(listing), str(dest), sys.executable],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr
    assert (dest / "MyNode/nodes.py").read_text() == "v1"
    assert not (dest / "MyNode/.git").exists()
    listing.write_text(f"Other file://{src} main\n")
    bad = subprocess.run(
        ["sh", str(DOCKER / "install_nodes.sh"), str(listing), str(dest), sys.executable],
        capture_output=True,
        text=True,
    )
    assert bad.returncode != 0 and "not a 40-hex SHA" in bad.stderr


def entrypoint_calls(env: dict[str, str], tmp_path: Path, *cmd: str) -> list[list[str]]:
    """Run the real entrypoint with a stub `comfyfleet` that records its argv."""
    stub_dir = tmp_path / "bin"
    stub_dir.mkdir(exist_ok=True)
    log = tmp_path / "calls.log"
    (stub_dir / "comfyfleet").write_text(f'#!/bin/sh\necho "$@" >> {log}\n')
    (stub_dir / "comfyfleet").chmod(0o755)
    full = {"PATH": f"{stub_dir}:/usr/bin:/bin", "COMFYUI_DIR": str(tmp_path / "c"), **env}
    subprocess.run(["sh", str(DOCKER / "entrypoint.sh"), *cmd], env=full, check=True)
    return [line.split() for line in log.read_text().splitlines()]


def test_entrypoint_wires_paths_syncs_models_then_execs(tmp_path: Path) -> None:
    calls = entrypoint_calls({"MODELS": "org/a:a.bin:vae"}, tmp_path, "worker")
    c = str(tmp_path / "c")
    assert calls == [
        ["paths", "--write", f"{c}/extra_model_paths.yaml"],
        ["models", "sync"],
        ["worker"],
    ]
    other = tmp_path / "symlink-mode"
    other.mkdir()
    env = {"COMFYFLEET_SYMLINK_MODELS": "1", "COMFYFLEET_MANIFEST": "/m.yaml"}
    calls = entrypoint_calls(env, other, "health", "--json")
    assert calls[0][-2:] == ["--symlink", f"{other / 'c'}/models"]
    assert calls[1:] == [["models", "sync", "--manifest", "/m.yaml"], ["health", "--json"]]


def cli_uses() -> list[list[str]]:
    """Every `comfyfleet ...` invocation in the entrypoint and the Dockerfile's HEALTHCHECK."""
    text = (DOCKER / "entrypoint.sh").read_text() + (DOCKER / "Dockerfile").read_text()
    text = "\n".join(ln for ln in text.splitlines() if not ln.lstrip().startswith("#"))
    text = text.replace("\\\n", " ")
    uses = []
    word = r"(?:[a-z][\w-]*|--[\w-]+)"
    for m in re.finditer(rf"\bcomfyfleet ({word}(?: {word})*)", text):
        uses.append(m.group(1).split())
    uses.append(["worker"])  # the image's CMD
    return uses


CLI_TREE = """
import json, typer
from comfyfleet.cli import build_app
def walk(cmd, path, out):
    out[" ".join(path)] = sorted(o for p in cmd.params for o in getattr(p, "opts", []))
    for name, sub in getattr(cmd, "commands", {}).items():
        walk(sub, [*path, name], out)
    return out
print(json.dumps(walk(typer.main.get_command(build_app()), [], {})))
"""


def test_every_command_the_image_calls_exists() -> None:
    """One subprocess builds the real CLI (every registered module) and lists its tree."""
    run = subprocess.run([sys.executable, "-c", CLI_TREE], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    tree = json.loads(run.stdout)
    for words in cli_uses():
        names = [w for w in words if not w.startswith("--")]
        cmd = " ".join(names[:2] if names[0] == "models" else names[:1])
        assert cmd in tree, f"`comfyfleet {cmd}` is not a command"
        for opt in (w for w in words if w.startswith("--")):
            assert opt in tree[cmd], f"`comfyfleet {cmd}` has no {opt}"
