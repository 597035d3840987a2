"""Input images: base64, data URIs and http(s) URLs turned into verified bytes with safe names.

URLs are the dangerous case (a request can point us at the cloud metadata service or a
database on the private network), so every hop — the first URL and each redirect — is checked
by the one URL policy (`comfyfleet.urls`): what is wrong without DNS (scheme, credentials, a
literal private address) is refused at submit already, and here, unless ``allow_private_urls``,
the host's every address must be public. The addresses checked are the addresses connected to
(a pinned resolver), so a DNS answer cannot change between the check and the connection.
Bodies stream under ``max_input_bytes``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import ipaddress
import mimetypes
import re
import socket
from dataclasses import dataclass
from io import BytesIO

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver
from PIL import Image
from yarl import URL

from comfyfleet.config import Settings
from comfyfleet.errors import ForbiddenURL, InputImageError, PayloadTooLarge
from comfyfleet.jobs import InputImage
from comfyfleet.urls import check_url, is_forbidden_address, looks_like_url

_REDIRECTS = {301, 302, 303, 307, 308}
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_EXT = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "GIF": ".gif", "BMP": ".bmp"}


@dataclass(frozen=True, slots=True)
class DecodedImage:
    """An input's bytes, its media type and a file name safe to use anywhere."""

    name: str
    data: bytes
    media_type: str
    node_id: str | None = None


def safe_filename(name: str | None, default: str = "file") -> str:
    """The last path component of ``name`` with only ``[A-Za-z0-9._-]`` and no leading dot,
    at most 100 characters; never empty, never ``..``."""
    base = re.split(r"[\\/]", name or "")[-1]
    base = _UNSAFE.sub("_", base).lstrip(".")[-100:]
    return base or default


async def decode_images(images: list[InputImage], settings: Settings) -> list[DecodedImage]:
    """Decode every input (URLs concurrently); the first failure is raised."""
    if not images:
        return []
    return list(
        await asyncio.gather(*(decode_image(img, i, settings) for i, img in enumerate(images)))
    )


async def decode_image(image: InputImage, index: int, settings: Settings) -> DecodedImage:
    label = f"images[{index}]" + (f" ({image.name})" if image.name else "")
    source = image.image.strip()
    declared: str | None = None
    if source[:5].lower() == "data:":
        declared, data = _data_uri(source, label, settings.max_input_bytes)
    elif source[:7].lower() == "http://" or source[:8].lower() == "https://":
        data, declared = await fetch_url(source, settings, label=label)
    elif looks_like_url(source):
        raise ForbiddenURL(f"{label}: only http(s) URLs may be fetched", url=source[:200])
    else:
        data = _b64(source, label, settings.max_input_bytes)
    media_type, ext = await _verify(data, declared, label)
    name = safe_filename(image.name, f"image_{index}")
    if "." not in name.strip("."):
        name += ext
    return DecodedImage(name=name, data=data, media_type=media_type, node_id=image.node_id)


def _b64(text: str, label: str, limit: int) -> bytes:
    text = "".join(text.split())
    if len(text) * 3 // 4 > limit + 2:
        raise PayloadTooLarge(
            f"{label} is larger than the {limit} bytes allowed", limit=limit, field=label
        )
    text += "=" * (-len(text) % 4)
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InputImageError(f"{label} is not valid base64: {exc}", field=label) from None
    if not data:
        raise InputImageError(f"{label} is empty", field=label)
    if len(data) > limit:
        raise PayloadTooLarge(
            f"{label} is larger than the {limit} bytes allowed", limit=limit, field=label
        )
    return data


def _data_uri(uri: str, label: str, limit: int) -> tuple[str | None, bytes]:
    header, sep, payload = uri.partition(",")
    if not sep or not header.lower().endswith(";base64"):
        raise InputImageError(f"{label}: only base64 data URIs are supported", field=label)
    media_type = header[5:].split(";")[0].strip().lower() or None
    return media_type, _b64(payload, label, limit)


