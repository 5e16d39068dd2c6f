"""``python -m teamhub patterns pull|push|watch`` as a user runs it: a real process
against a real node."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from conftest import WAIT, Hub, until


def cli(hub: Hub, token: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "teamhub", "patterns", *args, "--url", hub.url, "--team", "t", "--dir", "lib"],
        cwd=cwd,
        env={**os.environ, "TEAMHUB_TOKEN": token},
        capture_output=True,
        text=True,
        timeout=WAIT * 2,
    )


def lines(out: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def read(path: Path) -> Any:
    return json.loads(path.read_text())


async def test_pull_and_push_a_directory(hub: Hub, tmp_path: Path) -> None:
    token = hub.token("ann", {"t": "admin"})
    bob = hub.token("bob", {"t": "editor"})
    for name, content in (("retry", {"attempts": 3}), ("style", {"tabs": False})):
        r = await hub.rest(
            "PUT", f"/teams/t/patterns/{name}", bob, {"content": content}, {"if-none-match": "*"}
        )
        assert r.status_code == 201

    pulled = cli(hub, token, "pull", cwd=tmp_path)
    assert pulled.returncode == 0, pulled.stderr
    assert [(x["name"], x["kind"], x["version"]) for x in lines(pulled.stdout)] == [
        ("retry", "updated", 1),
        ("style", "updated", 2),
    ]
    lib = tmp_path / "lib"
    assert read(lib / "retry.json") == {"attempts": 3}
    assert "at version 2" in pulled.stderr
    assert cli(hub, token, "pull", cwd=tmp_path).stdout == "", "nothing new"

    # Edit one, add one: push writes exactly those.
    (lib / "retry.json").write_text(json.dumps({"attempts": 4}))
    (lib / "new.json").write_text(json.dumps(["x"]))
    pushed = cli(hub, token, "push", cwd=tmp_path)
    assert pushed.returncode == 0, pushed.stderr
    assert sorted((x["name"], x["kind"]) for x in lines(pushed.stdout)) == [
        ("new", "pushed"),
        ("retry", "pushed"),
    ]
    stored = (await hub.rest("GET", "/teams/t/patterns/retry", bob)).json()
    assert (stored["content"], stored["version"], stored["updated_by"]) == (
        {"attempts": 4},
        4,
        "ann",
    )  # "new" went first, as 3
    assert cli(hub, token, "push", cwd=tmp_path).stdout == "", "unchanged files are not written"

    # A removed file is deleted only with --prune.
    (lib / "style.json").unlink()
    assert cli(hub, token, "push", cwd=tmp_path).stdout == ""
    pruned = cli(hub, token, "push", "--prune", cwd=tmp_path)
    assert pruned.returncode == 0, pruned.stderr
    assert [(x["name"], x["kind"]) for x in lines(pruned.stdout)] == [("style", "deleted")]
    assert (await hub.rest("GET", "/teams/t/patterns/style", bob)).status_code == 404


async def test_push_conflicts_exit_1_unless_told_what_to_keep(hub: Hub, tmp_path: Path) -> None:
    token = hub.token("ann", {"t": "editor"})
    bob = hub.token("bob", {"t": "editor"})
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "p.json").write_text(json.dumps(1))
    assert cli(hub, token, "push", cwd=tmp_path).returncode == 0

    async def bob_writes(content: Any, version: int) -> None:
        r = await hub.rest(
            "PUT", "/teams/t/patterns/p", bob, {"content": content}, {"if-match": f'"{version}"'}
        )
        assert r.status_code == 200, r.text

    await bob_writes("bob-2", 1)
    (lib / "p.json").write_text(json.dumps("ann-2"))
    failed = cli(hub, token, "push", cwd=tmp_path)
    assert failed.returncode == 1
    assert "conflict" in failed.stderr and "version 2" in failed.stderr and "bob" in failed.stderr
    assert read(lib / "p.json") == "ann-2", "the file is left as it was"

    # A pull keeps the edited file (and says so).
    kept = cli(hub, token, "pull", cwd=tmp_path)
    assert read(lib / "p.json") == "ann-2"
    assert all(x["file"] == "kept" for x in lines(kept.stdout))

    ours = cli(hub, token, "push", "--on-conflict", "ours", cwd=tmp_path)
    assert ours.returncode == 0, ours.stderr
    assert (await hub.rest("GET", "/teams/t/patterns/p", bob)).json()["content"] == "ann-2"

    await bob_writes("bob-4", 3)
    (lib / "p.json").write_text(json.dumps("ann-4"))
    theirs = cli(hub, token, "push", "--on-conflict", "theirs", cwd=tmp_path)
    assert theirs.returncode == 0, theirs.stderr
    assert [x["kind"] for x in lines(theirs.stdout)] == ["kept-theirs"]
    assert read(lib / "p.json") == "bob-4", "the file follows the stored version"


async def test_a_refused_token_exits_2(hub: Hub, tmp_path: Path) -> None:
    done = cli(hub, "nope", "pull", cwd=tmp_path)
    assert done.returncode == 2 and "unauthorized" in done.stderr
    watch = cli(hub, "nope", "watch", cwd=tmp_path)
    assert watch.returncode == 2 and "unauthorized" in watch.stderr


async def test_no_token_or_no_node_exits_2(hub: Hub, tmp_path: Path) -> None:
    no_token = subprocess.run(
        [sys.executable, "-m", "teamhub", "patterns", "pull", "--url", hub.url, "--team", "t"],
        cwd=tmp_path,
        env={k: v for k, v in os.environ.items() if k != "TEAMHUB_TOKEN"},
        capture_output=True,
        text=True,
        timeout=WAIT * 2,
    )
    assert no_token.returncode == 2 and "no token" in no_token.stderr
    nobody = Hub(tmp_path / "nobody")  # a port where no node runs
    for action in ("pull", "watch"):
        done = cli(nobody, hub.token("ann", {"t": "viewer"}), action, cwd=tmp_path)
        assert done.returncode == 2, (action, done.stderr)
        assert "unavailable" in done.stderr, done.stderr


async def test_token_command_supplies_the_token(hub: Hub, tmp_path: Path) -> None:
    (tmp_path / "token").write_text(hub.token("ann", {"t": "viewer"}) + "\n")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "teamhub",
            "patterns",
            "pull",
            "--url",
            hub.url,
            "--team",
            "t",
            "--dir",
            "lib",
            "--token-command",
            f"cat {tmp_path / 'token'}",
        ],
        cwd=tmp_path,
        env={k: v for k, v in os.environ.items() if k != "TEAMHUB_TOKEN"},
        capture_output=True,
        text=True,
        timeout=WAIT * 2,
    )
    assert done.returncode == 0, done.stderr
    assert "t: at version 0, 0 patterns" in done.stderr


async def test_watch_applies_changes_live_until_sigterm(hub: Hub, tmp_path: Path) -> None:
    token = hub.token("ann", {"t": "viewer"})
    bob = hub.token("bob", {"t": "editor"})
    await hub.rest("PUT", "/teams/t/patterns/first", bob, {"content": 1}, {"if-none-match": "*"})
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "teamhub",
        "patterns",
        "watch",
        "--url",
        hub.url,
        "--team",
        "t",
        "--dir",
        "lib",
        cwd=tmp_path,
        env={**os.environ, "TEAMHUB_TOKEN": token},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    try:

        async def line(stream: asyncio.StreamReader) -> str:
            raw = await asyncio.wait_for(stream.readline(), WAIT)
            assert raw, "the watcher ended early"
            return raw.decode()

        assert json.loads(await line(proc.stdout))["name"] == "first"
        while "watching t" not in (text := await line(proc.stderr)):
            pass
        assert "at version 1" in text

        r = await hub.rest(
            "PUT", "/teams/t/patterns/live", bob, {"content": {"v": 1}}, {"if-none-match": "*"}
        )
        assert r.status_code == 201
        change = json.loads(await line(proc.stdout))
        assert (change["name"], change["kind"], change["version"]) == ("live", "updated", 2)
        assert read(tmp_path / "lib" / "live.json") == {"v": 1}

        r = await hub.rest(
            "DELETE", "/teams/t/patterns/first", hub.token("ada", {"t": "admin"}), headers={"if-match": '"1"'}
        )
        assert r.status_code == 204
        change = json.loads(await line(proc.stdout))
        assert (change["name"], change["kind"]) == ("first", "deleted")
        await until("first.json to go", lambda: not (tmp_path / "lib" / "first.json").exists())

        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), WAIT) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
