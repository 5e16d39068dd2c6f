"""``python -m teamhub patterns pull|push|watch``: a team's pattern library as a
directory of JSON files.

``DIR/<name>.json`` holds each live pattern's content; ``DIR/.teamhub/library.json`` is
the library's local copy (the versions the files are based on). ``pull`` brings the
files up to date (keeping files you edited), ``push`` writes the files you changed
(``If-Match`` on the version they are based on; ``--on-conflict`` says what to do when
someone else wrote first), ``watch`` pulls and then applies every change live,
printing one JSON line per change, until SIGINT or SIGTERM.

Exit status: 0 done, 1 a conflict was not resolved (or the watch ended because the
hub refused the client), 2 any other error (no token, a token refused at the start, an
unreachable node, a TLS certificate that does not verify, bad JSON in a file).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shlex
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .client import Client
from .errors import TeamhubError
from .events import Disconnected, Reconnected
from .patterns import (
    TAKE_THEIRS,
    JsonFileStore,
    PatternChange,
    PatternConflict,
    PatternConflictError,
    PatternLibrary,
)
from .protocol import IDENT, Pattern
from .rest import Rest
from .tls import ssl_context
from .tokens import TokenProvider

STATE = Path(".teamhub") / "library.json"

#: How long ``watch`` waits for its socket at the start before it gives up (exit 2);
#: once running, it reconnects for as long as it takes.
CONNECT_TIMEOUT = 30.0


def _err(*parts: object) -> None:
    print(*parts, file=sys.stderr, flush=True)


def _out(obj: dict[str, Any]) -> None:
    print(json.dumps(obj, sort_keys=True), flush=True)


def _dump(content: Any) -> str:
    return json.dumps(content, indent=2, ensure_ascii=False) + "\n"


class Mirror:
    """The directory: files for the working copy, the library for their bases."""

    def __init__(self, directory: Path, rest: Rest, team: str) -> None:
        self.dir = directory
        self.library = PatternLibrary(rest, team, store=JsonFileStore(directory / STATE))

    def file(self, name: str) -> Path:
        return self.dir / f"{name}.json"

    def read(self, name: str) -> tuple[bool, Any]:
        """(exists, content) of a pattern's file; ``ValueError`` for bad JSON."""
        path = self.file(name)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return False, None
        try:
            return True, json.loads(text)
        except ValueError as e:
            raise ValueError(f"{path}: not JSON: {e}") from e

    def edited(self, name: str, base: Pattern | None) -> bool:
        """Whether the file differs from the version it is based on."""
        try:
            exists, content = self.read(name)
        except ValueError:
            return True
        if base is None:
            return exists
        return not exists or content != base["content"]

    def write(self, name: str, content: Any) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.file(name).with_suffix(".json.tmp")
        tmp.write_text(_dump(content), encoding="utf-8")
        os.replace(tmp, self.file(name))

    def apply(self, change: PatternChange) -> str:
        """Brings one file up to date with a change; what was done."""
        if self.edited(change.name, change.previous):
            return "kept"  # local edits win on disk; push will meet the conflict
        if change.kind == "deleted":
            with contextlib.suppress(FileNotFoundError):
                self.file(change.name).unlink()
        else:
            self.write(change.name, change.pattern["content"])
        return change.kind

    def local_names(self) -> list[str]:
        if not self.dir.is_dir():
            return []
        return sorted(p.stem for p in self.dir.glob("*.json") if p.is_file() and IDENT.match(p.stem))


def _report(change: PatternChange, done: str) -> None:
    _out({"name": change.name, "kind": change.kind, "version": change.version, "file": done})


async def cmd_pull(mirror: Mirror) -> int:
    first = mirror.library.version == 0 and not (mirror.dir / STATE).exists()
    changes = await mirror.library.pull()
    for change in changes:
        _report(change, mirror.apply(change))
    if first:
        # A directory that already had files: make sure every live pattern has one.
        for name, p in mirror.library.patterns.items():
            if not mirror.file(name).exists():
                mirror.write(name, p["content"])
    _err(
        f"{mirror.library.team}: at version {mirror.library.version}, {len(mirror.library.names())} patterns"
    )
    return 0


async def cmd_push(mirror: Mirror, names: Sequence[str], on_conflict: str, prune: bool) -> int:
    lib = mirror.library
    wanted = list(names) or sorted(set(mirror.local_names()) | (set(lib.names()) if prune else set()))
    status = 0

    def resolve(conflict: PatternConflict) -> Any:
        if on_conflict == "ours":
            return conflict.ours
        if on_conflict == "theirs":
            return TAKE_THEIRS
        raise PatternConflictError(conflict)

    for name in wanted:
        if not IDENT.match(name):
            _err(f"{name}: not a valid pattern name")
            status = max(status, 2)
            continue
        base = lib.get(name)
        try:
            exists, content = mirror.read(name)
        except ValueError as e:
            _err(str(e))
            status = max(status, 2)
            continue
        try:
            if not exists:
                if base is not None and prune:
                    await lib.delete(name, force=on_conflict == "ours")
                    _out({"name": name, "kind": "deleted", "version": None, "file": "deleted"})
                continue
            if base is not None and content == base["content"]:
                continue  # unchanged
            stored = await lib.push(name, content, resolver=resolve)
            if stored["deleted"] or stored["content"] != content:
                # The stored version won (--on-conflict theirs): the file follows it.
                if stored["deleted"]:
                    with contextlib.suppress(FileNotFoundError):
                        mirror.file(name).unlink()
                else:
                    mirror.write(name, stored["content"])
                _out({"name": name, "kind": "kept-theirs", "version": stored["version"], "file": "updated"})
            else:
                _out({"name": name, "kind": "pushed", "version": stored["version"], "file": "unchanged"})
        except PatternConflictError as e:
            c = e.conflict
            _err(
                f"{name}: conflict: your file is based on version "
                f"{c.base['version'] if c.base else 'none (new)'}, the hub has version "
                f"{c.theirs['version']}{' (deleted)' if c.theirs['deleted'] else ''} "
                f"by {c.theirs['updated_by']}; "
                "pull to see theirs, or push again with --on-conflict ours|theirs"
            )
            status = max(status, 1)
    return status


