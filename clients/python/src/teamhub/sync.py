"""A thin synchronous facade for scripts: the same client, REST helpers and pattern
library without ``async``.

Each object runs its asyncio counterpart on one background event-loop thread (shared
by every object of the process unless you pass your own ``SyncLoop``), and every call
blocks until the coroutine is done. Nothing is reimplemented here, so reconnects,
recovery and conflicts behave exactly as in the asyncio API::

    from teamhub.sync import Client, Rest, PatternLibrary

    with Client("http://127.0.0.1:8080", token) as client:
        events = client.events()
        client.join("design")
        client.publish("design", "chat.message", {"text": "hi"})
        for event in events:
            print(event)

Callbacks (a token callable, a conflict resolver) run on the loop thread.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Sequence
from typing import IO, Any, TypeVar

from . import client as _client
from . import patterns as _patterns
from . import rest as _rest
from .errors import RequestTimeout, TeamhubError
from .events import Event, EventStream
from .patterns import PatternChange, PatternStore, Resolver
from .protocol import (
    ActivityRow,
    ApiKey,
    CreatedApiKey,
    History,
    JoinReply,
    Pattern,
    PatternFeed,
    PresenceEntry,
    Revocation,
    Since,
)
from .rest import ActivityPage, ExportFormat
from .tokens import TokenProvider, TokenSource

T = TypeVar("T")
E = TypeVar("E")

__all__ = ["Client", "EventIterator", "PatternLibrary", "Rest", "SyncLoop"]


class SyncLoop:
    """An event loop on a daemon thread, to run coroutines from blocking code."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="teamhub-sync", daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Runs ``coro`` on the loop and waits for it (``RequestTimeout`` after
        ``timeout`` seconds, the coroutine then cancelled)."""
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("a teamhub.sync call from inside its own loop thread (a callback?)")
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise RequestTimeout(f"no result within {timeout} s") from None

    def call(self, fn: Callable[[], T]) -> T:
        """Calls ``fn`` on the loop thread (to make asyncio objects there)."""

        async def call() -> T:
            return fn()

        return self.run(call())

    def iterate(self, aiter: AsyncIterator[T], timeout: float | None = None) -> Iterator[T]:
        """A blocking iterator over an async one."""

        async def step() -> T:
            return await aiter.__anext__()

        try:
            while True:
                try:
                    yield self.run(step(), timeout)
                except StopAsyncIteration:
                    return
        finally:
            close = getattr(aiter, "aclose", None)
            if close is not None:
                self.run(close())

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)


_shared: SyncLoop | None = None
_shared_lock = threading.Lock()


def shared_loop() -> SyncLoop:
    """The process's default loop thread, started on first use."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = SyncLoop()
        return _shared


class EventIterator:
    """Blocking iteration over a client's events (ends after ``Stopped``)."""

    def __init__(self, loop: SyncLoop, stream: EventStream) -> None:
        self._loop = loop
        self._stream = stream

    def __iter__(self) -> EventIterator:
        return self

    def __next__(self) -> Event:
        try:
            return self._loop.run(self._stream.__anext__())
        except StopAsyncIteration:
            raise StopIteration from None

    def next(self, timeout: float | None = None) -> Event:
        """The next event; ``RequestTimeout`` after ``timeout`` seconds."""
        return self._loop.run(self._stream.next(timeout))

    def wait_for(self, kind: type[E], predicate: Callable[[E], bool] | None = None, *, timeout: float) -> E:
        """Skips events until one of class ``kind`` (matching ``predicate``) arrives."""
        return self._loop.run(self._stream.wait_for(kind, predicate, timeout=timeout))

    def close(self) -> None:
        self._loop.call(self._stream.close)

    def __enter__(self) -> EventIterator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Client:
    """``teamhub.Client``, blocking. Same arguments."""

    def __init__(
        self,
        url: str | Sequence[str],
        token: str | TokenProvider | TokenSource,
        *,
        loop: SyncLoop | None = None,
        **options: Any,
    ) -> None:
        self._loop = loop or shared_loop()
        self.aio: _client.Client = self._loop.call(lambda: _client.Client(url, token, **options))

    def connect(self, timeout: float | None = None) -> None:
        self._loop.run(self.aio.connect(timeout))

    def close(self) -> None:
        self._loop.run(self.aio.close())

    def __enter__(self) -> Client:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def state(self) -> str:
        return self.aio.state

    @property
    def teams(self) -> list[str]:
        return self.aio.teams

    @property
    def connected(self) -> bool:
        return self.aio.connected

    @property
    def stop_error(self) -> TeamhubError | None:
        return self.aio.stop_error

    def events(self) -> EventIterator:
        return EventIterator(self._loop, self._loop.call(self.aio.events))

    def join(
        self,
        team: str,
        *,
        since: Since | None = None,
        meta: _client.MetaLike = None,
        timeout: float | None = None,
    ) -> JoinReply:
        return self._loop.run(self.aio.join(team, since=since, meta=meta, timeout=timeout))

    def leave(self, team: str) -> None:
        self._loop.run(self.aio.leave(team))

    def publish(self, team: str, type: str, data: Any, *, echo: bool = False) -> int:
        return self._loop.run(self.aio.publish(team, type, data, echo=echo))

    def presence(self, team: str) -> list[PresenceEntry]:
        """A snapshot of the live presence map."""
        return self._loop.call(lambda: self.aio.presence(team).entries())

    def refresh_presence(self, team: str) -> list[PresenceEntry]:
        async def go() -> list[PresenceEntry]:
            return (await self.aio.refresh_presence(team)).entries()

        return self._loop.run(go())

    def position(self, team: str) -> Since | None:
        return self._loop.call(lambda: self.aio.position(team))

    def refresh(self, token: str | None = None) -> int:
        return self._loop.run(self.aio.refresh(token))

    def ping(self) -> float:
        return self._loop.run(self.aio.ping())

    def request(self, frame: dict[str, Any], *, timeout: float | None = None) -> dict[str, Any]:
        return self._loop.run(self.aio.request(frame, timeout=timeout))


