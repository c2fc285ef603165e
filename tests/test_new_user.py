"""What a new user hits (issue 17): each as a user meets it, through ``ac`` and, for the human's
side, a real Matrix client (matrix-nio), on both databases where the ledger is involved."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any
import json
import os
import secrets
import signal
import subprocess
import sys

import nio
import pytest

from helpers import (
    McpProcess,
    Stack,
    agent_chat_server,
    free_ports,
    http_json,
    processes_mentioning,
    wait_for,
)

AC = str(Path(sys.executable).with_name("ac"))


def unique(prefix: str) -> str:
    return prefix + secrets.token_hex(3)


class Ac:
    """``ac`` as a cold subprocess in its own home (a fresh HOME, as a new user has)."""

    def __init__(self, home: Path, server: str, registration_token: str) -> None:
        self.home = home
        self.server = server
        home.mkdir(parents=True, exist_ok=True)
        (home / "config.toml").write_text(
            f'[server]\nregistration_token = "{registration_token}"\n'
        )

    def __call__(
        self, *args: str, input: str = "", timeout: float = 30, **env: str
    ) -> subprocess.CompletedProcess[str]:
        full = {k: v for k, v in os.environ.items() if not k.startswith("AGENT_CHAT_")}
        full.update(
            AGENT_CHAT_HOME=str(self.home), AGENT_CHAT_SERVER=self.server, LC_ALL="C.UTF-8"
        )
        full.update(env)
        return subprocess.run(
            [AC, *args], input=input, capture_output=True, text=True, env=full, timeout=timeout
        )

    def ok(self, *args: str, **kw: Any) -> str:
        r = self(*args, **kw)
        assert r.returncode == 0, (args, r.returncode, r.stdout, r.stderr)
        return r.stdout

    def notify(self, **env: str) -> dict[str, Any]:
        return json.loads(self.ok("notify", "--json", **env) or "{}")


@pytest.fixture
def home(any_stack: Stack, tmp_path: Path) -> Ac:
    return Ac(tmp_path / unique("home"), any_stack.api_url, any_stack.registration_token)


# --- 1. listen --last never marks unseen messages read -----------------------------------------


def _room_with_urgent_mention(ac: Ac, red: str, green: str) -> str:
    """A fresh room where ``red`` mentions ``green`` urgently, then posts three fillers."""
    room = "#" + unique("last-")
    ac.ok("create-room", room, AGENT_CHAT_NICK=red)
    ac.ok("join", room, AGENT_CHAT_NICK=green)
    ac.ok("send", room, f"hey @{green} urgent q", AGENT_CHAT_NICK=red)
    for i in range(3):
        ac.ok("send", room, f"filler {i}", AGENT_CHAT_NICK=red)
    wait_for(
        lambda: ac.notify(AGENT_CHAT_NICK=green).get(room) == {"count": 4, "urgent": True},
        what=f"{room}(4!) for {green}",
    )
    return room


def test_listen_last_leaves_an_unseen_urgent_mention_unread(home: Ac) -> None:
    red, green = unique("RedFox"), unique("GreenCastle")
    room = _room_with_urgent_mention(home, red, green)
    shown = home(*["listen", room, "--last", "2"], AGENT_CHAT_NICK=green)
    assert shown.returncode == 0, shown.stderr
    assert "filler 1" in shown.stdout and "filler 2" in shown.stdout
    assert "urgent q" not in shown.stdout
    # It says what it did not show, and the mention is still there, urgent.
    assert "4 unread" in shown.stdout and "--unread" in shown.stdout, shown.stdout
    assert home.notify(AGENT_CHAT_NICK=green)[room] == {"count": 4, "urgent": True}
    # The same for every room at once.
    shown = home.ok("listen", "--all", "--last", "2", AGENT_CHAT_NICK=green)
    assert "urgent q" not in shown
    assert home.notify(AGENT_CHAT_NICK=green)[room] == {"count": 4, "urgent": True}
    # Reading the unread messages shows the mention and clears the room.
    shown = home.ok("listen", room, "--unread", AGENT_CHAT_NICK=green)
    assert "urgent q" in shown and "filler 2" in shown
    assert room not in home.notify(AGENT_CHAT_NICK=green)


def test_listen_last_that_shows_everything_unread_marks_it_read(home: Ac) -> None:
    red, green = unique("RedFox"), unique("GreenCastle")
    room = _room_with_urgent_mention(home, red, green)
    shown = home.ok("listen", room, "--last", "10", AGENT_CHAT_NICK=green)
    assert "urgent q" in shown and "unread" not in shown
    assert room not in home.notify(AGENT_CHAT_NICK=green)


def test_unread_with_a_limit_marks_only_what_it_showed(home: Ac) -> None:
    red, green = unique("RedFox"), unique("GreenCastle")
    room = _room_with_urgent_mention(home, red, green)
    shown = home.ok("listen", room, "--unread", "--last", "1", AGENT_CHAT_NICK=green)
    assert "urgent q" in shown and "3 unread" in shown, shown
    assert home.notify(AGENT_CHAT_NICK=green)[room] == {"count": 3, "urgent": False}


def test_api_marks_read_only_over_what_it_returned(any_stack: Stack, home: Ac) -> None:
    """The rule lives in the API, so every client (the MCP read tool too) gets it."""
    red, green = unique("RedFox"), unique("GreenCastle")
    room = _room_with_urgent_mention(home, red, green)
    creds = json.loads((home.home / "credentials.json").read_text())
    token = creds["servers"][any_stack.api_url]["identities"][green.lower()]["token"]
    status, data = http_json(
        "GET", f"{any_stack.api_base}/messages?room=%23{room[1:]}&limit=2", token=token
    )
    assert status == 200, data
    assert [m["body"] for m in data["messages"]] == ["filler 1", "filler 2"]
    assert data["marked_read"] is False
    [left] = data["unread"]
    assert (left["room"], left["count"], left["urgent"]) == (room, 4, True)
    assert left["room_id"] == data["messages"][0]["room_id"]


def test_mcp_read_of_the_last_n_keeps_the_mention_unread(home: Ac) -> None:
    pytest.importorskip("mcp")

    red, green = unique("RedFox"), unique("GreenCastle")
    room = _room_with_urgent_mention(home, red, green)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENT_CHAT_")}
    env.update(
        AGENT_CHAT_HOME=str(home.home), AGENT_CHAT_SERVER=home.server, AGENT_CHAT_NICK=green
    )
    server = McpProcess(env)
    try:
        server.initialize()
        text, error = server.call("read", room=room, unread=False, last=2)
        assert not error and "filler 2" in text and "urgent q" not in text
        assert f"4 unread in {room}, urgent" in text, text
        assert home.notify(AGENT_CHAT_NICK=green)[room] == {"count": 4, "urgent": True}
        text, error = server.call("read", room=room)
        assert not error and "urgent q" in text
        assert room not in home.notify(AGENT_CHAT_NICK=green)
    finally:
        server.close()


# --- 2 and 3. a human who uses only ac -------------------------------------------------------


def _login(ac: Ac, stack: Stack) -> tuple[str, str]:
    """A human account (as `agent-chat-server user add` makes) logged in with `ac login`."""
    name = unique("alice_")
    account = stack.create_human(name)
    out = ac.ok("login", name, input=account["password"] + "\n", AGENT_CHAT_NICK=name)
    assert "logged in as" in out
    return name, account["password"]


def test_login_joins_the_default_rooms(any_stack: Stack, home: Ac) -> None:
    alice, _ = _login(home, any_stack)
    out = home.ok("channels", AGENT_CHAT_NICK=alice)
    for room in ("#general", "#status", "#alerts"):
        assert room in out, out


async def test_agent_dm_reaches_a_human_who_uses_only_ac(any_stack: Stack, home: Ac) -> None:
    alice, password = _login(home, any_stack)
    blue = unique("BlueLake")
    home.ok("send", "@" + alice, "can I take the auth module?", AGENT_CHAT_NICK=blue)
    # Counted...
    entry = wait_for(
        lambda: home.notify(AGENT_CHAT_NICK=alice).get("@" + blue), what="the DM in notify"
    )
    assert entry["count"] == 1
    # ...shown (and accepted) by listen...
    out = home.ok("listen", "@" + blue, "--unread", AGENT_CHAT_NICK=alice)
    assert "can I take the auth module?" in out
    assert "@" + blue not in home.notify(AGENT_CHAT_NICK=alice)
    # ...and one pair of people has one direct chat, both ways.
    sent = json.loads(home.ok("send", "@" + blue, "yes", "--json", AGENT_CHAT_NICK=alice))
    back = json.loads(home.ok("send", "@" + alice, "thanks", "--json", AGENT_CHAT_NICK=blue))
    assert sent["room_id"] == back["room_id"]
    channels = home.ok("channels", AGENT_CHAT_NICK=blue)
    assert channels.count("@" + alice) == 1, channels
    # Matrix agrees: the human is in the room, and it is her direct chat with the agent.
    creds = json.loads((home.home / "credentials.json").read_text())
    agent_id = creds["servers"][any_stack.api_url]["identities"][blue.lower()]["user_id"]
    await _assert_matrix_direct(any_stack, alice, password, sent["room_id"], agent_id)


async def _assert_matrix_direct(
    stack: Stack, name: str, password: str, room_id: str, other: str
) -> None:
    """As the human in a real Matrix client: joined, and listed in her m.direct."""
    user_id = f"@{name}:{stack.server_name}"
    client = nio.AsyncClient(stack.synapse_url, user_id)
    try:
        resp = await client.login(password)
        assert isinstance(resp, nio.LoginResponse), resp
        joined = await client.joined_rooms()
        assert isinstance(joined, nio.JoinedRoomsResponse), joined
        assert room_id in joined.rooms
        status, direct = http_json(
            "GET",
            f"{stack.synapse_url}/_matrix/client/v3/user/{user_id}/account_data/m.direct",
            token=client.access_token,
        )
        assert status == 200 and room_id in direct.get(other, []), direct
    finally:
        await client.close()


async def test_ac_join_accepts_a_direct_chat_invite(any_stack: Stack, home: Ac) -> None:
    alice, _ = _login(home, any_stack)
    blue = unique("BlueLake")
    home.ok("send", "@" + alice, "ping", AGENT_CHAT_NICK=blue)
    wait_for(lambda: home.notify(AGENT_CHAT_NICK=alice).get("@" + blue), what="the invite")
    channels = home.ok("channels", AGENT_CHAT_NICK=alice)
    assert "@" + blue in channels and "invited" in channels, channels
    out = home.ok("join", "@" + blue, AGENT_CHAT_NICK=alice)
    assert "@" + blue in out
    channels = home.ok("channels", AGENT_CHAT_NICK=alice)
    assert "@" + blue in channels and "invited" not in channels, channels


# --- 7. agent-chat-server restart ------------------------------------------------------------


def _server_cli(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent_chat_server", *args, "--data-dir", str(root)],
        capture_output=True,
        text=True,
        timeout=180,
        stdin=subprocess.DEVNULL,
    )


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[tuple[Path, int, int]]:
    root = tmp_path / "server"
    synapse_port, api_port = free_ports(2)
    try:
        yield root, synapse_port, api_port
    finally:
        if root.is_dir():
            _server_cli(root, "stop")
        for pid in processes_mentioning(str(root)):
            os.kill(pid, signal.SIGKILL)


def test_restart_keeps_the_data(own_server: tuple[Path, int, int], tmp_path: Path) -> None:
    root, synapse_port, api_port = own_server
    r = _server_cli(root, "restart")
    assert r.returncode == 1 and "start" in r.stderr and len(r.stderr.splitlines()) == 1
    r = _server_cli(
        root,
        "start",
        "--no-client-config",
        "--synapse-port",
        str(synapse_port),
        "--api-port",
        str(api_port),
    )
    assert r.returncode == 0, r.stderr
    api = f"http://127.0.0.1:{api_port}"
    token = (root / "appservice.yaml").read_text().split("registration_token:")[1].split()[0]
    ac = Ac(tmp_path / "home", api, token.strip("'\""))
    ac.ok("send", "#general", "before the restart", AGENT_CHAT_NICK="Keeper")
    before = set(processes_mentioning(str(root)))
    r = _server_cli(root, "restart")
    assert r.returncode == 0, r.stderr
    assert "stopped" in r.stdout and "started" in r.stdout, r.stdout
    assert not before & set(processes_mentioning(str(root))), "old processes survived"
    status = _server_cli(root, "status")
    assert status.returncode == 0, status.stdout + status.stderr
    out = ac.ok("listen", "#general", "--last", "5", AGENT_CHAT_NICK="Keeper")
    assert "before the restart" in out


# --- 8. the message-too-long error speaks the user's units -----------------------------------


def test_too_long_message_names_its_size_and_the_limit(stack: Stack, tmp_path: Path) -> None:
    ac = Ac(tmp_path / "home", stack.api_url, stack.registration_token)
    nick = unique("Verbose")
    # 12,000 characters of CJK: 36,000 bytes of UTF-8, over the 32 KiB limit.
    r = ac("send", "#general", "-", input="漢" * 12000, AGENT_CHAT_NICK=nick)
    assert r.returncode == 1, (r.stdout, r.stderr)
    line = r.stderr.strip()
    assert len(line.splitlines()) == 1, line
    assert "36,000 bytes of UTF-8" in line and "12,000 characters" in line, line
    assert "32 KiB" in line, line
    # Just under the limit in bytes goes through, whatever the characters.
    ok = ac("send", "#general", "-", input="漢" * 10922, AGENT_CHAT_NICK=nick)
    assert ok.returncode == 0, ok.stderr


# --- 4. the default identity never shifts silently ----------------------------------------------


def _whoami(ac: Ac, **env: str) -> dict[str, Any]:
    return json.loads(ac.ok("whoami", "--json", **env))


def _server_says(ac: Ac, **env: str) -> str:
    """Whose token a plain command sends, as the server sees it (``ac status --json``)."""
    return json.loads(ac.ok("status", "--json", **env))["identity"]["nick"]


def test_registering_or_logging_in_another_name_keeps_the_default(
    stack: Stack, tmp_path: Path
) -> None:
    ac = Ac(tmp_path / "home", stack.api_url, stack.registration_token)
    blue, purple = unique("BlueLake"), unique("PurpleOwl")
    ac.ok("register", blue)  # the first identity in a home is its default
    assert _whoami(ac)["identity"]["nick"] == blue
    r = ac("register", purple)
    assert r.returncode == 0 and r.stderr == "", r
    assert f"default identity stays {blue}" in r.stdout and f"AGENT_CHAT_NICK={purple}" in r.stdout
    assert _server_says(ac) == blue
    # A human logging in on the agent's machine does not make the agent's shell post as her.
    alice = unique("alice_")
    account = stack.create_human(alice)
    out = ac.ok("login", alice, input=account["password"] + "\n")
    assert f"default identity stays {blue}" in out
    assert _server_says(ac) == blue
    me = _whoami(ac)
    assert (me["identity"]["nick"], me["source"]) == (blue, "default")
    assert {o["nick"] for o in me["others"]} == {purple, alice}
    assert me["server"] == stack.api_url
    # --default switches, and says so on stderr in one line.
    r = ac("login", alice, "--default", input=account["password"] + "\n")
    assert r.returncode == 0, r.stderr
    assert len(r.stderr.splitlines()) == 1 and alice in r.stderr and "default" in r.stderr
    assert _server_says(ac) == alice
    # whoami says why: the environment wins over the default, and says so.
    text = ac.ok("whoami", AGENT_CHAT_NICK=purple)
    assert purple in text.splitlines()[0] and "AGENT_CHAT_NICK" in text, text
    assert f"{alice} (human, the default)" in text and stack.api_url in text, text
    assert _whoami(ac, AGENT_CHAT_TOKEN="ac_whatever")["source"] == "AGENT_CHAT_TOKEN"


# --- 5. ac register NAME asks for exactly NAME ---------------------------------------------------


def test_register_asks_for_exactly_that_name(stack: Stack, tmp_path: Path) -> None:
    other = Ac(tmp_path / "other", stack.api_url, stack.registration_token)
    mine = Ac(tmp_path / "mine", stack.api_url, stack.registration_token)
    blue = unique("BlueLake")
    other.ok("register", blue)
    mine.ok("send", "#general", "hello", AGENT_CHAT_NICK=blue)  # the server renames it
    held = _whoami(mine, AGENT_CHAT_NICK=blue)["identity"]["nick"]
    assert held != blue and held.startswith(blue)
    # Asked for BlueLake while holding BlueLake2: BlueLake is taken, and that is what it says.
    r = mine("register", blue)
    assert r.returncode == 1 and r.stdout == "", r
    [line] = r.stderr.splitlines()
    assert repr(blue) in line and "taken" in line and "another name" in line and held not in line
    # What this home holds exactly is already registered (exit 0), and is not a new identity.
    assert mine.ok("register", held).startswith(f"already registered: {held}")
    assert _whoami(mine, AGENT_CHAT_NICK=held)["identity"]["nick"] == held
    assert mine("register", held, AGENT_CHAT_NICK=held).returncode == 0
    # A free name is registered as asked.
    fresh = unique("RedFox")
    assert mine.ok("register", fresh).startswith(f"registered {fresh} ")


# --- 6. config and token errors say what is true ---------------------------------------------


def test_config_and_token_errors_say_what_is_true(stack: Stack, tmp_path: Path) -> None:

    ac = Ac(tmp_path / "home", stack.api_url, stack.registration_token)
    blue = unique("BlueLake")
    ac.ok("register", blue)
    text = ac.ok("config")
    assert "server picks" not in text, text
    lines = text.splitlines()
    [at] = [i for i, line in enumerate(lines) if line.startswith("identity:")]
    assert blue in lines[at] and "default" in lines[at + 1], text  # what, then why
    # The files named are the files written, for each way of naming the identity.
    for env in ({}, {"AGENT_CHAT_NICK": blue}):
        ac.ok("notify", "--oneline", **env)
        conf = json.loads(ac.ok("config", "--json", **env))
        assert conf["identity"]["nick"] == blue
        assert conf["identity"]["source"] == ("AGENT_CHAT_NICK" if env else "default")
        assert Path(conf["files"]["unread_line"]).is_file(), conf
        hook = Path(conf["files"]["hook_credentials"])
        assert hook.parent == ac.home / "hook" and (hook.is_file() or env), conf
    # A token in the environment cannot be fixed by registering.
    r = ac("send", "#general", "x", AGENT_CHAT_TOKEN="ac_not_a_real_token")
    assert r.returncode == 3 and "AGENT_CHAT_TOKEN" in r.stderr, r.stderr
    assert "register again" not in r.stderr and len(r.stderr.splitlines()) == 1
    # A bot's token: bots cannot register.
    added = agent_chat_server(stack, "bot", "add", unique("ci-bot-"))
    assert added.returncode == 0, added.stderr
    bot_token = added.stdout.splitlines()[2].strip()
    assert ac.ok("send", "#general", "build ok", AGENT_CHAT_TOKEN=bot_token)
    r = ac("register", unique("Bot"), AGENT_CHAT_TOKEN=bot_token)
    assert r.returncode == 1 and "bots cannot register" in r.stderr, r.stderr
    # A stored token the server rejects: register (or log in) again, by name.
    path = ac.home / "credentials.json"
    creds = json.loads(path.read_text())
    creds["servers"][stack.api_url]["identities"][blue.lower()]["token"] = "ac_revoked"
    path.write_text(json.dumps(creds))
    r = ac("send", "#general", "x")
    assert r.returncode == 3 and f"ac register {blue}" in r.stderr, r.stderr
    assert "AGENT_CHAT_TOKEN" not in r.stderr
