"""Fixtures every area shares: the PostgreSQL server the suites run against.

``COMFYFLEET_TEST_POSTGRES`` (default ``postgresql://postgres@127.0.0.1:5432/test``) is used if
it answers. Otherwise the session starts a throwaway cluster of its own with the system's
``initdb``/``pg_ctl`` (on PATH or under /usr/lib/postgresql/*/bin; ``COMFYFLEET_TEST_PG_BINDIR``
names the one directory to look in) on a free port in a temp dir, and removes it at the end.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import conninfo, sql

PG_URL = os.environ.get("COMFYFLEET_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
PG_PACKAGE = "postgresql"  # Debian's package with initdb and pg_ctl


def _answers(url: str) -> bool:
    try:
        with psycopg.connect(url, connect_timeout=3):
            return True
    except psycopg.OperationalError:
        return False


def _pg_bindir() -> Path | None:
    """The directory holding initdb and pg_ctl, newest major version first."""
    override = os.environ.get("COMFYFLEET_TEST_PG_BINDIR")
    if override is not None:
        candidates = [Path(override)]
    else:
        on_path = shutil.which("initdb")
        candidates = [Path(on_path).resolve().parent] if on_path else []
        versions = glob.glob("/usr/lib/postgresql/*/bin")
        candidates += [Path(p) for p in sorted(versions, key=_major, reverse=True)]
    for bindir in candidates:
        if (bindir / "initdb").is_file() and (bindir / "pg_ctl").is_file():
            return bindir
    return None


def _major(bindir: str) -> int:
    name = Path(bindir).parent.name
    return int(name) if name.isdigit() else 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_cluster_owner() -> tuple[list[str], int | None]:
    """initdb refuses to run as root: then the cluster belongs to the ``postgres`` user."""
    if os.geteuid() != 0:
        return [], None
    try:
        uid = pwd.getpwnam("postgres").pw_uid
    except KeyError:
        pytest.exit(
            f"running as root without a 'postgres' user to own a test cluster: "
            f"apt-get install -y {PG_PACKAGE} (or set COMFYFLEET_TEST_POSTGRES)",
            returncode=3,
        )
    return ["runuser", "-u", "postgres", "--"], uid


@contextlib.contextmanager
def _throwaway_cluster(dbname: str) -> Iterator[str]:
    bindir = _pg_bindir()
    if bindir is None:
        pytest.exit(
            f"PostgreSQL does not answer at {PG_URL} and no initdb/pg_ctl was found to start one: "
            f"apt-get install -y {PG_PACKAGE}",
            returncode=3,
        )
    prefix, uid = _as_cluster_owner()
    # Not under pytest's basetemp: that is private to root, and the cluster's owner may not be.
    base = Path(tempfile.mkdtemp(prefix="comfyfleet-pg-"))
    if uid is not None:
        os.chown(base, uid, -1)
    data, log, port = base / "data", base / "log", _free_port()

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*prefix, *args], capture_output=True, text=True, check=False)

    try:
        server = f"-p {port} -c listen_addresses=127.0.0.1 -k {base} -F"
        steps = [
            (bindir / "initdb", "-D", data, "-U", "postgres", "--auth=trust", "--no-sync"),
            (bindir / "pg_ctl", "-D", data, "-l", log, "-w", "-t", "60", "-o", server, "start"),
        ]
        for step in steps:
            done = run(*map(str, step))
            if done.returncode != 0:
                tail = log.read_text()[-2000:] if log.exists() else ""
                pytest.exit(
                    f"could not start a test PostgreSQL with {step[0]}: "
                    f"{(done.stderr or done.stdout).strip()} {tail}".strip(),
                    returncode=3,
                )
        admin = f"postgresql://postgres@127.0.0.1:{port}/postgres"
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
        yield f"postgresql://postgres@127.0.0.1:{port}/{dbname}"
    finally:
        if (data / "postmaster.pid").exists():
            run(str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """The configured server if it answers, else a throwaway cluster started for this session."""
    if _answers(PG_URL):
        yield PG_URL
        return
    dbname = conninfo.conninfo_to_dict(PG_URL).get("dbname") or "test"
    with _throwaway_cluster(str(dbname)) as url:
        yield url


@pytest.fixture
def pg_schema(pg_url: str) -> Iterator[str]:
    """A fresh schema name for one test (suites share the database), dropped afterwards."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    yield schema
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """A skip is a failure unless the test is marked ``gpu`` (the only documented skips): so
    nothing missing can make tests vanish quietly, not even an empty parameter list."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and not hasattr(report, "wasxfail") and not item.get_closest_marker("gpu"):
        longrepr = report.longrepr
        reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped, but only GPU tests may skip (docs/testing.md): {reason}"
