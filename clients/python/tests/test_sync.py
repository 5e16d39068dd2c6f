"""The synchronous facade, from plain (non-async) test functions, against a real node
started by the async fixture."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator

import pytest
from conftest import WAIT, Hub, fast_backoff

import teamhub
from teamhub import sync


@pytest.fixture
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    """A node for sync tests (which have no running loop of their own)."""
    hub = Hub(tmp_path_factory.mktemp("sync-hub"))
    asyncio.run(hub.start())
    yield hub
    asyncio.run(hub.stop())


def poll(what: str, check: Callable[[], object], timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)  # polling interval, bounded by the deadline


def test_sync_client_publishes_and_iterates_events(node: Hub) -> None:
    with (
        sync.Client(node.url, node.token("ann", {"t": "editor"}), backoff=fast_backoff()) as ann,
        sync.Client(node.url, node.token("bob", {"t": "viewer"}), backoff=fast_backoff()) as bob,
    ):
        events = bob.events()
        reply = bob.join("t", meta={"status": "here"})
        assert reply["team"] == "t"
        joined = events.wait_for(teamhub.Joined, timeout=WAIT)
        assert joined.rejoin is False
        assert ann.publish("t", "chat.message", {"text": "hi"}) == 1
        m = events.wait_for(teamhub.Message, timeout=WAIT)
        assert (m.user, m.data) == ("ann", {"text": "hi"})
        assert [e["user"] for e in bob.presence("t")] == ["bob"]
        ann.join("t")
        diff = events.wait_for(teamhub.PresenceChanged, lambda e: not e.reset, timeout=WAIT)
        assert [e["user"] for e in diff.joins] == ["ann"]
        assert bob.position("t") == {"epoch": reply["epoch"], "offset": 1}
        assert bob.ping() < WAIT
        with pytest.raises(teamhub.Forbidden):
            bob.publish("t", "chat.message", {})
        with pytest.raises(teamhub.RequestTimeout):
            events.next(timeout=0.2)  # nothing more is coming
    # Closing ends the iteration.
    assert isinstance(list(events)[-1], teamhub.Stopped)


def test_sync_rest_and_pattern_library(node: Hub) -> None:
    with (
        sync.Rest(node.url, node.token("ann", {"t": "admin"})) as rest,
        sync.Rest(node.url, node.token("bob", {"t": "editor"})) as bob,
    ):
        assert rest.publish("t", "build.finished", {"ok": True}) == 1
        assert [m["offset"] for m in rest.history("t")["messages"]] == [1]
        lib = sync.PatternLibrary(rest, "t")
        assert lib.pull() == []
        lib.push("retry", {"attempts": 3})
        bob.update_pattern("t", "retry", {"attempts": 5}, version=1)
        with pytest.raises(teamhub.PatternConflictError) as e:
            lib.push("retry", {"attempts": 4})
        assert e.value.conflict.theirs["version"] == 2
        # The conflict brought theirs into the local copy: a push now is based on it.
        assert lib.push("retry", {"attempts": 4})["version"] == 3
        bob.update_pattern("t", "retry", {"attempts": 6}, version=3)
        merged = lib.push("retry", {"note": "merged"}, resolver=lambda c: {**c.theirs["content"], **c.ours})
        assert (merged["version"], merged["content"]) == (5, {"attempts": 6, "note": "merged"})
        assert [c.name for c in lib.pull()] == []
        # One publish and five pattern writes (the refused push records nothing); the
        # log is written behind the requests, so wait for all six before comparing.
        poll("the activity rows", lambda: len(rest.activity("t").items) == 6)
        rows = list(rest.export_activity_rows("t"))
        assert len(rows) == 6
        assert len(list(rest.activity_pages("t", limit=1))) == len(rows)
        assert b"".join(rest.export_activity("t", "csv")).startswith(b"id,team,user,action")


def test_sync_watch(node: Hub) -> None:
    with (
        sync.Rest(node.url, node.token("ann", {"t": "editor"})) as rest,
        sync.Client(node.url, node.token("ann", {"t": "viewer"}), backoff=fast_backoff()) as client,
    ):
        lib = sync.PatternLibrary(rest, "t")
        changes = lib.watch(client)
        rest.create_pattern("t", "live", 1)
        first = next(changes)
        assert (first.name, first.kind, first.version) == ("live", "updated", 1)
        rest.update_pattern("t", "live", 2, version=1)
        second = next(changes)
        assert (second.name, second.version, lib.content("live")) == ("live", 2, 2)


def test_sync_calls_from_inside_the_loop_are_refused() -> None:
    loop = sync.SyncLoop()
    try:

        async def inner() -> None:
            loop.run(asyncio.sleep(0))

        with pytest.raises(RuntimeError, match="own loop thread"):
            loop.run(inner())
    finally:
        loop.stop()
