"""REST helpers (``/api/v1``): history, presence, publishing, the activity log in pages
and as streamed exports, API keys, member revocation and the pattern library's
low-level calls (``PatternLibrary`` in ``teamhub.patterns`` builds sync on them).

Errors come back as the ``teamhub.errors`` class of the body's ``code``. A 401 with a
token callable is retried once with a fresh token; reads (``GET``) are retried on 429
(after ``Retry-After``), 503 and connection errors, up to ``retries`` times; never on
a TLS certificate that does not verify (``TlsError``), which no retry can fix.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import IO, Any, Literal, cast
from urllib.parse import quote

import httpx

from ._version import __version__
from .backoff import Backoff
from .errors import (
    Conflict,
    ExportIncomplete,
    RateLimited,
    TeamhubError,
    TlsError,
    Unavailable,
    error_for,
)
from .protocol import (
    ActivityRow,
    ApiKey,
    CreatedApiKey,
    History,
    Pattern,
    PatternFeed,
    PresenceEntry,
    Revocation,
    check_ident,
    http_url,
    is_secure,
)
from .tls import TlsLike, describe, ssl_context, verify_failure
from .tokens import TokenProvider, TokenSource

ExportFormat = Literal["csv", "ndjson"]
TimeLike = datetime | str


@dataclass(frozen=True, slots=True)
class ActivityPage:
    items: list[ActivityRow]
    next_cursor: str | None


def _seg(kind: str, value: str) -> str:
    return quote(check_ident(kind, value), safe="")


def _time(value: TimeLike) -> str:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("activity times must be timezone-aware datetimes (or RFC 3339 text)")
        return value.isoformat()
    return value


def _etag(version: int) -> str:
    return f'"{int(version)}"'


class Rest:
    """The REST API of one node (any node of a cluster). Share a ``TokenSource`` with
    a ``Client`` to use one token, refreshed in one place. ``ssl`` as for ``Client``:
    for an ``https://`` node, a private CA's PEM file or an ``ssl.SSLContext`` (by
    default the system's roots, the same ones the socket trusts)."""

    def __init__(
        self,
        url: str,
        token: str | TokenProvider | TokenSource,
        *,
        timeout: float = 10.0,
        retries: int = 2,
        ssl: TlsLike | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        user_agent: str | None = None,
    ) -> None:
        self.base = http_url(url)
        secure = is_secure(self.base)
        if ssl is not None and not secure:
            raise ValueError(f"ssl= is for https:// or wss:// nodes; {self.base} is plain text")
        if retries < 0:
            raise ValueError("retries must be >= 0")
        self.tokens = TokenSource.of(token)
        self.retries = retries
        self._http = httpx.AsyncClient(
            base_url=f"{self.base}/api/v1",
            timeout=timeout,
            verify=ssl_context(ssl) if secure else True,
            transport=transport,
            headers={"user-agent": user_agent or f"teamhub-python/{__version__}"},
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> Rest:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # ---- messages and presence ------------------------------------------------------

    async def publish(self, team: str, type: str, data: Any) -> int:
        """Publishes as the token's user (``editor``); returns the offset."""
        check_ident("type", type, max_len=64)
        body = await self._json(
            "POST", f"/teams/{_seg('team', team)}/messages", json={"type": type, "data": data}
        )
        return int(body["offset"])

    async def presence(self, team: str) -> list[PresenceEntry]:
        body = await self._json("GET", f"/teams/{_seg('team', team)}/presence")
        return cast(list[PresenceEntry], body["presence"])

    async def history(self, team: str, *, since: int = 0, limit: int | None = None) -> History:
        """Messages after offset ``since`` still in history, oldest first, with the
        team's epoch and latest offset."""
        params: dict[str, Any] = {"since": since}
        if limit is not None:
            params["limit"] = limit
        return cast(History, await self._json("GET", f"/teams/{_seg('team', team)}/history", params=params))

    # ---- activity log ---------------------------------------------------------------

    async def activity(
        self,
        team: str,
        *,
        user: str | None = None,
        action: str | None = None,
        resource_type: str | None = None,
        since: TimeLike | None = None,
        until: TimeLike | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> ActivityPage:
        """One page of the activity log (``admin``), newest first."""
        params = self._activity_params(user, action, resource_type, since, until, cursor)
        if limit is not None:
            params["limit"] = limit
        body = await self._json("GET", f"/teams/{_seg('team', team)}/activity", params=params)
        return ActivityPage(cast(list[ActivityRow], body["items"]), body.get("next_cursor"))

    async def activity_pages(
        self,
        team: str,
        *,
        user: str | None = None,
        action: str | None = None,
        resource_type: str | None = None,
        since: TimeLike | None = None,
        until: TimeLike | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> AsyncIterator[ActivityPage]:
        """Every page from ``cursor`` on, following ``next_cursor`` (keyset pages: rows
        that arrive meanwhile are neither repeated nor make it skip one)."""
        while True:
            page = await self.activity(
                team,
                user=user,
                action=action,
                resource_type=resource_type,
                since=since,
                until=until,
                limit=limit,
                cursor=cursor,
            )
            yield page
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    async def export_activity(
        self,
        team: str,
        format: ExportFormat = "ndjson",
        *,
        user: str | None = None,
        action: str | None = None,
        resource_type: str | None = None,
        since: TimeLike | None = None,
        until: TimeLike | None = None,
        cursor: str | None = None,
    ) -> AsyncIterator[bytes]:
        """The streamed export (``format=csv`` with its header line, or ``ndjson``) in
        chunks as they arrive. Raises ``ExportIncomplete`` if the transfer breaks off
        before its end (the chunks already yielded are then not the whole export)."""
        params = self._activity_params(user, action, resource_type, since, until, cursor)
        params["format"] = format
        path = f"/teams/{_seg('team', team)}/activity"
        async with self._stream("GET", path, params=params) as response:
            try:
                async for chunk in response.aiter_bytes():
                    yield chunk
            except (httpx.RemoteProtocolError, httpx.ReadError) as e:
                raise ExportIncomplete(f"the export broke off: {e}") from e

    async def export_activity_rows(self, team: str, **filters: Any) -> AsyncIterator[ActivityRow]:
        """The NDJSON export, one row at a time (same filters as ``export_activity``)."""
        buffer = b""
        async for chunk in self.export_activity(team, "ndjson", **filters):
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                if line.strip():
                    yield cast(ActivityRow, json.loads(line))
        if buffer.strip():
            yield cast(ActivityRow, json.loads(buffer))

    async def export_activity_to(
        self, team: str, out: IO[bytes], format: ExportFormat = "csv", **filters: Any
    ) -> int:
        """Writes the export to a binary file; returns the bytes written."""
        written = 0
        async for chunk in self.export_activity(team, format, **filters):
            out.write(chunk)
            written += len(chunk)
        return written

    # ---- API keys and members -------------------------------------------------------

    async def create_api_key(self, team: str, name: str, role: str) -> CreatedApiKey:
        """A new key (``admin``); its ``key`` is shown only in this answer."""
        body = await self._json(
            "POST", f"/teams/{_seg('team', team)}/api-keys", json={"name": name, "role": role}
        )
        return cast(CreatedApiKey, body)

    async def api_keys(self, team: str) -> list[ApiKey]:
        body = await self._json("GET", f"/teams/{_seg('team', team)}/api-keys")
        return cast(list[ApiKey], body["api_keys"])

    async def delete_api_key(self, team: str, key_id: str) -> None:
        """Deletes a key: it stops working on every node at once, and its sockets are
        closed with 4001 within a second."""
        await self._send("DELETE", f"/teams/{_seg('team', team)}/api-keys/{_seg('key id', key_id)}")

    async def revoke_member(self, team: str, user: str) -> Revocation:
        """Takes ``user`` out of ``team`` on every node (``kicked``, reason ``revoked``);
        their tokens issued before now can no longer join it."""
        body = await self._json("POST", f"/teams/{_seg('team', team)}/members/{_seg('user', user)}/revoke")
        return cast(Revocation, body)

    # ---- patterns (low level; see PatternLibrary) -----------------------------------

    async def pattern_feed(self, team: str, since_version: int = 0) -> PatternFeed:
        """Every pattern and tombstone changed after ``since_version``, oldest change
        first, and the team's latest version."""
        body = await self._json(
            "GET", f"/teams/{_seg('team', team)}/patterns", params={"since_version": since_version}
        )
        return cast(PatternFeed, body)

    async def get_pattern(self, team: str, name: str, *, if_none_match: int | None = None) -> Pattern | None:
        """The live pattern (``NotFound`` when missing or deleted); ``None`` when it is
        still at version ``if_none_match`` (304)."""
        headers = {"if-none-match": _etag(if_none_match)} if if_none_match is not None else {}
        response = await self._send("GET", self._pattern_path(team, name), headers=headers, ok=(200, 304))
        if response.status_code == 304:
            return None
        return cast(Pattern, response.json())

    async def create_pattern(self, team: str, name: str, content: Any) -> Pattern:
        """Creates (``If-None-Match: *``); ``Conflict`` (with ``current``) when a live
        pattern of that name exists."""
        response = await self._send(
            "PUT",
            self._pattern_path(team, name),
            json={"content": content},
            headers={"if-none-match": "*"},
        )
        return cast(Pattern, response.json())

    async def update_pattern(self, team: str, name: str, content: Any, *, version: int) -> Pattern:
        """Updates from ``version`` (``If-Match``); ``Conflict`` (with ``current``) when
        it is no longer the current version, or the pattern was deleted."""
        response = await self._send(
            "PUT",
            self._pattern_path(team, name),
            json={"content": content},
            headers={"if-match": _etag(version)},
        )
        return cast(Pattern, response.json())

    async def delete_pattern(self, team: str, name: str, *, version: int) -> None:
        """Deletes at ``version`` (``admin``); ``Conflict`` when stale."""
        await self._send("DELETE", self._pattern_path(team, name), headers={"if-match": _etag(version)})

    def _pattern_path(self, team: str, name: str) -> str:
        return f"/teams/{_seg('team', team)}/patterns/{_seg('pattern name', name)}"

    # ---- plumbing -------------------------------------------------------------------

    @staticmethod
    def _activity_params(
        user: str | None,
        action: str | None,
        resource_type: str | None,
        since: TimeLike | None,
        until: TimeLike | None,
        cursor: str | None,
    ) -> dict[str, Any]:
        params: dict[str, Any] = {}
        for key, value in (("user", user), ("action", action), ("resource_type", resource_type)):
            if value is not None:
                params[key] = value
        if since is not None:
            params["since"] = _time(since)
        if until is not None:
            params["until"] = _time(until)
        if cursor is not None:
            params["cursor"] = cursor
        return params

    async def _json(self, method: str, path: str, **kw: Any) -> Any:
        return (await self._send(method, path, **kw)).json()

    async def _send(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        ok: tuple[int, ...] = (200, 201, 204),
    ) -> httpx.Response:
        backoff = Backoff(0.2, 5.0)
        renewed = False
        attempt = 0
        while True:
            token = await self.tokens.get()
            request_headers = {"authorization": f"Bearer {token}", **(headers or {})}
            try:
                response = await self._http.request(
                    method, path, params=params, json=json, headers=request_headers
                )
            except httpx.TransportError as e:
                _raise_if_tls(e, self.base)
                if method == "GET" and attempt < self.retries:
                    attempt += 1
                    await asyncio.sleep(backoff.next_delay())
                    continue
                raise Unavailable(f"{method} {path}: {type(e).__name__}: {e}") from e
            if response.status_code in ok:
                return response
            error = _error(response)
            if response.status_code == 401 and self.tokens.renewable and not renewed:
                renewed = True
                await self.tokens.renew(token)
                continue
            if method == "GET" and response.status_code in (429, 503) and attempt < self.retries:
                attempt += 1
                wait = error.retry_after if isinstance(error, RateLimited) else None
                await asyncio.sleep(min(wait, 30.0) if wait is not None else backoff.next_delay())
                continue
            raise error

    def _stream(self, method: str, path: str, *, params: Mapping[str, Any]) -> _Streamed:
        return _Streamed(self, method, path, params)


class _Streamed:
    """``async with``: a streamed response whose status was checked."""

    def __init__(self, rest: Rest, method: str, path: str, params: Mapping[str, Any]) -> None:
        self._rest = rest
        self._args = (method, path, params)
        self._cm: Any = None

    async def __aenter__(self) -> httpx.Response:
        method, path, params = self._args
        renewed = False
        while True:
            token = await self._rest.tokens.get()
            request = self._rest._http.build_request(
                method, path, params=params, headers={"authorization": f"Bearer {token}"}
            )
            try:
                response = await self._rest._http.send(request, stream=True)
            except httpx.TransportError as e:
                _raise_if_tls(e, self._rest.base)
                raise Unavailable(f"{method} {path}: {type(e).__name__}: {e}") from e
            if response.status_code == 200:
                self._cm = response
                return response
            await response.aread()
            await response.aclose()
            if response.status_code == 401 and self._rest.tokens.renewable and not renewed:
                renewed = True
                await self._rest.tokens.renew(token)
                continue
            raise _error(response)

    async def __aexit__(self, *exc: object) -> None:
        if self._cm is not None:
            await self._cm.aclose()


def _raise_if_tls(e: httpx.TransportError, url: str) -> None:
    """A certificate that does not verify is ``TlsError``, raised at once (not retried,
    not ``Unavailable``: waiting will not help)."""
    failure = verify_failure(e)
    if failure is not None:
        raise TlsError(describe(failure, url)) from e


def _error(response: httpx.Response) -> TeamhubError:
    """The exception for an error answer (``{"error": {"code", "message"}}``)."""
    status = response.status_code
    code, message, body = None, response.reason_phrase, None
    try:
        body = response.json()
        detail = body.get("error") if isinstance(body, dict) else None
        if isinstance(detail, dict):
            code = detail.get("code")
            message = str(detail.get("message", message))
    except ValueError:
        pass
    if not isinstance(code, str):
        code = {
            400: "bad_request",
            401: "unauthorized",
            403: "forbidden",
            404: "not_found",
            409: "conflict",
            413: "too_large",
            428: "precondition_required",
            429: "rate_limited",
            503: "unavailable",
        }.get(status, "internal")
    if code == "conflict":
        current = body.get("current") if isinstance(body, dict) else None
        return Conflict(message, current=cast(Pattern | None, current), status=status)
    if status == 429:
        retry = response.headers.get("retry-after")
        try:
            after = float(retry) if retry is not None else None
        except ValueError:
            after = None
        if code == "rate_limited":
            return RateLimited(message, retry_after=after, status=status)
    return error_for(code, message, status=status)
