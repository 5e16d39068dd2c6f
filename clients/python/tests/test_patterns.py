"""PatternLibrary against a real node: pull, push, 409 conflicts and resolvers,
deletes, persistence, and watch() applying live notices across a restart."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from conftest import WAIT, Hub, fast_backoff, until

import teamhub
from teamhub import (
    TAKE_THEIRS,
    JsonFileStore,
    PatternChange,
    PatternConflict,
    PatternConflictError,
    PatternLibrary,
    Rest,
)

MakeHub = Callable[..., Awaitable[Hub]]


@pytest.fixture
async def editor(hub: Hub) -> AsyncIterator[Rest]:
    async with Rest(hub.url, hub.token("ann", {"t": "admin"}), timeout=WAIT) as r:
        yield r


@pytest.fixture
async def other(hub: Hub) -> AsyncIterator[Rest]:
    async with Rest(hub.url, hub.token("bob", {"t": "editor"}), timeout=WAIT) as r:
        yield r


async def test_pull_applies_the_feed_incrementally(editor: Rest, other: Rest) -> None:
    lib = PatternLibrary(editor, "t")
    assert await lib.pull() == [] and lib.version == 0
    await other.create_pattern("t", "retry", {"attempts": 3})
    await other.create_pattern("t", "style", {"tabs": False})
    changes = await lib.pull()
    assert [(c.name, c.kind, c.version) for c in changes] == [
        ("retry", "updated", 1),
        ("style", "updated", 2),
    ]
    assert lib.version == 2 and lib.names() == ["retry", "style"]
    assert lib.content("retry") == {"attempts": 3}
    assert await lib.pull() == [], "nothing new"

    await other.update_pattern("t", "retry", {"attempts": 5}, version=1)
    await editor.delete_pattern("t", "style", version=2)
    changes = await lib.pull()
    assert [(c.name, c.kind, c.version) for c in changes] == [
        ("retry", "updated", 3),
        ("style", "deleted", 4),
    ]
    assert changes[0].previous is not None and changes[0].previous["content"] == {"attempts": 3}
    assert lib.names() == ["retry"] and lib.get("style") is None and lib.version == 4


async def test_push_creates_and_updates_with_preconditions(editor: Rest, other: Rest) -> None:
    lib = PatternLibrary(editor, "t")
    created = await lib.push("retry", {"attempts": 3})
    assert (created["version"], created["updated_by"]) == (1, "ann")
    updated = await lib.push("retry", {"attempts": 4})
    assert updated["version"] == 2 and lib.get("retry") == updated
    stored = await other.get_pattern("t", "retry")
    assert stored is not None and stored["content"] == {"attempts": 4}
    assert await other.get_pattern("t", "retry", if_none_match=2) is None, "304: unchanged"
    # Our own writes do not move the feed position: the next pull sees them (and skips
    # them: the local copy already has those versions).
    assert lib.version == 0
    assert await lib.pull() == [] and lib.version == 2


async def test_a_409_is_a_conflict_with_both_versions(editor: Rest, other: Rest) -> None:
    mine = PatternLibrary(editor, "t")
    theirs = PatternLibrary(other, "t")
    await mine.push("retry", {"attempts": 3})
    await theirs.pull()
    await theirs.push("retry", {"attempts": 5, "by": "bob"})  # version 2

    with pytest.raises(PatternConflictError) as e:
        await mine.push("retry", {"attempts": 4})
    conflict = e.value.conflict
    assert e.value.code == "conflict" and e.value.status == 409
    assert conflict.base is not None and (conflict.base["version"], conflict.base["content"]) == (
        1,
        {"attempts": 3},
    )
    assert conflict.ours == {"attempts": 4}
    assert (conflict.theirs["version"], conflict.theirs["content"]) == (2, {"attempts": 5, "by": "bob"})
    assert mine.get("retry") == conflict.theirs, "the local copy now holds what is stored"

    # Creating a name that exists is a conflict too.
    fresh = PatternLibrary(editor, "t")
    with pytest.raises(PatternConflictError) as e2:
        await fresh.push("retry", {"attempts": 9})
    assert e2.value.conflict.base is None and e2.value.conflict.theirs["version"] == 2


async def test_base_version_conflicts_even_when_the_local_copy_is_newer(editor: Rest, other: Rest) -> None:
    mine = PatternLibrary(editor, "t")
    await mine.push("retry", {"attempts": 3})
    await other.update_pattern("t", "retry", {"attempts": 3, "jitter": True}, version=1)
    await mine.pull()
    assert mine.get("retry")["version"] == 2  # type: ignore[index]
    # Edited from version 1: without base_version this write would win silently.
    with pytest.raises(PatternConflictError) as e:
        await mine.push("retry", {"attempts": 5}, base_version=1)
    assert e.value.conflict.theirs["version"] == 2
    merged = await mine.push(
        "retry", {"attempts": 5}, base_version=1, resolver=lambda c: {**c.theirs["content"], **c.ours}
    )
    assert (merged["version"], merged["content"]) == (3, {"attempts": 5, "jitter": True})
    with pytest.raises(ValueError):
        await mine.push("retry", {}, base_version=0)


async def test_a_resolver_merges_and_retries(editor: Rest, other: Rest) -> None:
    mine = PatternLibrary(editor, "t")
    await mine.push("settings", {"a": 1})
    await other.update_pattern("t", "settings", {"a": 1, "b": 2}, version=1)
    seen: list[PatternConflict] = []

    async def merge(c: PatternConflict) -> object:
        seen.append(c)
        return {**c.theirs["content"], **c.ours}

    stored = await mine.push("settings", {"a": 1, "c": 3}, resolver=merge)
    assert stored["content"] == {"a": 1, "b": 2, "c": 3} and stored["version"] == 3
    assert len(seen) == 1 and seen[0].theirs["version"] == 2
    assert (await other.get_pattern("t", "settings")) == stored

    # TAKE_THEIRS keeps what is stored and writes nothing.
    await other.update_pattern("t", "settings", {"z": 0}, version=3)
    kept = await mine.push("settings", {"mine": True}, resolver=lambda c: TAKE_THEIRS)
    assert kept["content"] == {"z": 0} and kept["version"] == 4
    assert (await other.pattern_feed("t", 4))["patterns"] == [], "no write after taking theirs"


async def test_a_conflict_with_a_deletion_recreates_through_the_resolver(editor: Rest, other: Rest) -> None:
    mine = PatternLibrary(editor, "t")
    await mine.push("gone", {"v": 1})
    await editor.delete_pattern("t", "gone", version=1)

    def resolve(c: PatternConflict) -> object:
        assert c.theirs_deleted and c.theirs["content"] is None
        return c.ours

    stored = await mine.push("gone", {"v": 2}, resolver=resolve)
    assert (stored["version"], stored["deleted"], stored["content"]) == (3, False, {"v": 2})


async def test_delete_with_if_match(editor: Rest, other: Rest) -> None:
    mine = PatternLibrary(editor, "t")
    await mine.push("a", 1)
    await mine.push("b", 1)
    await mine.delete("a")
    assert mine.get("a") is None
    await other.update_pattern("t", "b", 2, version=2)
    with pytest.raises(PatternConflictError):
        await mine.delete("b")
    assert mine.content("b") == 2
    await other.update_pattern("t", "b", 3, version=4)
    await mine.delete("b", force=True)
    assert mine.names() == [] and (await other.pattern_feed("t"))["patterns"][-1]["deleted"] is True


async def test_a_file_store_survives_restarts(tmp_path: Path, editor: Rest, other: Rest) -> None:
    path = tmp_path / "lib.json"
    lib = PatternLibrary(editor, "t", store=JsonFileStore(path))
    await other.create_pattern("t", "p", {"x": 1})
    await lib.pull()
    saved = json.loads(path.read_text())
    assert saved["version"] == 1 and [p["name"] for p in saved["patterns"]] == ["p"]

    await other.create_pattern("t", "q", {"y": 2})
    again = PatternLibrary(editor, "t", store=JsonFileStore(path))
    assert again.version == 1 and again.names() == ["p"]
    changes = await again.pull()
    assert [c.name for c in changes] == ["q"], "only what changed since the saved version"
    with pytest.raises(ValueError):
        PatternLibrary(editor, "other-team", store=JsonFileStore(path))


async def test_a_corrupt_file_store_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "lib.json"
    path.write_text('{"version": 3}')
    async with Rest("http://127.0.0.1:9", "tok") as rest:  # never used: the store is read first
        with pytest.raises(ValueError, match="not a teamhub pattern store") as e:
            PatternLibrary(rest, "t", store=JsonFileStore(path))
    assert str(path) in str(e.value)


async def test_a_replaced_hub_library_is_resynced(make_hub: MakeHub, tmp_path: Path) -> None:
    """A feed whose latest version is below ours (another database): start again."""
    first = await make_hub()
    store = JsonFileStore(tmp_path / "lib.json")
    async with Rest(first.url, first.token("ann", {"t": "editor"})) as r:
        lib = PatternLibrary(r, "t", store=store)
        for n in range(3):
            await r.create_pattern("t", f"p{n}", n)
        await lib.pull()
        assert lib.version == 3
    second = await make_hub()
    async with Rest(second.url, second.token("ann", {"t": "editor"})) as r:
        await r.create_pattern("t", "fresh", 1)
        lib = PatternLibrary(r, "t", store=store)
        changes = await lib.pull()
        assert sorted((c.name, c.kind) for c in changes) == [
            ("fresh", "updated"),
            ("p0", "deleted"),
            ("p1", "deleted"),
            ("p2", "deleted"),
        ]
        assert lib.names() == ["fresh"] and lib.version == 1


async def test_watch_applies_live_notices_and_resyncs_after_a_restart(
    hub: Hub, make_hub: MakeHub, editor: Rest, other: Rest, clients: list[teamhub.Client]
) -> None:
    await other.create_pattern("t", "before", 0)
    lib = PatternLibrary(editor, "t")
    client = teamhub.Client(
        hub.url, hub.token("ann", {"t": "viewer"}), backoff=fast_backoff(), request_timeout=WAIT
    )
    clients.append(client)
    await client.connect(WAIT)
    seen: list[PatternChange] = []

    async def follow() -> None:
        async for change in lib.watch(client):
            seen.append(change)

    task = asyncio.create_task(follow())
    try:
        await until("the initial pull", lambda: [c.name for c in seen] == ["before"])
        assert client.teams == ["t"], "watch joined the team"

        await other.create_pattern("t", "live", {"v": 1})
        await until("the live create", lambda: lib.content("live") == {"v": 1})
        await other.update_pattern("t", "live", {"v": 2}, version=2)
        await until("the live update", lambda: lib.content("live") == {"v": 2})
        await editor.delete_pattern("t", "before", version=1)
        await until("the live delete", lambda: lib.get("before") is None)
        assert [(c.name, c.kind, c.version) for c in seen] == [
            ("before", "updated", 1),
            ("live", "updated", 2),
            ("live", "updated", 3),
            ("before", "deleted", 4),
        ]

        # A change whose notice never reaches this client: written through another
        # node on the same database (no Redis, so no notice crosses). The rejoin after
        # a restart pulls it.
        side = await make_hub(db=hub.db)
        async with Rest(side.url, side.token("bob", {"t": "editor"})) as r:
            await r.create_pattern("t", "while-away", True)
        assert await hub.stop() == 0
        await hub.start()
        await until("the pull after the rejoin", lambda: lib.content("while-away") is True)
        assert lib.version == 5
    finally:
        task.cancel()
