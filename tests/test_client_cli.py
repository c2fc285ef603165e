"""End to end: the installed ``ac`` console script against a real Synapse + appservice.

Every command, every exit code (server down, appservice stopped, wrong token, rate-limited,
usage errors), the output formats of the spec, identities and the files in AGENT_CHAT_HOME.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
import json
import queue
import re
import secrets
import signal
import socket
import stat
import subprocess
import threading

from helpers import AC, Ac, Stack, free_port, http_json, spawn, stop, unique, wait_for

LINE_RE = re.compile(r"^(\d{4}-\d\d-\d\d )?\d\d:\d\d (\S+) (.+?): (.*)$")


def down_url() -> str:
    return f"http://127.0.0.1:{free_port()}"


# --- identities and files --------------------------------------------------------------------


def test_auto_registration_on_first_use(make_ac: Callable[..., Ac], stack: Stack) -> None:
    a = make_ac()
    r = a("send", "#general", "hello from a fresh agent")
    assert (r.returncode, r.stdout, r.stderr) == (0, "sent to #general\n", "")
    creds = a.home / "credentials.json"
    assert stat.S_IMODE(creds.stat().st_mode) == 0o600
    assert stat.S_IMODE((a.home / "config.toml").stat().st_mode) == 0o600
    me = a.identity()
    assert me["user_id"].startswith("@") and me["token"] and me["nick"]
    status, body = http_json("GET", stack.api_base + "/whoami", token=me["token"])
    assert status == 200 and body["user_id"] == me["user_id"]
    a.ok("send", "general", "second message, same identity")
    assert a.identity() == me and len(a.credentials()["servers"][stack.api_url]["identities"]) == 1


def test_register_exact_name(make_ac: Callable[..., Ac]) -> None:
    nick = unique("Reg")
    a, b = make_ac(), make_ac()
    out = a.ok("register", nick)
    assert out.startswith(f"registered {nick} (@") and a.identity()["nick"] == nick
    assert a.ok("register", nick).startswith(f"already registered: {nick}")
    r = b("register", nick)
    assert r.returncode == 1 and "already taken" in r.stderr and r.stdout == ""
    assert len(r.stderr.splitlines()) == 1


def test_agent_chat_nick_gives_separate_identities(make_ac: Callable[..., Ac]) -> None:
    a = make_ac()
    x, y = unique("Nx"), unique("Ny")
    sx = json.loads(a.ok("status", "--json", AGENT_CHAT_NICK=x))
    assert sx["identity"] is None  # status never registers
    a.ok("send", "general", "I am x", AGENT_CHAT_NICK=x)
    a.ok("send", "general", "I am y", AGENT_CHAT_NICK=y)
    ix = json.loads(a.ok("status", "--json", AGENT_CHAT_NICK=x))["identity"]
    iy = json.loads(a.ok("status", "--json", AGENT_CHAT_NICK=y))["identity"]
    assert ix["nick"] == x and iy["nick"] == y and ix["user_id"] != iy["user_id"]
    assert a.identity(x)["token"] != a.identity(y)["token"]
    # another machine asking for a taken nick gets a numbered one, stored under the asked nick
    b = make_ac()
    b.ok("send", "general", "I wanted x", AGENT_CHAT_NICK=x)
    ib = b.identity(x)
    assert ib["user_id"] != ix["user_id"] and ib["nick"].lower().startswith(x.lower())


def test_config_nick_and_config_command(make_ac: Callable[..., Ac], stack: Stack) -> None:
    a = make_ac()
    nick = unique("Cfg")
    out = a.ok("config", "--set", f"nick={nick}", "--set", f"server={stack.api_url}/")
    assert "saved" in out and f"nick:               {nick} (config.toml)" in out
    assert "registration_token: set (hidden)" in out and stack.registration_token not in out
    a.ok("send", "general", "configured nick")
    assert a.identity()["nick"] == nick
    cfg = json.loads(a.ok("config", "--json", AGENT_CHAT_SERVER=""))
    assert cfg["server"] == stack.api_url and cfg["server_source"] == "config.toml"
    assert cfg["identity"]["nick"] == nick
    r = a("config", "--set", "colour=blue")
    assert r.returncode == 1 and "bad --set" in r.stderr
    r = a("config", "--set", "server=ftp://x")
    assert r.returncode == 1 and "bad server URL" in r.stderr


def test_agent_chat_token_touches_no_files(
    make_ac: Callable[..., Ac], room: tuple[Ac, str], tmp_path: Path
) -> None:
    owner, name = room
    ci = Ac(tmp_path / "ci-home-never-created", owner.server, None)
    ci.home.rmdir()
    token = owner.identity()["token"]
    assert ci("send", name, "[ALERT] build failed", AGENT_CHAT_TOKEN=token).returncode == 0
    assert ci("notify", "--oneline", AGENT_CHAT_TOKEN=token).returncode == 0
    out = ci.ok("listen", name, "--last", "5", AGENT_CHAT_TOKEN=token)
    assert "build failed" in out
    assert ci("register", "Nope", AGENT_CHAT_TOKEN=token).returncode == 1
    assert not ci.home.exists()


# --- send and listen -------------------------------------------------------------------------


def test_send_and_listen_formats(make_ac: Callable[..., Ac], room: tuple[Ac, str]) -> None:
    owner, name = room
    nick = owner.identity()["nick"]
    reader = make_ac()
    reader.ok("join", name)
    for text in (
        "[STATUS] working on: auth module",
        "[DONE] completed: auth module",
        "[BLOCKED] waiting on: API spec",
        "[ALERT] !urgent build failed",
        "plain",
    ):
        assert owner.ok("send", name, text) == f"sent to {name}\n"
    msgs = wait_for(
        lambda: len(reader.listen_json(name)) == 5 and reader.listen_json(name), what="5 messages"
    )
    assert [m["prefix"] for m in msgs] == ["STATUS", "DONE", "BLOCKED", "ALERT", None]
    assert [m["urgent"] for m in msgs] == [False, False, False, True, False]
    for m in msgs:
        assert m["event_id"].startswith("$") and isinstance(m["ts"], int)
        assert m["room"] == name and m["sender_name"] == nick and m["room_id"].startswith("!")
    out = reader.ok("listen", name, "--last", "10")
    lines = out.splitlines()
    assert len(lines) == 5
    parsed = [LINE_RE.match(line) for line in lines]
    assert all(parsed), lines
    assert [(p.group(2), p.group(3)) for p in parsed] == [(name, nick)] * 5
    assert [p.group(4) for p in parsed] == [
        "[STATUS] working on: auth module",
        "[DONE] completed: auth module",
        "[BLOCKED] waiting on: API spec",
        "[ALERT] !urgent build failed",
        "plain",
    ]
    assert reader.ok("listen", name, "--last", "2").splitlines() == lines[-2:]


def test_send_from_stdin_and_multiline(make_ac: Callable[..., Ac], room: tuple[Ac, str]) -> None:
    owner, name = room
    owner.ok("send", name, "-", input="first line\nsecond line\n\nfourth\n")
    owner.ok("send", name, "two", "words")
    msgs = wait_for(lambda: len(owner.listen_json(name)) >= 2 and owner.listen_json(name))
    assert [m["body"] for m in msgs] == ["first line\nsecond line\n\nfourth", "two words"]
    out = owner.ok("listen", name)
    assert out.split("\n")[1:4] == ["    second line", "    ", "    fourth"]


def test_option_shapes_fast_path_and_argparse_agree(room: tuple[Ac, str]) -> None:
    """Plain shapes skip argparse; options go through it; both behave the same."""
    owner, name = room
    owner.ok("send", name, "--notice", "a notice")
    owner.ok("send", name, "--", "-5 degrees")
    owner.ok("send", "-v", name, "verbose", "words")
    out = owner("send", name, "--json", "as json")
    assert out.returncode == 0 and json.loads(out.stdout)["event_id"].startswith("$")
    msgs = wait_for(lambda: len(owner.listen_json(name)) >= 4 and owner.listen_json(name))
    assert [(m["body"], m["msgtype"]) for m in msgs][-4:] == [
        ("a notice", "m.notice"),
        ("-5 degrees", "m.text"),
        ("verbose words", "m.text"),
        ("as json", "m.text"),
    ]
    fast = owner.ok("listen", name, "--last", "2", "--peek")
    slow = owner.ok("listen", "--peek", "--last=2", name)
    assert fast == slow and len(fast.splitlines()) == 2
    r = owner("listen", name, "-v", "--last", "1", "--peek")
    assert r.returncode == 0 and "GET " in r.stderr


def test_send_errors(make_ac: Callable[..., Ac], room: tuple[Ac, str]) -> None:
    owner, name = room
    for args, stdin in (
        (("send", name, ""), None),
        (("send", name, "   "), None),
        (("send", name, "-"), ""),
        (("send", name, "-"), "\n"),
    ):
        r = owner(*args, input=stdin)
        assert (r.returncode, r.stdout) == (1, ""), args
        assert r.stderr == "ac: error: empty message: nothing to send\n"
    r = owner("send", "#" + unique("nope-"), "hi")
    assert r.returncode == 1 and "no such room" in r.stderr and len(r.stderr.splitlines()) == 1
    r = owner("send", name, "x" * 40000)
    assert r.returncode == 1 and r.stderr.startswith("ac: error:")


def test_send_retry_uses_same_txn_id(room: tuple[Ac, str]) -> None:
    """A connection reset after the server posted: the retry reuses the txn id, no double post."""
    owner, name = room
    proxy = DropFirstAnswerProxy(owner.server)
    try:
        body = unique("once-")
        r = owner(
            "send",
            name,
            body,
            "-v",
            AGENT_CHAT_SERVER=proxy.url,
            AGENT_CHAT_TOKEN=owner.identity()["token"],
        )
        assert r.returncode == 0, r.stderr
        assert "retrying with the same transaction id" in r.stderr
        paths = [req.split(b" ")[1] for req in proxy.requests]
        assert len(paths) == 2 and paths[0] == paths[1] and paths[0].startswith(b"/_agent_chat")
    finally:
        proxy.close()

    def bodies() -> list[str]:
        return [m["body"] for m in owner.listen_json(name, "--last", "50")]

    # A second post, had the retry made one, comes before a sentinel sent after it.
    mark = unique("sentinel-")
    owner.ok("send", name, mark)
    wait_for(lambda: mark in bodies(), what="the sentinel")
    assert bodies()[-2:] == [body, mark] and bodies().count(body) == 1


def test_listen_unread_and_mark_read(make_ac: Callable[..., Ac], room: tuple[Ac, str]) -> None:
    owner, name = room
    reader = make_ac()
    reader.ok("join", name)
    owner.ok("send", name, "one")
    owner.ok("send", name, "two")
    wait_for(lambda: "two" in reader.ok("listen", name, "--unread", "--peek"))
    # --peek shows both and leaves them unread, and says so.
    peeked = reader.ok("listen", name, "--unread", "--peek").splitlines()
    assert len(peeked) == 3 and peeked[2].startswith(f"(2 unread in {name}")
    out = reader.ok("listen", name, "--unread")
    assert [LINE_RE.match(x).group(4) for x in out.splitlines()] == ["one", "two"]
    assert reader.ok("listen", name, "--unread") == "(no unread messages)\n"
    assert reader.ok("listen", name, "--unread", "--json") == ""
    r = reader("listen", name, "--all")
    assert r.returncode == 1 and "either TARGET or --all" in r.stderr


def test_listen_all_rooms(make_ac: Callable[..., Ac], room: tuple[Ac, str]) -> None:
    owner, name = room
    body = unique("everywhere-")
    owner.ok("send", "#status", body)
    owner.ok("send", name, body)

    def both() -> list[str]:
        return [m["room"] for m in owner.listen_json("--all", "--last", "50") if m["body"] == body]

    assert sorted(wait_for(lambda: len(both()) == 2 and both())) == sorted(["#status", name])
    assert sum(body in line for line in owner.ok("listen", "--last", "50").splitlines()) == 2


def test_listen_follow(make_ac: Callable[..., Ac], room: tuple[Ac, str]) -> None:
    owner, name = room
    owner.ok("send", name, "before following")
    follower = make_ac()
    follower.ok("join", name)
    # As a background job of a non-interactive shell runs it: SIGINT ignored, which a child
    # inherits unless the test resets it (spawn does).
    ignored = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        proc = spawn(
            [AC, "listen", name, "--follow", "--last", "1"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=follower.env(),
        )
    finally:
        signal.signal(signal.SIGINT, ignored)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(x) for x in proc.stdout], daemon=True).start()
    try:
        assert "before following" in lines.get(timeout=15)
        owner.ok("send", name, "while following\nsecond line")
        assert lines.get(timeout=15).rstrip("\n").endswith(": while following")
        assert lines.get(timeout=5) == "    second line\n"
        owner.ok("send", name, "[DONE] and again")
        assert lines.get(timeout=15).rstrip("\n").endswith(": [DONE] and again")
    finally:
        code = stop(proc, signal.SIGINT)  # Ctrl-C ends it quietly, whatever the run inherited
    assert code == 0
    assert proc.stderr.read() == ""


# --- notify ----------------------------------------------------------------------------------


def test_notify_formats(make_ac: Callable[..., Ac], room: tuple[Ac, str], stack: Stack) -> None:
    owner, name = room
    sender_nick = owner.identity()["nick"]
    reader = make_ac("reader")
    reader_nick = unique("Rd")
    reader.ok("register", reader_nick)
    assert reader.ok("notify", "--json") == "{}\n"
    assert reader.ok("notify", "--oneline") == "\n"
    assert reader.ok("notify") == ""
    reader.ok("join", name)
    owner.ok("send", name, "first")
    owner.ok("send", name, "second")
    owner.ok("send", "#alerts", "[ALERT] build failed on main")
    owner.ok("send", "@" + reader_nick, "a direct message")

    def counts() -> dict | None:
        data = json.loads(reader.ok("notify", "--json"))
        want = {name: 2, "#alerts": 1, "@" + sender_nick: 1}
        return data if {k: v["count"] for k, v in data.items()} == want else None

    data = wait_for(counts, what="notify counts")
    assert data == {
        name: {"count": 2, "urgent": False},
        "#alerts": {"count": 1, "urgent": True},
        "@" + sender_nick: {"count": 1, "urgent": False},
    }
    order = list(data)
    raw = reader.ok("notify", "--json")
    assert raw == json.dumps(data, separators=(",", ":")) + "\n"
    words = {
        name: f"{name}: 2 new messages",
        "#alerts": "#alerts: 1 new message (URGENT)",
        "@" + sender_nick: f"@{sender_nick}: 1 direct message",
    }
    one = {name: f"{name}(2)", "#alerts": "#alerts(1!)", "@" + sender_nick: f"@{sender_nick}(1)"}
    assert reader.ok("notify") == "".join(words[k] + "\n" for k in order)
    oneline = " ".join(one[k] for k in order)
    assert reader.ok("notify", "--oneline") == oneline + "\n"
    assert (reader.home / "unread.line").read_text() == oneline + "\n"
    state = json.loads((reader.home / "state.json").read_text())
    assert any(v.get("unread") == data for v in state["identities"].values())
    # state.json is a cache: deleting it loses nothing
    (reader.home / "state.json").unlink()
    assert reader.ok("notify", "--oneline") == oneline + "\n"
    # reading everything clears the counts
    reader.ok("listen", "--all", "--last", "100")
    assert wait_for(lambda: reader.ok("notify", "--json") == "{}\n")
    assert reader.ok("notify", "--oneline") == "\n"
    assert (reader.home / "unread.line").read_text() == "\n"


def test_notify_degrades_gracefully(make_ac: Callable[..., Ac]) -> None:
    a = make_ac()
    a.ok("register")
    for args in (("notify",), ("notify", "--json"), ("notify", "--oneline")):
        r = a(*args, AGENT_CHAT_SERVER=down_url())
        assert (r.returncode, r.stdout, r.stderr) == (0, "", ""), args
        r = a(*args, AGENT_CHAT_TOKEN="bogus")
        assert (r.returncode, r.stdout, r.stderr) == (0, "", ""), args
    r = a("notify", "--verbose", AGENT_CHAT_SERVER=down_url())
    assert r.returncode == 2 and "server unreachable" in r.stderr and r.stdout == ""
    r = a("notify", "--oneline", "-v", AGENT_CHAT_TOKEN="bogus")
    assert r.returncode == 3 and "authentication failed" in r.stderr
    r = a("notify", "--json", "--oneline")
    assert r.returncode == 1 and "not allowed with" in r.stderr


# --- who, channels, status, rooms, login -----------------------------------------------------


def test_who_channels_status(
    make_ac: Callable[..., Ac], room: tuple[Ac, str], stack: Stack
) -> None:
    owner, name = room
    nick = owner.identity()["nick"]
    out = owner.ok("who", name)
    assert out.splitlines()[0] == f"{name}: 2 members" or out.splitlines()[0].startswith(name)
    assert any(line.split()[:2] == [nick, "agent"] for line in out.splitlines()[1:])
    data = json.loads(owner.ok("who", name, "--json"))
    assert any(m["display_name"] == nick for m in data["members"])
    assert owner("who", "#" + unique("nope-")).returncode == 1

    out = owner.ok("channels")
    line = next(x for x in out.splitlines() if x.split()[0] == name)
    assert "test room" in line and "member" in line
    assert {"#general", "#status", "#alerts", name} <= {x.split()[0] for x in out.splitlines()}
    chans = json.loads(owner.ok("channels", "--json"))["channels"]
    assert any(c["room"] == name and c["topic"] == "test room" for c in chans)

    out = owner.ok("status")
    assert out.splitlines()[0].startswith(f"server:   {stack.api_url} (ok, homeserver ok")
    assert out.splitlines()[1].startswith(f"identity: {nick} (@")
    data = json.loads(owner.ok("status", "--json"))
    assert data["health"]["status"] == "ok" and data["identity"]["nick"] == nick


def test_create_room_and_join(make_ac: Callable[..., Ac], stack: Stack) -> None:
    a, b = make_ac(), make_ac()
    name = "#" + unique("r-")
    out = a.ok("create-room", name, "--topic", "a topic")
    assert re.fullmatch(rf"created {re.escape(name)} \(!\S+\)\n", out)
    r = a("create-room", name)
    assert (r.returncode, r.stderr) == (1, f"ac: error: room {name} already exists\n")
    assert b.ok("join", name[1:]) == f"joined {name}\n"
    assert b("join", "#" + unique("nope-")).returncode == 1


def test_login(make_ac: Callable[..., Ac], stack: Stack) -> None:
    human = stack.create_human(unique("human"))
    localpart = human["user_id"][1:].split(":")[0]
    status, _ = http_json("POST", stack.api_base + "/login", {"user": "x", "password": "y"})
    a = make_ac()
    r = a("login", localpart, input=human["password"] + "\n")
    if status == 404:  # the server has no password login yet
        assert r.returncode == 1 and "does not support password login" in r.stderr
    else:
        assert r.returncode == 0 and r.stdout.startswith("logged in as"), r.stderr
        r = a("login", localpart, input="wrong password\n")
        assert r.returncode == 3 and "failed" in r.stderr
    assert a("login", localpart, input="\n").returncode == 1


# --- exit codes ------------------------------------------------------------------------------

COMMANDS = [
    ("send", "#general", "hi"),
    ("listen",),
    ("listen", "#general", "--last", "3"),
    ("who", "#general"),
    ("channels",),
    ("status",),
    ("create-room", "#x-never"),
    ("join", "#general"),
]


def test_exit_2_when_nothing_listens(make_ac: Callable[..., Ac]) -> None:
    a = make_ac()
    url = down_url()
    for args in [*COMMANDS, ("register", "Somebody")]:
        r = a(*args, AGENT_CHAT_SERVER=url)
        assert r.returncode == 2, (args, r.stderr)
        assert r.stderr.endswith(
            f"ac: error: server unreachable: connection refused by {url[7:]}\n"
        ), r.stderr
    assert not (a.home / "credentials.json").exists()


def test_exit_2_when_appservice_stopped(make_ac: Callable[..., Ac], stack: Stack) -> None:
    a = make_ac()
    a.ok("register")
    stack.stop_appservice()
    try:
        for args in COMMANDS:
            assert a(*args).returncode == 2, args
        r = a("notify", "--oneline")
        assert (r.returncode, r.stdout, r.stderr) == (0, "", "")
    finally:
        stack.start_appservice()
    a.ok("send", "#general", "back again")


def test_exit_3_on_rejected_tokens(make_ac: Callable[..., Ac]) -> None:
    a = make_ac()
    for args in COMMANDS:
        r = a(*args, AGENT_CHAT_TOKEN="ac_not_a_real_token")
        assert r.returncode == 3, (args, r.stdout, r.stderr)
        assert "authentication failed" in r.stderr or "token rejected" in r.stdout
    r = a("send", "#general", "hi", "--verbose", AGENT_CHAT_TOKEN="ac_not_a_real_token")
    assert r.returncode == 3 and "HTTP 401" in r.stderr and len(r.stderr.splitlines()) > 1
    # a stored token the server no longer knows
    b = make_ac()
    b.ok("register")
    creds = b.credentials()
    for ident in creds["servers"][b.server]["identities"].values():
        ident["token"] = "ac_revoked"
    (b.home / "credentials.json").write_text(json.dumps(creds))
    r = b("send", "#general", "hi")
    assert r.returncode == 3 and len(r.stderr.splitlines()) == 1


def test_exit_3_on_bad_registration_token(make_ac: Callable[..., Ac]) -> None:
    a = make_ac(registration_token="wrong")
    r = a("send", "#general", "hi")
    assert r.returncode == 3 and "registration refused" in r.stderr
    assert not (a.home / "credentials.json").exists()
    b = make_ac(registration_token=None)
    r = b("register", unique("NoTok"))
    assert r.returncode == 3 and "registration_token" in r.stderr


def test_exit_4_when_rate_limited(room: tuple[Ac, str], stack: Stack) -> None:
    # The send limiter keys on the identity: the room's owner is a fresh one, so the drained
    # bucket it leaves behind is nobody else's.
    owner, name = room
    token = owner.identity()["token"]
    stop = threading.Event()
    limited = threading.Event()

    def hammer() -> None:
        while not stop.is_set():
            status, _ = http_json(
                "PUT",
                f"{stack.api_base}/send/{secrets.token_hex(8)}",
                {"to": name, "body": "flood"},
                token=token,
            )
            if status == 429:
                limited.set()

    with ThreadPoolExecutor(4) as pool:
        for _ in range(4):
            pool.submit(hammer)
        try:
            assert limited.wait(30), "the server never rate-limited"
            codes = []
            for _ in range(5):
                r = owner("send", name, "one more")
                codes.append((r.returncode, r.stderr))
                if r.returncode == 4:
                    break
        finally:
            stop.set()
    code, err = codes[-1]
    assert code == 4, codes
    assert re.fullmatch(r"ac: error: rate limited: retry after [\d.]+ s\n", err), err


def test_usage_errors_exit_1(make_ac: Callable[..., Ac]) -> None:
    a = make_ac()
    for args in (
        (),
        ("bogus",),
        ("send",),
        ("send", "#general"),
        ("listen", "--last", "x"),
        ("listen", "--last", "0"),
        ("who",),
        ("login",),
        ("create-room",),
        ("config", "--set", "nope"),
        ("--no-such-flag",),
    ):
        r = a(*args)
        assert r.returncode == 1, (args, r.stderr)
        assert r.stdout == "" and len(r.stderr.splitlines()) == 1, (args, r.stderr)
        assert r.stderr.startswith("ac: error: ") or r.stderr.startswith("ac")
    assert a("--help").returncode == 0 and a("send", "--help").returncode == 0
    assert a.ok("--version").startswith("ac ")


def test_flag_errors_point_to_the_commands_own_help(make_ac: Callable[..., Ac]) -> None:
    a = make_ac()
    for command, args in (("send", ("#x", "hi")), ("notify", ()), ("listen", ())):
        r = a(command, "--bogus", *args)
        assert (r.returncode, r.stdout) == (1, ""), r
        assert r.stderr == (
            f"ac: error: unrecognized arguments: --bogus (see 'ac {command} --help')\n"
        )
    r = a("--bogus")
    assert r.stderr == "ac: error: unrecognized arguments: --bogus (see 'ac --help')\n"


def test_claim_reason_errors_say_what_is_wrong(make_ac: Callable[..., Ac]) -> None:
    a = make_ac()
    r = a("claim", "src/**", "--reason", "two\nlines", AGENT_CHAT_TOKEN="t")
    assert (r.returncode, r.stdout) == (1, "")
    assert r.stderr == (
        "ac: error: --reason is one line: no newlines or other control characters\n"
    )
    r = a("claim", "src/**", "--reason", "x" * 501, AGENT_CHAT_TOKEN="t")
    assert r.stderr == "ac: error: --reason is at most 500 characters (it has 501)\n"


def test_config_set_keeps_the_header_comment(make_ac: Callable[..., Ac]) -> None:
    a = make_ac()
    config = a.home / "config.toml"
    header = "# Agent Chat client configuration (see `ac config`).\n# my note\n"
    config.write_text(header + '\n[server]\nurl = "http://127.0.0.1:1"\n')
    a.ok("config", "--set", "nick=Keeper")
    text = config.read_text()
    assert text.startswith(header) and 'nick = "Keeper"' in text, text


def test_missing_rooms_and_membership_said_once(
    make_ac: Callable[..., Ac], room: tuple[Ac, str]
) -> None:
    owner, name = room
    stranger = make_ac()
    stranger.ok("register", unique("Stranger"))
    nowhere = "#" + unique("nosuch-")
    r = stranger("who", nowhere)
    assert (r.returncode, r.stderr) == (1, f"ac: error: no such room: {nowhere}\n")
    owner.ok("send", name, "anyone?")
    hint = f"ac: error: you are not in {name}: join it first (ac join '{name}')\n"
    for args in (("reply", "--last", name, "me"), ("listen", name)):
        r = stranger(*args)
        assert (r.returncode, r.stdout, r.stderr) == (1, "", hint), args
    stranger.ok("join", name)
    assert "replied in" in stranger.ok("reply", "--last", name, "me")


def test_whoami_with_a_token_does_not_offer_agent_chat_nick(make_ac: Callable[..., Ac]) -> None:
    a = make_ac()
    a.ok("register", unique("Stored"))
    a.ok("register", unique("Second"))  # not the default: one of the "others"
    token = a.identity()["token"]
    out = a.ok("whoami", AGENT_CHAT_TOKEN=token)
    others = [line for line in out.splitlines() if line.startswith("others:")]
    assert others and "unset AGENT_CHAT_TOKEN" in others[0], out
    assert "use one with AGENT_CHAT_NICK" in a.ok("whoami")


def test_claim_expiry_never_says_in_0(make_ac: Callable[..., Ac], tmp_path: Path) -> None:
    a = make_ac()
    a.ok("register", unique("Brief"))
    project = "example.org/" + unique("p-")
    out = a.ok("claim", "docs/**", "--ttl", "1m", "--project", project)
    assert out.rstrip().endswith("(in 1 min)"), out
    out = a.ok("claim", "tmp/**", "--ttl", "30s", "--project", project)
    assert re.search(r"\(in (2\d|30) s\)$", out.rstrip()), out


class DropFirstAnswerProxy:
    """TCP proxy: forwards the first request, waits for the answer, then drops the connection.

    The server has done the work but the client never hears about it — exactly when a retry
    must not post twice. Later connections are forwarded normally.
    """

    def __init__(self, upstream: str) -> None:
        host, port = upstream.split("://")[1].split(":")
        self.upstream = (host, int(port))
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.requests: list[bytes] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        first = True
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn, socket.create_connection(self.upstream) as up:
                data = self._read_request(conn)
                self.requests.append(data)
                up.sendall(data)
                answer = b""
                while chunk := up.recv(65536):
                    answer += chunk
                if first:
                    first = False
                    continue  # close without answering
                conn.sendall(answer)

    @staticmethod
    def _read_request(conn: socket.socket) -> bytes:
        data = b""
        while b"\r\n\r\n" not in data:
            data += conn.recv(65536)
        head, _, body = data.partition(b"\r\n\r\n")
        length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
        while len(body) < length:
            body += conn.recv(65536)
        return head + b"\r\n\r\n" + body

    def close(self) -> None:
        self.sock.close()
