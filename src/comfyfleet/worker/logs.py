"""Job-scoped structured logging.

Every record logged while a job runs carries that job's id, taken from a context variable, so a
worker's interleaved output can be split per job with one grep. The formatter writes
``key=value`` lines (or one JSON object per line) to stderr; the runpod SDK's own prints go to
stdout untouched.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import time
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any

job_id_var: ContextVar[str | None] = ContextVar("comfyfleet_job_id", default=None)

# Attributes every LogRecord has; anything else was passed through ``extra=`` and is printed.
_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "job_id"}


class JobContextFilter(logging.Filter):
    """Stamps each record with the current job id (``-`` outside a job)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.job_id = job_id_var.get() or "-"
        return True


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in record.__dict__.items() if k not in _STANDARD}


class KeyValueFormatter(logging.Formatter):
    """``ts=... level=INFO logger=... job_id=... msg="..." key=value ...``"""

    def format(self, record: logging.LogRecord) -> str:
        parts = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "job_id": getattr(record, "job_id", "-"),
            "msg": record.getMessage(),
            **_extras(record),
        }
        line = " ".join(f"{k}={_kv(v)}" for k, v in parts.items())
        if record.exc_info:
            line += " exc=" + json.dumps(self.formatException(record.exc_info))
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log shippers."""

    def format(self, record: logging.LogRecord) -> str:
        body: dict[str, Any] = {
            "ts": record.created,
            "level": record.levelname,
            "logger": record.name,
            "job_id": getattr(record, "job_id", "-"),
            "msg": record.getMessage(),
            **_extras(record),
        }
        if record.exc_info:
            body["exc"] = self.formatException(record.exc_info)
        return json.dumps(body, default=str)


def _kv(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    if text == "" or any(c in text for c in ' "=\n'):
        return json.dumps(text)
    return text


def configure(level: str = "INFO", *, json_lines: bool = False) -> None:
    """Route all comfyfleet (and library) logging through one job-aware handler."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(JobContextFilter())
    handler.setFormatter(JsonFormatter() if json_lines else KeyValueFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # Third-party chatter that would drown a job's lines at INFO.
    for noisy in ("botocore", "boto3", "urllib3", "s3transfer", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


@contextlib.contextmanager
def job_context(job_id: str) -> Iterator[None]:
    """Tag every log line (including those of tasks started inside) with ``job_id``."""
    token = job_id_var.set(job_id)
    try:
        yield
    finally:
        job_id_var.reset(token)
