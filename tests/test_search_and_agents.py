"""Issue 14, search and identities: ``ac search`` over Synapse's search API (never another
room's text), ``agent-chat-server agents list|retire|prune`` (a retired name is registered
again, exactly), and ``ac who``'s last activity. Real Synapse and appservice, both databases."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
import json
import os
import subprocess
import sys
import time

import pytest

from agent_chat_server import control
from agent_chat_server.files import load_yaml
from agent_chat_server.init import InitOptions, init_data_dir
from agent_chat_server.paths import DataDir
from helpers import (
    POSTGRES_ENV,
    START_TIMEOUT,
    Ac,
    Agent,
    PgDatabase,
    Stack,
    create_pg_database,
    free_ports,
    http_json,
    register,
    unique,
    wait_for,
)


def server_cli(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent_chat_server", *args, "--data-dir", str(stack.data_dir)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def ac_for(stack: Stack, home: Path, agent: Agent | None = None) -> Ac:
    """``ac`` in its own home against ``stack``; with ``agent``, acting as that agent's token."""
    ac = Ac(home, stack.api_url, stack.registration_token)
    if agent is not None:
        token = agent.token
        original = ac.env

        def env(**extra: str) -> dict[str, str]:
            return original(AGENT_CHAT_TOKEN=token, **extra)

        ac.env = env  # type: ignore[method-assign]
    return ac


def search_lines(ac: Ac, *args: str) -> list[str]:
    return ac.ok("search", *args).splitlines()


def found(ac: Ac, word: str, *args: str) -> list[dict]:
    """``ac search WORD --json``: the results."""
    out = ac.ok("search", word, "--json", *args)
    return [json.loads(line) for line in out.splitlines()]


# --- search ----------------------------------------------------------------------------------


def test_search_finds_filters_and_never_leaks(any_stack: Stack, tmp_path: Path) -> None:
    me = register(any_stack, unique("Seeker"), exact=True)
    other = register(any_stack, unique("Other"), exact=True)
    third = register(any_stack, unique("Third"), exact=True)
    ac = ac_for(any_stack, tmp_path / "me", me)

    # Found: a message in a room we share (Synapse indexes it when it stores it).
    word = unique("findme")
    other.send("#general", f"the {word} is here")
    hits = wait_for(lambda: found(ac, word), what="the search hit")
    assert [h["body"] for h in hits] == [f"the {word} is here"]
    assert hits[0]["sender"] == other.user_id and hits[0]["room"] == "#general"
    assert hits[0]["sender_name"] == other.nick
    line = search_lines(ac, word)
    assert len(line) == 1 and f"#general {other.nick}: the {word} is here" in line[0]

    # Never leaks: a DM between two others, and a room we are not in, with unique words.
    secret = unique("secretdm")
    other.send("@" + third.nick, f"{secret} between us")
    private_room = "#" + unique("priv-")
    status, data = other.call("POST", "/rooms", {"alias": private_room})
    assert status in (200, 201), data
    hidden = unique("hiddenroom")
    other.send(private_room, f"{hidden} in a room you are not in")
    # Both are stored and searchable by those who are in them...
    assert wait_for(lambda: found(ac_for(any_stack, tmp_path / "o", other), secret))
    assert wait_for(lambda: found(ac_for(any_stack, tmp_path / "o", other), hidden))
    # ...and never for us: no result, and naming the room is a clear error without text.
    for word_ in (secret, hidden):
        assert search_lines(ac, word_) == ["(no messages found)"]
        assert found(ac, word_) == []
    for target in (private_room, "@" + third.nick):
        r = ac("search", hidden, "--room", target)
        assert r.returncode == 1 and r.stdout == ""
        assert "no such room or person" in r.stderr and hidden not in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1
    room_id = other.messages(room=private_room, limit=1, mark_read="false")[0]["room_id"]
    r = ac("search", hidden, "--room", room_id)
    assert r.returncode == 1 and "not in that room" in r.stderr and hidden not in r.stdout

    # --from and --since filter; --room narrows to one room.
    shared = unique("sharedword")
    me.send("#general", f"{shared} from me")
    other.send("#general", f"{shared} from other")
    other.send("#status", f"{shared} in status")
    wait_for(lambda: len(found(ac, shared)) == 3, what="three hits")
    assert [h["body"] for h in found(ac, shared, "--from", other.nick)] == [
        f"{shared} in status",
        f"{shared} from other",
    ]
    assert [h["body"] for h in found(ac, shared, "--room", "#status")] == [f"{shared} in status"]
    assert len(found(ac, shared, "--since", "1h")) == 3
    assert found(ac, shared, "--since", "2099-01-01") == []
    assert len(found(ac, shared, "--limit", "1")) == 1


