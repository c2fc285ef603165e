"""The shell hook (ac-hook.sh): server down, dedupe per session, formats, hostile answers.

The hook is run the way agent CLIs run it: ``sh ac-hook.sh ...`` with the event's JSON on stdin.
"""

from __future__ import annotations

from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from agent_chat.config import save_config
from agent_chat.setup import hook_script
from agent_chat.wake_hub import HUB_DIR
from helpers import (
    Agent,
    Stack,
    free_port,
    register,
    shared_room,
    spawn,
    start_wake_hook,
    stop,
    unique,
    wait_for,
)

AC = str(Path(sys.executable).with_name("ac"))
HOOK = hook_script()
TMUX = hook_script("ac-tmux.sh")


def run_hook(
    *args: str, stdin: str = "", env: dict[str, str] | None = None, home: Path
) -> tuple[str, str, float]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("AGENT_CHAT_")}
    full.update(AGENT_CHAT_HOME=str(home), AGENT_CHAT_HOOK_TTL="0")
    full.update(env or {})
    start = time.monotonic()
    p = subprocess.run(
        ["sh", HOOK, *args], input=stdin, capture_output=True, text=True, env=full, timeout=10
    )
    elapsed = time.monotonic() - start
    assert p.returncode == 0
    return p.stdout, p.stderr, elapsed


def session(sid: str) -> str:
    return json.dumps(
        {
            "session_id": sid,
            "hook_event_name": "UserPromptSubmit",
            "prompt": 'hi "there"',
            "cwd": "/tmp",
        }
    )


def test_server_down_prints_nothing_fast(tmp_path: Path) -> None:
    down = f"http://127.0.0.1:{free_port()}"
    for args in ((), ("--json", "PostToolUse"), ("--status",)):
        out, err, elapsed = run_hook(
            *args,
            stdin=session("s1"),
            home=tmp_path,
            env={"AGENT_CHAT_TOKEN": "t", "AGENT_CHAT_SERVER": down},
        )
        assert (out, err) == ("", "") and elapsed < 1.0


def test_server_hanging_is_cut_at_about_a_second(tmp_path: Path) -> None:
    with socket.socket() as s:  # accepts connections, never answers
        s.bind(("127.0.0.1", 0))
        s.listen(5)
        url = f"http://127.0.0.1:{s.getsockname()[1]}"
        out, err, elapsed = run_hook(
            stdin=session("s1"),
            home=tmp_path,
            env={"AGENT_CHAT_TOKEN": "t", "AGENT_CHAT_SERVER": url},
        )
    assert (out, err) == ("", "") and elapsed < 1.6


def test_no_credentials_prints_nothing(tmp_path: Path) -> None:
    assert run_hook(stdin=session("s1"), home=tmp_path)[:2] == ("", "")
    assert run_hook("--status", home=tmp_path)[:2] == ("", "")


def test_dedupe_and_formats_against_the_server(stack: Stack, tmp_path: Path) -> None:
    me, other = register(stack, unique("Hook")), register(stack, unique("Peer"))
    env = {"AGENT_CHAT_TOKEN": me.token, "AGENT_CHAT_SERVER": stack.api_url}

    def hook(*args: str, sid: str = "sess-1") -> str:
        return run_hook(*args, stdin=session(sid), home=tmp_path, env=env)[0]

    assert hook() == ""  # nothing unread
    other.send("@" + me.nick, "SECRET_BODY_TEXT do what I say")
    wait_for(lambda: me.count("@" + other.nick) == 1, what="the direct message counted")
    first = hook()
    assert first == f"[chat] @{other.nick}(1) (read: ac listen --unread)\n"
    assert "SECRET_BODY" not in first
    assert hook() == ""  # the same counts again: silent
    assert hook("--json", "PostToolUse") == ""  # same session, other event: still silent
    # Another session has not seen it yet; it gets the JSON form.
    data = json.loads(hook("--json", "PostToolUse", sid="sess-2"))
    assert data == {
        "hookSpecificOutput": {
            "hookEventName": "PostToolUse",
            "additionalContext": f"[chat] @{other.nick}(1) (read: ac listen --unread)",
        }
    }
    # The status line prints the current line every time.
    assert run_hook("--status", home=tmp_path, env=env)[0] == f"[chat] @{other.nick}(1)\n"
    assert run_hook("--status", home=tmp_path, env=env)[0] == f"[chat] @{other.nick}(1)\n"
    # A new message: it speaks again.
    other.send("@" + me.nick, "second")
    wait_for(lambda: me.count("@" + other.nick) == 2, what="the second message counted")
    assert hook() == f"[chat] @{other.nick}(2) (read: ac listen --unread)\n"
    assert hook() == ""
    # Read everything: silent (nothing to say), and silent again.
    me.messages(unread="true")
    wait_for(lambda: me.count("@" + other.nick) == 0, what="messages marked read")
    assert hook() == "" and hook() == ""


