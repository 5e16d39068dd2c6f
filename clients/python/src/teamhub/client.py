"""The asyncio client: one WebSocket to a node that stays connected.

It follows docs/clients.md as the browser library (clients/browser/teamhub.js) does:
requests matched to replies by ``id``; a position per team (``Positions``) so every
reconnect rejoins each team with ``since`` and reports per team whether it recovered;
a live ``PresenceMap`` per team; full-jitter backoff; close codes acted on as the
contract advises (1012: reconnect at once, to the next node when several are given;
4001: get a new token, then reconnect; 1002, 1007, 1008, 1009, 4008: stop); and a token callable
that is asked for a fresh token before a JWT expires, then sent as ``refresh``.

Everything happens on one task that owns the socket (``_run``): it opens it, reads
every frame in order and decides what to do when it ends. Join replies are applied by
that reader before the next frame is read, so a team's position and the messages after
its reply can never be seen out of order.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import ssl as _ssl
import time
import weakref
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, cast

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException

from ._version import __version__
from .backoff import Backoff
from .errors import (
    ClientClosed,
    ClientStopped,
    ConnectionLost,
    Forbidden,
    NotConnected,
    RequestTimeout,
    TeamhubError,
    TlsStopped,
    Unauthorized,
    error_for,
)
from .events import (
    Connected,
    Disconnected,
    Event,
    EventStream,
    Joined,
    Kicked,
    Message,
    PresenceChanged,
    Reconnected,
    RejoinResult,
    ServerError,
    Stopped,
    TokenRefreshed,
)
from .protocol import (
    SUBPROTOCOL,
    Advice,
    JoinReply,
    MessageFrame,
    Since,
    check_ident,
    check_since,
    close_advice,
    is_secure,
    socket_url,
)
from .state import Positions, PresenceMap
from .tls import TlsLike, describe, ssl_context, verify_failure
from .tokens import TokenProvider, TokenSource

log = logging.getLogger("teamhub")

State = Literal["idle", "connecting", "open", "reconnecting", "stopped"]
Meta = dict[str, Any]
MetaLike = Meta | Callable[[], Meta | None] | None

# What to call a close code when giving up on it: the contract's error code.
_STOP_CODES = {
    1002: "bad_request",
    1007: "bad_request",
    1008: "forbidden",
    1009: "too_large",
    4001: "unauthorized",
    4008: "rate_limited",
}


@dataclass
class _Team:
    name: str
    presence: PresenceMap
    meta: MetaLike = None
    wanted: bool = False  # joined, or to be joined on the next connection
    ever_joined: bool = False
    waiters: list[asyncio.Future[JoinReply]] = field(default_factory=list)

    def settle(self, reply: JoinReply | None = None, error: BaseException | None = None) -> None:
        for w in self.waiters:
            if w.done():
                continue
            if error is not None:
                w.set_exception(error)
            else:
                w.set_result(cast(JoinReply, reply))
        self.waiters.clear()


@dataclass
class _Pending:
    future: asyncio.Future[dict[str, Any]]
    hook: Callable[[dict[str, Any]], Awaitable[None]] | None = None


@dataclass
class _Ended:
    """How one connection attempt ended."""

    code: int
    reason: str
    advice: Advice
    stop: TeamhubError | None = None
    opened: bool = False


class Client:
    """A connection to a teamhub node that stays connected until :meth:`close`.

    ``url``: a node URL (``http://host:8080``, ``ws://host:8080/ws``, ``wss://…``), or
    several nodes of one cluster, tried in turn: after a drain (1012) the client moves
    to the next at once. ``token``: a JWT or API key, or a callable (plain or async)
    returning a fresh token, used for the first connection, ``refresh_margin`` seconds
    before a JWT's ``exp`` (sent as ``refresh``; ``refresh_margin=None`` turns that
    off), after a close 4001 and after a 401. ``ssl``: for ``wss://``/``https://``
    nodes, the CA file (PEM) of a private CA or an ``ssl.SSLContext``; by default the
    system's roots. A certificate that does not verify stops the client
    (``TlsStopped``): it is not retried.

    Use it as ``async with Client(...) as client:``, or call :meth:`connect` and
    :meth:`close`. Read what happens from :meth:`events` (make the stream before you
    join, to see the join).
    """

    def __init__(
        self,
        url: str | Sequence[str],
        token: str | TokenProvider | TokenSource,
        *,
        backoff: Backoff | None = None,
        request_timeout: float = 10.0,
        open_timeout: float = 10.0,
        refresh_margin: float | None = 60.0,
        max_queue: int = 10_000,
        max_frame_bytes: int | None = 64 * 1024 * 1024,
        ssl: TlsLike | None = None,
        user_agent: str | None = None,
    ) -> None:
        urls = [url] if isinstance(url, str) else list(url)
        if not urls:
            raise ValueError("at least one node URL is needed")
        self._urls = [socket_url(u) for u in urls]
        plain = [u for u in self._urls if not is_secure(u)]
        if ssl is not None and plain:
            raise ValueError(f"ssl= is for wss:// or https:// nodes; {plain[0]} is plain text")
        # Built once (reading a CA file or the system's roots per attempt is waste).
        self._ssl: _ssl.SSLContext | None = ssl_context(ssl) if len(plain) < len(self._urls) else None
        self._url_index = 0
        self.tokens = TokenSource.of(token)
        self.backoff = backoff or Backoff()
        self.request_timeout = request_timeout
        self.open_timeout = open_timeout
        self.refresh_margin = refresh_margin
        self.max_queue = max_queue
        self._max_frame_bytes = max_frame_bytes
        self._user_agent = user_agent or f"teamhub-python/{__version__}"
        self.positions = Positions()
        self.state: State = "idle"
        self._teams: dict[str, _Team] = {}
        self._pending: dict[int, _Pending] = {}
        self._next_id = 1
        self._ws: ClientConnection | None = None
        self._open = asyncio.Event()
        self._stopped = asyncio.Event()
        self._wake = asyncio.Event()
        self._runner: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[Any]] = set()
        self._closing = False
        self._stop_error: TeamhubError | None = None
        self._had_open = False
        self._streams: weakref.WeakSet[EventStream] = weakref.WeakSet()

    # ---- lifecycle ------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The socket URL in use (or to be tried next)."""
        return self._urls[self._url_index]

    @property
    def connected(self) -> bool:
        return self._open.is_set()

    @property
    def stop_error(self) -> TeamhubError | None:
        """Why the client stopped, once it has."""
        return self._stop_error

    async def connect(self, timeout: float | None = None) -> None:
        """Starts the client and waits until a socket is open (retrying with backoff
        meanwhile). Raises the ``ClientStopped`` error if the hub refused for good (a
        401 without a token callable, a 403, a stop close code), ``RequestTimeout``
        after ``timeout`` seconds (the client keeps trying in the background)."""
        if self._stop_error is not None:
            raise self._stop_error
        if self._runner is None:
            self._runner = asyncio.create_task(self._run(), name="teamhub-client")
        opened = asyncio.ensure_future(self._open.wait())
        stopped = asyncio.ensure_future(self._stopped.wait())
        try:
            done, _ = await asyncio.wait(
                {opened, stopped}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            opened.cancel()
            stopped.cancel()
        if opened in done:
            return  # it opened (it may have closed again since: the client reconnects)
        if self._stop_error is not None:
            raise self._stop_error
        raise RequestTimeout(f"not connected within {timeout} s; still trying")

    async def close(self) -> None:
        """Closes for good (1000) and ends every event stream with ``Stopped``."""
        if self._stop_error is not None:
            return
        self._closing = True
        self._wake.set()
        ws = self._ws
        runner = self._runner
        if ws is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(1000, "client closed"), self.request_timeout)
        elif runner is not None:
            runner.cancel()  # between sockets: nothing to close politely
        if runner is not None and runner is not asyncio.current_task():
            try:
                await asyncio.wait_for(asyncio.shield(runner), self.request_timeout)
            except (TimeoutError, Exception):
                runner.cancel()
            except asyncio.CancelledError:
                if not runner.cancelled():
                    raise
        await self._finish(ClientClosed("client closed"))

    async def __aenter__(self) -> Client:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ---- what the application calls -------------------------------------------------

    def events(self) -> EventStream:
        """A new stream of every event from now on (see ``teamhub.events``)."""
        stream = EventStream(self.max_queue, self._streams.discard)
        if self._stop_error is not None:
            stream._end(Stopped(self._stop_error))  # already stopped: say why, and end
        else:
            self._streams.add(stream)
        return stream

    def presence(self, team: str) -> PresenceMap:
        """The live presence of ``team`` (empty until joined)."""
        return self._team(team).presence

    def position(self, team: str) -> Since | None:
        """Where ``team``'s stream is: what the next join sends as ``since``."""
        return self.positions.since(team)

    @property
    def teams(self) -> list[str]:
        """Teams joined, or to be joined on the next connection."""
        return sorted(t.name for t in self._teams.values() if t.wanted)

    async def join(
        self,
        team: str,
        *,
        since: Since | None = None,
        meta: MetaLike = None,
        timeout: float | None = None,
    ) -> JoinReply:
        """Joins ``team`` and keeps it joined across reconnects (each rejoin with its
        position). ``since`` resumes from a position saved earlier (say, by a previous
        run); ``meta`` is shown in presence: a dict, or a callable returning one,
        called at every join and rejoin. Returns the join reply; raises ``Forbidden``
        when the token has no role in the team, ``RequestTimeout`` when no connection
        answered within ``timeout`` (the team stays wanted: ``leave`` to give up)."""
        check_ident("team", team)
        if meta is not None and not callable(meta) and not isinstance(meta, dict):
            raise TypeError(f"meta must be a dict or a callable returning one, not {type(meta).__name__}")
        if since is not None:
            since = check_since(since)
        self._require_started()
        t = self._team(team)
        t.meta = meta
        t.wanted = True
        if since is not None:
            self.positions.set(team, since)
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[JoinReply] = loop.create_future()
        t.waiters.append(waiter)
        ws = self._ws
        if ws is not None and self._open.is_set():
            self._spawn(self._join_on(ws, t))
        limit = self.request_timeout if timeout is None else timeout
        try:
            return await asyncio.wait_for(asyncio.shield(waiter), limit)
        except TimeoutError:
            raise RequestTimeout(
                f"{team} not joined within {limit} s; still trying (leave() to give up)"
            ) from None
        finally:
            if waiter in t.waiters:
                t.waiters.remove(waiter)
            if not waiter.done():
                waiter.cancel()

    async def leave(self, team: str) -> None:
        """Leaves ``team``: no more events from it, not rejoined."""
        check_ident("team", team)
        t = self._teams.get(team)
        if t is not None:
            t.wanted = False
            t.settle(error=ClientClosed(f"left {team}"))
            t.presence.reset([])
        self.positions.forget(team)
        if self._open.is_set():
            await self.request({"op": "leave", "team": team})

    async def publish(self, team: str, type: str, data: Any, *, echo: bool = False) -> int:
        """Publishes a message (needs ``editor``); returns its offset."""
        check_ident("team", team)
        check_ident("type", type, max_len=64)
        reply = await self.request({"op": "publish", "team": team, "type": type, "data": data, "echo": echo})
        return int(reply["offset"])

    async def refresh_presence(self, team: str) -> PresenceMap:
        """A fresh presence snapshot (``presence`` op) applied to the live map. Diffs
        announce users arriving and leaving; connection counts change only here."""
        check_ident("team", team)
        reply = await self.request({"op": "presence", "team": team})
        t = self._team(team)
        change = t.presence.reset(reply["presence"])
        await self._emit(PresenceChanged(team, change.joins, change.leaves, True, t.presence))
        return t.presence

    async def refresh(self, token: str | None = None) -> int:
        """Hands the connection a new JWT (from the token callable when ``token`` is
        not given); returns its ``exp``."""
        if token is None:
            token = await self.tokens.renew(self.tokens.current)
        reply = await self.request({"op": "refresh", "token": token})
        self.tokens.set(token)
        exp = int(reply["exp"])
        await self._emit(TokenRefreshed(exp))
        return exp

    async def ping(self) -> float:
        """Round trip of an application-level ``ping``, in seconds."""
        started = time.monotonic()
        await self.request({"op": "ping"})
        return time.monotonic() - started

    async def request(self, frame: dict[str, Any], *, timeout: float | None = None) -> dict[str, Any]:
        """Sends ``frame`` with a fresh ``id`` (waiting up to the request timeout for an
        open socket) and returns its reply; raises the error frame's exception,
        ``ConnectionLost`` if the socket closed first (the frame may or may not have
        been acted on) or ``RequestTimeout``."""
        limit = self.request_timeout if timeout is None else timeout
        ws = await self._wait_open(limit)
        return await self._request_on(ws, frame, timeout=limit)

    # ---- the connection task --------------------------------------------------------

    async def _run(self) -> None:
        try:
            while not self._closing:
                self._set_state("reconnecting" if self._had_open else "connecting")
                ended = await self._attempt(self.url)
                if self._closing:
                    break
                if ended.advice == "refresh":
                    ended = await self._after_expired(ended)
                if ended.advice == "stop":
                    stop = ended.stop or ClientStopped(
                        f"closed with {ended.code} {ended.reason}".strip(),
                        close_code=ended.code,
                        code=_STOP_CODES.get(ended.code, "closed"),
                    )
                    await self._emit(Disconnected(ended.code, ended.reason, "stop", None))
                    await self._finish(stop)
                    return
                delay = 0.0 if ended.advice == "now" else self.backoff.next_delay()
                if ended.code != 4001 and len(self._urls) > 1:
                    self._url_index = (self._url_index + 1) % len(self._urls)
                self._set_state("reconnecting")
                await self._emit(Disconnected(ended.code, ended.reason, ended.advice, delay))
                if delay > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), delay)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # a bug of ours: stop loudly rather than spin
            log.exception("teamhub client failed")
            await self._finish(TeamhubError(f"client failed: {e!r}", code="internal"))

    async def _attempt(self, url: str) -> _Ended:
        try:
            token = await self.tokens.get()
        except Exception as e:
            await self._emit(ServerError(_as_error(e, "the token provider failed")))
            return _Ended(1006, "no token", "backoff")
        kwargs: dict[str, Any] = {}
        if is_secure(url):
            kwargs["ssl"] = self._ssl
        try:
            ws = await connect(
                url,
                additional_headers={"Authorization": f"Bearer {token}"},
                subprotocols=[SUBPROTOCOL],  # type: ignore[list-item]
                open_timeout=self.open_timeout,
                max_size=self._max_frame_bytes,
                user_agent_header=self._user_agent,
                **kwargs,
            )
        except InvalidStatus as e:
            return await self._refused(e.response.status_code, token)
        except (OSError, TimeoutError, WebSocketException) as e:
            failure = verify_failure(e)
            if failure is not None:
                # Not retried: a certificate that does not verify will not start to.
                message = describe(failure, url)
                return _Ended(1015, message, "stop", TlsStopped(message, close_code=1015, code="tls"))
            return _Ended(1006, f"{type(e).__name__}: {e}", "backoff")
        return await self._serve(url, ws)

    async def _refused(self, status: int, token: str) -> _Ended:
        """A handshake answered with an HTTP status instead of an upgrade."""
        if status == 401:
            if not self.tokens.renewable:
                stop = ClientStopped("token refused (401)", close_code=401, code="unauthorized", status=401)
                return _Ended(401, "token refused", "stop", stop)
            try:
                fresh = await self.tokens.renew(token)
            except Exception as e:
                await self._emit(ServerError(_as_error(e, "the token provider failed")))
                return _Ended(401, "token refused", "backoff")
            if fresh == token:
                stop = ClientStopped(
                    "token refused (401) and the token provider returned it again",
                    close_code=401,
                    code="unauthorized",
                    status=401,
                )
                return _Ended(401, "token refused", "stop", stop)
            return _Ended(401, "token refused; renewed", "backoff")
        if status == 403:
            stop = ClientStopped("refused (403)", close_code=403, code="forbidden", status=403)
            return _Ended(403, "forbidden", "stop", stop)
        # 429 (too many connections), 503 (draining), anything else: try again later.
        return _Ended(status, f"HTTP {status}", "backoff")

    async def _after_expired(self, ended: _Ended) -> _Ended:
        """Close 4001: get a new token, then reconnect at once."""
        if not self.tokens.renewable:
            stop = ClientStopped(
                "the token expired (4001) and no token provider was given",
                close_code=4001,
                code="unauthorized",
            )
            return _Ended(ended.code, ended.reason, "stop", stop)
        try:
            await self.tokens.renew(self.tokens.current)
        except Exception as e:
            await self._emit(ServerError(_as_error(e, "the token provider failed")))
            return _Ended(ended.code, ended.reason, "backoff")
        return _Ended(ended.code, ended.reason, "now")

    async def _serve(self, url: str, ws: ClientConnection) -> _Ended:
        """Runs one open socket until it closes."""
        reconnect = self._had_open
        self._had_open = True
        self._ws = ws
        # In one step with setting _open, so a concurrent join() either is in this
        # snapshot or sends its own join on this socket.
        rejoining = [t for t in self._teams.values() if t.wanted]
        self._open.set()
        self._set_state("open")
        await self._emit(Connected(url, reconnect))
        tasks = [
            asyncio.create_task(self._rejoin(url, ws, rejoining, reconnect)),
            asyncio.create_task(self._refresh_loop(ws)),
        ]
        try:
            async for raw in ws:
                await self._on_frame(raw)
        except ConnectionClosed:
            pass
        finally:
            if self._ws is ws:
                self._ws = None
            self._open.clear()
            for task in tasks:
                task.cancel()
            self._fail_pending(ConnectionLost(f"connection closed ({ws.close_code})"))
        code = ws.close_code if ws.close_code is not None else 1006
        reason = ws.close_reason or ""
        return _Ended(code, reason, close_advice(code), opened=True)

    async def _rejoin(self, url: str, ws: ClientConnection, teams: list[_Team], reconnect: bool) -> None:
        if not teams:
            # Nothing to rejoin: one round trip shows the connection works, so a node
            # that takes sockets and closes them at once does not reset the backoff.
            try:
                await self._request_on(ws, {"op": "ping"})
            except TeamhubError:
                return
        results = await asyncio.gather(*(self._join_on(ws, t) for t in teams), return_exceptions=True)
        outcome: dict[str, RejoinResult] = {}
        for t, r in zip(teams, results, strict=True):
            if isinstance(r, RequestTimeout):
                # The node took a join but does not answer it: start over elsewhere
                # (or later) rather than sit on a socket that misses a team.
                log.warning("teamhub: rejoining %s timed out; reconnecting", t.name)
                with contextlib.suppress(Exception):
                    await ws.close(1000, "rejoin timed out")
                return
            if isinstance(r, ConnectionLost | asyncio.CancelledError):
                return  # this socket is done for; the next one rejoins
            if isinstance(r, TeamhubError):
                outcome[t.name] = RejoinResult(False, 0, r)
            elif isinstance(r, BaseException):
                raise r
            else:
                outcome[t.name] = RejoinResult(r["recovered"], len(r["missed"]))
        if ws is self._ws:
            self.backoff.reset()  # the connection works: the next failure starts afresh
        if reconnect:
            await self._emit(Reconnected(url, outcome))

    async def _join_on(self, ws: ClientConnection, t: _Team) -> JoinReply:
        frame: dict[str, Any] = {"op": "join", "team": t.name}
        since = self.positions.since(t.name)
        if since is not None:
            frame["since"] = since
        meta = t.meta() if callable(t.meta) else t.meta
        if meta is not None:
            frame["meta"] = meta

        async def applied(reply: dict[str, Any]) -> None:
            await self._on_join_reply(t, cast(JoinReply, reply))

        try:
            reply = await self._request_on(ws, frame, hook=applied)
        except (ConnectionLost, RequestTimeout):
            raise  # still wanted: the next connection joins it
        except TeamhubError as e:
            # Refused (forbidden after a revocation, quota_exceeded, ...): not retried.
            t.wanted = False
            self.positions.forget(t.name)
            t.settle(error=e)
            raise
        return cast(JoinReply, reply)

    async def _on_join_reply(self, t: _Team, reply: JoinReply) -> None:
        if not t.wanted:
            return  # left while the join was on its way
        team = reply["team"]
        prev = self.positions.since(team)
        # Recovered: start from where we were, so each missed message is delivered once
        # (and none we already had); otherwise from the team's current offset.
        start = (
            prev["offset"]
            if reply["recovered"] and prev is not None and prev["epoch"] == reply["epoch"]
            else reply["offset"]
        )
        self.positions.joined(team, reply["epoch"], start)
        rejoin = t.ever_joined
        t.ever_joined = True
        change = t.presence.reset(reply["presence"])
        await self._emit(PresenceChanged(team, change.joins, change.leaves, True, t.presence))
        missed = reply.get("missed") or []
        await self._emit(
            Joined(team, reply["epoch"], reply["offset"], reply["recovered"], rejoin, len(missed), reply)
        )
        for m in missed:
            await self._on_message(m)
        now = self.positions.since(team)
        offset = max(now["offset"] if now else 0, reply["offset"])
        self.positions.joined(team, reply["epoch"], offset)
        t.settle(reply)

    async def _refresh_loop(self, ws: ClientConnection) -> None:
        """Sends ``refresh`` with a fresh token ``refresh_margin`` s before ``exp``."""
        margin = self.refresh_margin
        if margin is None:
            return  # turned off: a 4001 is handled by reconnecting with a new token
        while ws is self._ws and self.tokens.renewable:
            exp = self.tokens.expires_at()
            if exp is None:
                return
            await asyncio.sleep(max(1.0, exp - margin - time.time()))
            if ws is not self._ws:
                return
            try:
                fresh = await self.tokens.renew(self.tokens.current)
                await self.refresh(fresh)
            except (ConnectionLost, NotConnected):
                return
            except Exception as e:
                await self._emit(ServerError(_as_error(e, "token refresh failed")))
                await asyncio.sleep(min(5.0, max(1.0, (exp - time.time()) / 2)))

    # ---- frames ---------------------------------------------------------------------

    async def _on_frame(self, raw: str | bytes) -> None:
        try:
            f = json.loads(raw)
        except ValueError:
            log.warning("teamhub: a frame that is not JSON: %.200r", raw)
            return
        if not isinstance(f, dict):
            return
        try:
            await self._dispatch(f)
        except Exception:
            log.exception("teamhub: handling a %s frame failed", f.get("op"))

    async def _dispatch(self, f: dict[str, Any]) -> None:
        op = f.get("op")
        if op in ("reply", "pong"):
            p = self._pending.get(f.get("id", -1))
            if p is None:
                return
            if p.hook is not None:
                await p.hook(f)
            if not p.future.done():
                p.future.set_result(f)
        elif op == "error":
            err = error_for(str(f.get("code")), str(f.get("message", "")), id=f.get("id"))
            p = self._pending.get(f["id"]) if isinstance(f.get("id"), int) else None
            if p is not None and not p.future.done():
                p.future.set_exception(err)
            else:
                await self._emit(ServerError(err))
        elif op == "message":
            await self._on_message(cast(MessageFrame, f))
        elif op == "presence_diff":
            t = self._teams.get(f.get("team", ""))
            if t is None or not t.wanted:
                return
            change = t.presence.apply(f.get("joins") or [], f.get("leaves") or [])
            await self._emit(PresenceChanged(t.name, change.joins, change.leaves, False, t.presence))
        elif op == "kicked":
            team = str(f.get("team"))
            reason = str(f.get("reason"))
            t = self._teams.get(team)
            if t is not None:
                t.wanted = False
                t.presence.reset([])
                t.settle(error=Forbidden(f"kicked from {team}: {reason}"))
            self.positions.forget(team)
            await self._emit(Kicked(team, reason))

    async def _on_message(self, f: MessageFrame) -> None:
        if self.positions.message(f["team"], f["offset"]) == "duplicate":
            return
        await self._emit(Message.from_frame(f))

    # ---- plumbing -------------------------------------------------------------------

    async def _request_on(
        self,
        ws: ClientConnection,
        frame: dict[str, Any],
        *,
        hook: Callable[[dict[str, Any]], Awaitable[None]] | None = None,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        rid = self._next_id
        self._next_id += 1
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[rid] = _Pending(future, hook)
        try:
            try:
                await ws.send(json.dumps({**frame, "id": rid}))
            except ConnectionClosed:
                raise ConnectionLost("connection closed before the frame was sent") from None
            limit = self.request_timeout if timeout is None else timeout
            try:
                return await asyncio.wait_for(future, limit)
            except TimeoutError:
                raise RequestTimeout(f"no answer to {frame.get('op')} within {limit} s", id=rid) from None
        finally:
            self._pending.pop(rid, None)

    async def _wait_open(self, timeout: float) -> ClientConnection:
        if self._stop_error is not None:
            raise self._stop_error
        self._require_started()
        if not self._open.is_set():
            opened = asyncio.ensure_future(self._open.wait())
            stopped = asyncio.ensure_future(self._stopped.wait())
            try:
                await asyncio.wait({opened, stopped}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            finally:
                opened.cancel()
                stopped.cancel()
        if self._stop_error is not None:
            raise self._stop_error
        ws = self._ws
        if ws is None or not self._open.is_set():
            raise NotConnected(f"not connected within {timeout} s (reconnecting)")
        return ws

    def _require_started(self) -> None:
        if self._runner is None:
            raise NotConnected("call connect() first")

    def _team(self, team: str) -> _Team:
        t = self._teams.get(team)
        if t is None:
            t = self._teams[team] = _Team(team, PresenceMap(team))
        return t

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)

        def done(t: asyncio.Future[Any]) -> None:
            self._background.discard(task)
            if not t.cancelled():
                t.exception()  # reported through the join's waiters already

        task.add_done_callback(done)

    def _fail_pending(self, error: TeamhubError) -> None:
        pending, self._pending = self._pending, {}
        for p in pending.values():
            if not p.future.done():
                p.future.set_exception(error)

    def _set_state(self, state: State) -> None:
        self.state = state

    async def _emit(self, event: Event) -> None:
        for stream in list(self._streams):
            await stream._put(event)

    async def _finish(self, error: TeamhubError) -> None:
        if self._stop_error is not None:
            return
        self._stop_error = error
        self._closing = True
        self._open.clear()
        self._set_state("stopped")
        self._fail_pending(error)
        for t in self._teams.values():
            t.settle(error=error)
        for task in list(self._background):
            task.cancel()
        final = Stopped(error)
        for stream in list(self._streams):
            stream._end(final)
        self._streams.clear()
        self._stopped.set()


def _as_error(e: BaseException, what: str) -> TeamhubError:
    if isinstance(e, TeamhubError):
        return e
    return Unauthorized(f"{what}: {e!r}")
