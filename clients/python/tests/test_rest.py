"""REST helpers against a real node: history, activity pages and streamed exports,
API keys, member revocation, error codes."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from conftest import WAIT, Hub, fast_backoff, until

import teamhub
from teamhub import ExportIncomplete, Forbidden, Kicked, NotFound, Rest, Unauthorized


def rest_for(hub: Hub, token: str, made: list[Rest]) -> Rest:
    r = Rest(hub.url, token, timeout=WAIT)
    made.append(r)
    return r


async def test_publish_history_and_presence(hub: Hub, rests: list[Rest]) -> None:
    r = rest_for(hub, hub.token("ann", {"t": "editor"}), rests)
    offsets = [await r.publish("t", "build.finished", {"n": n}) for n in range(1, 6)]
    assert offsets == [1, 2, 3, 4, 5]
    h = await r.history("t", since=2)
    assert h["team"] == "t" and h["offset"] == 5 and h["epoch"]
    assert [m["offset"] for m in h["messages"]] == [3, 4, 5]
    assert h["messages"][0]["data"] == {"n": 3} and h["messages"][0]["user"] == "ann"
    assert [m["offset"] for m in (await r.history("t", since=0, limit=2))["messages"]] == [1, 2]
    assert await r.presence("t") == []


async def test_error_codes_and_statuses(hub: Hub, rests: list[Rest]) -> None:
    viewer = rest_for(hub, hub.token("val", {"t": "viewer"}), rests)
    with pytest.raises(Forbidden) as e:
        await viewer.publish("t", "chat.message", {})
    assert (e.value.code, e.value.status) == ("forbidden", 403)
    with pytest.raises(Forbidden):
        await viewer.activity("t")
    with pytest.raises(NotFound) as nf:
        await viewer.get_pattern("t", "missing")
    assert nf.value.status == 404
    bad = rest_for(hub, "nope", rests)
    with pytest.raises(Unauthorized) as u:
        await bad.history("t")
    assert u.value.status == 401


async def test_a_refused_token_is_renewed_once(hub: Hub, rests: list[Rest]) -> None:
    tokens = iter(["expired-or-bad", hub.token("ann", {"t": "viewer"})])
    r = rest_for(hub, lambda: next(tokens), rests)
    assert (await r.history("t"))["messages"] == []


async def test_activity_pages_filters_and_streamed_exports(hub: Hub, rests: list[Rest]) -> None:
    admin = hub.token("ada", {"t": "admin"})
    r = rest_for(hub, admin, rests)
    for n in range(7):
        await r.publish("t", "build.finished", {"n": n, "resource_type": "build", "resource_id": str(n)})
    await r.publish("t", "chat.message", {"text": "=1+1"})

    # The activity log is written asynchronously: poll until all eight rows are there.
    async def eight() -> bool:
        return len((await r.activity("t", limit=100)).items) >= 8

    await until("the activity rows", eight)

    pages = [p async for p in r.activity_pages("t", action="build.finished", limit=3)]
    assert [len(p.items) for p in pages] == [3, 3, 1]
    assert pages[-1].next_cursor is None and pages[0].next_cursor is not None
    rows = [row for p in pages for row in p.items]
    assert [row["resource_id"] for row in rows] == [str(n) for n in reversed(range(7))], "newest first"
    assert all(row["action"] == "build.finished" and row["user"] == "ada" for row in rows)

    # Time filters take aware datetimes.
    future = datetime.now(UTC) + timedelta(hours=1)
    assert (await r.activity("t", since=future)).items == []
    assert len((await r.activity("t", until=future, action="chat.message")).items) == 1
    with pytest.raises(ValueError):
        await r.activity("t", since=datetime(2026, 1, 1))  # naive: refused before sending

    # Streamed exports: every matching row, ndjson as dicts, csv with its header line.
    streamed = [row async for row in r.export_activity_rows("t", action="build.finished")]
    assert [row["id"] for row in streamed] == [row["id"] for row in rows]
    buffer = io.BytesIO()
    written = await r.export_activity_to("t", buffer, "csv")
    assert written == len(buffer.getvalue()) > 0
    table = list(csv.reader(io.StringIO(buffer.getvalue().decode())))
    assert table[0] == [
        "id",
        "team",
        "user",
        "action",
        "resource_type",
        "resource_id",
        "metadata",
        "ip",
        "user_agent",
        "created_at",
    ]
    assert len(table) - 1 == len((await r.activity("t", limit=1000)).items)


async def test_a_cut_export_is_reported() -> None:
    """A transfer that breaks off before its final chunk is not a complete export."""

    class Broken(httpx.AsyncByteStream):
        async def __aiter__(self):  # type: ignore[no-untyped-def, override]
            yield b'{"id":"1"}\n'
            raise httpx.RemoteProtocolError("peer closed connection without sending complete message body")

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-type": "application/x-ndjson"}, stream=Broken())

    async with Rest("http://127.0.0.1:9", "tok", transport=httpx.MockTransport(answer)) as r:
        got = []
        with pytest.raises(ExportIncomplete) as e:
            async for row in r.export_activity_rows("t"):
                got.append(row)
        assert got == [{"id": "1"}] and e.value.code == "unavailable"


async def test_api_keys_create_list_use_delete(
    hub: Hub, rests: list[Rest], clients: list[teamhub.Client]
) -> None:
    admin = rest_for(hub, hub.token("ada", {"t": "admin"}), rests)
    created = await admin.create_api_key("t", "ci bot", "editor")
    assert created["key"].startswith("thk_") and created["role"] == "editor"
    listed = await admin.api_keys("t")
    assert [(k["id"], k["name"], k["created_by"]) for k in listed] == [(created["id"], "ci bot", "ada")]
    assert "key" not in listed[0]

    bot = rest_for(hub, created["key"], rests)
    assert await bot.publish("t", "deploy.done", {"v": 1}) == 1
    sock = teamhub.Client(hub.url, created["key"], backoff=fast_backoff(), request_timeout=WAIT)
    clients.append(sock)
    events = sock.events()
    await sock.connect(WAIT)
    await sock.join("t")
    with pytest.raises(Forbidden):
        await admin.create_api_key("t", "too strong", "owner")

    await admin.delete_api_key("t", created["id"])
    with pytest.raises(Unauthorized):
        await bot.publish("t", "deploy.done", {"v": 2})
    # Its socket is told (kicked, then 4001), and a fixed key cannot be renewed: stop.
    await events.wait_for(Kicked, lambda k: k.reason == "revoked", timeout=WAIT)
    stopped = await events.wait_for(teamhub.Stopped, timeout=WAIT)
    assert isinstance(stopped.error, teamhub.ClientStopped) and stopped.error.close_code == 4001
    assert await admin.api_keys("t") == []
    with pytest.raises(NotFound):
        await admin.delete_api_key("t", created["id"])


async def test_member_revocation_kicks_live_connections(
    hub: Hub, rests: list[Rest], clients: list[teamhub.Client]
) -> None:
    admin = rest_for(hub, hub.token("ada", {"t": "admin"}), rests)
    mal = teamhub.Client(hub.url, hub.token("mal", {"t": "editor", "u": "viewer"}), backoff=fast_backoff())
    clients.append(mal)
    events = mal.events()
    await mal.connect(WAIT)
    await mal.join("t")
    await mal.join("u")
    revocation = await admin.revoke_member("t", "mal")
    assert (revocation["team"], revocation["user"]) == ("t", "mal") and revocation["revoked_at"]
    kicked = await events.wait_for(Kicked, timeout=WAIT)
    assert (kicked.team, kicked.reason) == ("t", "revoked")
    assert mal.teams == ["u"], "the other team stays joined; the kicked one is not rejoined"
    assert mal.presence("t").users() == []
    with pytest.raises(Forbidden):
        await mal.join("t")
    assert await mal.ping() < WAIT, "the connection itself stays open"