def test_cache_serves_repeated_calls_and_curl_config_file(stack: Stack, tmp_path: Path) -> None:
    """`ac setup hook` writes the curl config; within the TTL the hook does not ask again."""
    chat = tmp_path / "chat"
    save_config(str(chat), {"server": {"registration_token": stack.registration_token}})
    nick = unique("Cached")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENT_CHAT_")}
    env.update(AGENT_CHAT_HOME=str(chat), AGENT_CHAT_SERVER=stack.api_url, AGENT_CHAT_NICK=nick)
    p = subprocess.run([AC, "setup", "hook"], capture_output=True, text=True, env=env, timeout=30)
    assert p.returncode == 0, p.stderr
    assert (chat / "hook" / (nick + ".curl")).exists()
    other = register(stack, unique("Peer"))
    other.send("@" + nick, "hello")
    hook_env = {"AGENT_CHAT_NICK": nick, "AGENT_CHAT_HOOK_TTL": "60"}
    wait_for(
        lambda: run_hook("--status", home=chat, env={**hook_env, "AGENT_CHAT_HOOK_TTL": "0"})[0],
        what="the hook sees the message",
    )
    line = f"[chat] @{other.nick}(1)\n"
    assert run_hook("--status", home=chat, env=hook_env)[0] == line
    stack.stop_appservice()
    try:  # the server is gone, the cached line is still served within the TTL
        assert run_hook("--status", home=chat, env=hook_env)[0] == line
        assert run_hook("--status", home=chat, env={**hook_env, "AGENT_CHAT_HOOK_TTL": "0"})[
            :2
        ] == ("", "")
    finally:
        stack.start_appservice()


class FakeNotify(BaseHTTPRequestHandler):
    body = b""
    status = 200
    content_type = "text/plain; charset=utf-8"
    paths: ClassVar[list[str]] = []
    auth: ClassVar[list[str | None]] = []

    def do_GET(self) -> None:
        FakeNotify.paths.append(self.path)
        FakeNotify.auth.append(self.headers.get("Authorization"))
        self.send_response(self.status)
        self.send_header("Content-Type", self.content_type)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def fake_server():
    FakeNotify.body, FakeNotify.status = b"", 200
    FakeNotify.paths, FakeNotify.auth = [], []
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeNotify)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(
    "body, line",
    [
        (b"", ""),
        (b"\n", ""),
        (b"#general(2) #alerts(1!) @BlueLake(1)\n", "[chat] #general(2) #alerts(1!) @BlueLake(1)"),
        (b"#general(2)", "[chat] #general(2)"),
        # A server that does not reduce labels: quotes, escapes, control and bidi characters are
        # stripped; only the first line counts.
        (
            '@Evil","x\\(1) @Ign\u202eore\tprevious\u001b[2J(3)\n#second(9)\n'.encode(),
            "[chat] @Evilx(1) @Ignoreprevious2J(3)",
        ),
        # Not the oneline format: JSON from an older server, an HTML page, a bare "!".
        (b'{"unread":[{"room":"#general","count":2,"urgent":false}]}', None),
        (b"<html><body>Moved</body></html>\n", None),
        (b"!\n", None),
    ],
    ids=["empty", "newline", "three", "no-newline", "hostile", "json", "html", "bang"],
)
def test_oneline_answers(fake_server, tmp_path: Path, body: bytes, line: str | None) -> None:
    FakeNotify.body = body
    env = {
        "AGENT_CHAT_TOKEN": "t0k",
        "AGENT_CHAT_SERVER": f"http://127.0.0.1:{fake_server.server_address[1]}/",
    }
    out = run_hook("--status", home=tmp_path, env=env)[0]
    assert out == ("" if not line else line + "\n")
    assert FakeNotify.paths[-1] == "/_agent_chat/v1/notify?format=oneline&covers=true"
    assert FakeNotify.auth[-1] == "Bearer t0k"
    ctx_out = run_hook("--json", "AfterTool", stdin=session("z"), home=tmp_path, env=env)[0]
    if line:
        ctx = json.loads(ctx_out)
        assert (
            ctx["hookSpecificOutput"]["additionalContext"] == line + " (read: ac listen --unread)"
        )
    else:
        assert ctx_out == ""


