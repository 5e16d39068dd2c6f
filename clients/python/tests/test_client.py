"""The asyncio client against a real node: join, publish, events, presence, errors."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
from conftest import WAIT, Hub, fast_backoff, until

import teamhub
from teamhub import (
    ClientStopped,
    Forbidden,
    Joined,
    Message,
    PresenceChanged,
)


def client_for(hub: Hub, token: str, made: list[teamhub.Client], **kw: object) -> teamhub.Client:
    c = teamhub.Client(hub.url, token, backoff=fast_backoff(), request_timeout=WAIT, **kw)  # type: ignore[arg-type]
    made.append(c)
    return c


async def test_join_publish_and_receive_in_order(hub: Hub, clients: list[teamhub.Client]) -> None:
    ann = client_for(hub, hub.token("ann", {"t": "editor"}), clients)
    bob = client_for(hub, hub.token("bob", {"t": "viewer"}), clients)
    await ann.connect(WAIT)
    await bob.connect(WAIT)
    bob_events = bob.events()
    reply = await bob.join("t")
    assert reply["team"] == "t" and reply["offset"] == 0 and reply["recovered"] is False
    joined = await bob_events.wait_for(Joined, timeout=WAIT)
    assert (joined.team, joined.rejoin, joined.recovered) == ("t", False, False)

    offsets = [await ann.publish("t", "chat.message", {"n": i}) for i in range(1, 4)]
    assert offsets == [1, 2, 3]
    got = [await bob_events.wait_for(Message, timeout=WAIT) for _ in range(3)]
    assert [(m.offset, m.type, m.user, m.data) for m in got] == [
        (1, "chat.message", "ann", {"n": 1}),
        (2, "chat.message", "ann", {"n": 2}),
        (3, "chat.message", "ann", {"n": 3}),
    ]
    assert bob.position("t") == {"epoch": reply["epoch"], "offset": 3}


async def test_echo_brings_back_own_message_only_when_asked(hub: Hub, clients: list[teamhub.Client]) -> None:
    ann = client_for(hub, hub.token("ann", {"t": "editor"}), clients)
    await ann.connect(WAIT)
    events = ann.events()
    await ann.join("t")
    await ann.publish("t", "chat.message", {"text": "quiet"})
    offset = await ann.publish("t", "chat.message", {"text": "loud"}, echo=True)
    m = await events.wait_for(Message, timeout=WAIT)
    assert (m.offset, m.data) == (offset, {"text": "loud"}), "only the echoed message comes back"


async def test_presence_follows_live_diffs(hub: Hub, clients: list[teamhub.Client]) -> None:
    ann = client_for(hub, hub.token("ann", {"t": "viewer"}, name="Ann"), clients)
    await ann.connect(WAIT)
    events = ann.events()
    await ann.join("t", meta={"status": "busy"})
    people = ann.presence("t")
    assert people.users() == ["ann"]
    assert people.get("ann") == {"user": "ann", "name": "Ann", "conns": 1, "meta": {"status": "busy"}}
    seen: list[tuple[list[str], list[str]]] = []
    people.on_change(
        lambda m, change: seen.append(([e["user"] for e in change.joins], [e["user"] for e in change.leaves]))
    )

    bob = client_for(hub, hub.token("bob", {"t": "viewer"}, name="Bob"), clients)
    await bob.connect(WAIT)
    await bob.join("t", meta=lambda: {"status": "available"})
    diff = await events.wait_for(PresenceChanged, lambda e: not e.reset, timeout=WAIT)
    assert [e["user"] for e in diff.joins] == ["bob"]
    assert people.users() == ["ann", "bob"]
    assert people.get("bob") is not None and people.get("bob")["meta"] == {"status": "available"}  # type: ignore[index]
    assert bob.presence("t").users() == ["ann", "bob"], "the joiner's snapshot includes both"

    await bob.leave("t")
    await events.wait_for(PresenceChanged, lambda e: [x["user"] for x in e.leaves] == ["bob"], timeout=WAIT)
    assert people.users() == ["ann"]
    assert seen == [(["bob"], []), ([], ["bob"])]

    # A second connection of ann changes her count, seen in a snapshot.
    ann2 = client_for(hub, hub.token("ann", {"t": "viewer"}, name="Ann"), clients)
    await ann2.connect(WAIT)
    await ann2.join("t")
    await until("ann's count to reach 2", lambda: _conns(ann, "t", "ann"))


async def _conns(c: teamhub.Client, team: str, user: str) -> bool:
    entry = (await c.refresh_presence(team)).get(user)
    return entry is not None and entry["conns"] == 2


async def test_errors_carry_the_contract_codes(hub: Hub, clients: list[teamhub.Client]) -> None:
    viewer = client_for(hub, hub.token("val", {"t": "viewer"}), clients)
    await viewer.connect(WAIT)
    with pytest.raises(Forbidden) as e:
        await viewer.publish("t", "chat.message", {})
    assert e.value.code == "forbidden" and e.value.id is not None
    with pytest.raises(Forbidden):
        await viewer.join("elsewhere")
    assert viewer.teams == [], "a refused team is not rejoined"
    editor = client_for(hub, hub.token("ed", {"t": "editor"}), clients)
    await editor.connect(WAIT)
    with pytest.raises(Forbidden, match=r"reserved|forbidden"):
        await editor.publish("t", "system.boom", {})
    with pytest.raises(ValueError):
        await editor.publish("t", "bad type!", {})
    with pytest.raises(ValueError, match="since must be"):
        await editor.join("t", since={"epoch": "e"})  # type: ignore[typeddict-item]
    with pytest.raises(ValueError, match="since must be"):
        await editor.join("t", since={"epoch": "e", "offset": -1})
    with pytest.raises(TypeError, match="meta must be a dict"):
        await editor.join("t", meta="busy")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        await editor.leave("bad team!")
    assert editor.teams == [], "refused arguments join nothing"
    assert await editor.ping() < WAIT


async def test_refused_token_stops_at_connect(hub: Hub, clients: list[teamhub.Client]) -> None:
    c = client_for(hub, "not-a-token", clients)
    with pytest.raises(ClientStopped) as e:
        await c.connect(WAIT)
    assert e.value.code == "unauthorized" and e.value.close_code == 401
    assert c.state == "stopped"


async def test_refused_token_is_renewed_through_the_callable(hub: Hub, clients: list[teamhub.Client]) -> None:
    good = hub.token("ann", {"t": "viewer"})
    handed: list[str] = []

    def provider() -> str:
        handed.append("bad" if not handed else good)
        return handed[-1]

    c = client_for(hub, provider, clients)
    await c.connect(WAIT)
    assert handed == ["bad", good]
    await c.join("t")


async def test_a_provider_repeating_a_refused_token_stops(hub: Hub, clients: list[teamhub.Client]) -> None:
    c = client_for(hub, lambda: "still-bad", clients)
    with pytest.raises(ClientStopped) as e:
        await c.connect(WAIT)
    assert isinstance(e.value, ClientStopped) and e.value.code == "unauthorized"


async def test_events_end_with_stopped_after_close(hub: Hub, make_hub: Callable[..., Awaitable[Hub]]) -> None:
    c = teamhub.Client(hub.url, hub.token("ann", {"t": "viewer"}), backoff=fast_backoff())
    await c.connect(WAIT)
    events = c.events()
    await c.join("t")
    await c.close()
    seen = [e async for e in events]
    assert isinstance(seen[-1], teamhub.Stopped) and isinstance(seen[-1].error, teamhub.ClientClosed)
    late = [e async for e in c.events()]  # made after the stop: says why, and ends
    assert len(late) == 1 and isinstance(late[0], teamhub.Stopped) and late[0].error is seen[-1].error
    with pytest.raises(teamhub.ClientClosed):
        await c.publish("t", "x", {})
