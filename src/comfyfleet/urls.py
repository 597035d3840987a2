"""Which URLs comfyfleet may fetch or call: one policy for input images, model files and
webhooks.

Two stages. `check_url` runs at submit time and needs no DNS: an absolute http(s) URL with a
host, no credentials, no whitespace, and — unless private addresses are allowed — a host that is
not a literal loopback/private/link-local/unspecified address in any notation a resolver
accepts (dotted, one decimal integer like ``2130706433``, hex or octal parts like ``0x7f.1``,
bracketed IPv6, IPv4-mapped ``[::ffff:127.0.0.1]``, 6to4 and NAT64 wrappers). A request
refused here leaves no task. Names that need DNS are judged at fetch time against the
addresses actually connected to (`inputs.fetch_url`), with `is_forbidden_address`.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from urllib.parse import urlsplit

from comfyfleet.errors import ForbiddenURL

Address = ipaddress.IPv4Address | ipaddress.IPv6Address

# A scheme prefix (RFC 3986). Base64 never contains ':', so anything matching is a URL.
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")
_NUMERIC_HOST = re.compile(r"^[0-9a-fA-FxX.]+$")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
ALLOW_HINT = "COMFYFLEET_ALLOW_PRIVATE_URLS=true allows them"


def looks_like_url(text: str) -> bool:
    """True for ``scheme:...`` text other than a data URI (base64 has no ':')."""
    return bool(SCHEME.match(text)) and text[:5].lower() != "data:"


def literal_address(host: str) -> Address | None:
    """The address a host names by itself, in any notation a resolver accepts, or None when
    it is a name that needs DNS."""
    host = host.strip("[]").rstrip(".")
    if ":" in host:
        try:
            return ipaddress.IPv6Address(host.split("%", 1)[0])
        except ValueError:
            return None
    if not _NUMERIC_HOST.match(host):
        return None
    try:  # inet_aton reads what getaddrinfo reads: 127.1, 2130706433, 0x7f.0.0.1, 0177.0.0.1
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except OSError:
        return None


def embedded_ipv4(address: Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one carries (mapped, 6to4, NAT64), if any."""
    if isinstance(address, ipaddress.IPv4Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def is_forbidden_address(address: Address) -> bool:
    """Loopback, private, link-local, unspecified, reserved or multicast — also when wrapped
    in an IPv6 address."""
    inner = embedded_ipv4(address)
    if inner is not None:
        return is_forbidden_address(inner)
    return not address.is_global or address.is_multicast or address.is_reserved


def check_url(url: str, *, field: str, allow_private: bool = False) -> None:
    """`ForbiddenURL` (400, ``details.field``) for a URL that is wrong without a DNS lookup."""
    try:
        parts = urlsplit(url)
        port_ok = parts.port is None or parts.port > 0
    except ValueError:
        parts, port_ok = None, False
    if (
        parts is None
        or parts.scheme.lower() not in ("http", "https")
        or not parts.hostname
        or not port_ok
        or "@" in parts.netloc
        or any(ch.isspace() or ord(ch) < 32 for ch in url)
    ):
        raise ForbiddenURL(
            f"{field} must be an absolute http:// or https:// URL with a host "
            "(no credentials, no spaces)",
            field=field,
            url=url[:200],
        )
    if allow_private:
        return
    address = literal_address(parts.hostname)
    if address is not None and is_forbidden_address(address):
        raise ForbiddenURL(
            f"{field}: {parts.hostname} is a non-public address ({describe(address)}); only "
            f"public hosts may be fetched ({ALLOW_HINT})",
            field=field,
            url=url[:200],
        )


def describe(address: Address) -> str:
    """``127.0.0.1``, or ``::ffff:7f00:1 = 127.0.0.1`` for a wrapped one."""
    inner = embedded_ipv4(address)
    return f"{address} = {inner}" if inner is not None else str(address)
