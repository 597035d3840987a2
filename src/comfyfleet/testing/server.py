"""The ComfyUI 0.8.0 look-alike HTTP + websocket server (aiohttp).

Routes follow ComfyUI's ``server.py``; every one is also served under ``/api``. The namespaced
control routes ``/_testing/...`` are this server's own (see :mod:`comfyfleet.testing.faults`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import mimetypes
import os
import tempfile
import threading
import time
import uuid
from io import BytesIO
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web
from PIL import Image

from comfyfleet.testing import jobs as jobsmod
from comfyfleet.testing.executor import PromptExecutor, Worker
from comfyfleet.testing.faults import Faults
from comfyfleet.testing.hub import Hub
from comfyfleet.testing.nodes import TEST_CLASSES
from comfyfleet.testing.objectinfo import (
    MODEL_FOLDERS,
    Folders,
    NodeCatalog,
    recorded_system_stats,
)
from comfyfleet.testing.promptqueue import PromptQueue
from comfyfleet.testing.validation import Validator

if TYPE_CHECKING:
    from comfyfleet.testing.runners import ComfyTestProcess, ThreadedComfyTestServer

log = logging.getLogger("comfyfleet.testing")

MAX_UPLOAD_SIZE = 100 * 1024 * 1024
SERVER_FEATURES = {
    "supports_preview_metadata": True,
    "max_upload_size": MAX_UPLOAD_SIZE,
    "extension": {"manager": {"supports_v4": True}},
}
SENSITIVE_EXTRA_DATA_KEYS = ("auth_token_comfy_org", "api_key_comfy_org")
DIE_EXIT_CODE = 86

mimetypes.init()
mimetypes.add_type("image/webp", ".webp")


class ComfyTestServer:
    """A ComfyUI 0.8.0 test server.

    ``async with ComfyTestServer(root=tmp_path) as srv:`` starts it on ``127.0.0.1`` and a free
    port; ``srv.url``, ``srv.ws_url``, ``srv.input_dir``, ``srv.output_dir``, ``srv.models_dir``
    and ``srv.faults`` are then ready. See ``docs/testing.md``.

    Options: ``cache`` ("classic", ComfyUI's default, or "none" like ``--cache-none``);
    ``png_compress_level`` (1 by default for speed; ComfyUI's SaveImage uses 4);
    ``preview_method`` (the server default for previews, like ``--preview-method``; None = none);
    ``faults`` (a :class:`Faults` or a dict of knobs); ``exit_on_die`` (``die()`` ends the
    process: used by ``python -m comfyfleet.testing``); ``reported_root`` (the install path
    ``GET /internal/folder_paths`` reports instead of ``root``: a ComfyUI on another machine
    or in a container names paths that are not this host's).
    """

    def __init__(
        self,
        root: str | os.PathLike[str] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        cache: str = "classic",
        png_compress_level: int = 1,
        preview_method: str | None = None,
        faults: Faults | dict[str, Any] | None = None,
        exit_on_die: bool = False,
        reported_root: str | os.PathLike[str] | None = None,
    ) -> None:
        if root is None:
            root = tempfile.mkdtemp(prefix="comfyfleet-testing-")
        self.folders = Folders(root)
        self.host = host
        self.port = port
        self.cache_mode = cache
        self.png_compress_level = png_compress_level
        self.preview_method = preview_method
        self.faults = faults if isinstance(faults, Faults) else Faults(**(faults or {}))
        self.exit_on_die = exit_on_die
        self.reported_root = reported_root
        self.catalog = NodeCatalog(self.folders, TEST_CLASSES)
        self.validator = Validator(self.catalog)
        self._runner: web.AppRunner | None = None
        self._running = False
        self.dead = False
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- paths and URLs ---------------------------------------------------------------------

    @property
    def root(self) -> Path:
        return self.folders.root

    @property
    def input_dir(self) -> Path:
        return self.folders.input

    @property
    def output_dir(self) -> Path:
        return self.folders.output

    @property
    def temp_dir(self) -> Path:
        return self.folders.temp

    @property
    def models_dir(self) -> Path:
        return self.folders.models

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}" if ":" not in self.host else f"[{self.host}]:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.address}/ws"

    def add_model(self, folder: str, name: str, data: bytes = b"") -> Path:
        """Create ``models/<folder>/<name>`` so that loaders' combo lists contain it."""
        subdir = MODEL_FOLDERS[folder][0][-1] if folder in MODEL_FOLDERS else folder
        path = self.models_dir / subdir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return path

    def add_input(self, name: str, data: bytes | Image.Image) -> Path:
        """Put a file (or a PIL image, saved as PNG) into ``input/``."""
        path = self.input_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(data, Image.Image):
            data.save(path, format="PNG")
        else:
            path.write_bytes(data)
        return path

    # -- lifecycle --------------------------------------------------------------------------

    async def __aenter__(self) -> ComfyTestServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> ComfyTestServer:
        if self._running:
            return self
        self._loop = asyncio.get_running_loop()
        self.number = 0
        self._stop = threading.Event()
        self.hub = Hub(self._loop, self.faults)
        self.queue = PromptQueue(self._queue_updated)
        self.executor = PromptExecutor(
            self.hub,
            self.catalog,
            self.folders,
            self.faults,
            cache=self.cache_mode,
            png_compress_level=self.png_compress_level,
            preview_method=self.preview_method,
            stop=self._stop,
        )
        self.worker = Worker(self.queue, self.executor, self.hub, self.faults)
        app = self._make_app()
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
        await site.start()
        server = getattr(site, "_server", None)
        if server is not None and server.sockets:
            self.port = server.sockets[0].getsockname()[1]
        self.hub.start()
        self.worker.start()
        self._running = True
        self.dead = False
        log.info("comfyfleet.testing listening on %s (root %s)", self.url, self.root)
        return self

    async def stop(self) -> None:
        """Stop serving: abort websockets, stop the worker, close the port."""
        if not self._running:
            return
        self._running = False
        self.worker.stop.set()
        self.queue.close()
        await self.hub.stop()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        await asyncio.to_thread(self.worker.shutdown)

    async def die(self) -> None:
        """Crash: every connection is cut and the port stops answering; queue and history are
        lost. With ``exit_on_die`` the process exits (code 86) instead. ``restart()`` brings a
        fresh server back on the same port and folders, like a restarted ComfyUI."""
        if self.exit_on_die:
            os._exit(DIE_EXIT_CODE)
        self.dead = True
        await self.stop()

    async def restart(self) -> ComfyTestServer:
        await self.stop()
        return await self.start()

    def run_in_thread(self) -> ThreadedComfyTestServer:
        """Start this server in a background thread with its own event loop (for sync tests)."""
        from comfyfleet.testing.runners import ThreadedComfyTestServer

        return ThreadedComfyTestServer(self).start()

    @staticmethod
    def start_subprocess(
        root: str | os.PathLike[str] | None = None, **options: Any
    ) -> ComfyTestProcess:
        """Run ``python -m comfyfleet.testing`` in a child process; returns once it answers."""
        from comfyfleet.testing.runners import ComfyTestProcess

        return ComfyTestProcess.start(root=root, **options)

    # -- state shared with the hub and worker ------------------------------------------------

    def queue_info(self) -> dict[str, Any]:
        return {"exec_info": {"queue_remaining": self.queue.tasks_remaining()}}

    def features(self) -> dict[str, Any]:
        return json.loads(json.dumps(SERVER_FEATURES))

    def _queue_updated(self) -> None:
        self.hub.send_sync("status", {"status": self.queue_info()})

    def interrupt(self, prompt_id: str | None = None) -> None:
        """Like ``POST /interrupt`` (targeted when prompt_id is given)."""
        if prompt_id:
            running, _ = self.queue.get_current_queue()
            if any(item[1] == prompt_id for item in running):
                self.executor.interrupt()
        else:
            self.executor.interrupt()

    # -- app --------------------------------------------------------------------------------

    def _make_app(self) -> web.Application:
        @web.middleware
        async def freeze(request: web.Request, handler: Any) -> web.StreamResponse:
            if not request.path.startswith("/_testing"):
                while self.faults.freeze and self._running:
                    await asyncio.sleep(0.02)
            return await handler(request)

        app = web.Application(client_max_size=MAX_UPLOAD_SIZE, middlewares=[freeze])
        routes: list[tuple[str, str, Any]] = [
            ("GET", "/ws", self._ws),
            ("GET", "/", self._root),
            ("GET", "/embeddings", self._embeddings),
            ("GET", "/models", self._models),
            ("GET", "/models/{folder}", self._models_folder),
            ("GET", "/extensions", self._extensions),
            ("POST", "/upload/image", self._upload_image),
            ("GET", "/view", self._view),
            ("GET", "/view_metadata/{folder_name}", self._view_metadata),
            ("GET", "/system_stats", self._system_stats),
            ("GET", "/features", self._features),
            ("GET", "/prompt", self._get_prompt),
            ("GET", "/object_info", self._object_info),
            ("GET", "/object_info/{node_class}", self._object_info_node),
            ("GET", "/api/jobs", self._jobs),
            ("GET", "/api/jobs/{job_id}", self._job),
            ("GET", "/history", self._history),
            ("GET", "/history/{prompt_id}", self._history_id),
            ("GET", "/queue", self._get_queue),
            ("POST", "/prompt", self._post_prompt),
            ("POST", "/queue", self._post_queue),
            ("POST", "/interrupt", self._post_interrupt),
            ("POST", "/free", self._post_free),
            ("POST", "/history", self._post_history),
            ("GET", "/settings", self._settings),
            ("GET", "/users", self._users),
        ]
        # ComfyUI adds every route a second time under /api (so /api/api/jobs exists too).
        for method, path, handler in routes:
            app.router.add_route(method, "/api" + path, handler)
        for method, path, handler in routes:
            app.router.add_route(method, path, handler)
        # ComfyUI mounts its internal routes as a sub-app: /internal/..., never under /api.
        app.router.add_route("GET", "/internal/folder_paths", self._folder_paths)
        app.router.add_route("GET", "/_testing/faults", self._get_faults)
        app.router.add_route("POST", "/_testing/faults", self._post_faults)
        app.router.add_route("DELETE", "/_testing/faults", self._delete_faults)
        app.router.add_route("POST", "/_testing/die", self._post_die)
        app.router.add_route("GET", "/_testing/info", self._info)
        return app

    # -- websocket --------------------------------------------------------------------------

    async def _ws(self, request: web.Request) -> web.StreamResponse:
        return await self.hub.websocket_handler(request, self)

    # -- simple GETs ------------------------------------------------------------------------

    async def _root(self, request: web.Request) -> web.Response:
        return web.Response(
            text="<!doctype html><title>ComfyUI (comfyfleet test server)</title>"
            "<p>comfyfleet.testing: a ComfyUI 0.8.0 protocol test server.</p>",
            content_type="text/html",
            headers={"Cache-Control": "no-cache", "Pragma": "no-cache", "Expires": "0"},
        )

    async def _embeddings(self, request: web.Request) -> web.Response:
        names = self.folders.model_files("embeddings")
        return web.json_response([os.path.splitext(n)[0] for n in names])

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response(list(MODEL_FOLDERS))

    async def _models_folder(self, request: web.Request) -> web.Response:
        folder = request.match_info.get("folder")
        if folder not in MODEL_FOLDERS:
            return web.Response(status=404)
        return web.json_response(self.folders.model_files(folder))

    def folder_paths(self) -> dict[str, list[str]]:
        """ComfyUI's ``folder_names_and_paths`` as ``GET /internal/folder_paths`` answers it:
        name -> list of absolute paths, in ComfyUI's order.

        Conformance note: not in the recordings. The shape follows ComfyUI 0.8.0's
        ``api_server/routes/internal/internal_routes.py`` (``get_folder_paths``: each entry's
        path list, extensions dropped), the defaults its ``folder_paths.py`` registers under the
        install root (the recorded ``GET /models`` lists the same names in the same order),
        plus what its ``main.py`` (``apply_custom_paths``) appends: ``<output>/checkpoints``,
        ``<output>/clip`` (under ``text_encoders``), ``<output>/vae``,
        ``<output>/diffusion_models``, ``<output>/loras``."""
        root = os.fspath(self.reported_root) if self.reported_root is not None else str(self.root)
        models = os.path.join(root, "models")
        paths = {
            name: [os.path.normpath(os.path.join(models, sub)) for sub in subs]
            for name, (subs, _exts) in MODEL_FOLDERS.items()
        }
        output = os.path.join(root, "output")
        for name, sub in (
            ("checkpoints", "checkpoints"),
            ("text_encoders", "clip"),
            ("vae", "vae"),
            ("diffusion_models", "diffusion_models"),
            ("loras", "loras"),
        ):
            paths[name].append(os.path.join(output, sub))
        return paths

    async def _folder_paths(self, request: web.Request) -> web.Response:
        return web.json_response(self.folder_paths())

    async def _extensions(self, request: web.Request) -> web.Response:
        return web.json_response([])

    async def _system_stats(self, request: web.Request) -> web.Response:
        return web.json_response(recorded_system_stats())

    async def _features(self, request: web.Request) -> web.Response:
        return web.json_response(self.features())

    async def _get_prompt(self, request: web.Request) -> web.Response:
        return web.json_response(self.queue_info())

    async def _settings(self, request: web.Request) -> web.Response:
        return web.json_response({})

    async def _users(self, request: web.Request) -> web.Response:
        return web.json_response({"storage": "server", "migrated": True})

    async def _object_info(self, request: web.Request) -> web.Response:
        return web.json_response(self.catalog.all_info())

    async def _object_info_node(self, request: web.Request) -> web.Response:
        name = request.match_info.get("node_class")
        info = self.catalog.info(name) if name in self.catalog else None
        return web.json_response({name: info} if info is not None else {})

    # -- uploads and files ------------------------------------------------------------------

    def _dir_by_type(self, type_name: str | None) -> tuple[str, str]:
        type_name = type_name or "input"
        d = self.folders.by_type(type_name)
        if d is None:  # ComfyUI fails here with UnboundLocalError -> 500
            raise ValueError(f"unknown upload type {type_name!r}")
        return str(d), type_name

    async def _upload_image(self, request: web.Request) -> web.Response:
        post = await request.post()
        image = post.get("image")
        overwrite = post.get("overwrite")
        upload_dir, upload_type = self._dir_by_type(post.get("type"))  # type: ignore[arg-type]
        if not (image and image.file):  # type: ignore[union-attr]
            return web.Response(status=400)
        filename = image.filename  # type: ignore[union-attr]
        if not filename:
            return web.Response(status=400)
        subfolder = post.get("subfolder", "")
        folder = os.path.join(upload_dir, os.path.normpath(subfolder))  # type: ignore[arg-type]
        filepath = os.path.abspath(os.path.join(folder, filename))
        if os.path.commonpath((upload_dir, filepath)) != upload_dir:
            return web.Response(status=400)
        os.makedirs(folder, exist_ok=True)
        data = image.file.read()  # type: ignore[union-attr]
        stem, ext = os.path.splitext(filename)
        duplicate = False
        if overwrite not in ("true", "1"):
            i = 1
            while os.path.exists(filepath):
                with open(filepath, "rb") as f:
                    if f.read() == data:  # same bytes: keep the existing name
                        duplicate = True
                        break
                filename = f"{stem} ({i}){ext}"
                filepath = os.path.join(folder, filename)
                i += 1
        if not duplicate:
            with open(filepath, "wb") as f:
                f.write(data)
        return web.json_response({"name": filename, "subfolder": subfolder, "type": upload_type})

    async def _view(self, request: web.Request) -> web.StreamResponse:
        query = request.rel_url.query
        if "filename" not in query:
            return web.Response(status=404)
        filename = query["filename"]
        output_dir: str | None = None
        for tag, base in (
            ("[output]", self.folders.output),
            ("[input]", self.folders.input),
            ("[temp]", self.folders.temp),
        ):
            if filename.endswith(tag):
                filename, output_dir = filename[: -len(tag) - 1], str(base)
                break
        if not filename:
            return web.Response(status=400)
        if filename[0] == "/" or ".." in filename:
            return web.Response(status=400)
        if output_dir is None:
            d = self.folders.by_type(query.get("type", "output"))
            output_dir = str(d) if d is not None else None
        if output_dir is None:
            return web.Response(status=400)
        if "subfolder" in query:
            full = os.path.join(output_dir, query["subfolder"])
            if os.path.commonpath((os.path.abspath(full), output_dir)) != output_dir:
                return web.Response(status=403)
            output_dir = full
        filename = os.path.basename(filename)
        file = os.path.join(output_dir, filename)
        if not os.path.isfile(file):
            return web.Response(status=404)
        disposition = {"Content-Disposition": f'filename="{filename}"'}
        if "preview" in query:
            with Image.open(file) as img:
                info = query["preview"].split(";")
                fmt = info[0]
                if fmt not in ("webp", "jpeg") or "a" in query.get("channel", ""):
                    fmt = "webp"
                quality = int(info[-1]) if info[-1].isdigit() else 90
                if fmt == "jpeg" or query.get("channel", "") == "rgb":
                    img = img.convert("RGB")
                buf = BytesIO()
                img.save(buf, format=fmt, quality=quality)
            return web.Response(
                body=buf.getvalue(), content_type=f"image/{fmt}", headers=disposition
            )
        channel = query.get("channel", "rgba")
        if channel == "rgb":
            with Image.open(file) as img:
                out = (
                    Image.merge("RGB", img.split()[:3])
                    if img.mode == "RGBA"
                    else img.convert("RGB")
                )
                buf = BytesIO()
                out.save(buf, format="PNG")
            return web.Response(body=buf.getvalue(), content_type="image/png", headers=disposition)
        if channel == "a":
            with Image.open(file) as img:
                alpha = img.split()[3] if img.mode == "RGBA" else Image.new("L", img.size, 255)
                out = Image.new("RGBA", img.size)
                out.putalpha(alpha)
                buf = BytesIO()
                out.save(buf, format="PNG")
            return web.Response(body=buf.getvalue(), content_type="image/png", headers=disposition)
        content_type = mimetypes.guess_type(filename)[0] or "application/octet-stream"
        if content_type in {
            "text/html",
            "text/html-sandboxed",
            "application/xhtml+xml",
            "text/javascript",
            "text/css",
        }:
            content_type = "application/octet-stream"
        return web.FileResponse(file, headers={**disposition, "Content-Type": content_type})

    async def _view_metadata(self, request: web.Request) -> web.Response:
        folder = request.match_info.get("folder_name")
        filename = request.rel_url.query.get("filename")
        if not folder or not filename or not filename.endswith(".safetensors"):
            return web.Response(status=404)
        path = self.folders.model_path(folder, filename)
        if path is None:
            return web.Response(status=404)
        try:
            with open(path, "rb") as f:
                size = int.from_bytes(f.read(8), "little")
                if size > 1024 * 1024:
                    return web.Response(status=404)
                header = json.loads(f.read(size))
        except (OSError, ValueError):
            return web.Response(status=404)
        if "__metadata__" not in header:
            return web.Response(status=404)
        return web.json_response(header["__metadata__"])

    # -- prompts, queue, history ------------------------------------------------------------

    async def _post_prompt(self, request: web.Request) -> web.Response:
        json_data = await request.json()  # not JSON -> aiohttp's plain-text 500, as ComfyUI
        if "number" in json_data:
            number: Any = float(json_data["number"])
        else:
            number = self.number
            if json_data.get("front"):
                number = -number
            self.number += 1

        if "prompt" not in json_data:
            error = {
                "type": "no_prompt",
                "message": "No prompt provided",
                "details": "No prompt provided",
                "extra_info": {},
            }
            return web.json_response({"error": error, "node_errors": {}}, status=400)

        prompt = json_data["prompt"]
        prompt_id = str(json_data.get("prompt_id", uuid.uuid4()))
        partial = (
            json_data.get("partial_execution_targets")
            if ("partial_execution_targets" in json_data)
            else None
        )
        valid, error, outputs, node_errors = self.validator.validate_prompt(prompt, partial)
        extra_data = json_data.get("extra_data", {})
        if "client_id" in json_data:
            extra_data["client_id"] = json_data["client_id"]
        if not valid:
            log.info("invalid prompt: %s", error)
            return web.json_response({"error": error, "node_errors": node_errors}, status=400)
        sensitive = {k: extra_data.pop(k) for k in SENSITIVE_EXTRA_DATA_KEYS if k in extra_data}
        extra_data["create_time"] = int(time.time() * 1000)
        self.queue.put((number, prompt_id, prompt, extra_data, outputs, sensitive))
        return web.json_response(
            {"prompt_id": prompt_id, "number": number, "node_errors": node_errors}
        )

    async def _get_queue(self, request: web.Request) -> web.Response:
        running, pending = self.queue.get_current_queue()
        return web.json_response(
            {
                "queue_running": [list(x[:5]) for x in running],
                "queue_pending": [list(x[:5]) for x in pending],
            }
        )

    async def _post_queue(self, request: web.Request) -> web.Response:
        json_data = await request.json()
        if json_data.get("clear"):
            self.queue.wipe_queue()
        if "delete" in json_data:
            for prompt_id in json_data["delete"]:
                self.queue.delete_queue_item(lambda item, pid=prompt_id: item[1] == pid)
        return web.Response(status=200)

    async def _post_interrupt(self, request: web.Request) -> web.Response:
        try:
            json_data = await request.json()
        except json.JSONDecodeError:
            json_data = {}
        self.interrupt(json_data.get("prompt_id"))
        return web.Response(status=200)

    async def _post_free(self, request: web.Request) -> web.Response:
        json_data = await request.json()
        unload_models = json_data.get("unload_models", False)
        free_memory = json_data.get("free_memory", False)
        if unload_models:
            self.queue.set_flag("unload_models", unload_models)
        if free_memory:
            self.queue.set_flag("free_memory", free_memory)
        return web.Response(status=200)

    async def _history(self, request: web.Request) -> web.Response:
        if self.faults.history_response_delay > 0:
            await asyncio.sleep(self.faults.history_response_delay)
        query = request.rel_url.query
        max_items = int(query["max_items"]) if "max_items" in query else None
        offset = int(query["offset"]) if "offset" in query else -1
        return web.json_response(self.queue.get_history(max_items=max_items, offset=offset))

    async def _history_id(self, request: web.Request) -> web.Response:
        if self.faults.history_response_delay > 0:
            await asyncio.sleep(self.faults.history_response_delay)
        return web.json_response(self.queue.get_history(prompt_id=request.match_info["prompt_id"]))

    async def _post_history(self, request: web.Request) -> web.Response:
        json_data = await request.json()
        if json_data.get("clear"):
            self.queue.wipe_history()
        if "delete" in json_data:
            for prompt_id in json_data["delete"]:
                self.queue.delete_history_item(prompt_id)
        return web.Response(status=200)

    async def _jobs(self, request: web.Request) -> web.Response:
        query = request.rel_url.query
        statuses = list(jobsmod.STATUSES)
        if query.get("status"):
            statuses = [s.strip().lower() for s in query["status"].split(",") if s.strip()]
            bad = [s for s in statuses if s not in jobsmod.STATUSES]
            if bad:
                return web.json_response(
                    {
                        "error": f"Invalid status value(s): {', '.join(bad)}. "
                        f"Valid values: {', '.join(jobsmod.STATUSES)}"
                    },
                    status=400,
                )
        sort_by = query.get("sort_by", "created_at").lower()
        sort_order = query.get("sort_order", "desc").lower()
        if sort_by not in ("created_at", "execution_duration"):
            return web.json_response(
                {"error": "sort_by must be 'created_at' or 'execution_duration'"}, status=400
            )
        if sort_order not in ("asc", "desc"):
            return web.json_response({"error": "sort_order must be 'asc' or 'desc'"}, status=400)
        limit = None
        if "limit" in query:
            try:
                limit = int(query["limit"])
            except ValueError:
                return web.json_response({"error": "limit must be an integer"}, status=400)
            if limit <= 0:
                return web.json_response({"error": "limit must be a positive integer"}, status=400)
        offset = 0
        if "offset" in query:
            try:
                offset = max(0, int(query["offset"]))
            except ValueError:
                return web.json_response({"error": "offset must be an integer"}, status=400)
        running, queued = self.queue.get_current_queue()
        history = self.queue.get_history()
        jobs, total = jobsmod.all_jobs(
            running,
            queued,
            history,
            statuses=statuses,
            workflow_id=query.get("workflow_id"),
            sort_by=sort_by,
            sort_order=sort_order,
            limit=limit,
            offset=offset,
        )
        return web.json_response(
            {
                "jobs": jobs,
                "pagination": {
                    "offset": offset,
                    "limit": limit,
                    "total": total,
                    "has_more": offset + len(jobs) < total,
                },
            }
        )

    async def _job(self, request: web.Request) -> web.Response:
        job_id = request.match_info.get("job_id")
        running, queued = self.queue.get_current_queue()
        job = jobsmod.get_job(job_id, running, queued, self.queue.get_history(prompt_id=job_id))
        if job is None:
            return web.json_response({"error": "Job not found"}, status=404)
        return web.json_response(job)

    # -- control routes (not ComfyUI) -------------------------------------------------------

    async def _get_faults(self, request: web.Request) -> web.Response:
        return web.json_response(self.faults.as_dict())

    async def _post_faults(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
            if not isinstance(body, dict):
                raise ValueError("body must be a JSON object of fault knobs")
            self.faults.update(**body)
        except (ValueError, TypeError) as e:
            return web.json_response({"error": str(e)}, status=400)
        return web.json_response(self.faults.as_dict())

    async def _delete_faults(self, request: web.Request) -> web.Response:
        self.faults.reset()
        return web.json_response(self.faults.as_dict())

    async def _post_die(self, request: web.Request) -> web.Response:
        loop = asyncio.get_running_loop()
        loop.call_later(0.05, lambda: loop.create_task(self.die()))
        return web.json_response({"dying": True, "exit": self.exit_on_die})

    async def _info(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "server": "comfyfleet.testing",
                "emulates": "ComfyUI 0.8.0",
                "root": str(self.root),
                "input_dir": str(self.input_dir),
                "output_dir": str(self.output_dir),
                "temp_dir": str(self.temp_dir),
                "models_dir": str(self.models_dir),
                "cache": self.cache_mode,
                "png_compress_level": self.png_compress_level,
                "pid": os.getpid(),
            }
        )
