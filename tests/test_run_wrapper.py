"""``ac run -- CLI``: the pty wrapper that wakes an idle agent CLI, under tmux against the real
stack. A small line-reading CLI (a prompt, each submitted line appended to a file) stands in
for the agent in the first tests; the last ones (marked agent_cli) drive the real Claude Code,
Codex and Gemini CLI TUIs against tests/fake_models.py.

Asserted: a DM to an idle CLI types the counts line (never the body) once; a person typing
holds it until they stop; ``--wake none`` types nothing; the terminal's settings (``stty -a``)
are the same before and after, also after ``kill -9`` of the CLI; the exit status passes
through; a missing CLI exits 127, a missing ``--`` is a usage error, a server that is down
leaves one line on stderr and the CLI running, and waking resumes once it answers; the
wrapper's session is wakeable while it waits and gone once the CLI exits.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import threading
import time

from test_agent_clis import CLIS, PROMPTS, TURN_TIMEOUT, Cli
import pytest
import test_agent_clis

from agent_chat.config import save_config
from agent_chat_appservice.presence import GONE, WAKEABLE
from agent_cli_helpers import BIN, Tmux, cmdline, processes_with, trust_claude
from fake_models import Request, _last_user_parts
from helpers import Agent, Stack, free_port, http_json, register, unique, wait_for

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
            f"echo $? > {self.tmp / 'status'}; stty -a > {self.tmp / 'stty'}; "
            f"mv {self.tmp / 'stty'} {self.tmp / 'after'}; sleep 600"  # whole when it appears
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


def _run_sessions(w: Wrapped) -> dict[str, tuple[str, str]]:
    """The wrapped identity's ``ac run`` sessions (``run-PID``): state and CLI, from the API."""
    creds = json.loads((Path(w.env["AGENT_CHAT_HOME"]) / "credentials.json").read_text())
    server = w.env["AGENT_CHAT_SERVER"]
    token = creds["servers"][server]["identities"][w.env["AGENT_CHAT_NICK"].lower()]["token"]
    status, data = http_json("GET", server + "/_agent_chat/v1/presence", None, token)
    assert status == 200, data
    return {
        s["session"]: (s["state"], s["cli"])
        for s in data["identities"][0]["sessions"]
        if s["session"].startswith("run-")
    }


def test_idle_cli_is_woken_once_with_the_counts_line(wrapped: Wrapped, stack: Stack) -> None:
    w = wrapped
    w.start("--min-interval", "0")
    _ready(w)
    # The wrapper is a session of its own: wakeable while its long-poll waits.
    wait_for(lambda: list(_run_sessions(w).values()) == [(WAKEABLE, "generic")], 30, "wakeable")
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
    assert [state for state, _cli in _run_sessions(w).values()] == [GONE]  # ended with it


class _Forwarder:
    """A TCP forwarder to the API on a port of its own: the server is "down" while it is
    stopped (nothing listens there), and "back" once it starts again on the same port."""

    def __init__(self, port: int, upstream: tuple[str, int]) -> None:
        self.port, self.upstream = port, upstream
        self.listener: socket.socket | None = None
        self.open: list[socket.socket] = []

    def start(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(16)
        self.listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
                server = socket.create_connection(self.upstream)
            except OSError:
                return
            self.open += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dest: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dest.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dest):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def stop(self) -> None:
        for sock in [*([self.listener] if self.listener else []), *self.open]:
            sock.close()
        self.listener, self.open = None, []


def test_waking_resumes_when_the_server_returns(stack: Stack, tmp_path: Path) -> None:
    """Server down at the start: one line says waking is off, the CLI runs; once the server
    answers again, a DM wakes it."""
    agent = register(stack, unique("Run"))
    api = stack.api_url.split("//", 1)[1].split("/", 1)[0]
    host, port = api.rsplit(":", 1)
    forwarder = _Forwarder(free_port(), (host, int(port)))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AGENT_CHAT_", "TMUX"))}
    env.update(
        AGENT_CHAT_HOME=str(tmp_path / "chat"),
        AGENT_CHAT_SERVER=f"http://127.0.0.1:{forwarder.port}",
        AGENT_CHAT_TOKEN=agent.token,
        TERM="xterm-256color",
    )
    (tmp_path / "cli.py").write_text(LINE_CLI)
    tmux = Tmux(unique("ac-run"), env)
    try:
        w = Wrapped(tmux, env, tmp_path, agent.nick, tmp_path / "lines")
        w.start("--min-interval", "0")
        _ready(w)
        assert "waking is off until the server answers" in tmux.screen()
        forwarder.start()
        # Back: the waker takes its baseline through the forwarder, then waits (wakeable).
        wait_for(
            lambda: any(
                s["session"].startswith("run-") and s["state"] == WAKEABLE
                for s in agent.call("GET", "/presence")[1]["identities"][0]["sessions"]
            ),
            60,
            "the waker back on the server",
        )
        peer = register(stack, unique("Peer"))
        peer.send("@" + agent.nick, "after the server came back")
        wait_for(lambda: w.typed(), 30, "the wake line")
        assert w.typed()[0].startswith(f"[chat] @{peer.nick}(1): new direct"), w.typed()
    finally:
        tmux.kill()
        forwarder.stop()


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


