"""Test harness: real ``teamhub serve`` processes on free loopback ports.

Every node runs with a real HS256 secret, its own SQLite file and spill file in the
test's temporary directory, and is stopped (SIGTERM, then SIGKILL if it hangs) after the
test. Tokens are minted by ``teamhub token``. Every wait has a deadline (``until``);
nothing sleeps in place of an event.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import signal
import socket
import ssl
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

import teamhub

ROOT = Path(__file__).resolve().parents[3]
BIN = Path(
    os.environ.get("TEAMHUB_BIN")
    or Path(os.environ.get("CARGO_TARGET_DIR") or ROOT / "target") / "debug" / "teamhub"
)
SECRET = "python-tests-secret-0123456789abcdef"
WAIT = 15.0

T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def until(what: str, check: Callable[[], Any], timeout: float = WAIT) -> Any:
    """Polls ``check`` (sync or async; truthy = done) until it is, or fails the test
    after ``timeout`` seconds. Exceptions count as "not yet"."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while True:
        try:
            value = check()
            if inspect.isawaitable(value):
                value = await value
            if value:
                return value
        except Exception as e:
            last = e
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what} (last error: {last!r})")
        await asyncio.sleep(0.05)  # the polling interval, bounded by the deadline


def fast_backoff() -> teamhub.Backoff:
    return teamhub.Backoff(0.05, 0.5, seed=7)


def make_cert(directory: Path, name: str = "tls") -> tuple[Path, Path]:
    """A self-signed P-256 certificate for 127.0.0.1 (its own CA) and its key, made by
    the openssl command line: ``(cert, key)``."""
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )
    return cert, key


class Hub:
    """One node process that can be stopped and started again on the same port and
    database (or killed, and another started on them)."""

    def __init__(
        self,
        directory: Path,
        *,
        extra: list[str] | None = None,
        port: int | None = None,
        db: Path | None = None,
        tls: tuple[Path, Path] | None = None,
    ) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.extra = list(extra or [])
        # (cert, key): the node serves HTTPS and WSS only; the cert is its own CA.
        self.tls = tls
        if tls is not None:
            self.extra += ["--tls-cert", str(tls[0]), "--tls-key", str(tls[1])]
        self.port = port or free_port()
        self.db = db or directory / "hub.db"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def _verify(self) -> ssl.SSLContext | bool:
        return ssl.create_default_context(cafile=self.tls[0]) if self.tls else True

    @property
    def log(self) -> Path:
        return self.dir / f"node-{self.port}-{self.starts}.log"

    async def start(self) -> Hub:
        assert BIN.exists(), f"{BIN} is missing: cargo build -p teamhub"
        self.starts += 1
        args = [
            str(BIN),
            "serve",
            "--listen",
            f"127.0.0.1:{self.port}",
            "--jwt-secret",
            SECRET,
            "--database-url",
            f"sqlite://{self.db}",
            "--activity-spill-path",
            str(self.dir / f"activity-{self.port}.spill"),
            "--drain-timeout",
            "5",
            *self.extra,
        ]
        env = {k: v for k, v in os.environ.items() if not k.startswith("TEAMHUB_")}
        env["RUST_LOG"] = env.get("RUST_LOG", "info")
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env)
        proc = self.proc

        async def ready() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"teamhub exited with {proc.returncode}: {self.log.read_text()}")
            async with httpx.AsyncClient(timeout=1.0, verify=self._verify()) as http:
                return (await http.get(f"{self.url}/readyz")).status_code == 200

        try:
            await until(f"the node on {self.port} to be ready", ready)
        except AssertionError as e:
            raise AssertionError(f"{e}\n{self.log.read_text()}") from None
        return self

    async def stop(self) -> int:
        """SIGTERM (a drain: sockets get 1012) and the exit status."""
        proc, self.proc = self.proc, None
        if proc is None:
            return 0
        proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + WAIT
        while proc.poll() is None:
            if time.monotonic() > deadline:
                proc.kill()
                proc.wait(5)
                raise AssertionError("the node did not exit within 15 s of SIGTERM")
            await asyncio.sleep(0.05)
        return proc.returncode

    def kill(self) -> None:
        """SIGKILL: no drain, no close frames; sockets just end."""
        proc, self.proc = self.proc, None
        if proc is not None:
            proc.kill()
            proc.wait(5)

    def token(self, user: str, teams: dict[str, str], *, name: str | None = None, ttl: str = "1h") -> str:
        args = [str(BIN), "token", "--user", user, "--name", name or user.title(), "--ttl", ttl]
        for team, role in teams.items():
            args += ["--team", f"{team}={role}"]
        done = subprocess.run(
            args,
            env={**os.environ, "TEAMHUB_JWT_SECRET": SECRET},
            capture_output=True,
            check=True,
            timeout=10,
        )
        return done.stdout.decode().strip()

    async def rest(
        self, method: str, path: str, token: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> httpx.Response:
        async with httpx.AsyncClient(
            base_url=f"{self.url}/api/v1", timeout=WAIT, verify=self._verify()
        ) as http:
            return await http.request(
                method, path, json=body, headers={"authorization": f"Bearer {token}", **(headers or {})}
            )

    async def publish(self, token: str, team: str, type: str, data: Any) -> int:
        r = await self.rest("POST", f"/teams/{team}/messages", token, {"type": type, "data": data})
        assert r.status_code == 200, r.text
        return int(r.json()["offset"])


@pytest.fixture
async def make_hub(tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[Hub]]]:
    """Starts nodes (``await make_hub(extra=[...])``); stops every one after the test."""
    hubs: list[Hub] = []

    async def make(**kw: Any) -> Hub:
        hub = Hub(tmp_path / f"hub{len(hubs)}", **kw)
        hubs.append(hub)
        return await hub.start()

    yield make
    for hub in hubs:
        if hub.proc is not None:
            try:
                await hub.stop()
            except AssertionError:
                hub.kill()


@pytest.fixture
async def hub(make_hub: Callable[..., Awaitable[Hub]]) -> Hub:
    return await make_hub()


@pytest.fixture
def redis_url() -> str:
    """The Redis of the cluster-mode tests; they fail, not skip, without one."""
    url = os.environ.get("TEAMHUB_TEST_REDIS_URL", "redis://127.0.0.1:6379")
    host_port = url.split("://", 1)[1].split("/", 1)[0].rsplit("@", 1)[-1]
    host, _, port = host_port.partition(":")
    try:
        with socket.create_connection((host, int(port or 6379)), timeout=2) as s:
            s.sendall(b"PING\r\n")
            assert s.recv(16).startswith(b"+PONG"), "Redis did not answer PING"
    except OSError as e:
        raise AssertionError(f"Redis at {url} is not reachable ({e}); the cluster tests need it") from None
    return url


@pytest.fixture
def cluster_args(redis_url: str) -> list[str]:
    """Flags for nodes of one cluster on that Redis, under a key prefix of their own."""
    return ["--redis-url", redis_url, "--redis-key-prefix", f"pytest-{uuid.uuid4().hex[:12]}"]


@pytest.fixture
async def clients() -> AsyncIterator[list[teamhub.Client]]:
    """Clients appended here are closed after the test."""
    made: list[teamhub.Client] = []
    yield made
    for c in made:
        await c.close()


@pytest.fixture
async def rests() -> AsyncIterator[list[teamhub.Rest]]:
    made: list[teamhub.Rest] = []
    yield made
    for r in made:
        await r.aclose()
