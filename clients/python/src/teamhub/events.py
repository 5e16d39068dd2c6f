"""What a :class:`~teamhub.Client` reports, as typed values, and the stream that
carries them (``client.events()``).

Match on the class::

    async for event in client.events():
        match event:
            case Message(team=team, type="chat.message", data=data): ...
            case Joined(team=team, recovered=False, rejoin=True): reload(team)
            case Stopped(error=error): raise error
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from .errors import RequestTimeout, TeamhubError
from .protocol import Advice, MessageFrame, PresenceEntry
from .state import PresenceMap

if TYPE_CHECKING:
    from .protocol import JoinReply


@dataclass(frozen=True, slots=True)
class Message:
    """A message of a joined team (also each missed one after a recovered rejoin, in
    offset order, once)."""

    team: str
    offset: int
    type: str
    user: str
    data: Any
    ts: str

    @classmethod
    def from_frame(cls, f: MessageFrame) -> Message:
        return cls(f["team"], f["offset"], f["type"], f["user"], f.get("data"), f["ts"])


@dataclass(frozen=True, slots=True)
class Joined:
    """A join reply. After a reconnect (``rejoin``) with ``recovered`` false, messages
    may have been lost: reload the team's state by other means (REST history, the
    pattern feed). ``missed``: how many missed messages follow as ``Message`` events."""

    team: str
    epoch: str
    offset: int
    recovered: bool
    rejoin: bool
    missed: int
    reply: JoinReply = field(repr=False)


@dataclass(frozen=True, slots=True)
class PresenceChanged:
    """The team's live presence changed: a join reply's snapshot (``reset``) or a
    ``presence_diff``. ``presence`` is the live map after the change."""

    team: str
    joins: tuple[PresenceEntry, ...]
    leaves: tuple[PresenceEntry, ...]
    reset: bool
    presence: PresenceMap = field(repr=False)


@dataclass(frozen=True, slots=True)
class Kicked:
    """No longer in the team (``revoked`` or ``role_removed``); not rejoined."""

    team: str
    reason: str


@dataclass(frozen=True, slots=True)
class ServerError:
    """An ``error`` frame that answered no pending request, or a background failure
    (a token refresh, a rejoin)."""

    error: TeamhubError


@dataclass(frozen=True, slots=True)
class Connected:
    """A socket opened (``url`` is the node's socket URL), before any rejoin."""

    url: str
    reconnect: bool


@dataclass(frozen=True, slots=True)
class RejoinResult:
    """How one team came back after a reconnect."""

    recovered: bool
    missed: int
    error: TeamhubError | None = None


@dataclass(frozen=True, slots=True)
class Reconnected:
    """Every team was rejoined with its position after a reconnect: per team whether
    it recovered (a team whose rejoin failed has ``error`` set and is left)."""

    url: str
    teams: Mapping[str, RejoinResult]

    @property
    def all_recovered(self) -> bool:
        return all(r.recovered for r in self.teams.values())


@dataclass(frozen=True, slots=True)
class Disconnected:
    """The socket closed or could not be opened. ``code``: the close code (1006 when
    the connection just ended), or the HTTP status of a refused handshake; ``advice``
    what the client does about it; ``delay`` seconds until the next attempt (``None``:
    it stops)."""

    code: int
    reason: str
    advice: Advice
    delay: float | None


@dataclass(frozen=True, slots=True)
class TokenRefreshed:
    """The connection runs on a new token until ``exp`` (Unix seconds)."""

    exp: int


@dataclass(frozen=True, slots=True)
class Stopped:
    """The client stopped for good: closed by its owner (``error`` is a
    ``ClientClosed``) or given up (a ``ClientStopped`` with the reason). Last event."""

    error: TeamhubError


Event = (
    Message
    | Joined
    | PresenceChanged
    | Kicked
    | ServerError
    | Connected
    | Reconnected
    | Disconnected
    | TokenRefreshed
    | Stopped
)

E = TypeVar("E")

_END = object()


class EventStream:
    """One subscriber's view of a client's events, in order, from the moment it was
    made (make it before ``join`` to see the join). An async iterator that ends after
    ``Stopped``; ``close()`` it (or use ``async with``) when done.

    It holds at most ``max_queue`` events; while it is full the client stops reading
    its socket (backpressure), so read every stream you open. The hub then closes a
    connection that falls far behind with 1013 and the client recovers with ``since``.
    """

    def __init__(self, max_queue: int, on_close: Callable[[EventStream], None]) -> None:
        self._queue: asyncio.Queue[object] = asyncio.Queue(max_queue)
        self._ended = False
        self._closed = False
        self._final: Event | None = None  # a last event that found the queue full
        self._on_close = on_close

    async def _put(self, event: Event) -> None:
        if not self._closed and not self._ended:
            await self._queue.put(event)

    def _end(self, final: Event | None = None) -> None:
        """Ends the stream after ``final`` (``Stopped``). Never waits: on a full queue
        ``final`` is kept aside and handed out once the reader has drained it."""
        if self._ended:
            return
        self._ended = True
        if final is not None and not self._closed:
            try:
                self._queue.put_nowait(final)
            except asyncio.QueueFull:
                self._final = final
        try:
            self._queue.put_nowait(_END)
        except asyncio.QueueFull:
            pass  # the reader is not waiting; it sees _ended once it drains the queue

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> Event:
        if self._closed:
            raise StopAsyncIteration
        if self._ended and self._queue.empty():
            final, self._final = self._final, None
            if final is not None:
                return final
            raise StopAsyncIteration
        item = await self._queue.get()
        if item is _END:
            raise StopAsyncIteration
        return item  # type: ignore[return-value]

    async def next(self, timeout: float | None = None) -> Event:
        """The next event; ``RequestTimeout`` after ``timeout`` seconds,
        ``StopAsyncIteration`` once the stream ended."""
        try:
            return await asyncio.wait_for(self.__anext__(), timeout)
        except TimeoutError:
            raise RequestTimeout(f"no event within {timeout} s") from None

    async def wait_for(
        self,
        kind: type[E],
        predicate: Callable[[E], bool] | None = None,
        *,
        timeout: float,
    ) -> E:
        """Skips events until one of class ``kind`` (matching ``predicate``) arrives;
        ``RequestTimeout`` when none has within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise RequestTimeout(f"no {kind.__name__} event within {timeout} s")
            try:
                event = await self.next(left)
            except StopAsyncIteration:
                raise RequestTimeout(f"the client stopped before a {kind.__name__} event") from None
            except RequestTimeout:
                raise RequestTimeout(f"no {kind.__name__} event within {timeout} s") from None
            if isinstance(event, kind) and (predicate is None or predicate(event)):
                return event

    def close(self) -> None:
        self._closed = True
        self._on_close(self)
        while not self._queue.empty():
            self._queue.get_nowait()
        self._ended = True
        self._queue.put_nowait(_END)  # wakes a reader waiting in another task

    async def __aenter__(self) -> EventStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()