# --- the real TUIs under `ac run` (issue 23) ---------------------------------------------------
# tests/test_agent_clis.py wakes idle Codex and Gemini TUIs under `ac run` with their hooks in
# place and holds the line while their agent works (a slow tool call). Here each of Claude
# Code, Codex and Gemini CLI runs under `ac run` with its hooks taken out (for Claude Code the
# way for users who cannot install them): idle → DM → the model receives the line, then the
# storm; a person typing mid-word; a slow model answer; `--wake none`; the terminal's settings
# after a normal exit and after `kill -9` of the CLI.

WORDS = ": new direct or urgent message"
#: test_agent_clis's fixture (a temp HOME after ``ac setup <cli>``, every base URL on the fake
#: model), under this name here.
real_cli = test_agent_clis.cli


@dataclass
class RealTui:
    cli: Cli
    tmux: Tmux
    tmp: Path
    marker: str

    def turns(self, words: str = WORDS) -> list[Request]:
        """The agent turns whose newest user text holds ``words``."""
        return [
            r
            for r in self.cli.models.agent_turns(self.cli.vendor)
            if words in _last_user_parts(r.vendor, r.body)[0]
        ]

    def keys(self, *keys: str, literal: bool = False) -> None:
        self.tmux.run("send-keys", "-t", "main", *(["-l"] if literal else []), *keys)

    def cli_pid(self) -> int:
        """The CLI: the child of ``ac run``."""
        [wrapper] = [
            p for p in processes_with(self.marker) if cmdline(p).split(" ")[1:3] == [AC, "run"]
        ]
        children = Path(f"/proc/{wrapper}/task/{wrapper}/children").read_text().split()
        return int(children[0])

    def status(self) -> str:
        path = self.tmp / "status"
        wait_for(path.exists, 60, "ac run to exit")
        wait_for(lambda: (self.tmp / "after").exists(), 30, "stty -a after")
        return path.read_text().strip()

    def same_terminal(self) -> bool:
        return (self.tmp / "before").read_text() == (self.tmp / "after").read_text()

    def stty(self) -> str:
        before, after = ((self.tmp / name).read_text() for name in ("before", "after"))
        return f"before:\n{before}after:\n{after}"


#: What each TUI shows at its empty prompt; the arguments that let its tools run unasked.
PROMPT = {"claude": "\u276f", **PROMPTS}
ARGS = {
    "claude": [],  # no tools run in these tests (and its skip flag refuses root)
    "codex": ["--dangerously-bypass-approvals-and-sandbox"],
    "gemini": ["--approval-mode", "yolo"],
}


