"""An IDE plugin's backend: the editor starts it and talks JSON lines over stdio.

Editor -> backend, one object per line:
  {"cmd": "status", "status": "busy"}                   shown to others in presence
  {"cmd": "open", "file": "src/main.rs"}                announced to the team
  {"cmd": "say", "text": "review please"}               a chat message
  {"cmd": "save_pattern", "name": "retry", "content": {...}, "base": 1}
                                                        "base": the version edited (optional)
Backend -> editor: {"event": "ready" | "message" | "presence" | "reload" | "pattern" |
  "saved" | "conflict" | "offline" | "online" | "error" | "stopped", ...}

Configuration: TEAMHUB_NODES (comma-separated node URLs), TEAMHUB_TEAM, and a token:
TEAMHUB_TOKEN_URL (the plugin's own service that mints a short-lived teamhub token for
the signed-in user; asked again before each expiry) or a fixed TEAMHUB_TOKEN.
TEAMHUB_STATE is where the pattern library and the stream position are kept, so a
restarted editor resumes where it was. TEAMHUB_CA_CERT names the PEM file of a private
CA for https:// nodes (by default the system's roots are trusted).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx

import teamhub

NODES = os.environ.get("TEAMHUB_NODES", "http://127.0.0.1:8080").split(",")
TEAM = os.environ["TEAMHUB_TEAM"]
STATE = Path(os.environ.get("TEAMHUB_STATE") or Path.home() / ".cache" / "teamhub-ide")
CA = os.environ.get("TEAMHUB_CA_CERT") or None


def emit(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


async def fetch_token() -> str:
    url = os.environ.get("TEAMHUB_TOKEN_URL")
    if url is None:
        return os.environ["TEAMHUB_TOKEN"]
    async with httpx.AsyncClient(timeout=10) as http:
        response = await http.post(url)
        response.raise_for_status()
        return response.text.strip()


async def commands() -> AsyncIterator[dict[str, Any]]:
    """The editor's lines from stdin, until it closes the pipe."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        if line.strip():
            yield json.loads(line)


def merge(conflict: teamhub.PatternConflict) -> Any:
    """Someone saved the pattern first: merge two objects key by key (ours win),
    otherwise keep theirs and tell the editor."""
    theirs = conflict.theirs["content"]
    if isinstance(conflict.ours, dict) and isinstance(theirs, dict):
        return {**theirs, **conflict.ours}
    emit("conflict", name=conflict.name, theirs=conflict.theirs, ours=conflict.ours)
    return teamhub.TAKE_THEIRS


class Backend:
    def __init__(self) -> None:
        STATE.mkdir(parents=True, exist_ok=True)
        self.positions = STATE / f"{TEAM}.position.json"
        tokens = teamhub.TokenSource(fetch_token)  # one token for the socket and REST
        tls = teamhub.ssl_context(CA) if CA else None  # one context for the socket and REST
        self.client = teamhub.Client(NODES, tokens, ssl=tls)
        self.rest = teamhub.Rest(NODES[0], tokens, ssl=tls)
        store = teamhub.JsonFileStore(STATE / f"{TEAM}.patterns.json")
        self.library = teamhub.PatternLibrary(self.rest, TEAM, store=store)
        self.me: dict[str, Any] = {"status": "available", "file": None}

    def saved_position(self) -> teamhub.Since | None:
        try:
            since: teamhub.Since = json.loads(self.positions.read_text())
            return since
        except FileNotFoundError:
            return None

    def save_position(self) -> None:
        since = self.client.position(TEAM)
        if since is not None:
            tmp = self.positions.with_suffix(".tmp")
            tmp.write_text(json.dumps(since))
            tmp.replace(self.positions)

    async def run(self) -> None:
        events = self.client.events()  # before the join, so the join is in it
        await self.client.connect()
        await self.client.join(TEAM, since=self.saved_position(), meta=lambda: dict(self.me))
        emit("ready", team=TEAM, patterns=self.library.names())
        tasks = [
            asyncio.create_task(self.follow(events)),
            asyncio.create_task(self.follow_patterns()),
        ]
        try:
            async for cmd in commands():
                await self.command(cmd)
        finally:
            for task in tasks:
                task.cancel()
            self.save_position()
            await self.client.close()
            await self.rest.aclose()

    async def follow(self, events: teamhub.EventStream) -> None:
        async for event in events:
            match event:
                case teamhub.Message(type=kind) if kind.startswith("pattern."):
                    pass  # the library applies those (follow_patterns)
                case teamhub.Message():
                    emit("message", offset=event.offset, type=event.type, user=event.user, data=event.data)
                    self.save_position()
                case teamhub.Joined(recovered=False):
                    # A first join, or a rejoin that could not recover: what was missed
                    # is gone from the stream, so show the latest history instead.
                    try:
                        history = await self.rest.history(TEAM, since=max(0, event.offset - 50))
                    except teamhub.TeamhubError as e:
                        emit("error", code=e.code, message=f"reloading history: {e.message}")
                    else:
                        emit("reload", messages=history["messages"])
                case teamhub.PresenceChanged(presence=people):
                    emit("presence", people=people.entries())
                case teamhub.Disconnected(code=code, delay=delay) if delay is not None:
                    emit("offline", code=code, retry_in=delay)
                case teamhub.Reconnected(teams=teams):
                    emit("online", recovered=teams[TEAM].recovered if TEAM in teams else False)
                case teamhub.Kicked(reason=reason):
                    emit("stopped", reason=f"removed from {TEAM} ({reason})")
                case teamhub.Stopped(error=error):
                    emit("stopped", reason=str(error))
                    return

    async def follow_patterns(self) -> None:
        async for change in self.library.watch(self.client):
            emit(
                "pattern",
                name=change.name,
                kind=change.kind,
                version=change.version,
                content=change.pattern["content"],
            )

    async def command(self, cmd: dict[str, Any]) -> None:
        try:
            match cmd:
                case {"cmd": "status", "status": str(status)}:
                    # meta is set by a join: leave and join again, from where we were.
                    self.me["status"] = status
                    since = self.client.position(TEAM)
                    await self.client.leave(TEAM)
                    await self.client.join(TEAM, since=since, meta=lambda: dict(self.me))
                case {"cmd": "open", "file": str(file)}:
                    self.me["file"] = file
                    await self.client.publish(TEAM, "editor.opened", {"file": file})
                case {"cmd": "say", "text": str(text)}:
                    await self.client.publish(TEAM, "chat.message", {"text": text}, echo=True)
                case {"cmd": "save_pattern", "name": str(name), "content": content}:
                    base = cmd.get("base")
                    stored = await self.library.push(
                        name, content, resolver=merge, base_version=base if isinstance(base, int) else None
                    )
                    emit("saved", name=name, version=stored["version"], content=stored["content"])
                case _:
                    emit("error", code="bad_request", message=f"unknown command {cmd!r}")
        except teamhub.TeamhubError as e:
            emit("error", code=e.code, message=e.message)


if __name__ == "__main__":
    asyncio.run(Backend().run())
