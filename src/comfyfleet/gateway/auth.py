"""Bearer-token authentication with four roles, and the rule that an open gateway stays local.

Keys come from ``Settings.api_keys`` as ``"token:role"`` (``COMFYFLEET_API_KEYS=a:admin,b:read``).
Roles nest so one key per client is enough: ``read`` sees tasks and metrics, ``submit`` also
creates and cancels tasks, ``admin`` may do everything (drain backends, act as an agent),
``agent`` only talks the pull-agent protocol.
With no keys at all the gateway is unauthenticated, which is only acceptable on loopback: it
refuses to start on any other address and answers only loopback clients.
"""

from __future__ import annotations

import hmac
import ipaddress
from dataclasses import dataclass
from typing import Literal

from comfyfleet.errors import AuthError, ComfyFleetError, Forbidden

Role = Literal["read", "submit", "admin", "agent"]
ROLES: tuple[Role, ...] = ("read", "submit", "admin", "agent")

# What each role may do, by the role a route requires.
GRANTS: dict[str, frozenset[str]] = {
    "read": frozenset({"read"}),
    "submit": frozenset({"read", "submit"}),
    "admin": frozenset(ROLES),
    "agent": frozenset({"agent"}),
}


class InsecureBinding(ComfyFleetError):
    """Refusing to serve without API keys on a non-loopback address."""

    code = "insecure_binding"


class BadKeyConfig(ComfyFleetError):
    """An API key entry is not of the form token:role."""

    code = "bad_api_key"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the key's role and a short, loggable key id (never the token)."""

    role: Role
    key_id: str

    def allows(self, required: Role) -> bool:
        return required in GRANTS[self.role]


LOCAL = Principal(role="admin", key_id="loopback")


@dataclass(frozen=True, slots=True)
class KeyRing:
    """The configured keys; empty means loopback-only, unauthenticated."""

    keys: tuple[tuple[str, Principal], ...]

    @classmethod
    def parse(cls, entries: list[str]) -> KeyRing:
        keys: list[tuple[str, Principal]] = []
        for index, entry in enumerate(entries):
            token, sep, role = entry.rpartition(":")
            if not sep or not token or role not in ROLES:
                raise BadKeyConfig(
                    f"api_keys[{index}] must be 'token:role' with role one of {', '.join(ROLES)}",
                    index=index,
                )
            keys.append((token, Principal(role=role, key_id=f"{role}#{index}")))  # type: ignore[arg-type]
        return cls(keys=tuple(keys))

    @property
    def open(self) -> bool:
        return not self.keys

    @property
    def mode(self) -> str:
        """One line for the banner and /readyz."""
        if self.open:
            return "none (loopback only, no API keys configured)"
        roles = sorted({p.role for _, p in self.keys})
        return f"bearer tokens ({len(self.keys)} keys: {', '.join(roles)})"

    def authenticate(self, authorization: str | None, client_host: str | None) -> Principal:
        """The caller's principal; AuthError (401) for a missing or unknown token."""
        if self.open:
            if not is_loopback(client_host):
                raise Forbidden("this gateway has no API keys and only answers loopback clients")
            return LOCAL
        scheme, _, token = (authorization or "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise AuthError("missing bearer token (Authorization: Bearer <token>)")
        found: Principal | None = None
        for known, principal in self.keys:
            # Compare against every key so timing does not reveal which prefix matched.
            if hmac.compare_digest(known.encode(), token.encode()):
                found = principal
        if found is None:
            raise AuthError("unknown bearer token")
        return found


def authorize(principal: Principal, required: Role) -> Principal:
    if not principal.allows(required):
        raise Forbidden(
            f"this key's role '{principal.role}' may not do this (needs '{required}')",
            role=principal.role,
            required=required,
        )
    return principal


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_exposure(host: str, keys: KeyRing) -> None:
    """Raise InsecureBinding when an unauthenticated gateway would listen beyond loopback."""
    if keys.open and not is_loopback(host):
        raise InsecureBinding(
            f"refusing to listen on {host} without API keys: anyone who can reach it could run "
            "workflows. Set COMFYFLEET_API_KEYS (e.g. '<token>:admin,<token2>:submit') or "
            "listen on 127.0.0.1.",
            host=host,
        )
