"""``PatternLibrary``: a local copy of one team's pattern library, kept in sync.

- ``pull()`` reads the change feed from the version it last reached
  (``since_version``), applies every change (tombstones remove), and remembers the
  team's latest version; a feed whose latest version is below ours (the hub's database
  was replaced) makes it start again from 0.
- ``push(name, content)`` writes with ``If-Match`` on the version of the local copy
  (``If-None-Match: *`` for a name it does not hold). A 409 becomes a
  ``PatternConflict`` holding both sides: the local base, our content and the stored
  pattern. A ``resolver`` callback decides: new content to write over the stored
  version (say, a merge), or ``TAKE_THEIRS`` to keep what is stored. Without one,
  ``PatternConflictError`` is raised.
- ``watch(client)`` joins the team on a ``Client`` and applies live ``pattern.updated``
  / ``pattern.deleted`` notices by pulling the feed; it also pulls after every
  (re)join, since a notice sent while the broker was down is lost but the change is in
  the feed (docs/protocol.md, Patterns).

The local copy lives in a ``PatternStore``: ``MemoryStore`` (default) or
``JsonFileStore(path)``, which survives restarts so a later ``pull`` fetches only
what changed since.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import os
import tempfile
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, cast

from .backoff import Backoff
from .errors import Conflict, RequestTimeout, TeamhubError
from .events import Joined, Kicked, Message, Stopped
from .protocol import PATTERN_DELETED, PATTERN_UPDATED, Pattern, check_ident
from .rest import Rest

if TYPE_CHECKING:
    from .client import Client

log = logging.getLogger("teamhub")


class _TakeTheirs:
    def __repr__(self) -> str:
        return "TAKE_THEIRS"


#: A resolver's answer: keep the stored version, write nothing.
TAKE_THEIRS: Any = _TakeTheirs()


@dataclass(frozen=True, slots=True)
class PatternConflict:
    """A write that lost a race (409), with both sides.

    ``base``: the local copy the write was based on (``None``: it meant to create).
    ``ours``: the content we tried to write. ``theirs``: the pattern stored now (a
    tombstone, ``deleted`` true, if it was deleted meanwhile)."""

    team: str
    name: str
    base: Pattern | None
    ours: Any
    theirs: Pattern

    @property
    def theirs_deleted(self) -> bool:
        return self.theirs["deleted"]


Resolver = Callable[[PatternConflict], Any]
"""Returns the content to write over ``theirs`` (or ``TAKE_THEIRS``); may be async."""


class PatternConflictError(Conflict):
    """A 409 no resolver settled; ``conflict`` has both versions."""

    def __init__(self, conflict: PatternConflict, message: str | None = None) -> None:
        super().__init__(
            message
            or f"pattern {conflict.name} changed meanwhile (stored at version "
            f"{conflict.theirs['version']}{', deleted' if conflict.theirs_deleted else ''})",
            current=conflict.theirs,
            status=409,
        )
        self.conflict = conflict


@dataclass(frozen=True, slots=True)
class PatternChange:
    """One change applied to the local copy."""

    name: str
    kind: Literal["updated", "deleted"]
    version: int
    pattern: Pattern
    previous: Pattern | None


@dataclass
class LibraryState:
    """What a store keeps: the team, the feed version reached, the live patterns."""

    team: str
    version: int = 0
    patterns: dict[str, Pattern] = field(default_factory=dict)


class PatternStore(Protocol):
    def load(self) -> LibraryState | None: ...
    def save(self, state: LibraryState) -> None: ...


class MemoryStore:
    """Keeps nothing beyond the process."""

    def load(self) -> LibraryState | None:
        return None

    def save(self, state: LibraryState) -> None:
        pass


class JsonFileStore:
    """One JSON file, replaced atomically on every change."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def load(self) -> LibraryState | None:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        try:
            raw = json.loads(text)
            return LibraryState(
                team=str(raw["team"]),
                version=int(raw["version"]),
                patterns={str(p["name"]): cast(Pattern, p) for p in raw["patterns"]},
            )
        except (ValueError, KeyError, TypeError) as e:
            # Say which file, rather than a bare KeyError from deep inside.
            raise ValueError(
                f"{self.path}: not a teamhub pattern store ({e!r}); remove it to pull afresh"
            ) from e

    def save(self, state: LibraryState) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        body = {
            "team": state.team,
            "version": state.version,
            "patterns": [state.patterns[n] for n in sorted(state.patterns)],
        }
        fd, tmp = tempfile.mkstemp(prefix=".patterns-", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(body, f, indent=2, sort_keys=True)
                f.write("\n")
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise


class PatternLibrary:
    """A team's pattern library, held locally and kept in sync over REST."""

    def __init__(self, rest: Rest, team: str, *, store: PatternStore | None = None) -> None:
        self.rest = rest
        self.team = check_ident("team", team)
        self.store: PatternStore = store or MemoryStore()
        state = self.store.load()
        if state is not None and state.team != team:
            raise ValueError(f"the store holds team {state.team!r}, not {team!r}")
        self._state = state or LibraryState(team)
        self._lock = asyncio.Lock()
        self._listeners: list[Callable[[PatternChange], None]] = []

    @property
    def version(self) -> int:
        """The feed version the local copy has reached (0: nothing pulled yet)."""
        return self._state.version

    @property
    def patterns(self) -> Mapping[str, Pattern]:
        """The live patterns, by name (a read-only view)."""
        return dict(self._state.patterns)

    def get(self, name: str) -> Pattern | None:
        return self._state.patterns.get(name)

    def content(self, name: str, default: Any = None) -> Any:
        p = self._state.patterns.get(name)
        return p["content"] if p is not None else default

    def names(self) -> list[str]:
        return sorted(self._state.patterns)

    def on_change(self, fn: Callable[[PatternChange], None]) -> Callable[[], None]:
        """Calls ``fn(change)`` for every change applied; returns the unsubscribe."""
        self._listeners.append(fn)
        return lambda: self._listeners.remove(fn) if fn in self._listeners else None

    async def pull(self) -> list[PatternChange]:
        """Fetches and applies every change after ``version``; returns them."""
        async with self._lock:
            feed = await self.rest.pattern_feed(self.team, self._state.version)
            if feed["version"] < self._state.version:
                # The hub's library is not the one we synced with (a new database):
                # start again from nothing, and report what disappears as deleted.
                log.warning(
                    "teamhub: pattern feed of %s is at version %d, below ours (%d): full resync",
                    self.team,
                    feed["version"],
                    self._state.version,
                )
                feed = await self.rest.pattern_feed(self.team, 0)
                changes = self._replace_all(feed["patterns"])
            else:
                changes = [c for p in feed["patterns"] if (c := self._apply(p)) is not None]
            self._state.version = max(self._state.version, feed["version"])
            self.store.save(self._state)
        self._notify(changes)
        return changes

    async def push(
        self,
        name: str,
        content: Any,
        *,
        resolver: Resolver | None = None,
        max_attempts: int = 5,
        base_version: int | None = None,
    ) -> Pattern:
        """Writes ``content`` as ``name``, based on the local copy's version, or on
        ``base_version`` when given: the version the content was edited from (an
        editor that opened version 1 must see a conflict when someone saved version 2
        meanwhile, even if its notice has already updated the local copy). Returns
        the stored pattern (``theirs`` when the resolver took it). Raises
        ``PatternConflictError`` on a 409 without a resolver, or when ``max_attempts``
        writes all lost their races."""
        check_ident("pattern name", name)
        if max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        if base_version is not None and base_version < 1:
            raise ValueError("base_version must be >= 1")
        base = self._state.patterns.get(name)
        conflict: PatternConflict | None = None
        for _ in range(max_attempts):
            try:
                if base_version is not None:
                    version, base_version = base_version, None  # the first attempt only
                    stored = await self.rest.update_pattern(self.team, name, content, version=version)
                elif base is None or base["deleted"]:
                    stored = await self.rest.create_pattern(self.team, name, content)
                else:
                    stored = await self.rest.update_pattern(self.team, name, content, version=base["version"])
            except Conflict as e:
                if e.current is None:
                    raise
                theirs = e.current
                await self._apply_locked(theirs)
                conflict = PatternConflict(self.team, name, base, content, theirs)
                if resolver is None:
                    raise PatternConflictError(conflict) from None
                answer = resolver(conflict)
                if inspect.isawaitable(answer):
                    answer = await answer
                if answer is TAKE_THEIRS:
                    return theirs
                content = answer
                base = theirs
                continue
            await self._apply_locked(stored)
            return stored
        assert conflict is not None
        raise PatternConflictError(conflict, f"pattern {name}: {max_attempts} writes lost their races")

    async def delete(self, name: str, *, force: bool = False) -> None:
        """Deletes ``name`` at the local copy's version (``admin``). If it changed
        meanwhile: ``PatternConflictError``, or with ``force`` delete the stored
        version anyway."""
        base = self._state.patterns.get(name)
        if base is None:
            await self.pull()
            base = self._state.patterns.get(name)
            if base is None:
                return  # not there (or already deleted)
        version = base["version"]
        for _ in range(3):
            try:
                await self.rest.delete_pattern(self.team, name, version=version)
            except Conflict as e:
                if e.current is None:
                    raise
                await self._apply_locked(e.current)
                if e.current["deleted"]:
                    return
                if not force:
                    raise PatternConflictError(
                        PatternConflict(self.team, name, base, None, e.current)
                    ) from None
                version = e.current["version"]
                continue
            await self.pull()
            return
        raise PatternConflictError(PatternConflict(self.team, name, base, None, base))

    async def watch(
        self,
        client: Client,
        *,
        retry: Backoff | None = None,
    ) -> AsyncIterator[PatternChange]:
        """Yields every change as it is applied, for as long as ``client`` runs:
        joins the team on ``client`` (if not yet), pulls after each (re)join, and on
        each ``pattern.*`` notice newer than the local copy. A failed pull is retried
        with backoff. Ends when the client stops or is kicked from the team."""
        retry = retry or Backoff(0.5, 30.0)
        stream = client.events()
        try:
            if self.team not in client.teams:
                await client.join(self.team)
                # The join's reply is in the stream too: that pull is the first one.
            dirty = True
            while True:
                wait: float | None = None
                if dirty:
                    try:
                        changes = await self.pull()
                    except (TeamhubError, OSError) as e:
                        wait = retry.next_delay()
                        log.warning("teamhub: pattern pull failed (%s); again in %.1f s", e, wait)
                    else:
                        retry.reset()
                        dirty = False
                        for c in changes:
                            yield c
                try:
                    event = await stream.next(wait)
                except RequestTimeout:
                    continue  # the retry delay passed: pull again
                except StopAsyncIteration:
                    return
                if isinstance(event, Joined) and event.team == self.team:
                    dirty = True
                elif isinstance(event, Message) and event.team == self.team:
                    if event.type in (PATTERN_UPDATED, PATTERN_DELETED):
                        version = event.data.get("version") if isinstance(event.data, dict) else None
                        if not isinstance(version, int) or version > self._state.version:
                            dirty = True
                elif isinstance(event, Kicked) and event.team == self.team:
                    return
                elif isinstance(event, Stopped):
                    return
        finally:
            stream.close()

    # ---- applying changes -----------------------------------------------------------

    async def _apply_locked(self, p: Pattern) -> None:
        async with self._lock:
            change = self._apply(p)
            self.store.save(self._state)
        if change is not None:
            self._notify([change])

    def _apply(self, p: Pattern) -> PatternChange | None:
        """Applies one pattern or tombstone if it is newer than what we hold."""
        held = self._state.patterns.get(p["name"])
        if held is not None and held["version"] >= p["version"]:
            return None
        if p["deleted"]:
            if held is None:
                return None
            del self._state.patterns[p["name"]]
            return PatternChange(p["name"], "deleted", p["version"], p, held)
        self._state.patterns[p["name"]] = p
        return PatternChange(p["name"], "updated", p["version"], p, held)

    def _replace_all(self, patterns: list[Pattern]) -> list[PatternChange]:
        old = self._state.patterns
        self._state.patterns = {}
        self._state.version = 0
        changes: list[PatternChange] = []
        live = {p["name"] for p in patterns if not p["deleted"]}
        for name, held in old.items():
            if name not in live:
                tomb = cast(Pattern, {**held, "deleted": True, "content": None})
                changes.append(PatternChange(name, "deleted", held["version"], tomb, held))
        for p in patterns:
            if not p["deleted"]:
                self._state.patterns[p["name"]] = p
                changes.append(PatternChange(p["name"], "updated", p["version"], p, old.get(p["name"])))
        return changes

    def _notify(self, changes: list[PatternChange]) -> None:
        for c in changes:
            for fn in list(self._listeners):
                try:
                    fn(c)
                except Exception:
                    log.exception("pattern listener failed")