def test_search_output_is_safe_and_bad_input_is_refused(stack: Stack, tmp_path: Path) -> None:
    me = register(stack, unique("Reader"), exact=True)
    other = register(stack, unique("Writer"), exact=True)
    ac = ac_for(stack, tmp_path / "me", me)
    word = unique("hostile")
    body = f"{word} \x1b[31mred\x1b[0m \x1b]52;c;aGk=\x07osc\r\nsecond line\x00 \u202eevil"
    other.send("#general", body)
    hits = wait_for(lambda: found(ac, word), what="the hostile message")
    assert hits[0]["body"] == body  # --json keeps the raw text
    out = ac.ok("search", word)
    assert "\x1b" not in out and "\x07" not in out and "\r" not in out and "\x00" not in out
    assert "\u202e" not in out
    lines = out.splitlines()
    assert len(lines) == 2 and lines[1].startswith("    ")  # one record, continuation indented
    assert word in lines[0] and "second line" in lines[1]

    for args, says in (
        (("search", ""), "empty"),
        (("search", "   "), "empty"),
        (("search", "x" * 300), "at most 256"),
        (("search", word, "--since", "yesterday"), "not a time"),
        (("search", word, "--since=-2d"), "not a time"),
        (("search", word, "--limit", "0"), "between 1 and"),
        (("search", word, "--limit", "101"), "between 1 and 100"),
        (("search", word, "--room", "#" + unique("nowhere-")), "no such room"),
        (("search", word, "--from", unique("Nobody")), "nobody called"),
    ):
        r = ac(*args)
        assert r.returncode == 1, (args, r.stdout, r.stderr)
        assert says in r.stderr and len(r.stderr.strip().splitlines()) == 1, (args, r.stderr)
        assert r.stdout == ""
    # The API refuses the same without the client's checks.
    status, data = me.call("GET", "/search?q=" + "y" * 257)
    assert status == 400 and "at most 256" in data["error"]
    status, data = me.call("GET", "/search?q=a&since=soon")
    assert status == 400 and "since" in data["error"]


# --- agents list / retire / who --------------------------------------------------------------


def test_agents_list_retire_and_register_the_name_again(any_stack: Stack, tmp_path: Path) -> None:
    nick = unique("Retiree")
    agent = register(any_stack, nick, exact=True)
    watcher = register(any_stack, unique("Watcher"), exact=True)
    before = unique("before-retire")
    agent.send("#general", before)
    wait_for(lambda: before in watcher.bodies("#general"), what="the message")

    # list: the agent with its kind, last activity and rooms.
    r = server_cli(any_stack, "agents", "list", "--json")
    assert r.returncode == 0, r.stderr
    entry = next(a for a in json.loads(r.stdout) if a["nick"] == nick)
    assert entry["user_id"] == agent.user_id and entry["kind"] == "agent"
    assert (
        isinstance(entry["last_active"], int) and time.time() - entry["last_active"] / 1000 < 120
    )
    assert {"#general", "#status", "#alerts"} <= set(entry["rooms"])
    table = server_cli(any_stack, "agents", "list").stdout.splitlines()
    assert table[0].split() == ["NICK", "USER", "ID", "KIND", "LAST", "ACTIVE", "ROOMS"]
    row = next(line for line in table if line.startswith(nick + " "))
    assert "agent" in row and "just now" in row and "#general" in row

    # who says when it was last active.
    who = ac_for(any_stack, tmp_path / "w", watcher).ok("who", "#general")
    assert any(nick in line and "(active just now)" in line for line in who.splitlines())

    # retire: leaves every room, its token stops at once (exit 3, one clear line).
    r = server_cli(any_stack, "agents", "retire", nick)
    assert r.returncode == 0, r.stderr
    assert f"retired {nick} ({agent.user_id})" in r.stdout and "#general" in r.stdout
    status, data = watcher.call("GET", "/who?room=%23general")
    assert status == 200 and agent.user_id not in {m["user_id"] for m in data["members"]}
    r = ac_for(any_stack, tmp_path / "old", agent)("send", "#general", "still here?")
    assert r.returncode == 3, (r.stdout, r.stderr)
    assert len(r.stderr.strip().splitlines()) == 1 and "AGENT_CHAT_TOKEN" in r.stderr
    listed = json.loads(server_cli(any_stack, "agents", "list", "--json").stdout)
    assert nick not in {a["nick"] for a in listed}
    r = server_cli(any_stack, "agents", "retire", nick)
    assert r.returncode == 1 and f"no agent or bot called {nick}" in r.stderr

    # The name is free: `ac register NICK` gets exactly it, as a new Matrix user.
    again = Ac(tmp_path / "again", any_stack.api_url, any_stack.registration_token)
    out = again.ok("register", nick)
    assert nick in out
    new_identity = again.identity()
    assert new_identity["nick"] == nick
    assert new_identity["user_id"] == f"@_ac_{nick.lower()}.2:{any_stack.server_name}"
    assert json.loads(again.ok("whoami", "--json"))["identity"]["nick"] == nick
    # Old messages keep their sender; the new agent posts under the same name.
    old = next(m for m in watcher.messages(room="#general", limit=50) if m["body"] == before)
    assert old["sender"] == agent.user_id and old["sender_name"] == nick
    after = unique("after-reuse")
    again.ok("send", "#general", after)
    new = wait_for(
        lambda: [m for m in watcher.messages(room="#general", limit=50) if m["body"] == after],
        what="the new agent's message",
    )[0]
    assert new["sender"] == new_identity["user_id"] and new["sender_name"] == nick

    # Bad input: unknown names, humans, missing arguments.
    for args, says in (
        (("agents", "retire", unique("Ghost")), "no agent or bot called"),
        (("agents", "retire"), "name the agent"),
        (("agents", "prune"), "--idle"),
        (("agents", "prune", "--idle", "soon"), "not a duration"),
        (("agents", "list", "extra"), "takes no name"),
    ):
        r = server_cli(any_stack, *args)
        assert r.returncode in (1, 2), (args, r.stderr)
        assert says in r.stderr, (args, r.stderr)
    human = any_stack.create_human(unique("hum").lower())
    status, login = http_json(
        "POST",
        any_stack.api_base + "/login",
        {"user": human["user_id"], "password": human["password"]},
    )
    assert status == 201, login
    r = server_cli(any_stack, "agents", "retire", human["user_id"])
    assert r.returncode == 1 and "only agents and bots" in r.stderr, r.stderr