async def _verify(data: bytes, declared: str | None, label: str) -> tuple[str, str]:
    """Check image bytes with Pillow (videos/audio pass as declared); (media type, extension)."""
    if declared and declared.split("/")[0] in ("video", "audio"):
        return declared, mimetypes.guess_extension(declared) or ".bin"
    # Small images are checked inline (a thread hop costs more than the check itself).
    if len(data) < 2**20:
        fmt = _inspect(data, label)
    else:
        fmt = await asyncio.to_thread(_inspect, data, label)
    ext = _EXT.get(fmt, "." + fmt.lower())
    return Image.MIME.get(fmt, f"image/{fmt.lower()}"), ext


def _inspect(data: bytes, label: str) -> str:
    try:
        with Image.open(BytesIO(data)) as img:
            fmt = str(img.format)
            img.verify()
    except Image.DecompressionBombError as exc:
        raise PayloadTooLarge(f"{label} has too many pixels: {exc}", field=label) from None
    except Exception as exc:
        raise InputImageError(f"{label} is not a readable image: {exc}", field=label) from None
    return fmt


# --- URLs -------------------------------------------------------------------------------


class _PinnedResolver(AbstractResolver):
    """Answers with the addresses `_admit` checked, so the connection goes exactly there."""

    def __init__(self, pins: dict[str, list[ResolveResult]]) -> None:
        self._pins = pins
        self._fallback = DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        pinned = self._pins.get(host)
        return pinned if pinned is not None else await self._fallback.resolve(host, port, family)

    async def close(self) -> None:
        await self._fallback.close()


async def fetch_url(
    url: str, settings: Settings, *, label: str = "url"
) -> tuple[bytes, str | None]:
    """Download ``url`` (redirects followed by hand, each hop admitted); (bytes, content type)."""
    limit = settings.max_input_bytes
    pins: dict[str, list[ResolveResult]] = {}
    connector = aiohttp.TCPConnector(resolver=_PinnedResolver(pins), use_dns_cache=False)
    timeout = aiohttp.ClientTimeout(total=settings.url_timeout)
    current = URL(url)
    try:
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            for _hop in range(settings.url_max_redirects + 1):
                await _admit(current, pins, settings, label)
                async with session.get(current, allow_redirects=False) as resp:
                    if resp.status in _REDIRECTS and "Location" in resp.headers:
                        current = current.join(URL(resp.headers["Location"]))
                        continue
                    if resp.status != 200:
                        raise InputImageError(
                            f"{label}: {current} answered HTTP {resp.status}", url=str(current)
                        )
                    if resp.content_length is not None and resp.content_length > limit:
                        raise _too_large(label, limit)
                    body = bytearray()
                    async for chunk in resp.content.iter_chunked(2**16):
                        body += chunk
                        if len(body) > limit:
                            raise _too_large(label, limit)
                    return bytes(body), resp.content_type
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        raise InputImageError(
            f"{label}: downloading {current} failed: {exc or type(exc).__name__}",
            url=str(current),
        ) from None
    raise ForbiddenURL(f"{label}: more than {settings.url_max_redirects} redirects", url=url[:200])


def _too_large(label: str, limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"{label} is larger than the {limit} bytes allowed", limit=limit)


async def _admit(
    url: URL, pins: dict[str, list[ResolveResult]], settings: Settings, label: str
) -> None:
    if url.scheme not in ("http", "https") or not url.host:
        raise ForbiddenURL(f"{label}: only http(s) URLs may be fetched", url=str(url)[:200])
    check_url(str(url), field=label, allow_private=True)  # form here; addresses below
    if settings.allow_private_urls:
        return
    host, port = url.host, url.port or (443 if url.scheme == "https" else 80)
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise InputImageError(f"{label}: cannot resolve {host}: {exc}", url=str(url)) from None
    results: list[ResolveResult] = []
    for family, _type, proto, _canon, sockaddr in infos:
        address = ipaddress.ip_address(str(sockaddr[0]).split("%")[0])
        if is_forbidden_address(address):
            raise ForbiddenURL(
                f"{label}: {host} resolves to a non-public address ({address})", url=str(url)
            )
        results.append(_result(host, str(sockaddr[0]), port, family, proto))
    pins[host] = results


def _result(host: str, ip: str, port: int, family: int, proto: int) -> ResolveResult:
    return ResolveResult(
        hostname=host,
        host=ip,
        port=port,
        family=family,
        proto=proto,
        flags=socket.AI_NUMERICHOST | socket.AI_NUMERICSERV,
    )
