"""``ac run -- CLI``: the pty wrapper that wakes an idle agent CLI, under tmux against the real
stack. A small line-reading CLI (a prompt, each submitted line appended to a file) stands in
for the agent here; tests/test_agent_clis.py drives the real Codex and Gemini TUIs.

Asserted: a DM to an idle CLI types the counts line (never the body) once; a person typing
holds it until they stop; ``--wake none`` types nothing; the terminal's settings (``stty -a``)
are the same before and after, also after ``kill -9`` of the CLI; the exit status passes
through; a missing CLI exits 127, a missing ``--`` is a usage error, a server that is down
leaves one line on stderr and the CLI running.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
import json
import os
import shlex
import shutil
import subprocess
import sys
import time

import pytest

from agent_chat.config import save_config
from agent_cli_helpers import Tmux
from helpers import Agent, Stack, free_port, register, unique, wait_for

AC = str(Path(sys.executable).with_name("ac"))
#: The stand-in CLI: a prompt, and every line it reads appended to the file argv[1].
LINE_CLI = """
import sys
out = open(sys.argv[1], "a", buffering=1)
while True:
    sys.stdout.write("ready> ")
    sys.stdout.flush()
    line = sys.stdin.readline()
    if not line:
        break
    out.write(line)
"""

pytestmark = pytest.mark.skipif(not shutil.which("tmux"), reason="tmux not installed")


@dataclass
class Wrapped:
    tmux: Tmux
    env: dict[str, str]
    tmp: Path
    nick: str
    lines: Path

    def start(self, *options: str, cli: str | None = None) -> None:
        """``ac run OPTIONS -- CLI`` in the tmux pane, between two ``stty -a``."""
        command = cli or f"{shlex.quote(sys.executable)} {self.tmp / 'cli.py'} {self.lines}"
        script = (
            f"stty -a > {self.tmp / 'before'}; "
            f"{shlex.quote(AC)} run {' '.join(options)} -- {command}; "
            f"echo $? > {self.tmp / 'status'}; stty -a > {self.tmp / 'after'}; sleep 600"
        )
        self.tmux.run(
            "new-session", "-d", "-s", "main", "-x", "120", "-y", "30", "sh", "-c", script
        )

    def typed(self) -> list[str]:
        return self.lines.read_text().splitlines() if self.lines.exists() else []

    def status(self) -> str:
        path = self.tmp / "status"
        wait_for(path.exists, 30, "ac run to exit")
        wait_for(lambda: (self.tmp / "after").exists(), 30, "stty -a after")
        return path.read_text().strip()


@pytest.fixture
def wrapped(stack: Stack, tmp_path: Path) -> Iterator[Wrapped]:
    home = tmp_path / "chat"
    save_config(str(home), {"server": {"registration_token": stack.registration_token}})
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AGENT_CHAT_", "TMUX"))}
    env.update(
        AGENT_CHAT_HOME=str(home),
        AGENT_CHAT_SERVER=stack.api_url,
        AGENT_CHAT_NICK=unique("Run"),
        TERM="xterm-256color",
    )
    done = subprocess.run([AC, "notify"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    creds = json.loads((home / "credentials.json").read_text())
    identities = creds["servers"][stack.api_url]["identities"]
    nick = identities[env["AGENT_CHAT_NICK"].lower()]["nick"]
    (tmp_path / "cli.py").write_text(LINE_CLI)
    tmux = Tmux(unique("ac-run"), env)
    try:
        yield Wrapped(tmux, env, tmp_path, nick, tmp_path / "lines")
    finally:
        tmux.kill()


def _ready(w: Wrapped) -> None:
    wait_for(lambda: "ready>" in w.tmux.screen(), 30, "the CLI's prompt")


def test_idle_cli_is_woken_once_with_the_counts_line(wrapped: Wrapped, stack: Stack) -> None:
    w = wrapped
    w.start("--min-interval", "0")
    _ready(w)
    peer = register(stack, unique("Peer"))
    sent = peer.send("@" + w.nick, "a body that must never be typed")
    wait_for(lambda: w.typed(), 30, "the wake line typed")
    [line] = w.typed()
    # The sender sees that the message woke a session (delivery receipts: woken, by ac run).
    wait_for(lambda: _woken_by(peer, sent["event_id"]), 30, "the woken stage")
    assert _woken_by(peer, sent["event_id"])["cli"] == "generic"
    assert line.startswith(f"[chat] @{peer.nick}(1): new direct or urgent message"), line
    assert "body" not in line and line.endswith("(read: ac listen --unread)")
    # Reading is not news; the next DM wakes again (the interval is 0 here).
    peer.send("@" + w.nick, "second")
    wait_for(lambda: len(w.typed()) == 2, 30, "the second wake")
    assert w.typed()[1].startswith(f"[chat] @{peer.nick}(2)"), w.typed()
    w.tmux.run("send-keys", "-t", "main", "C-d")  # end of input: the CLI exits 0
    assert w.status() == "0"
    assert (w.tmp / "before").read_text() == (w.tmp / "after").read_text()


def test_nothing_is_typed_while_a_person_types(wrapped: Wrapped, stack: Stack) -> None:
    w = wrapped
    w.start()
    _ready(w)
    peer = register(stack, unique("Peer"))
    w.tmux.run("send-keys", "-t", "main", "-l", "hel")
    peer.send("@" + w.nick, "while you type")
    wait_for(lambda: peer.nick in "".join(_unread(w)), 30, "the DM counted")
    for letter in "lo wor":  # keep typing, a key every half second: the line waits
        time.sleep(0.5)
        w.tmux.run("send-keys", "-t", "main", "-l", letter)
        assert w.typed() == [], w.typed()
    wait_for(lambda: w.typed(), 30, "the line once the person stopped")
    [line] = w.typed()
    # The person's words stay first; the wake line follows them and says it waited.
    assert line.startswith("hello wor[chat] @") and "waiting for quiet" in line, line


def test_wake_none_types_nothing_and_exit_status_passes_through(
    wrapped: Wrapped, stack: Stack
) -> None:
    w = wrapped
    w.start("--wake", "none")
    _ready(w)
    peer = register(stack, unique("Peer"))
    peer.send("@" + w.nick, "nobody wakes")
    w.tmux.run("send-keys", "-t", "main", "-l", "typed by hand")
    w.tmux.run("send-keys", "-t", "main", "Enter")
    wait_for(lambda: w.typed(), 30, "the person's line")
    time.sleep(2.0)  # a wake would have come by now (the CLI has been idle)
    assert w.typed() == ["typed by hand"]
    w.tmux.run("send-keys", "-t", "main", "C-d")
    assert w.status() == "0"


def test_terminal_restored_after_kill_9_of_the_cli(wrapped: Wrapped) -> None:
    w = wrapped
    pidfile = w.tmp / "pid"
    w.start(cli=f"sh -c {shlex.quote(f'echo $$ > {pidfile}; exec sleep 600')}")
    wait_for(pidfile.exists, 30, "the CLI started")
    wait_for(lambda: pidfile.read_text().strip(), 10, "its pid")
    os.kill(int(pidfile.read_text()), 9)
    assert w.status() == str(128 + 9)
    assert (w.tmp / "before").read_text() == (w.tmp / "after").read_text()


def test_bad_input(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENT_CHAT_")}
    env.update(
        AGENT_CHAT_HOME=str(tmp_path / "chat"),
        AGENT_CHAT_SERVER=f"http://127.0.0.1:{free_port()}",  # down
    )

    def ac_run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [AC, "run", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
        )

    done = ac_run("--", "no-such-agent-cli-" + unique("x"))
    assert done.returncode == 127 and done.stderr.count("\n") == 1, done
    assert "command not found" in done.stderr
    for args in ((), ("codex",), ("--",)):
        done = ac_run(*args)
        assert done.returncode == 1 and "--" in done.stderr, (args, done)
    # Server down: one line says waking is off; the CLI runs, its exit status passes through.
    done = ac_run("--", "sh", "-c", "echo ran; exit 7")
    assert done.returncode == 7 and "ran" in done.stdout, done
    assert done.stderr.count("\n") == 1 and "waking is off" in done.stderr, done.stderr
    done = ac_run("--wake", "sometimes", "--", "true")
    assert done.returncode == 1 and "--wake" in done.stderr, done


def _unread(w: Wrapped) -> list[str]:
    done = subprocess.run(
        [AC, "notify", "--oneline"], env=w.env, capture_output=True, text=True, timeout=30
    )
    return done.stdout.splitlines()


def test_a_cli_that_ignores_sighup_ends_with_the_terminal(wrapped: Wrapped) -> None:
    """The terminal goes away (tmux killed): the CLI gets SIGHUP, then SIGTERM, then SIGKILL;
    neither it nor ac run outlives the terminal."""
    w = wrapped
    pidfile = w.tmp / "pid"
    stubborn = f"trap '' HUP TERM; echo $$ > {pidfile}; exec sleep 600"
    w.start(cli=f"sh -c {shlex.quote(stubborn)}")
    wait_for(lambda: pidfile.exists() and pidfile.read_text().strip(), 30, "the CLI started")
    pid = int(pidfile.read_text())
    w.tmux.kill()
    wait_for(lambda: not _alive(pid), 60, "the CLI ended with its terminal")


def _alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status


def _woken_by(sender: Agent, event_id: str) -> dict[str, Any] | None:
    """The ``woken`` stage of the recipient of ``event_id`` (None before it is reported)."""
    status, data = sender.call("GET", f"/receipts?event={event_id}", timeout=30)
    assert status == 200, data
    [recipient] = data["recipients"]
    woken = recipient["stages"].get("woken")
    return woken if isinstance(woken, dict) else None
