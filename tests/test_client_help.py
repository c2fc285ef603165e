"""Snapshot tests of ``ac``'s help texts (tests/snapshots/ac_*.txt).

After an intended change to the help, regenerate the snapshots with::

    UPDATE_SNAPSHOTS=1 .venv/bin/python -m pytest tests/test_client_help.py

and review the diff in git.
"""

from __future__ import annotations

from pathlib import Path
import os
import subprocess
import sys

import pytest

AC = str(Path(sys.executable).with_name("ac"))
SNAPSHOTS = Path(__file__).parent / "snapshots"
COMMANDS = [
    "",
    "send",
    "receipts",
    "listen",
    "reply",
    "ask",
    "search",
    "who",
    "notify",
    "wait",
    "status",
    "channels",
    "config",
    "register",
    "login",
    "logout",
    "whoami",
    "create-room",
    "join",
    "claim",
    "claims",
    "release",
    "setup",
    "mcp",
    "tui",
    "run",
]


def help_text(command: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENT_CHAT_")}
    env.update(COLUMNS="100", LC_ALL="C.UTF-8")
    args = [AC, *([command] if command else []), "--help"]
    p = subprocess.run(args, capture_output=True, text=True, env=env, timeout=30)
    assert p.returncode == 0 and p.stderr == "", p.stderr
    return p.stdout


@pytest.mark.parametrize("command", COMMANDS, ids=[c or "ac" for c in COMMANDS])
def test_help_snapshot(command: str) -> None:
    path = SNAPSHOTS / f"ac_{command.replace('-', '_') or 'main'}.txt"
    text = help_text(command)
    if os.environ.get("UPDATE_SNAPSHOTS") or not path.exists():
        SNAPSHOTS.mkdir(exist_ok=True)
        path.write_text(text)
        if not os.environ.get("UPDATE_SNAPSHOTS"):
            pytest.fail(f"snapshot {path.name} was missing and has been written; rerun")
    assert text == path.read_text(), (
        f"help of 'ac {command}' changed; if intended: UPDATE_SNAPSHOTS=1 pytest {__file__}"
    )


def test_every_command_has_a_snapshot() -> None:
    main_help = help_text("")
    listed = {
        line.split()[0]
        for line in main_help.splitlines()
        if line.startswith("    ") and not line.startswith("     ")
    }
    assert listed == set(COMMANDS) - {""}


def test_main_help_lists_every_exit_code() -> None:
    exits = help_text("").split("exit:", 1)[1]
    for code in range(7):
        assert f"{code} " in exits, code
    assert "6 claimed by someone else" in exits


def test_mcp_help_names_every_tool(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from agent_chat import mcp_server
    from agent_chat.context import Context

    monkeypatch.setenv("AGENT_CHAT_HOME", str(tmp_path))
    registered = mcp_server.build(Context(False)).tools
    tools = set(registered)
    assert len(tools) == 8
    # read's last: what it does with unread too (the oldest unread first), not only without
    read = " ".join(registered["read"].description.split())
    assert "last: at most this many (unread: the oldest unread first" in read, read
    text = " ".join(help_text("mcp").split())
    assert all(f"{t}," in text or f"{t} " in text for t in tools), (tools, text)
