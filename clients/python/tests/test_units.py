"""The pure parts, without a node: backoff, close-code advice, positions, presence,
URLs, JWT expiry, error classes."""

from __future__ import annotations

import base64
import json

import pytest

from teamhub import (
    Backoff,
    ClientClosed,
    EventStream,
    Kicked,
    Positions,
    PresenceMap,
    Stopped,
    backoff_delay,
    close_advice,
)
from teamhub.errors import Conflict, Forbidden, TeamhubError, error_for
from teamhub.protocol import check_since, http_url, is_secure, jwt_exp, socket_url


def test_full_jitter_stays_within_the_doubling_ceiling() -> None:
    assert backoff_delay(0, base=0.25, cap=30, random=lambda: 1.0) == 0.25
    assert backoff_delay(3, base=0.25, cap=30, random=lambda: 1.0) == 2.0
    assert backoff_delay(20, base=0.25, cap=30, random=lambda: 1.0) == 30.0
    assert backoff_delay(5, random=lambda: 0.0) == 0.0
    b = Backoff(0.1, 1.0, seed=1)
    delays = [b.next_delay() for _ in range(8)]
    assert all(0 <= d <= min(1.0, 0.1 * 2**n) for n, d in enumerate(delays))
    assert len(set(delays)) == len(delays), "jittered"
    assert b.attempt == 8
    b.reset()
    assert b.attempt == 0 and b.next_delay() <= 0.1
    assert Backoff(0.1, 1.0, seed=1).next_delay() == Backoff(0.1, 1.0, seed=1).next_delay(), "seedable"


def test_close_advice_follows_the_contract() -> None:
    assert close_advice(1012) == "now"
    assert close_advice(4001) == "refresh"
    for code in (1002, 1007, 1008, 1009, 4008):
        assert close_advice(code) == "stop"
    for code in (1000, 1001, 1006, 1011, 1013, None):
        assert close_advice(code) == "backoff"


def test_positions_drop_duplicates_and_see_gaps() -> None:
    p = Positions()
    assert p.message("t", 1) == "unknown"
    p.joined("t", "e1", 3)
    assert p.message("t", 3) == "duplicate"
    assert p.message("t", 4) == "new"
    assert p.message("t", 7) == "gap"
    assert p.since("t") == {"epoch": "e1", "offset": 7}
    again = Positions.restore(p.snapshot())
    assert again.since("t") == {"epoch": "e1", "offset": 7}
    p.forget("t")
    assert p.since("t") is None


def test_presence_map_applies_leaves_then_joins() -> None:
    m = PresenceMap("t")
    changes = []
    off = m.on_change(lambda _m, c: changes.append(c))
    m.reset([{"user": "a", "name": "A", "conns": 1, "meta": None}])
    m.apply(
        joins=[{"user": "b", "name": None, "conns": 1, "meta": {"s": 1}}],
        leaves=[{"user": "a", "name": "A", "conns": 0, "meta": None}],
    )
    assert m.users() == ["b"] and "b" in m and len(m) == 1
    m.apply(joins=[{"user": "b", "name": None, "conns": 2, "meta": {"s": 2}}], leaves=[])
    assert m.get("b") == {"user": "b", "name": None, "conns": 2, "meta": {"s": 2}}
    off()
    m.reset([])
    assert [c.reset for c in changes] == [True, False, False]
    m.on_change(lambda _m, _c: 1 / 0)  # a failing listener is logged, not raised
    m.reset([])


def test_node_urls() -> None:
    assert socket_url("http://127.0.0.1:8080") == "ws://127.0.0.1:8080/ws"
    assert socket_url("https://hub.example/teamhub/") == "wss://hub.example/teamhub/ws"
    assert socket_url("ws://h:1/ws?token=x") == "ws://h:1/ws"
    assert http_url("wss://hub.example/ws") == "https://hub.example"
    with pytest.raises(ValueError):
        socket_url("127.0.0.1:8080")
    assert is_secure("https://h") and is_secure("wss://h/ws") and not is_secure("http://h")


def test_since_is_checked() -> None:
    assert check_since({"epoch": "e", "offset": 0}) == {"epoch": "e", "offset": 0}
    for bad in ({"epoch": "", "offset": 1}, {"epoch": "e", "offset": True}, {"offset": 1}, ["e", 1], None):
        with pytest.raises(ValueError, match="since must be"):
            check_since(bad)


async def test_a_full_stream_still_ends_with_stopped() -> None:
    stream = EventStream(1, lambda _s: None)
    await stream._put(Kicked("t", "revoked"))  # the queue is now full
    final = Stopped(ClientClosed("closed"))
    stream._end(final)
    assert [e async for e in stream] == [Kicked("t", "revoked"), final]


def test_jwt_expiry_is_read_without_verifying() -> None:
    payload = base64.urlsafe_b64encode(json.dumps({"sub": "a", "exp": 1234}).encode()).rstrip(b"=").decode()
    assert jwt_exp(f"h.{payload}.s") == 1234.0
    assert jwt_exp("thk_abc") is None
    assert jwt_exp("not.a.jwt") is None


def test_errors_by_code() -> None:
    e = error_for("forbidden", "no", status=403)
    assert isinstance(e, Forbidden) and e.code == "forbidden" and e.status == 403
    assert str(e) == "forbidden: no (HTTP 403)"
    assert isinstance(error_for("conflict", "x"), Conflict)
    odd = error_for("brand_new_code", "x")
    assert type(odd) is TeamhubError and odd.code == "brand_new_code"
