"""Client-side bookkeeping, as plain data: where each team's stream is (``Positions``)
and who is in each team (``PresenceMap``). Tested without a socket."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Literal

from .protocol import PresenceEntry, Since

log = logging.getLogger("teamhub")

Verdict = Literal["new", "duplicate", "gap", "unknown"]


class Positions:
    """The last position seen per team, for ``since`` on the next join: set from each
    join reply, advanced by every message. Persist :meth:`snapshot` to resume across
    process restarts (``Positions.restore``)."""

    def __init__(self) -> None:
        self._since: dict[str, Since] = {}

    def joined(self, team: str, epoch: str, offset: int) -> None:
        self._since[team] = {"epoch": epoch, "offset": offset}

    def message(self, team: str, offset: int) -> Verdict:
        """Records a message: ``"new"``, ``"duplicate"`` (already seen: drop it),
        ``"gap"`` (offsets skipped; recorded all the same) or ``"unknown"`` (team not
        tracked)."""
        since = self._since.get(team)
        if since is None:
            return "unknown"
        if offset <= since["offset"]:
            return "duplicate"
        verdict: Verdict = "new" if offset == since["offset"] + 1 else "gap"
        since["offset"] = offset
        return verdict

    def since(self, team: str) -> Since | None:
        s = self._since.get(team)
        return {"epoch": s["epoch"], "offset": s["offset"]} if s else None

    def set(self, team: str, since: Since) -> None:
        self._since[team] = {"epoch": since["epoch"], "offset": int(since["offset"])}

    def forget(self, team: str) -> None:
        self._since.pop(team, None)

    def snapshot(self) -> dict[str, Since]:
        return {team: {"epoch": s["epoch"], "offset": s["offset"]} for team, s in self._since.items()}

    @classmethod
    def restore(cls, snapshot: Mapping[str, Since]) -> Positions:
        p = cls()
        for team, since in snapshot.items():
            p.set(team, since)
        return p


@dataclass(frozen=True, slots=True)
class PresenceChange:
    joins: tuple[PresenceEntry, ...]
    leaves: tuple[PresenceEntry, ...]
    reset: bool


class PresenceMap:
    """Who is in one team: the join reply's ``presence``, then every ``presence_diff``
    (leaves first, then joins, by ``user``)."""

    def __init__(self, team: str) -> None:
        self.team = team
        self._entries: dict[str, PresenceEntry] = {}
        self._listeners: list[Callable[[PresenceMap, PresenceChange], None]] = []

    def reset(self, entries: list[PresenceEntry]) -> PresenceChange:
        """Replaces everything with a snapshot (a join or ``presence`` reply)."""
        before = self._entries
        self._entries = {e["user"]: e for e in entries}
        change = PresenceChange(
            joins=tuple(e for e in entries if e["user"] not in before),
            leaves=tuple(e for u, e in before.items() if u not in self._entries),
            reset=True,
        )
        self._emit(change)
        return change

    def apply(self, joins: list[PresenceEntry], leaves: list[PresenceEntry]) -> PresenceChange:
        """Applies a ``presence_diff``."""
        for e in leaves:
            self._entries.pop(e["user"], None)
        for e in joins:
            self._entries[e["user"]] = e
        change = PresenceChange(joins=tuple(joins), leaves=tuple(leaves), reset=False)
        self._emit(change)
        return change

    def get(self, user: str) -> PresenceEntry | None:
        return self._entries.get(user)

    def __contains__(self, user: object) -> bool:
        return user in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[PresenceEntry]:
        return iter(self.entries())

    def users(self) -> list[str]:
        return sorted(self._entries)

    def entries(self) -> list[PresenceEntry]:
        """Entries sorted by user id."""
        return [self._entries[u] for u in sorted(self._entries)]

    def on_change(self, fn: Callable[[PresenceMap, PresenceChange], None]) -> Callable[[], None]:
        """Calls ``fn(map, change)`` after every change; returns the unsubscribe function."""
        self._listeners.append(fn)

        def off() -> None:
            if fn in self._listeners:
                self._listeners.remove(fn)

        return off

    def _emit(self, change: PresenceChange) -> None:
        for fn in list(self._listeners):
            try:
                fn(self, change)
            except Exception:  # a listener's bug must not break the connection
                log.exception("presence listener failed")