class Rest:
    """``teamhub.Rest``, blocking. Same arguments."""

    def __init__(
        self,
        url: str,
        token: str | TokenProvider | TokenSource,
        *,
        loop: SyncLoop | None = None,
        **options: Any,
    ) -> None:
        self._loop = loop or shared_loop()
        self.aio: _rest.Rest = self._loop.call(lambda: _rest.Rest(url, token, **options))

    def close(self) -> None:
        self._loop.run(self.aio.aclose())

    def __enter__(self) -> Rest:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def publish(self, team: str, type: str, data: Any) -> int:
        return self._loop.run(self.aio.publish(team, type, data))

    def presence(self, team: str) -> list[PresenceEntry]:
        return self._loop.run(self.aio.presence(team))

    def history(self, team: str, *, since: int = 0, limit: int | None = None) -> History:
        return self._loop.run(self.aio.history(team, since=since, limit=limit))

    def activity(self, team: str, **filters: Any) -> ActivityPage:
        return self._loop.run(self.aio.activity(team, **filters))

    def activity_pages(self, team: str, **filters: Any) -> Iterator[ActivityPage]:
        return self._loop.iterate(self.aio.activity_pages(team, **filters))

    def export_activity(self, team: str, format: ExportFormat = "ndjson", **filters: Any) -> Iterator[bytes]:
        return self._loop.iterate(self.aio.export_activity(team, format, **filters))

    def export_activity_rows(self, team: str, **filters: Any) -> Iterator[ActivityRow]:
        return self._loop.iterate(self.aio.export_activity_rows(team, **filters))

    def export_activity_to(
        self, team: str, out: IO[bytes], format: ExportFormat = "csv", **filters: Any
    ) -> int:
        return self._loop.run(self.aio.export_activity_to(team, out, format, **filters))

    def create_api_key(self, team: str, name: str, role: str) -> CreatedApiKey:
        return self._loop.run(self.aio.create_api_key(team, name, role))

    def api_keys(self, team: str) -> list[ApiKey]:
        return self._loop.run(self.aio.api_keys(team))

    def delete_api_key(self, team: str, key_id: str) -> None:
        self._loop.run(self.aio.delete_api_key(team, key_id))

    def revoke_member(self, team: str, user: str) -> Revocation:
        return self._loop.run(self.aio.revoke_member(team, user))

    def pattern_feed(self, team: str, since_version: int = 0) -> PatternFeed:
        return self._loop.run(self.aio.pattern_feed(team, since_version))

    def get_pattern(self, team: str, name: str, *, if_none_match: int | None = None) -> Pattern | None:
        return self._loop.run(self.aio.get_pattern(team, name, if_none_match=if_none_match))

    def create_pattern(self, team: str, name: str, content: Any) -> Pattern:
        return self._loop.run(self.aio.create_pattern(team, name, content))

    def update_pattern(self, team: str, name: str, content: Any, *, version: int) -> Pattern:
        return self._loop.run(self.aio.update_pattern(team, name, content, version=version))

    def delete_pattern(self, team: str, name: str, *, version: int) -> None:
        self._loop.run(self.aio.delete_pattern(team, name, version=version))


class PatternLibrary:
    """``teamhub.PatternLibrary``, blocking, on a ``teamhub.sync.Rest``."""

    def __init__(self, rest: Rest, team: str, *, store: PatternStore | None = None) -> None:
        self._loop = rest._loop
        self.aio: _patterns.PatternLibrary = self._loop.call(
            lambda: _patterns.PatternLibrary(rest.aio, team, store=store)
        )

    @property
    def team(self) -> str:
        return self.aio.team

    @property
    def version(self) -> int:
        return self.aio.version

    @property
    def patterns(self) -> dict[str, Pattern]:
        return dict(self._loop.call(lambda: self.aio.patterns))

    def get(self, name: str) -> Pattern | None:
        return self._loop.call(lambda: self.aio.get(name))

    def content(self, name: str, default: Any = None) -> Any:
        return self._loop.call(lambda: self.aio.content(name, default))

    def names(self) -> list[str]:
        return self._loop.call(self.aio.names)

    def on_change(self, fn: Callable[[PatternChange], None]) -> Callable[[], None]:
        """``fn(change)`` after every change applied; it runs on the loop thread."""
        return self._loop.call(lambda: self.aio.on_change(fn))

    def pull(self) -> list[PatternChange]:
        return self._loop.run(self.aio.pull())

    def push(
        self,
        name: str,
        content: Any,
        *,
        resolver: Resolver | None = None,
        max_attempts: int = 5,
        base_version: int | None = None,
    ) -> Pattern:
        push = self.aio.push(
            name, content, resolver=resolver, max_attempts=max_attempts, base_version=base_version
        )
        return self._loop.run(push)

    def delete(self, name: str, *, force: bool = False) -> None:
        self._loop.run(self.aio.delete(name, force=force))

    def watch(self, client: Client) -> Iterator[PatternChange]:
        """Blocking ``watch``: yields each change as it is applied."""
        return self._loop.iterate(self.aio.watch(client.aio))
