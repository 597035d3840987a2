"""The Docker provider's test image, built here without any registry: ``docker import`` of a
skeleton root filesystem (merged-/usr symlinks, /etc/passwd, /tmp, /data); the interpreter,
the virtualenv and the repo are bind-mounted read-only at their own paths, so the container
runs exactly this checkout's ``python -m comfyfleet.testing``."""

from __future__ import annotations

import io
import os
import sys
import tarfile
from pathlib import Path

import comfyfleet

IMAGE = "comfyfleet-test:skeleton"
PORT = 8188


def _skeleton() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name in ("usr", "etc", "tmp", "root", "data", "proc", "sys", "dev", "work"):
            info = tarfile.TarInfo(name)
            info.type = tarfile.DIRTYPE
            info.mode = 0o1777 if name in ("tmp", "data") else 0o755
            tar.addfile(info)
        for link, target in (("bin", "usr/bin"), ("lib", "usr/lib"), ("lib64", "usr/lib64"),
                             ("sbin", "usr/sbin")):  # fmt: skip
            info = tarfile.TarInfo(link)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            tar.addfile(info)
        passwd = b"root:x:0:0:root:/root:/bin/sh\n"
        info = tarfile.TarInfo("etc/passwd")
        info.size = len(passwd)
        tar.addfile(info, io.BytesIO(passwd))
    return buffer.getvalue()


def build_image(client: object) -> str:
    """Import the skeleton image once (idempotent: same tag, same content)."""
    import docker.errors

    try:
        client.images.get(IMAGE)  # type: ignore[attr-defined]
    except docker.errors.ImageNotFound:
        repository, tag = IMAGE.split(":")
        client.api.import_image_from_data(_skeleton(), repository=repository, tag=tag)  # type: ignore[attr-defined]
    return IMAGE


def mounts() -> str:
    """What the container needs from this machine, read-only: /usr, the base interpreter,
    the virtualenv and the checkout (a JSON list, the `volumes` option)."""
    repo = Path(comfyfleet.__file__).resolve().parents[2]
    paths = {"/usr", os.path.realpath(sys.base_prefix), os.path.realpath(sys.prefix), str(repo)}
    keep = sorted(p for p in paths if not any(p != q and p.startswith(q + "/") for q in paths))
    import json

    return json.dumps([f"{p}:{p}:ro" for p in keep])


def server_command() -> str:
    return (
        f"{sys.executable} -m comfyfleet.testing --host 0.0.0.0 --port {PORT} --root /data "
        "--cache none"
    )


CRASH_COMMAND = f"{sys.executable} -c \"print('boom at start', flush=True); raise SystemExit(3)\""