@contextmanager
def _under_ac_run(cli: Cli, tmp: Path, *options: str) -> Iterator[RealTui]:
    """``ac run OPTIONS -- CLI`` under tmux between two ``stty -a``, at its prompt. The hooks
    ``ac setup`` installed are taken out: only ``ac run`` wakes the CLI here (for Claude Code
    the way for users who cannot install hooks). On the way out, whatever happened: its
    screen printed if the test failed, and it ended (``_end``)."""
    if cli.name == "codex":
        (cli.home / ".codex" / "hooks.json").unlink(missing_ok=True)
        # The curated-plugin sync (vendor traffic) off, in the config (see test_agent_clis).
        config = cli.home / ".codex" / "config.toml"
        text = config.read_text().replace("[features]\n", "[features]\nplugins = false\n")
        config.write_text(text)
    else:
        settings = cli.home / f".{cli.name}" / "settings.json"
        data = json.loads(settings.read_text())
        data.pop("hooks", None)
        settings.write_text(json.dumps(data))
    if cli.name == "claude":
        trust_claude(cli.home, cli.project, cli.env["ANTHROPIC_API_KEY"])
    marker = f"AGENT_CHAT_RUN_TEST={unique('r')}"
    env = {**cli.env, "TERM": "xterm-256color", marker.split("=")[0]: marker.split("=")[1]}
    tmux = Tmux(unique("ac-run"), env)
    command = shlex.join([str(BIN / cli.name), *ARGS[cli.name]])
    script = (
        f"stty -a > {tmp / 'before'}; "
        f"{shlex.quote(AC)} run {' '.join(options)} -- {command}; "
        f"echo $? > {tmp / 'status'}; stty -a > {tmp / 'stty'}; "
        f"mv {tmp / 'stty'} {tmp / 'after'}; sleep 600"  # whole when it appears
    )
    tmux.run(
        "new-session", "-d", "-s", "main", "-x", "200", "-y", "50", "-c", str(cli.project),
        "sh", "-c", script,
    )  # fmt: skip
    tui = RealTui(cli, tmux, tmp, marker)
    try:
        wait_for(lambda: PROMPT[cli.name] in tmux.screen(), 90, f"{cli.name}'s prompt")
        # The input box settles (Gemini CLI ignores Enter for a few seconds after it first
        # shows its prompt).
        time.sleep(5 if cli.name == "gemini" else 3)
        yield tui
    except BaseException:
        print("the tmux screen:\n" + tui.tmux.screen())
        raise
    finally:
        _end(tui)


def _end(tui: RealTui) -> None:
    """Kill the tmux server, then whatever of ours outlived it (saying so by failing)."""
    tui.tmux.kill()

    def ours() -> list[int]:  # Codex's app-server daemon outlives its TUI by design
        return [p for p in processes_with(tui.marker) if " app-server" not in cmdline(p)]

    deadline = time.monotonic() + 30
    while ours() and time.monotonic() < deadline:
        time.sleep(0.5)
    leftover = ours()
    commands = [cmdline(p) for p in leftover]
    for pid in processes_with(tui.marker):
        try:
            os.kill(pid, 9)
        except OSError:
            pass
    assert not leftover, f"processes outlived the session: {commands}"


@pytest.mark.agent_cli
@pytest.mark.parametrize("real_cli", CLIS, indirect=True)
def test_real_tui_under_ac_run_idle_dm_then_the_storm(
    real_cli: Cli, stack: Stack, tmp_path: Path
) -> None:
    cli = real_cli
    with _under_ac_run(cli, tmp_path) as tui:
        peer = register(stack, unique("Peer"))
        at = "@" if cli.name == "codex" else "@ "  # "@ ": the others' file completion
        line = f"[chat] {at}{peer.nick}(1){WORDS}"
        peer.send("@" + cli.me, "are you there? (a body the wake must not carry)")
        woke = cli.models.wait_for(
            lambda r: r.is_agent_turn and line in _last_user_parts(r.vendor, r.body)[0], 60
        )
        assert woke is not None, ("no wake", tui.tmux.screen())
        assert "a body the wake must not carry" not in woke.text

        # The storm: 20 DMs in 10 s, past the loop guard (10 s) since that wake.
        time.sleep(11)
        before = len(tui.turns())
        start = time.monotonic()
        for j in range(20):
            time.sleep(max(0.0, start + j * 0.5 - time.monotonic()))
            peer.send("@" + cli.me, f"storm {j}")
        time.sleep(15)  # the guard's second wake, if any, and its turn
        storm = len(tui.turns()) - before
        assert 1 <= storm <= 2, [_last_user_parts(r.vendor, r.body)[0] for r in tui.turns()]


