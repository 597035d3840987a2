"""Which gateway replica's worker manager acts: with SQLite there is one gateway per queue
file, so it always leads; on PostgreSQL the holder of a session advisory lock (on its own
connection, so the lock goes when the replica or its connection dies) leads."""

from __future__ import annotations

import contextlib
import logging
import zlib
from typing import Any

log = logging.getLogger(__name__)


class Leadership:
    """Always the leader (SQLite: one gateway process per queue file)."""

    async def acquire(self) -> bool:
        return True

    async def release(self) -> None:
        pass


class AdvisoryLock(Leadership):
    """A PostgreSQL session advisory lock on its own connection; lost with the connection."""

    def __init__(self, url: str, key: str) -> None:
        self.url = url
        self.key = zlib.crc32(f"comfyfleet.pools:{key}".encode()) & 0x7FFFFFFF
        self._conn: Any = None

    async def acquire(self) -> bool:
        import psycopg

        try:
            if self._conn is not None and not self._conn.closed:
                await self._conn.execute("SELECT 1")
                return True
            self._conn = await psycopg.AsyncConnection.connect(self.url, autocommit=True)
            cur = await self._conn.execute("SELECT pg_try_advisory_lock(%s)", (self.key,))
            row = await cur.fetchone()
            if row and row[0]:
                return True
        except Exception as exc:
            log.warning("worker manager: leader lock unavailable: %r", exc)
        await self.release()
        return False

    async def release(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()
