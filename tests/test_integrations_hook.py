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
import socket
import subprocess
import sys
import threading
import time

import pytest

from agent_chat.config import save_config
from agent_chat.setup import hook_script
from helpers import Stack, free_port, register, unique, wait_for

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
