"""wss:// and https:// against a node serving TLS itself (``--tls-cert``/``--tls-key``,
a certificate made by the openssl command line): a private CA given as a file or an
``ssl.SSLContext`` works for the socket, REST and the CLI; a certificate that does not
verify is a clear error that is never retried."""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import WAIT, Hub, fast_backoff, make_cert

import teamhub
from teamhub import Disconnected, Message, Rest, Stopped, TlsError, TlsStopped

MakeHub = Callable[..., Awaitable[Hub]]


@pytest.fixture
async def tls_hub(make_hub: MakeHub, tmp_path: Path) -> Hub:
    return await make_hub(tls=make_cert(tmp_path / "certs"))


def ca_of(hub: Hub) -> Path:
    assert hub.tls is not None
    return hub.tls[0]


async def test_wss_and_https_with_a_private_ca(
    tls_hub: Hub, clients: list[teamhub.Client], rests: list[Rest]
) -> None:
    token = tls_hub.token("ann", {"t": "editor"})
    assert tls_hub.url.startswith("https://")
    # A CA file path (str) for the socket, given as a wss:// URL ...
    wss = tls_hub.url.replace("https://", "wss://") + "/ws"
    c = teamhub.Client(wss, token, ssl=str(ca_of(tls_hub)), backoff=fast_backoff(), request_timeout=WAIT)
    clients.append(c)
    events = c.events()
    await c.connect(WAIT)
    assert c.url == wss
    await c.join("t")
    offset = await c.publish("t", "chat.message", {"text": "over tls"}, echo=True)
    m = await events.wait_for(Message, timeout=WAIT)
    assert (m.offset, m.data) == (offset, {"text": "over tls"})

    # ... a Path for REST, and one SSLContext shared by a second socket and REST.
    by_path = Rest(tls_hub.url, token, ssl=ca_of(tls_hub))
    rests.append(by_path)
    assert [x["offset"] for x in (await by_path.history("t"))["messages"]] == [offset]
    context = teamhub.ssl_context(ca_of(tls_hub))
    by_context = Rest(tls_hub.url, token, ssl=context)
    rests.append(by_context)
    other = teamhub.Client(tls_hub.url, token, ssl=context, backoff=fast_backoff(), request_timeout=WAIT)
    clients.append(other)
    await other.connect(WAIT)
    assert (await other.join("t"))["offset"] == offset
    assert await by_context.publish("t", "chat.message", {"text": "rest"}) == offset + 1


@pytest.mark.parametrize("trust", ["system roots", "another CA"])
async def test_a_certificate_that_does_not_verify_stops_the_client_at_once(
    trust: str, tls_hub: Hub, tmp_path: Path, clients: list[teamhub.Client]
) -> None:
    ca = None if trust == "system roots" else make_cert(tmp_path / "other", "other")[0]
    c = teamhub.Client(tls_hub.url, tls_hub.token("ann", {"t": "viewer"}), ssl=ca, backoff=fast_backoff())
    clients.append(c)
    events = c.events()
    with pytest.raises(TlsStopped) as e:
        await c.connect(WAIT)
    err = e.value
    assert isinstance(err, TlsError) and isinstance(err, teamhub.ClientStopped)
    assert (err.code, err.close_code) == ("tls", 1015)
    assert "does not verify" in str(err) and tls_hub.url.replace("https", "wss") in str(err)
    seen = [event async for event in events]
    assert [(type(x).__name__, getattr(x, "advice", None)) for x in seen] == [
        ("Disconnected", "stop"),
        ("Stopped", None),
    ], "one attempt, no backoff: it would not verify next time either"
    assert isinstance(seen[0], Disconnected) and seen[0].delay is None
    assert isinstance(seen[1], Stopped) and seen[1].error is err
    assert c.state == "stopped"


async def test_rest_reports_a_certificate_that_does_not_verify_without_retrying(
    tls_hub: Hub, rests: list[Rest]
) -> None:
    r = Rest(tls_hub.url, tls_hub.token("ann", {"t": "viewer"}), retries=5)
    rests.append(r)
    attempts = 0
    send = r._http.request

    async def counted(*args: Any, **kw: Any) -> Any:
        nonlocal attempts
        attempts += 1
        return await send(*args, **kw)

    r._http.request = counted  # type: ignore[method-assign]
    with pytest.raises(TlsError) as e:
        await r.history("t")  # a GET: retried on network trouble, not on this
    assert attempts == 1
    assert e.value.code == "tls" and "does not verify" in str(e.value)
    assert not isinstance(e.value, teamhub.Unavailable), "not a transient failure"
    exports = Rest(tls_hub.url, tls_hub.token("ada", {"t": "admin"}))
    rests.append(exports)
    with pytest.raises(TlsError):
        async for _ in exports.export_activity_rows("t"):
            pass


def test_bad_tls_settings_are_refused_up_front(tmp_path: Path) -> None:
    cert, key = make_cert(tmp_path)
    with pytest.raises(ValueError, match="cannot read"):
        teamhub.Client("wss://127.0.0.1:1", "tok", ssl=tmp_path / "missing.pem")
    with pytest.raises(ValueError, match="no PEM certificate"):
        Rest("https://127.0.0.1:1", "tok", ssl=key)
    with pytest.raises(ValueError, match="plain text"):
        teamhub.Client("http://127.0.0.1:1", "tok", ssl=cert)
    with pytest.raises(ValueError, match="plain text"):
        Rest("ws://127.0.0.1:1", "tok", ssl=cert)
    with pytest.raises(TypeError, match="SSLContext or a CA file path"):
        teamhub.ssl_context(42)  # type: ignore[arg-type]
    context = teamhub.ssl_context(cert)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert teamhub.ssl_context(context) is context
    assert len(context.get_ca_certs()) == 1, "only the given CA, not the system's roots too"


def _cli(hub: Hub, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "teamhub", "patterns", "pull", "--url", hub.url, "--team", "t", *args],
        cwd=cwd,
        env={
            **{k: v for k, v in os.environ.items() if k != "TEAMHUB_CA_CERT"},
            "TEAMHUB_TOKEN": hub.token("ann", {"t": "viewer"}),
        },
        capture_output=True,
        text=True,
        timeout=WAIT * 2,
    )


async def test_the_cli_over_https(tls_hub: Hub, tmp_path: Path) -> None:
    bob = tls_hub.token("bob", {"t": "editor"})
    put = await tls_hub.rest("PUT", "/teams/t/patterns/p", bob, {"content": 1}, {"if-none-match": "*"})
    assert put.status_code == 201
    refused = _cli(tls_hub, cwd=tmp_path)
    assert refused.returncode == 2 and "does not verify" in refused.stderr, refused.stderr
    pulled = _cli(tls_hub, "--ca-cert", str(ca_of(tls_hub)), cwd=tmp_path)
    assert pulled.returncode == 0, pulled.stderr
    assert (tmp_path / "patterns" / "p.json").read_text().strip() == "1"
