"""Local sources for provisioning tests, so the real code paths run without the internet:
bare git repositories of a stand-in ComfyUI (its ``main.py`` starts comfyfleet's test server
with ComfyUI's flags), a custom node and a stand-in SwarmUI (its launch script serves the
SwarmUI API calls the worker makes), and a directory of tiny wheels for their requirements."""

from __future__ import annotations

import base64
import hashlib
import os
import site
import subprocess
import zipfile
from dataclasses import dataclass
from pathlib import Path

COMFY_MAIN = '''"""Stand-in ComfyUI main.py: ComfyUI's flags, then comfyfleet's test server."""
import argparse
import os
import sys
import time

import standin_runtime  # from requirements.txt: proves the volume's venv runs this file

time.sleep(float(os.environ.get("STANDIN_BOOT_SECONDS", "0")))  # a real ComfyUI imports torch

print(f"stand-in ComfyUI {VERSION} on python {sys.prefix}", flush=True)
from comfyfleet.testing.__main__ import main

parser = argparse.ArgumentParser()
parser.add_argument("--port", type=int, default=8188)
parser.add_argument("--listen", default="127.0.0.1")
parser.add_argument("--extra-model-paths-config", default=None)
args, _unknown = parser.parse_known_args()
root = os.path.dirname(os.path.abspath(__file__))
sys.exit(main(["--port", str(args.port), "--host", args.listen, "--root", root]))
'''

SWARM_LAUNCH = """#!/bin/sh
# Stand-in for SwarmUI's launch-linux.sh: the real one runs the dotnet build's output.
cd "$(dirname "$0")"
exec "${STANDIN_PYTHON:-python3}" swarm_standin.py "$@"
"""

SWARM_SERVER = '''"""A tiny SwarmUI: the API calls comfyfleet's worker makes (stdlib only)."""
import argparse
import json
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

p = argparse.ArgumentParser()
p.add_argument("--host", default="127.0.0.1")
p.add_argument("--port", type=int, default=7801)
p.add_argument("--launch_mode", default="none")
args = p.parse_args()
if not os.path.exists("src/bin/live_release/built"):
    sys.exit("stand-in SwarmUI: not built (run the build step first)")
sessions = 0


class Handler(BaseHTTPRequestHandler):
    def _send(self, body, status=200):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path == "/API/ListModels":
            return self._send({"files": [{"name": "sdxl.safetensors"}]})
        self._send({"name": "SwarmUI stand-in"})

    def do_POST(self):
        global sessions
        size = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(size) or b"null")
        if self.path == "/API/GetNewSession":
            sessions += 1
            return self._send({"session_id": f"sess-{sessions}", "version": "0.9.7-standin"})
        if self.path == "/API/GenerateText2Image":
            return self._send({"images": ["View/local/raw/x.png"], "echo": body})
        if self.path == "/API/Crash":
            os._exit(3)
        self._send({"error": f"unknown route {self.path}"}, 404)

    def log_message(self, fmt, *a):
        print("swarm:", fmt % a, flush=True)


print(f"stand-in SwarmUI listening on {args.host}:{args.port}", flush=True)
ThreadingHTTPServer((args.host, args.port), Handler).serve_forever()
'''

SWARM_BUILD = """#!/bin/sh
# Stand-in build step. With STANDIN_BUILD_GATE set, it says so and waits for that file.
set -e
if [ -n "${STANDIN_BUILD_GATE:-}" ]; then
    : > "$STANDIN_BUILD_GATE.waiting"
    while [ ! -e "$STANDIN_BUILD_GATE" ]; do sleep 0.05; done
fi
mkdir -p src/bin/live_release
: > src/bin/live_release/built
echo built
"""


