"""The IDE-plugin backend of docs/clients.md (clients/python/examples/ide_backend.py),
run as an editor runs it, against a real node; and the doc shows that very file."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, WAIT, Hub, until

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "ide_backend.py"


class Editor:
    """The editor's side of the pipe."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    async def send(self, **cmd: Any) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(cmd) + "\n").encode())
        await self.proc.stdin.drain()

    async def expect(self, event: str, **match: Any) -> dict[str, Any]:
        """Reads lines until one of ``event`` whose fields include ``match``."""
        assert self.proc.stdout is not None
        while True:
            raw = await asyncio.wait_for(self.proc.stdout.readline(), WAIT)
            assert raw, f"the backend ended before a {event!r} event"
            line = json.loads(raw)
            if line["event"] == event and all(line.get(k) == v for k, v in match.items()):
                return dict(line)

    async def quit(self) -> int:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        return await asyncio.wait_for(self.proc.wait(), WAIT)


@pytest.fixture
def start_backend(hub: Hub, tmp_path: Path) -> Any:
    procs: list[asyncio.subprocess.Process] = []

    async def start(token: str) -> Editor:
        env = {
            **os.environ,
            "TEAMHUB_NODES": hub.url,
            "TEAMHUB_TEAM": "t",
            "TEAMHUB_TOKEN": token,
            "TEAMHUB_STATE": str(tmp_path / "state"),
        }
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(EXAMPLE),
            env=env,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        procs.append(proc)
        return Editor(proc)

    yield start
    for p in procs:
        if p.returncode is None:
            p.kill()


async def test_the_ide_backend_end_to_end(hub: Hub, start_backend: Any) -> None:
    ann = hub.token("ann", {"t": "editor"})
    bob = hub.token("bob", {"t": "editor"})
    await hub.rest(
        "PUT", "/teams/t/patterns/retry", bob, {"content": {"attempts": 3}}, {"if-none-match": "*"}
    )

    editor = await start_backend(ann)
    ready = await editor.expect("ready")
    assert ready["team"] == "t"
    reload = await editor.expect("reload")  # a first join: the latest history
    assert [m["type"] for m in reload["messages"]] == ["pattern.updated"]
    await editor.expect("pattern", name="retry", version=1)

    await hub.publish(bob, "t", "chat.message", {"text": "hello ann"})
    got = await editor.expect("message")
    assert (got["user"], got["data"]) == ("bob", {"text": "hello ann"})

    await editor.send(cmd="status", status="busy")

    async def ann_busy() -> bool:
        people = (await hub.rest("GET", "/teams/t/presence", bob)).json()["presence"]
        return any(p["user"] == "ann" and (p["meta"] or {}).get("status") == "busy" for p in people)

    await until("ann to show as busy", ann_busy)

    # A save that races bob: the resolver merges both objects.
    r = await hub.rest(
        "PUT",
        "/teams/t/patterns/retry",
        bob,
        {"content": {"attempts": 3, "jitter": True}},
        {"if-match": '"1"'},
    )
    assert r.status_code == 200
    # The editor says which version it edited: a conflict whether or not bob's notice
    # has reached the backend yet.
    await editor.send(cmd="save_pattern", name="retry", content={"attempts": 5}, base=1)
    saved = await editor.expect("saved", name="retry")
    assert saved["content"] == {"attempts": 5, "jitter": True} and saved["version"] == 3
    await editor.send(cmd="say", text="merged")
    echoed = await editor.expect("message", user="ann")
    assert echoed["data"] == {"text": "merged"}
    assert await editor.quit() == 0

    # Restarted, it resumes from its saved position: what was said meanwhile arrives.
    await hub.publish(bob, "t", "chat.message", {"text": "while you were away"})
    again = await start_backend(ann)
    await again.expect("ready")
    missed = await again.expect("message")
    assert missed["data"] == {"text": "while you were away"}
    assert await again.quit() == 0


def test_docs_show_the_example_verbatim() -> None:
    docs = (ROOT / "docs" / "clients.md").read_text()
    assert EXAMPLE.read_text() in docs, "docs/clients.md must include examples/ide_backend.py as it is"
