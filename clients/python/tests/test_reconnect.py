"""Reconnects against real nodes: drains, kills, restarts on the same port and SQLite
file, cluster nodes on Redis, expiring tokens; and the close codes that stop."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from conftest import WAIT, Hub, fast_backoff, until
from websockets.asyncio.server import ServerConnection, serve

import teamhub
from teamhub import (
    ClientStopped,
    Connected,
    Disconnected,
    Joined,
    Message,
    Reconnected,
    Stopped,
    TokenRefreshed,
)

MakeHub = Callable[..., Awaitable[Hub]]


class Recorder:
    """Collects every event of a client in the background, for assertions on what
    happened (and did not) over a stretch of time."""

    def __init__(self, client: teamhub.Client) -> None:
        self.events: list[teamhub.Event] = []
        self._stream = client.events()
        self._task = asyncio.create_task(self._collect())

    async def _collect(self) -> None:
        async for e in self._stream:
            self.events.append(e)

    def of(self, kind: type[Any]) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]

    async def wait(self, what: str, kind: type[Any], pred: Callable[[Any], bool] = lambda e: True) -> Any:
        return await until(what, lambda: next((e for e in self.of(kind) if pred(e)), None))

    def close(self) -> None:
        self._stream.close()
        self._task.cancel()


@pytest.fixture
async def recorders() -> AsyncIterator[list[Recorder]]:
    made: list[Recorder] = []
    yield made
    for r in made:
        r.close()


def connect(url: str | list[str], token: Any, made: list[teamhub.Client], **kw: Any) -> teamhub.Client:
    c = teamhub.Client(url, token, backoff=fast_backoff(), request_timeout=WAIT, **kw)
    made.append(c)
    return c


async def test_drain_and_restart_single_node_is_not_recovered(
    hub: Hub, clients: list[teamhub.Client], recorders: list[Recorder]
) -> None:
    """Single node: a restart is a new epoch, so the rejoin says recovered: false."""
    ann_token = hub.token("ann", {"t": "editor"})
    c = connect(hub.url, ann_token, clients)
    await c.connect(WAIT)
    rec = Recorder(c)
    recorders.append(rec)
    first = await c.join("t")
    await c.publish("t", "chat.message", {"n": 1}, echo=True)
    await rec.wait("the echo", Message)

    assert await hub.stop() == 0
    gone = await rec.wait("the drain's close", Disconnected)
    assert (gone.code, gone.advice, gone.delay) == (1012, "now", 0.0)
    await hub.start()
    back = await rec.wait("the reconnect", Reconnected)
    assert dict(back.teams) == {"t": teamhub.RejoinResult(recovered=False, missed=0)}
    assert not back.all_recovered
    rejoined = [j for j in rec.of(Joined) if j.rejoin]
    assert len(rejoined) == 1 and rejoined[0].recovered is False
    assert rejoined[0].epoch != first["epoch"], "a restarted single node has a new epoch"
    assert c.position("t") == {"epoch": rejoined[0].epoch, "offset": 0}

    # And it works again: a message after the reconnect arrives.
    other = connect(hub.url, hub.token("bob", {"t": "editor"}), clients)
    await other.connect(WAIT)
    await other.publish("t", "chat.message", {"n": 2})
    m = await rec.wait("the message after the reconnect", Message, lambda m: m.data == {"n": 2})
    assert m.offset == 1


async def test_killed_node_replaced_on_the_same_sqlite_file(
    hub: Hub, make_hub: MakeHub, clients: list[teamhub.Client], recorders: list[Recorder]
) -> None:
    """SIGKILL: no close frame (1006), backoff; another node on the same port and
    database takes over; the pattern library (in the database) is still there."""
    token = hub.token("ann", {"t": "editor"})
    put = await hub.rest("PUT", "/teams/t/patterns/p", token, {"content": 1}, {"if-none-match": "*"})
    assert put.status_code == 201
    c = connect(hub.url, token, clients)
    await c.connect(WAIT)
    rec = Recorder(c)
    recorders.append(rec)
    await c.join("t")

    hub.kill()
    gone = await rec.wait("the lost connection", Disconnected)
    assert gone.code == 1006 and gone.advice == "backoff" and gone.delay is not None
    await rec.wait("a failed attempt while no node runs", Disconnected, lambda d: d is not gone)
    successor = await make_hub(port=hub.port, db=hub.db)
    back = await rec.wait("the reconnect", Reconnected)
    assert back.teams["t"].recovered is False
    feed = await successor.rest("GET", "/teams/t/patterns", token)
    assert [p["name"] for p in feed.json()["patterns"]] == ["p"]


async def test_cluster_restart_recovers_missed_messages(
    make_hub: MakeHub, cluster_args: list[str], clients: list[teamhub.Client], recorders: list[Recorder]
) -> None:
    """Cluster mode: history is in Redis, so after node a's restart the rejoin
    recovers what node b took meanwhile, each missed message once, in order."""
    a = await make_hub(extra=cluster_args)
    b = await make_hub(extra=cluster_args, db=a.db)
    token = a.token("ann", {"t": "editor"})
    c = connect(a.url, token, clients)
    await c.connect(WAIT)
    rec = Recorder(c)
    recorders.append(rec)
    first = await c.join("t")
    await b.publish(token, "t", "chat.message", {"n": 1})
    await rec.wait("message 1", Message, lambda m: m.data == {"n": 1})

    assert await a.stop() == 0
    await rec.wait("the drain", Disconnected, lambda d: d.code == 1012)
    for n in (2, 3):
        await b.publish(token, "t", "chat.message", {"n": n})
    await a.start()
    back = await rec.wait("the reconnect", Reconnected)
    assert dict(back.teams) == {"t": teamhub.RejoinResult(recovered=True, missed=2)}
    assert back.all_recovered
    assert [m.data["n"] for m in rec.of(Message)] == [1, 2, 3], "each message once, in order"
    assert c.position("t") == {"epoch": first["epoch"], "offset": 3}
    # The Joined event comes before its missed messages.
    kinds = [type(e).__name__ for e in rec.events if isinstance(e, Joined | Message | Reconnected)]
    assert kinds[-4:] == ["Joined", "Message", "Message", "Reconnected"]


async def test_drain_moves_to_the_next_node_at_once(
    make_hub: MakeHub, cluster_args: list[str], clients: list[teamhub.Client], recorders: list[Recorder]
) -> None:
    """1012: reconnect elsewhere. With two node URLs the client goes straight to the
    other node and recovers there."""
    a = await make_hub(extra=cluster_args)
    b = await make_hub(extra=cluster_args, db=a.db)
    token = a.token("ann", {"t": "editor"})
    c = connect([a.url, b.url], token, clients)
    await c.connect(WAIT)
    rec = Recorder(c)
    recorders.append(rec)
    await c.join("t")
    await b.publish(token, "t", "chat.message", {"n": 1})
    await rec.wait("message 1", Message)

    assert await a.stop() == 0
    back = await rec.wait("the reconnect", Reconnected)
    assert back.url == f"ws://127.0.0.1:{b.port}/ws"
    assert back.teams["t"].recovered is True
    drains = rec.of(Disconnected)
    assert [(d.code, d.delay) for d in drains] == [(1012, 0.0)], "no failed attempt in between"
    await b.publish(token, "t", "chat.message", {"n": 2})
    await rec.wait("message 2 through node b", Message, lambda m: m.data == {"n": 2})


async def test_expired_token_4001_is_renewed_through_the_callable(
    make_hub: MakeHub, clients: list[teamhub.Client], recorders: list[Recorder]
) -> None:
    """Close 4001 (the token ran out, no refresh sent): the client asks the callable
    for a new token and reconnects at once; the same node keeps its epoch, so the
    rejoin recovers."""
    hub = await make_hub(extra=["--jwt-leeway", "0"])
    minted: list[str] = []

    def provider() -> str:
        minted.append(hub.token("ann", {"t": "viewer"}, ttl="2s"))
        return minted[-1]

    c = connect(hub.url, provider, clients, refresh_margin=None)
    await c.connect(WAIT)
    rec = Recorder(c)
    recorders.append(rec)
    await c.join("t")
    expired = await rec.wait("the 4001", Disconnected, lambda d: d.code == 4001)
    assert expired.advice == "now" and expired.delay == 0.0
    back = await rec.wait("the reconnect", Reconnected)
    assert back.teams["t"].recovered is True
    assert len(minted) >= 2 and minted[1] != minted[0]


async def test_token_refreshed_before_expiry_keeps_the_socket(
    make_hub: MakeHub, clients: list[teamhub.Client], recorders: list[Recorder]
) -> None:
    """With a callable, the client sends ``refresh`` ahead of ``exp``: the socket
    outlives its first token without a 4001."""
    hub = await make_hub(extra=["--jwt-leeway", "0"])
    c = connect(hub.url, lambda: hub.token("ann", {"t": "viewer"}, ttl="3s"), clients, refresh_margin=1.5)
    rec = Recorder(c)
    recorders.append(rec)
    await c.connect(WAIT)
    await c.join("t")
    first_exp = c.tokens.expires_at()
    assert first_exp is not None
    refreshed = await rec.wait("a refresh", TokenRefreshed)
    assert refreshed.exp > first_exp

    async def past_first_expiry() -> bool:
        await c.ping()  # a real round trip on the same socket each time
        return time.time() > first_exp + 1.5

    await until("time to pass the first token's exp", past_first_expiry)
    assert rec.of(Disconnected) == [], "no close: the refreshes kept it open"
    assert len(rec.of(Connected)) == 1


async def test_expired_fixed_token_stops(
    make_hub: MakeHub, clients: list[teamhub.Client], recorders: list[Recorder]
) -> None:
    hub = await make_hub(extra=["--jwt-leeway", "0"])
    c = connect(hub.url, hub.token("ann", {"t": "viewer"}, ttl="2s"), clients)
    await c.connect(WAIT)
    rec = Recorder(c)
    recorders.append(rec)
    await c.join("t")
    stopped = await rec.wait("the stop", Stopped)
    assert isinstance(stopped.error, ClientStopped)
    assert (stopped.error.close_code, stopped.error.code) == (4001, "unauthorized")
    assert rec.of(Disconnected)[-1].advice == "stop"
    assert c.state == "stopped"


# ---- close codes, from a scripted server ------------------------------------------------
# The hub sends 1008 only on its seed endpoint and 1009/4008 only to misbehaving
# clients, so these use a tiny local WebSocket server that closes as told.


@contextlib.asynccontextmanager
async def closing_server(code: int) -> AsyncIterator[tuple[str, list[int]]]:
    connections: list[int] = []

    async def handler(ws: ServerConnection) -> None:
        connections.append(1)
        await ws.close(code, "scripted")

    async with serve(handler, "127.0.0.1", 0, subprotocols=["teamhub.v1"]) as server:  # type: ignore[list-item]
        port = next(iter(server.sockets)).getsockname()[1]
        yield f"ws://127.0.0.1:{port}", connections


@pytest.mark.parametrize(
    ("code", "error_code"),
    [
        (1002, "bad_request"),
        (1007, "bad_request"),
        (1008, "forbidden"),
        (1009, "too_large"),
        (4008, "rate_limited"),
    ],
)
async def test_stop_close_codes_stop(code: int, error_code: str, clients: list[teamhub.Client]) -> None:
    async with closing_server(code) as (url, connections):
        c = connect(url, "tok", clients)
        stream = c.events()
        with contextlib.suppress(ClientStopped):
            await c.connect(WAIT)
        stopped = await stream.wait_for(Stopped, timeout=WAIT)
        assert isinstance(stopped.error, ClientStopped)
        assert (stopped.error.close_code, stopped.error.code) == (code, error_code)
        assert len(connections) == 1, "not retried"


@pytest.mark.parametrize("code", [1011, 1013, 1000])
async def test_other_close_codes_reconnect_with_backoff(code: int, clients: list[teamhub.Client]) -> None:
    async with closing_server(code) as (url, connections):
        c = connect(url, "tok", clients)
        stream = c.events()
        await c.connect(WAIT)
        delays = []
        for _ in range(3):
            d = await stream.wait_for(Disconnected, timeout=WAIT)
            assert (d.code, d.advice) == (code, "backoff")
            delays.append(d.delay)
        assert all(d is not None and 0 <= d <= 0.5 for d in delays)
        await until("three connections", lambda: len(connections) >= 3)
        # A socket that closes before any round trip has not "worked": the backoff
        # keeps growing instead of starting from base on every attempt.
        assert c.backoff.attempt >= 3