# --- prune: a stack of its own (it retires every idle agent there) -------------------------


@pytest.fixture(params=["sqlite", "postgres"])
def own_stack(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stack]:
    """A fresh stack; with ``postgres``, Synapse and the appservice both on PostgreSQL."""
    databases: list[PgDatabase] = []
    options = InitOptions()
    if request.param == "postgres":
        if not os.environ.get(POSTGRES_ENV):
            pytest.skip(f"{POSTGRES_ENV} is not set")
        appservice_db = create_pg_database("ac_prune")
        synapse_db = PgDatabase(appservice_db.admin_url, appservice_db.name + "_synapse")
        databases += [appservice_db, synapse_db]
        options = InitOptions(database=appservice_db.url, synapse_database=synapse_db.url)
    synapse_port, api_port = free_ports(2)
    options.synapse_port, options.api_port = synapse_port, api_port
    dd = DataDir.at(tmp_path / "server")
    try:
        init_data_dir(dd, options)
        control.start_background(dd, timeout=START_TIMEOUT, tie_to_caller=True)
        hs = load_yaml(dd.homeserver_yaml)
        yield Stack(dd, control.load_config(dd), hs["registration_shared_secret"])
    finally:
        control.stop(dd)
        for db in databases:
            db.drop()


def test_prune_retires_only_idle_agents(own_stack: Stack, tmp_path: Path) -> None:
    idle = register(own_stack, unique("Idle"), exact=True)
    idle.call("GET", "/whoami")  # active once, at registration time
    started = time.time()
    wait_for(lambda: time.time() - started > 4, what="the first agent to be idle 4 s")
    busy = register(own_stack, unique("Busy"), exact=True)
    busy.call("GET", "/whoami")
    bot = server_cli(own_stack, "bot", "add", unique("ci-"))
    assert bot.returncode == 0, bot.stderr

    r = server_cli(own_stack, "agents", "prune", "--idle", "3s", "--dry-run")
    assert r.returncode == 0, r.stderr
    assert "would retire 1 agent:" in r.stdout and idle.nick in r.stdout
    assert busy.nick not in r.stdout
    listed = {
        a["nick"] for a in json.loads(server_cli(own_stack, "agents", "list", "--json").stdout)
    }
    assert {idle.nick, busy.nick} <= listed  # the dry run changed nothing
    assert idle.call("GET", "/whoami")[0] == 200

    r = server_cli(own_stack, "agents", "prune", "--idle", "3s")
    assert r.returncode == 0, r.stderr
    assert "retired 1 agent:" in r.stdout and idle.nick in r.stdout and busy.nick not in r.stdout
    agents = json.loads(server_cli(own_stack, "agents", "list", "--json").stdout)
    kinds = {a["nick"]: a["kind"] for a in agents}
    assert idle.nick not in kinds and kinds[busy.nick] == "agent"
    assert "bot" in kinds.values()  # bots are never pruned
    assert idle.call("GET", "/whoami")[0] == 401
    assert busy.call("GET", "/whoami")[0] == 200

    # Search works on this stack's Synapse too (PostgreSQL with the postgres parameter).
    word = unique("pgsearch")
    busy.send("#general", f"{word} here")
    ac = ac_for(own_stack, tmp_path / "busy", busy)
    assert wait_for(lambda: found(ac, word), what="the search hit")[0]["body"] == f"{word} here"