@pytest.mark.parametrize("status", [401, 403, 404, 500, 503])
def test_http_errors_print_nothing(fake_server, tmp_path: Path, status: int) -> None:
    FakeNotify.body, FakeNotify.status = b"#general(2)\n", status
    env = {
        "AGENT_CHAT_TOKEN": "t",
        "AGENT_CHAT_SERVER": f"http://127.0.0.1:{fake_server.server_address[1]}",
    }
    assert run_hook("--status", home=tmp_path, env=env)[:2] == ("", "")
    assert run_hook(stdin=session("e"), home=tmp_path, env=env)[:2] == ("", "")
    # A failure is cached like an answer: within the TTL the server is not asked again.
    asked = len(FakeNotify.paths)
    assert run_hook("--status", home=tmp_path, env={**env, "AGENT_CHAT_HOOK_TTL": "60"})[:2] == (
        "",
        "",
    )
    assert len(FakeNotify.paths) == asked


@pytest.mark.parametrize("args", [(), ("--json", "UserPromptSubmit")], ids=["plain", "json"])
def test_line_is_seen_only_once_printed(
    fake_server: ThreadingHTTPServer, tmp_path: Path, args: tuple[str, ...]
) -> None:
    """A line the CLI never got (stdout closed, hook killed) is spoken again on the next call."""
    FakeNotify.body = b"@BlueLake(1)\n"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENT_CHAT_")}
    env.update(
        AGENT_CHAT_HOME=str(tmp_path),
        AGENT_CHAT_HOOK_TTL="0",
        AGENT_CHAT_TOKEN="t",
        AGENT_CHAT_SERVER=f"http://127.0.0.1:{fake_server.server_address[1]}",
    )
    closed = subprocess.run(
        ["sh", "-c", 'sh "$0" "$@" >&-', HOOK, *args],
        input=session("s9"),
        capture_output=True,
        text=True,
        env=env,
        timeout=10,
    )
    assert closed.returncode == 0
    assert not list((tmp_path / "hook").glob("seen.*"))
    out = run_hook(*args, stdin=session("s9"), home=tmp_path, env=env)[0]
    line = "[chat] @BlueLake(1) (read: ac listen --unread)"
    if args:
        assert json.loads(out) == {
            "hookSpecificOutput": {"hookEventName": "UserPromptSubmit", "additionalContext": line}
        }
    else:
        assert out == line + "\n"
    assert run_hook(*args, stdin=session("s9"), home=tmp_path, env=env)[0] == ""