@pytest.mark.agent_cli
@pytest.mark.parametrize("real_cli", CLIS, indirect=True)
def test_real_tui_under_ac_run_waits_for_a_person_typing(
    real_cli: Cli, stack: Stack, tmp_path: Path
) -> None:
    cli = real_cli
    with _under_ac_run(cli, tmp_path) as tui:
        peer = register(stack, unique("Peer"))
        tui.keys("hel", literal=True)
        peer.send("@" + cli.me, "while you type")
        for letter in "lo wor":  # a key every half second: nothing is typed into their words
            time.sleep(0.5)
            tui.keys(letter, literal=True)
            assert "[chat]" not in tui.tmux.screen(), tui.tmux.screen()
        assert tui.turns() == []
        # They stop: one line follows their words, saying it waited; one turn, with both.
        woke = cli.models.wait_for(
            lambda r: r.is_agent_turn and WORDS in _last_user_parts(r.vendor, r.body)[0], 60
        )
        assert woke is not None, ("no wake after the person stopped", tui.tmux.screen())
        text = _last_user_parts(woke.vendor, woke.body)[0]
        assert "hello wor[chat] @" in text and "waiting for quiet" in text, text
        time.sleep(5)
        assert len(tui.turns()) == 1, [_last_user_parts(r.vendor, r.body)[0] for r in tui.turns()]

        # A normal exit (Ctrl-C twice): the terminal's settings are as they were.
        tui.keys("C-c")
        time.sleep(0.5)
        tui.keys("C-c")
        assert tui.status() in ("0", "130"), tui.tmux.screen()
        assert tui.same_terminal(), tui.stty()


@pytest.mark.agent_cli
@pytest.mark.parametrize("real_cli", CLIS, indirect=True)
def test_real_tui_under_ac_run_wake_none_then_kill_9(
    real_cli: Cli, stack: Stack, tmp_path: Path
) -> None:
    cli = real_cli
    with _under_ac_run(cli, tmp_path, "--wake", "none") as tui:
        peer = register(stack, unique("Peer"))
        peer.send("@" + cli.me, "nobody wakes")
        time.sleep(6)  # an idle CLI would have been woken by now
        assert tui.turns() == [], [_last_user_parts(r.vendor, r.body)[0] for r in tui.turns()]
        assert "[chat]" not in tui.tmux.screen()
        # The person's own line goes through the wrapper as ever.
        tui.keys("typed by hand", literal=True)
        time.sleep(0.5)
        tui.keys("Enter")
        assert cli.models.wait_for(
            lambda r: r.is_agent_turn and "typed by hand" in r.text, TURN_TIMEOUT
        ), tui.tmux.screen()
        assert tui.turns() == [], [_last_user_parts(r.vendor, r.body)[0] for r in tui.turns()]

        # kill -9 of the CLI: ac run exits with 128+9, the terminal's settings restored.
        os.kill(tui.cli_pid(), 9)
        assert tui.status() == str(128 + 9), tui.tmux.screen()
        assert tui.same_terminal(), tui.stty()


def _slow_answers(cli: Cli, words: str, seconds: float) -> list[float]:
    """The fake model answers a turn whose newest user text holds ``words`` after ``seconds``
    (the agent at work, its spinner turning); returns when each such answer went out."""
    finished: list[float] = []
    record = cli.models.record

    def slow(request: Request) -> None:
        record(request)
        if request.is_agent_turn and words in _last_user_parts(request.vendor, request.body)[0]:
            time.sleep(seconds)
            finished.append(time.monotonic())

    setattr(cli.models, "record", slow)  # noqa: B010  (an instance's method, replaced)
    return finished


@pytest.mark.agent_cli
@pytest.mark.parametrize("real_cli", CLIS, indirect=True)
def test_real_tui_under_ac_run_waits_for_the_agents_turn(
    real_cli: Cli, stack: Stack, tmp_path: Path
) -> None:
    cli = real_cli
    finished = _slow_answers(cli, "think slowly", 8.0)
    with _under_ac_run(cli, tmp_path) as tui:
        peer = register(stack, unique("Peer"))
        tui.keys("think slowly", literal=True)
        time.sleep(0.5)
        tui.keys("Enter")
        working = cli.models.wait_for(
            lambda r: r.is_agent_turn and "think slowly" in r.text, TURN_TIMEOUT
        )
        assert working is not None, ("the turn never started", tui.tmux.screen())
        peer.send("@" + cli.me, "while you work")  # the model is still thinking
        woke = cli.models.wait_for(
            lambda r: r.is_agent_turn and WORDS in _last_user_parts(r.vendor, r.body)[0], 60
        )
        assert woke is not None, ("no wake after the turn", tui.tmux.screen())
        # Typed after the answer went out (not queued into the turn), as a turn of its own.
        assert finished and woke.at > finished[0], (finished, woke.at)
        assert "think slowly" not in _last_user_parts(woke.vendor, woke.body)[0]