def git(*args: str, cwd: Path) -> str:
    env = dict(
        os.environ,
        GIT_AUTHOR_NAME="t",
        GIT_AUTHOR_EMAIL="t@example.com",
        GIT_COMMITTER_NAME="t",
        GIT_COMMITTER_EMAIL="t@example.com",
    )
    return subprocess.run(
        ["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True
    ).stdout.strip()


def commit_files(work: Path, files: dict[str, str], message: str, tag: str | None = None) -> str:
    for rel, text in files.items():
        path = work / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        if rel.endswith(".sh"):
            path.chmod(0o755)
    git("add", "-A", cwd=work)
    git("commit", "-q", "-m", message, cwd=work)
    if tag:
        git("tag", "-a", tag, "-m", tag, cwd=work)
    return git("rev-parse", "HEAD", cwd=work)


def bare(work: Path, dest: Path) -> Path:
    git("clone", "-q", "--bare", str(work), str(dest), cwd=work.parent)
    return dest


def build_wheel(dest_dir: Path, name: str, version: str, files: dict[str, str]) -> Path:
    """A pure-Python wheel made by hand (no build backend, no network)."""
    dist = f"{name.replace('-', '_')}-{version}"
    info = f"{dist}.dist-info"
    files = dict(files)
    files[f"{info}/METADATA"] = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
    files[f"{info}/WHEEL"] = (
        "Wheel-Version: 1.0\nGenerator: comfyfleet-tests\nRoot-Is-Purelib: true\n"
        "Tag: py3-none-any\n"
    )
    record = []
    for rel, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=")
        record.append(f"{rel},sha256={digest.decode()},{len(text.encode())}")
    record.append(f"{info}/RECORD,,")
    files[f"{info}/RECORD"] = "\n".join(record) + "\n"
    dest_dir.mkdir(parents=True, exist_ok=True)
    path = dest_dir / f"{dist}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        for rel, text in files.items():
            zf.writestr(rel, text)
    return path


@dataclass
class Sources:
    comfy_repo: Path
    v1_commit: str  # tag v0.8.0
    v2_commit: str  # tag v0.9.0 (adds a requirement)
    node_repo: Path
    node_commit: str
    swarm_repo: Path
    wheels: Path

    def env(self, volume: Path, **more: str) -> dict[str, str]:
        """The environment of a worker/provision run against these sources."""
        return {
            "COMFYFLEET_PROVISION": "auto",
            "COMFYFLEET_PROVISION_DIR": str(volume),
            "COMFYFLEET_VOLUME_BASES": str(volume),
            "COMFYFLEET_COMFYUI_REPO": str(self.comfy_repo),
            "COMFYFLEET_COMFYUI_REF": "v0.8.0",
            "COMFYFLEET_COMFYUI_COMMIT": self.v1_commit,
            "COMFYFLEET_CUSTOM_NODES": f"{self.node_repo}@{self.node_commit}",
            "COMFYFLEET_PROVISION_NO_INDEX": "1",
            "COMFYFLEET_PROVISION_FIND_LINKS": str(self.wheels),
            **more,
        }


def make_sources(tmp: Path) -> Sources:
    """The stand-in repositories and wheels under ``tmp``."""
    here = site.getsitepackages()[0]  # where comfyfleet and the test server's deps live
    wheels = tmp / "wheels"
    pth = f"import site; site.addsitedir({here!r})\n"
    build_wheel(
        wheels,
        "standin-runtime",
        "1.0",
        {"standin_runtime/__init__.py": "", "standin_runtime.pth": pth},
    )
    build_wheel(wheels, "standin-extra", "1.0", {"standin_extra/__init__.py": ""})
    build_wheel(wheels, "standin-node-dep", "1.0", {"standin_node_dep/__init__.py": ""})

    work = tmp / "src" / "ComfyUI"
    work.mkdir(parents=True)
    git("init", "-q", "-b", "master", cwd=work)
    v1 = commit_files(
        work,
        {
            "main.py": COMFY_MAIN.replace("{VERSION}", "v0.8.0"),
            "requirements.txt": "standin-runtime==1.0\n",
            "models/checkpoints/put_checkpoints_here": "",
            "custom_nodes/example_node.py.example": "",
        },
        "v0.8.0",
        tag="v0.8.0",
    )
    v2 = commit_files(
        work,
        {
            "main.py": COMFY_MAIN.replace("{VERSION}", "v0.9.0"),
            "requirements.txt": "standin-runtime==1.0\nstandin-extra==1.0\n",
        },
        "v0.9.0",
        tag="v0.9.0",
    )
    node = tmp / "src" / "ComfyUI-StandinNode"
    node.mkdir()
    git("init", "-q", "-b", "main", cwd=node)
    node_commit = commit_files(
        node,
        {"__init__.py": "NODE_CLASS_MAPPINGS = {}\n", "requirements.txt": "standin-node-dep\n"},
        "node",
    )
    swarm = tmp / "src" / "SwarmUI"
    swarm.mkdir()
    git("init", "-q", "-b", "master", cwd=swarm)
    commit_files(
        swarm,
        {
            "launch-linux.sh": SWARM_LAUNCH,
            "swarm_standin.py": SWARM_SERVER,
            "build.sh": SWARM_BUILD,
        },
        "swarm",
        tag="0.9.7-Beta",
    )
    repos = tmp / "repos"
    repos.mkdir()
    return Sources(
        comfy_repo=bare(work, repos / "ComfyUI.git"),
        v1_commit=v1,
        v2_commit=v2,
        node_repo=bare(node, repos / "ComfyUI-StandinNode.git"),
        node_commit=node_commit,
        swarm_repo=bare(swarm, repos / "SwarmUI.git"),
        wheels=wheels,
    )