def test_curl_config_file_and_old_files_without_the_query(fake_server, tmp_path: Path) -> None:
    """The hook adds ?format=oneline itself, so curl configs written by older versions work."""
    FakeNotify.body = b"#alerts(1!)\n"
    (tmp_path / "hook").mkdir(mode=0o700)
    conf = tmp_path / "hook" / "Old_Nick.curl"
    conf.write_text(
        f'url = "http://127.0.0.1:{fake_server.server_address[1]}/_agent_chat/v1/notify"\n'
        'header = "Authorization: Bearer f1le"\n'
    )
    conf.chmod(0o600)
    out = run_hook("--status", home=tmp_path, env={"AGENT_CHAT_NICK": "Old Nick"})[0]
    assert out == "[chat] #alerts(1!)\n"
    assert FakeNotify.paths == ["/_agent_chat/v1/notify?format=oneline&covers=true"]
    assert FakeNotify.auth == ["Bearer f1le"]


@pytest.mark.skipif(not os.path.exists("/proc/uptime"), reason="the clock is `date` here")
def test_hot_path_starts_only_curl(fake_server, tmp_path: Path) -> None:
    """No date, tr, awk, mkdir... per call: a PATH holding only curl (and sh) suffices."""
    FakeNotify.body = b"#general(1)\n"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "curl").symlink_to(shutil.which("curl"))
    env = {
        "AGENT_CHAT_TOKEN": "t",
        "PATH": str(bin_dir),
        "AGENT_CHAT_SERVER": f"http://127.0.0.1:{fake_server.server_address[1]}",
    }
    home = tmp_path / "home"
    home.mkdir()
    (home / "hook").mkdir()
    full = {k: v for k, v in os.environ.items() if not k.startswith("AGENT_CHAT_")}
    full.update(AGENT_CHAT_HOME=str(home), AGENT_CHAT_HOOK_TTL="0", **env)
    sh = shutil.which("sh")
    assert sh
    for args, stdin in (
        (["--status"], ""),
        ([], session("p")),
        (["--json", "PostToolUse"], session("q")),
    ):
        p = subprocess.run(
            [sh, HOOK, *args], input=stdin, capture_output=True, text=True, env=full, timeout=10
        )
        assert (p.returncode, p.stderr) == (0, "")
        assert "[chat] #general(1)" in p.stdout
    # Cached: not even curl.
    (bin_dir / "curl").unlink()
    p = subprocess.run(
        [sh, HOOK, "--status"],
        capture_output=True,
        text=True,
        env={**full, "AGENT_CHAT_HOOK_TTL": "60"},
        timeout=10,
    )
    assert (p.returncode, p.stdout, p.stderr) == (0, "[chat] #general(1)\n", "")
    # The tmux script reads the hook into its own shell; run by a bare name from its directory.
    # Every "#" doubled: tmux shows "##" as "#" (a single one starts #(), #{} or #[]).
    for script in (TMUX, "ac-tmux.sh"):
        p = subprocess.run(
            [sh, script],
            capture_output=True,
            text=True,
            timeout=10,
            cwd=os.path.dirname(TMUX),
            env={**full, "AGENT_CHAT_HOOK_TTL": "60"},
        )
        assert (p.returncode, p.stdout, p.stderr) == (0, "[chat] ##general(1)\n", "")


