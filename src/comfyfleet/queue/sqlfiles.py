"""SQL lives in ``sql/<engine>/``: numbered migrations (``0001_initial.sql``) and named queries
(``queries.sql``, blocks opened by ``-- name: <query>``), read once at import, procrastinate
style, so the Python reads as logic and the SQL as SQL."""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib.resources import files

_NAME = re.compile(r"^--\s*name:\s*(\w+)\s*$", re.MULTILINE)
_MIGRATION = re.compile(r"^(\d{4})_(\w+)\.sql$")


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


def _dir(engine: str):  # a Traversable
    return files("comfyfleet.queue") / "sql" / engine


def load_queries(engine: str) -> dict[str, str]:
    """``{name: sql}`` from ``sql/<engine>/queries.sql``."""
    text = (_dir(engine) / "queries.sql").read_text()
    parts = _NAME.split(text)
    queries = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        sql = body.strip().rstrip(";").strip()
        if name in queries:
            raise ValueError(f"query {name!r} defined twice for {engine}")
        queries[name] = sql
    return queries


def load_migrations(engine: str) -> list[Migration]:
    """Every ``NNNN_name.sql`` of the engine, in version order."""
    found = []
    for entry in _dir(engine).iterdir():
        match = _MIGRATION.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text()))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise ValueError(f"duplicate migration versions for {engine}: {versions}")
    return found
