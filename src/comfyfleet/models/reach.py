"""Can a model source be reached at all? Answered in seconds, in words a person can act on.

Without a network, download libraries retry for a long while (huggingface_hub: five times with
growing back-off, ~23 s) and then print pages. A failed DNS lookup, a refused connection or no
route is not going to heal within one sync, so the sync says so at once, in one line.
"""

from __future__ import annotations

import asyncio
import errno
import socket
import urllib.request
from urllib.parse import urlsplit

import aiohttp

CONNECT_TIMEOUT = 10.0  # seconds for one DNS lookup or one TCP connect

_NO_ROUTE = {errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ENETDOWN, errno.EHOSTDOWN}


def _address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)


def _why_not(error: OSError | None, host: str, port: int) -> str:
    if isinstance(error, socket.gaierror):
        return f"cannot resolve {host} ({error.strerror or error})"
    if isinstance(error, ConnectionRefusedError):
        return f"connection to {host}:{port} refused"
    if error is not None and error.errno in _NO_ROUTE:
        return f"no route to {host}:{port}"
    if error is None or isinstance(error, TimeoutError):
        return f"no answer from {host}:{port} within {CONNECT_TIMEOUT:g} s"
    return f"cannot connect to {host}:{port} ({error.strerror or error})"


def connect_failure(exc: BaseException) -> str | None:
    """Why aiohttp could not even open a connection (DNS, refused, no route, connect
    timeout), or None for other errors (a connection that dropped midway may be retried)."""
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return _why_not(exc.os_error, exc.host, exc.port)
    if isinstance(exc, aiohttp.ClientConnectorError) and not isinstance(
        exc, aiohttp.ClientConnectorCertificateError | aiohttp.ClientConnectorSSLError
    ):
        return _why_not(exc.os_error, exc.host, exc.port)
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return "no answer within the connect timeout"
    return None


async def unreachable(url: str, timeout: float = CONNECT_TIMEOUT) -> str | None:
    """None if a TCP connection to ``url``'s host (or the proxy the environment names for
    it, as huggingface_hub would use) opens within ``timeout``; else why not."""
    host, port = _address(url)
    scheme = urlsplit(url).scheme
    proxy = urllib.request.getproxies().get(scheme)
    if proxy and not urllib.request.proxy_bypass(host):
        host, port = _address(proxy if "://" in proxy else f"http://{proxy}")
    try:
        async with asyncio.timeout(timeout):
            _, writer = await asyncio.open_connection(host, port)
    except TimeoutError:
        return _why_not(None, host, port)
    except OSError as exc:
        return _why_not(exc, host, port)
    writer.close()
    return None
