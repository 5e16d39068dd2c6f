"""Wire types of the teamhub contract (docs/protocol.md) and the rules around them:
close-code advice, socket URLs, JWT expiry. No I/O here.

The ``TypedDict`` classes are the JSON objects exactly as they travel, so a frame or a
REST body can be used as it is and still be type checked.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Any, Literal, TypedDict
from urllib.parse import urlsplit, urlunsplit

SUBPROTOCOL = "teamhub.v1"

IDENT = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")
"""Team ids, user ids, pattern names and message types (types: at most 64)."""

#: Message types the server publishes; a client may not publish them.
RESERVED_PREFIXES = ("presence.", "pattern.", "system.")

PATTERN_UPDATED = "pattern.updated"
PATTERN_DELETED = "pattern.deleted"


class Since(TypedDict):
    """A position in a team's message stream, for ``join``'s ``since``."""

    epoch: str
    offset: int


class PresenceEntry(TypedDict):
    user: str
    name: str | None
    conns: int
    meta: dict[str, Any] | None


class MessageFrame(TypedDict):
    op: Literal["message"]
    team: str
    offset: int
    type: str
    user: str
    data: Any
    ts: str


class JoinReply(TypedDict):
    op: Literal["reply"]
    id: int
    ok: Literal[True]
    team: str
    epoch: str
    offset: int
    presence: list[PresenceEntry]
    recovered: bool
    missed: list[MessageFrame]


class Pattern(TypedDict):
    name: str
    version: int
    content: Any
    updated_by: str
    updated_at: str
    deleted: bool


class PatternFeed(TypedDict):
    version: int
    patterns: list[Pattern]


class History(TypedDict):
    team: str
    epoch: str
    offset: int
    messages: list[MessageFrame]


class ActivityRow(TypedDict):
    id: str
    team: str
    user: str
    action: str
    resource_type: str | None
    resource_id: str | None
    metadata: Any
    ip: str | None
    user_agent: str | None
    created_at: str


class ApiKey(TypedDict):
    id: str
    name: str
    role: str
    prefix: str
    created_by: str
    created_at: str


class CreatedApiKey(TypedDict):
    id: str
    name: str
    role: str
    prefix: str
    key: str
    created_at: str


class Revocation(TypedDict):
    team: str
    user: str
    revoked_at: str


Advice = Literal["now", "refresh", "stop", "backoff"]

#: Close codes after which reconnecting cannot help.
STOP_CODES = frozenset({1002, 1007, 1008, 1009, 4008})


def close_advice(code: int | None) -> Advice:
    """What docs/clients.md says to do after the socket closed with ``code``.

    ``None`` (no close frame: network loss) is handled like 1011.
    """
    if code == 1012:
        return "now"  # node draining: reconnect at once (elsewhere), recover with since
    if code == 4001:
        return "refresh"  # token expired: get a new one, then reconnect
    if code in STOP_CODES:
        # A frame of ours broke RFC 6455 (1002) or was not UTF-8 (1007), not a member
        # (1008), a frame too large (1009), sustained rate-limit violations (4008).
        return "stop"
    return "backoff"  # 1000, 1001, 1011, 1013, 1006, anything else


def check_ident(kind: str, value: str, *, max_len: int = 128) -> str:
    """``value`` if it is a valid identifier, else ``ValueError`` (the hub would answer
    ``bad_request``)."""
    if not isinstance(value, str) or not IDENT.match(value) or len(value) > max_len:
        raise ValueError(f"{kind} {value!r} must match ^[A-Za-z0-9_.:-]{{1,{max_len}}}$")
    return value


def check_since(since: Any) -> Since:
    """``since`` if it is a position (``{"epoch": str, "offset": int >= 0}``), else
    ``ValueError``: a malformed one would be a ``bad_request`` from the hub."""
    epoch = since.get("epoch") if isinstance(since, dict) else None
    offset = since.get("offset") if isinstance(since, dict) else None
    if (
        not isinstance(epoch, str)
        or not epoch
        or not isinstance(offset, int)
        or isinstance(offset, bool)
        or offset < 0
    ):
        raise ValueError(f'since must be {{"epoch": str, "offset": int >= 0}}, not {since!r}')
    return {"epoch": epoch, "offset": offset}


def is_secure(url: str) -> bool:
    """Whether a node or socket URL speaks TLS (``https://`` or ``wss://``)."""
    return urlsplit(url).scheme in ("https", "wss")


def socket_url(base: str) -> str:
    """The socket URL for a node URL: ``http(s)://`` becomes ``ws(s)://`` and ``/ws`` is
    appended to the path unless it already ends with it (a node behind a path prefix
    keeps the prefix). The query and fragment are dropped."""
    parts = urlsplit(base)
    scheme = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}.get(parts.scheme)
    if scheme is None or not parts.netloc:
        raise ValueError(f"not a node URL: {base!r} (want http(s):// or ws(s)://HOST:PORT)")
    path = parts.path.rstrip("/")
    if not path.endswith("/ws"):
        path = f"{path}/ws"
    return urlunsplit((scheme, parts.netloc, path, "", ""))


def http_url(base: str) -> str:
    """The REST base for a node URL (``ws(s)://`` becomes ``http(s)://``; a trailing
    ``/ws`` is dropped)."""
    parts = urlsplit(base)
    scheme = {"http": "http", "https": "https", "ws": "http", "wss": "https"}.get(parts.scheme)
    if scheme is None or not parts.netloc:
        raise ValueError(f"not a node URL: {base!r} (want http(s):// or ws(s)://HOST:PORT)")
    path = parts.path.rstrip("/")
    if path.endswith("/ws"):
        path = path[: -len("/ws")]
    return urlunsplit((scheme, parts.netloc, path, "", ""))


def jwt_claims(token: str) -> dict[str, Any] | None:
    """The payload of a JWT, unverified; ``None`` for API keys and anything malformed."""
    if token.startswith("thk_"):
        return None
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        raw = base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4))
        claims = json.loads(raw)
    except (binascii.Error, ValueError):
        return None
    return claims if isinstance(claims, dict) else None


def jwt_exp(token: str) -> float | None:
    """The token's ``exp`` in Unix seconds, if it is a JWT that has one."""
    claims = jwt_claims(token)
    exp = claims.get("exp") if claims else None
    return float(exp) if isinstance(exp, int | float) and not isinstance(exp, bool) else None
