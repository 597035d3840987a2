"""``python -m comfyfleet.testing --port 8188 [--host H] [--root DIR] [--slow S] ...``

Runs the ComfyUI 0.8.0 test server until SIGINT/SIGTERM. Once it listens it prints one line to
stdout, ``comfyfleet.testing listening on http://HOST:PORT (root DIR)``; logs go to stderr.
``POST /_testing/die`` makes the process exit with code 86 (a crash, as far as clients see).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys

from comfyfleet.testing.faults import Faults
from comfyfleet.testing.server import ComfyTestServer


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m comfyfleet.testing",
        description="A ComfyUI 0.8.0 look-alike test server (comfyfleet.testing).",
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8188, help="0 = any free port (printed)")
    p.add_argument(
        "--root",
        default=None,
        help="folder for input/ output/ temp/ models/ (default: a new temporary folder)",
    )
    p.add_argument(
        "--slow",
        type=float,
        default=0.0,
        metavar="S",
        help="every executed node takes S seconds longer (fault node_delay)",
    )
    p.add_argument(
        "--job-seconds",
        type=float,
        default=0.0,
        metavar="W",
        help="every prompt takes at least W seconds (fault job_seconds)",
    )
    p.add_argument("--history-write-delay", type=float, default=0.0, metavar="D")
    p.add_argument("--cache", choices=["classic", "none"], default="classic")
    p.add_argument(
        "--png-compress-level",
        type=int,
        default=1,
        help="SaveImage PNG compression (ComfyUI uses 4; default 1 for speed)",
    )
    p.add_argument(
        "--preview-method",
        default=None,
        help="default preview method (ComfyUI's --preview-method; default none)",
    )
    p.add_argument("--faults", default=None, metavar="JSON", help="initial fault knobs")
    p.add_argument(
        "--no-exit-on-die",
        action="store_true",
        help="on /_testing/die close connections but keep the process",
    )
    p.add_argument("--log-level", default="INFO")
    return p.parse_args(argv)


async def serve(args: argparse.Namespace) -> int:
    knobs = json.loads(args.faults) if args.faults else {}
    if args.slow:
        knobs.setdefault("node_delay", args.slow)
    if args.job_seconds:
        knobs.setdefault("job_seconds", args.job_seconds)
    if args.history_write_delay:
        knobs.setdefault("history_write_delay", args.history_write_delay)
    server = ComfyTestServer(
        root=args.root,
        host=args.host,
        port=args.port,
        cache=args.cache,
        png_compress_level=args.png_compress_level,
        preview_method=args.preview_method,
        faults=Faults(**knobs),
        exit_on_die=not args.no_exit_on_die,
    )
    await server.start()
    print(f"comfyfleet.testing listening on {server.url} (root {server.root})", flush=True)
    done = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, done.set)
    await done.wait()
    await server.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, args.log_level.upper(), logging.INFO),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    return asyncio.run(serve(args))


if __name__ == "__main__":
    sys.exit(main())