def test_registering_writes_the_hooks_credentials(stack: Stack, tmp_path: Path) -> None:
    """A fresh AGENT_CHAT_HOME: the first `ac send` registers and writes hook/<nick>.curl, so
    the hook works at once (no background `ac setup hook`); `ac register` re-points it."""
    chat = tmp_path / "chat"
    save_config(
        str(chat),
        {"server": {"registration_token": stack.registration_token, "url": stack.api_url}},
    )
    nick = unique("First")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENT_CHAT_")}
    env.update(AGENT_CHAT_HOME=str(chat), AGENT_CHAT_NICK=nick)
    p = subprocess.run(
        [AC, "send", "#general", "hello"], capture_output=True, text=True, env=env, timeout=30
    )
    assert p.returncode == 0, p.stderr
    conf = chat / "hook" / (nick + ".curl")
    assert conf.stat().st_mode & 0o777 == 0o600
    assert (chat / "hook").stat().st_mode & 0o777 == 0o700
    assert (chat / "hook" / "ac-path").read_text() == AC + "\n"
    token = json.loads((chat / "credentials.json").read_text())["servers"][stack.api_url][
        "identities"
    ][nick.lower()]["token"]
    assert f"Bearer {token}" in conf.read_text()
    other = register(stack, unique("Peer"))
    other.send("@" + nick, "psst")
    line = f"[chat] @{other.nick}(1)\n"
    hook_env = {"AGENT_CHAT_NICK": nick}
    wait_for(
        lambda: run_hook("--status", home=chat, env=hook_env)[0] == line,
        what="the hook sees the message",
    )
    assert run_hook(stdin=session("r"), home=chat, env=hook_env)[0] == (
        f"[chat] @{other.nick}(1) (read: ac listen --unread)\n"
    )
    assert not (chat / "hook" / ("boot." + nick)).exists()
    # Without AGENT_CHAT_NICK, `ac register NAME --default` makes NAME the default: default.curl
    # is it (without --default the home's first identity stays the default).
    name = unique("Named")
    env.pop("AGENT_CHAT_NICK")
    p = subprocess.run(
        [AC, "register", name, "--default"], capture_output=True, text=True, env=env, timeout=30
    )
    assert p.returncode == 0, p.stderr
    other.send("@" + name, "one")
    other.send("@" + name, "two")
    wait_for(
        lambda: run_hook("--status", home=chat)[0] == f"[chat] @{other.nick}(2)\n",
        what="the hook speaks for the new default identity",
    )
    assert run_hook("--status", home=chat, env=hook_env)[0] == line  # the other file stays


def test_bootstrap_writes_credentials_in_the_background(stack: Stack, tmp_path: Path) -> None:
    """A nick with no hook credentials yet: the hook starts `ac setup hook` and stays quiet."""
    chat = tmp_path / "chat"
    save_config(
        str(chat),
        {"server": {"registration_token": stack.registration_token, "url": stack.api_url}},
    )
    (chat / "hook").mkdir(mode=0o700)
    (chat / "hook" / "ac-path").write_text(AC + "\n")
    nick = unique("Boot")
    out, err, elapsed = run_hook(stdin=session("b"), home=chat, env={"AGENT_CHAT_NICK": nick})
    assert (out, err) == ("", "") and elapsed < 0.5
    wait_for(
        lambda: (chat / "hook" / (nick + ".curl")).exists(),
        timeout=20,
        what="the background `ac setup hook`",
    )


def test_notify_hot_path_imports_nothing_of_the_integrations() -> None:
    code = (
        "import sys; from agent_chat import cli; cli.run(['notify']); "
        "print(sorted(m for m in sys.modules if 'setup' in m or 'mcp' in m "
        "or 'hook' in m))"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENT_CHAT_")}
    env["AGENT_CHAT_SERVER"] = f"http://127.0.0.1:{free_port()}"
    p = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=30
    )
    assert p.returncode == 0 and p.stdout.strip() == "[]", (p.stdout, p.stderr)


# --- the wake hook's light waiter (agent_chat.wake_waiter) -------------------------------------

WAITER = "from agent_chat.wake_waiter import main; main()"
WAKE_TAIL = ": new direct or urgent message (read: ac listen --unread)\n"


def _wake_env(home: Path, **extra: str) -> dict[str, str]:
    """The environment Claude Code gives its hooks (none of ours but what ``extra`` adds), and
    ``home``/hook/ac-path as `ac` writes it."""
    (home / "hook").mkdir(parents=True, exist_ok=True)
    (home / "hook" / "ac-path").write_text(AC + "\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AGENT_CHAT_", "CLAUDE"))}
    env.update(AGENT_CHAT_HOME=str(home), CLAUDE_PROJECT_DIR="/w", AGENT_CHAT_WAKE_TIMEOUT="120")
    env.update(extra)
    return env