async def cmd_watch(mirror: Mirror, client: Client) -> int:
    lib = mirror.library
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    notices = client.events()

    async def narrate() -> None:
        async for event in notices:
            if isinstance(event, Disconnected):
                _err(f"disconnected ({event.code} {event.reason}); {event.advice}")
            elif isinstance(event, Reconnected):
                recovered = {team: r.recovered for team, r in event.teams.items()}
                _err(f"reconnected to {event.url}; recovered: {recovered}")

    async def follow() -> None:
        async for change in lib.watch(client):
            _report(change, mirror.apply(change))

    narrator = asyncio.create_task(narrate())
    try:
        # REST first: a refused token, an unreachable node or a bad certificate fails
        # here at once. What changes before the join is caught by watch()'s own pull.
        for change in await lib.pull():
            _report(change, mirror.apply(change))
        await client.connect(CONNECT_TIMEOUT)
        await client.join(lib.team)
        _err(f"watching {lib.team} at version {lib.version}")
        follower = asyncio.create_task(follow())
        stopper = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait({follower, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if follower in done:
            follower.result()
            _err(f"watch ended: {client.stop_error or 'kicked from the team'}")
            return 1
        follower.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await follower
        return 0
    finally:
        notices.close()
        narrator.cancel()
        await client.close()


def _token(args: argparse.Namespace) -> str | TokenProvider:
    if args.token_command:
        command = args.token_command

        def run() -> str:
            done = subprocess.run(
                shlex.split(command), capture_output=True, text=True, check=True, timeout=30
            )
            return done.stdout.strip()

        return run
    token = args.token or os.environ.get("TEAMHUB_TOKEN")
    if not token:
        raise ValueError("no token: give --token, --token-command or TEAMHUB_TOKEN")
    return str(token)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m teamhub", description="teamhub from the command line")
    sub = p.add_subparsers(dest="command", required=True)
    patterns = sub.add_parser("patterns", help="a team's pattern library as a directory of JSON files")
    actions = patterns.add_subparsers(dest="action", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--url",
        default=os.environ.get("TEAMHUB_URL", "http://127.0.0.1:8080"),
        help="node URL (env TEAMHUB_URL; default %(default)s)",
    )
    common.add_argument("--token", help="JWT or API key (else env TEAMHUB_TOKEN)")
    common.add_argument("--token-command", help="command printing a fresh token, run whenever one is needed")
    common.add_argument(
        "--ca-cert",
        default=os.environ.get("TEAMHUB_CA_CERT") or None,
        help="PEM file of the CA that signed an https:// node's certificate (env TEAMHUB_CA_CERT; "
        "default: the system's roots)",
    )
    common.add_argument("--team", required=True)
    common.add_argument(
        "--dir", type=Path, default=Path("patterns"), help="directory of the files (default %(default)s)"
    )
    actions.add_parser("pull", parents=[common], help="bring the files up to date")
    push = actions.add_parser("push", parents=[common], help="write the files you changed")
    push.add_argument("names", nargs="*", help="only these patterns (default: every changed file)")
    push.add_argument(
        "--on-conflict",
        choices=("fail", "ours", "theirs"),
        default="fail",
        help="when the hub has a newer version: fail (exit 1), write ours over it, or take theirs",
    )
    push.add_argument(
        "--prune", action="store_true", help="delete patterns whose file was removed (needs admin)"
    )
    actions.add_parser(
        "watch", parents=[common], help="pull, then apply every change live until SIGINT/SIGTERM"
    )
    return p


async def main_async(args: argparse.Namespace) -> int:
    token = _token(args)
    tls = ssl_context(args.ca_cert) if args.ca_cert else None  # one context for both
    async with Rest(args.url, token, ssl=tls) as rest:
        mirror = Mirror(args.dir, rest, args.team)
        if args.action == "pull":
            return await cmd_pull(mirror)
        if args.action == "push":
            return await cmd_push(mirror, args.names, args.on_conflict, args.prune)
        return await cmd_watch(mirror, Client(args.url, rest.tokens, ssl=tls))


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return asyncio.run(main_async(args))
    except TeamhubError as e:
        _err(f"teamhub: {e}")
        return 2
    except (OSError, ValueError, subprocess.SubprocessError) as e:
        _err(f"teamhub: {e}")
        return 2


if __name__ == "__main__":
    sys.exit(main())