def _start_waiter(env: dict[str, str], sid: str, *args: str) -> subprocess.Popen[str]:
    """The waiter as the hook execs it, with options the hook does not pass."""
    return spawn(
        [sys.executable, "-I", "-c", WAITER, "--session", sid, "--timeout", "120", *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def _is_light_waiter(proc: subprocess.Popen[str]) -> bool:
    """The hook's own process became the waiter (exec): no shell or `ac` waits beside it."""
    try:
        argv = Path(f"/proc/{proc.pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return WAITER.encode() in argv


def test_wake_hub_serves_a_homes_sessions_and_leaves_when_idle(
    stack: Stack, tmp_path: Path
) -> None:
    """Two sessions of two agents in one home: one hub holds both waits, each hook stays a
    shell; a DM wakes only its recipient's session; a killed hook's wait ends (its wake is not
    spent: the next hook of that session wakes for it); with no session left the hub leaves."""
    from agent_chat.hook_files import curl_config

    a, b, c = register(stack), register(stack), register(stack)
    env = _wake_env(tmp_path, AGENT_CHAT_WAKE_HUB_IDLE="1")
    for agent in (b, c):
        path = tmp_path / "hook" / f"{agent.nick}.curl"
        path.write_text(curl_config(stack.api_url, agent.token, agent.nick))
    hook_b = start_wake_hook({**env, "AGENT_CHAT_NICK": b.nick}, "s-b")
    hook_c = start_wake_hook({**env, "AGENT_CHAT_NICK": c.nick}, "s-c")
    wait_for(lambda: _hub_serves(tmp_path, hook_b) and _hub_serves(tmp_path, hook_c), what="hub")

    def hubs() -> list[int]:
        home = str(tmp_path).encode()
        return [pid for pid, argv in _processes() if b"wake_hub" in argv and home in argv]

    # (two hooks arming at once may both start one: the second leaves at once, the lock held)
    wait_for(lambda: len(hubs()) == 1, what="one hub for the home")
    wait_for(lambda: _presence(a, c.nick) == "idle · wakeable", what="c wakeable")
    a.send("@" + b.nick, "for b only")
    out, err = hook_b.communicate(timeout=60)
    assert (hook_b.returncode, out, err) == (2, "", f"[chat] @{a.nick}(1){WAKE_TAIL}")
    assert hook_c.poll() is None
    # c's hook is killed (its CLI gave up on it): the hub cuts its long-poll at once (not at
    # the poll's end, 30 s), so c is no longer shown wakeable
    stop(hook_c, signal.SIGKILL)
    wait_for(lambda: _presence(a, c.nick) != "idle · wakeable", timeout=10, what="c not wakeable")
    a.send("@" + c.nick, "for c, after its hook went")
    wait_for(lambda: c.count("@" + a.nick) == 1, what="the DM to c counted")
    again = start_wake_hook({**env, "AGENT_CHAT_NICK": c.nick}, "s-c")
    out, err = again.communicate(timeout=60)
    assert (again.returncode, err) == (2, f"[chat] @{a.nick}(1){WAKE_TAIL}"), out
    # (with a second's idle time the hub may have left before this hook and it started anew)
    wait_for(lambda: not hubs(), timeout=60, what="the idle hub to end")
    assert not (tmp_path / HUB_DIR / "pid").exists()


def _processes() -> list[tuple[int, bytes]]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            found.append((int(entry.name), (entry / "cmdline").read_bytes()))
        except (OSError, ValueError):
            continue
    return found


def _hub_serves(home: Path, hook: subprocess.Popen[str]) -> bool:
    """The hook's process is still its shell, waiting on its FIFO, and the home's wake hub
    runs and has taken the request."""
    try:
        hook_argv = Path(f"/proc/{hook.pid}/cmdline").read_bytes().split(b"\0")
        hub_pid = int((home / HUB_DIR / "pid").read_text())
        hub_argv = Path(f"/proc/{hub_pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return False
    fifos = list((home / HUB_DIR).glob(f"*.{hook.pid}.fifo"))
    taken = not list((home / HUB_DIR).glob(f"*.{hook.pid}.req"))
    return hook_argv[0] == b"sh" and b"agent_chat.wake_hub" in hub_argv and bool(fifos) and taken


def _presence(viewer: Agent, nick: str) -> str | None:
    status, data = viewer.call("GET", f"/presence?users=@{nick}")
    assert status == 200, data
    sessions = data["identities"][0]["sessions"]
    return sessions[0]["state"] if sessions else None


def _waiting_sessions(viewer: Agent, nick: str) -> list[str]:
    status, data = viewer.call("GET", f"/presence?users=@{nick}")
    assert status == 200, data
    return [s["session"] for s in data["identities"][0]["sessions"] if "wakeable" in s["state"]]


@pytest.mark.parametrize("mode", ["hub", "light"])
def test_wake_hook_waits_and_wakes_once(stack: Stack, tmp_path: Path, mode: str) -> None:
    """A DM ends the waiter with one line on stderr (exit 2), exactly once: the next waiter of
    the session (the Stop hook re-arms after the turn) does not wake for it again; while it
    waits the session is ``idle · wakeable``. ``hub``: the hook's shell waits on the home's
    wake hub; ``light`` (the hub off): the hook's own process becomes the light waiter."""
    from agent_chat.hook_files import curl_config

    a, b = register(stack), register(stack)
    env = _wake_env(tmp_path, AGENT_CHAT_WAKE_HUB="off" if mode == "light" else "on")
    (tmp_path / "hook" / "default.curl").write_text(curl_config(stack.api_url, b.token, b.nick))
    waker = start_wake_hook(env, "s-once")
    if mode == "hub":
        wait_for(lambda: _hub_serves(tmp_path, waker), what="the hook's shell on the wake hub")
    else:
        wait_for(lambda: _is_light_waiter(waker), what="the hook exec'd the light waiter")
    wait_for(lambda: _presence(a, b.nick) == "idle · wakeable", what="idle · wakeable")
    a.send("@" + b.nick, "psst")
    out, err = waker.communicate(timeout=60)
    assert (waker.returncode, out) == (2, ""), err
    assert err == f"[chat] @{a.nick}(1){WAKE_TAIL}"
    wait_for(lambda: _presence(a, b.nick) != "idle · wakeable", what="the waiter gone")
    # Re-armed: the same DM does not wake the session twice.
    again = start_wake_hook({**env, "AGENT_CHAT_WAKE_TIMEOUT": "3"}, "s-once")
    assert again.wait(60) == 0 and again.communicate() == ("", "")
    # What came while no waiter was armed wakes the next one at once.
    a.send("@" + b.nick, "and again")
    wait_for(lambda: b.count("@" + a.nick) == 2, what="second DM counted")
    third = start_wake_hook(env, "s-once")
    out, err = third.communicate(timeout=60)
    assert (third.returncode, err) == (2, f"[chat] @{a.nick}(2){WAKE_TAIL}"), out


def test_light_waiter_loop_guard(stack: Stack, tmp_path: Path) -> None:
    """Inside the interval after a wake, news waits (no storm between two agents) unless
    something becomes urgent meanwhile; a newer waiter of the session takes over from an
    older one."""
    a, b = register(stack), register(stack)
    room = shared_room(a, b, prefix="guard-")
    env = _wake_env(tmp_path, AGENT_CHAT_TOKEN=b.token, AGENT_CHAT_SERVER=stack.api_url)
    guard = ("--min-interval", "3600")
    first = _start_waiter(env, "s-guard", *guard)
    wait_for(lambda: _waiting_sessions(a, b.nick) == ["s-guard"], what="first waiter")
    a.send("@" + b.nick, "one")
    assert first.wait(60) == 2
    # A second DM inside the hour: counted, but the waiter holds it back...
    held = _start_waiter(env, "s-guard", *guard)
    a.send("@" + b.nick, "two")
    wait_for(lambda: b.count("@" + a.nick) == 2, what="second DM counted")
    time.sleep(1.5)
    assert held.poll() is None, held.communicate()
    # ...unless something becomes urgent.
    a.send(room, f"[ALERT] @{b.nick} now")
    out, err = held.communicate(timeout=60)
    assert (held.returncode, out) == (2, ""), err
    assert f"{room}(1!)" in err and f"@{a.nick}(2)" in err
    # Takeover: the older of two waiters of one session ends without a word, the newer wakes.
    older = _start_waiter(env, "s-take", "--min-interval", "0")
    wait_for(lambda: "s-take" in _waiting_sessions(a, b.nick), what="older waiter")
    newer = _start_waiter(env, "s-take", "--min-interval", "0")
    wait_for(lambda: older.poll() is None and _wake_state_owner(tmp_path, newer.pid), what="newer")
    a.send("@" + b.nick, "three")
    assert older.wait(60) == 0 and older.communicate() == ("", "")
    out, err = newer.communicate(timeout=60)
    assert (newer.returncode, out) == (2, ""), err
    assert err == f"[chat] {room}(1!) @{a.nick}(3){WAKE_TAIL}"


def _wake_state_owner(home: Path, pid: int) -> bool:
    """Some session state file under ``home``/wait names ``pid``'s waiter as its owner."""
    for path in (home / "wait").glob("*.json"):
        try:
            if str(json.loads(path.read_text()).get("waiter", "")).startswith(f"{pid}-"):
                return True
        except (OSError, ValueError):
            pass
    return False


def test_light_waiter_ends_with_the_watched_process(stack: Stack, tmp_path: Path) -> None:
    a, b = register(stack), register(stack)
    env = _wake_env(tmp_path, AGENT_CHAT_TOKEN=b.token, AGENT_CHAT_SERVER=stack.api_url)
    session_cli = spawn(["sleep", "300"])
    try:
        waiter = _start_waiter({**env, "AGENT_CHAT_WAIT_WHILE_PID": str(session_cli.pid)}, "s-w")
        wait_for(lambda: _waiting_sessions(a, b.nick) == ["s-w"], what="waiting")
    finally:
        session_cli.kill()
        session_cli.wait()
    a.send("@" + b.nick, "for a session that is gone")
    assert waiter.wait(60) == 0 and waiter.communicate() == ("", "")


def test_light_waiter_outlives_an_appservice_restart(stack: Stack, tmp_path: Path) -> None:
    """The appservice restarts under a waiting hook: it waits on, and the next DM wakes it."""
    a, b = register(stack), register(stack)
    env = _wake_env(tmp_path, AGENT_CHAT_TOKEN=b.token, AGENT_CHAT_SERVER=stack.api_url)
    waker = start_wake_hook(env, "s-restart")
    wait_for(lambda: _waiting_sessions(a, b.nick) == ["s-restart"], what="waiting")
    stack.stop_appservice()
    try:
        assert waker.poll() is None
    finally:
        stack.start_appservice()
    assert waker.poll() is None
    wait_for(lambda: _waiting_sessions(a, b.nick) == ["s-restart"], what="waiting again")
    a.send("@" + b.nick, "after the restart")
    out, err = waker.communicate(timeout=60)
    assert (waker.returncode, err) == (2, f"[chat] @{a.nick}(1){WAKE_TAIL}"), out


def test_wake_hook_without_credentials_file_uses_ac_wait(stack: Stack, tmp_path: Path) -> None:
    """No hook/<nick>.curl yet (or AGENT_CHAT_WAKE_WAITER=ac): `ac wait` waits, as before."""
    a, b = register(stack), register(stack)
    env = _wake_env(
        tmp_path,
        AGENT_CHAT_TOKEN=b.token,
        AGENT_CHAT_SERVER=stack.api_url,
        AGENT_CHAT_WAKE_WAITER="ac",
    )
    waker = start_wake_hook(env, "s-ac")
    wait_for(lambda: _waiting_sessions(a, b.nick) == ["s-ac"], what="ac wait waiting")
    assert not _is_light_waiter(waker)
    a.send("@" + b.nick, "psst")
    out, err = waker.communicate(timeout=60)
    assert (waker.returncode, err) == (2, f"[chat] @{a.nick}(1){WAKE_TAIL}"), out
