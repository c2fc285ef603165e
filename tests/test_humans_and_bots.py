"""Humans (driven by matrix-nio, an independent Matrix client), CI bots and webhooks, against a
real Synapse and appservice."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
import asyncio
import hashlib
import hmac
import json
import time
import urllib.error
import urllib.request

from mautrix.util.async_db import Database
import nio
import pytest

from agent_chat_appservice.db.sealed import Sealer
from helpers import (
    Ac,
    Agent,
    Stack,
    agent_chat_server,
    http_json,
    register,
    sentinel,
    unique,
    wait_for,
)


async def until(check: Callable[[], Awaitable[Any]], timeout: float = 15.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}; last value {value!r}")
        await asyncio.sleep(0.05)


class Human:
    """A person in Element, played by matrix-nio."""

    def __init__(self, stack: Stack, name: str, display: str) -> None:
        self.stack = stack
        account = stack.create_human(name)
        self.user_id, self.password = account["user_id"], account["password"]
        self.display = display
        self.client = nio.AsyncClient(stack.synapse_url, self.user_id)

    async def start(self) -> None:
        resp = await self.client.login(self.password)
        assert isinstance(resp, nio.LoginResponse), resp
        await self.client.set_displayname(self.display)
        await self.client.sync(timeout=0)

    async def sync(self) -> nio.SyncResponse:
        resp = await self.client.sync(timeout=300)
        assert isinstance(resp, nio.SyncResponse), resp
        return resp

    async def join(self, alias: str) -> str:
        resp = await self.client.join(alias)
        assert isinstance(resp, nio.JoinResponse), resp
        return resp.room_id

    async def send(self, room_id: str, body: str) -> str:
        resp = await self.client.room_send(
            room_id, "m.room.message", {"msgtype": "m.text", "body": body}
        )
        assert isinstance(resp, nio.RoomSendResponse), resp
        return resp.event_id


@pytest.fixture
async def alice(stack: Stack) -> AsyncIterator[Human]:
    human = Human(stack, unique("alice_"), "Alice" + unique(""))
    await human.start()
    yield human
    await human.client.close()


def post(url: str, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    req = urllib.request.Request(url, data=body, method="POST")
    req.add_header("Content-Type", "application/json")
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


# --- humans in Element ----------------------------------------------------------------------


async def test_human_finds_rooms_in_the_directory_and_joins(stack: Stack, alice: Human) -> None:
    resp = await alice.client.list_public_rooms()
    assert isinstance(resp, nio.responses.PublicRoomsResponse), resp
    aliases = {room.canonical_alias for room in resp.public_rooms}
    assert {f"#{n}:{stack.server_name}" for n in ("general", "status", "alerts")} <= aliases
    for name in ("general", "status", "alerts"):
        await alice.join(f"#{name}:{stack.server_name}")


async def test_humans_message_counts_for_agents(stack: Stack, alice: Human) -> None:
    agent = register(stack)
    room = await alice.join(f"#status:{stack.server_name}")
    before = agent.count("#status")
    await alice.send(room, "[STATUS] reviewing the auth PR")
    wait_for(lambda: agent.count("#status") == before + 1, what="agent's count")
    newest = agent.messages(room="#status", limit=1)[0]
    assert newest["sender"] == alice.user_id and newest["sender_name"] == alice.display


async def test_agent_dm_reaches_the_human_as_invite_and_message(
    stack: Stack, alice: Human
) -> None:
    agent = register(stack)
    sent = agent.send(alice.user_id, "hi Alice, can I take the auth module?")

    async def invited() -> Any:
        return (await alice.sync()).rooms.invite.get(sent["room_id"])

    invite = await until(invited, what="the invite")
    member = next(
        e
        for e in invite.invite_state
        if isinstance(e, nio.InviteMemberEvent) and e.state_key == alice.user_id
    )
    # A real direct chat: the invite carries is_direct, from the agent.
    assert member.content.get("is_direct") is True
    assert member.sender == agent.user_id
    await alice.join(sent["room_id"])
    resp = await alice.client.room_messages(sent["room_id"], limit=10)
    bodies = [e.body for e in resp.chunk if isinstance(e, nio.RoomMessageText)]
    assert "hi Alice, can I take the auth module?" in bodies


async def test_humans_dm_shows_under_their_name_in_agent_notify(
    stack: Stack, alice: Human
) -> None:
    agent = register(stack)
    resp = await alice.client.room_create(is_direct=True, invite=[agent.user_id])
    assert isinstance(resp, nio.RoomCreateResponse), resp

    async def agent_joined() -> bool:
        members = await alice.client.joined_members(resp.room_id)
        return agent.user_id in {m.user_id for m in members.members}

    await until(agent_joined, what="the agent accepting the DM")
    await alice.send(resp.room_id, "quick question about the deploy")
    label = "@" + alice.user_id[1:].split(":", 1)[0]  # her localpart: never a display name
    wait_for(lambda: agent.count(label) == 1, what=f"{label}(1) in notify")
    assert (
        agent.messages(room=label, unread="true")[0]["body"] == "quick question about the deploy"
    )
    # ...and the agent can answer by the human's name.
    reply = agent.send(label, "on it")
    assert reply["room_id"] == resp.room_id


async def test_agent_mention_carries_m_mentions_and_html(stack: Stack, alice: Human) -> None:
    room = await alice.join(f"#general:{stack.server_name}")
    agent = register(stack)
    localpart = alice.user_id[1:].split(":", 1)[0]  # @name is a localpart, not a display name
    event_id = agent.send("#general", f"[BLOCKED] @{localpart} can you **approve** the PR?")[
        "event_id"
    ]

    async def received() -> Any:
        await alice.sync()
        resp = await alice.client.room_get_event(room, event_id)
        return resp.event if isinstance(resp, nio.RoomGetEventResponse) else None

    event = await until(received, what="the mention event")
    content = event.source["content"]
    assert content["m.mentions"]["user_ids"] == [alice.user_id]
    assert content["format"] == "org.matrix.custom.html"
    assert f'href="https://matrix.to/#/{alice.user_id}"' in content["formatted_body"]
    assert "<strong>approve</strong>" in content["formatted_body"]
    assert "[BLOCKED]" in content["formatted_body"]
    # Synapse's push rules see the mention: the human's phone would buzz (a highlight).
    await until(lambda: _highlighted(alice, room), what="a highlight notification for the mention")


async def test_m_mentions_is_sent_where_it_decides_who_is_pinged(
    stack: Stack, alice: Human
) -> None:
    """Named without an @: no ping (m.mentions, empty, turns off the body-based rules). A
    message that names no person in the room goes without m.mentions (Synapse validates it
    slowly) and behaves the same."""
    room = await alice.join(f"#general:{stack.server_name}")
    agent = register(stack)

    def alice_listed() -> bool:
        status, data = agent.call("GET", "/who?room=%23general")
        return status == 200 and any(m["user_id"] == alice.user_id for m in data["members"])

    wait_for(alice_listed, what="alice among #general's members")
    plain = agent.send("#general", "build 1234 is green")["event_id"]
    named = agent.send("#general", f"{alice.display.upper()} asked for build 1234")["event_id"]
    everyone = agent.send("#general", "heads up @room: deploy at noon")["event_id"]
    localpart = alice.user_id[1:].split(":", 1)[0]
    pinged = agent.send("#general", f"@{localpart} build 1234 is green")["event_id"]

    async def content_of(event_id: str) -> Any:
        resp = await alice.client.room_get_event(room, event_id)
        return resp.event.source["content"] if isinstance(resp, nio.RoomGetEventResponse) else None

    await until(lambda: _highlighted(alice, room, pinged), what="a highlight for the @mention")
    assert "m.mentions" not in await content_of(plain)
    assert (await content_of(named))["m.mentions"] == {"user_ids": []}
    assert (await content_of(everyone))["m.mentions"] == {"user_ids": []}
    assert (await content_of(pinged))["m.mentions"] == {"user_ids": [alice.user_id]}
    for quiet in (plain, named, everyone):
        assert not await _highlighted(alice, room, quiet)


async def _highlighted(human: Human, room_id: str, event_id: str | None = None) -> bool:
    status, data = http_json(
        "GET",
        f"{human.stack.synapse_url}/_matrix/client/v3/notifications?only=highlight",
        token=human.client.access_token,
    )
    return status == 200 and any(
        n["room_id"] == room_id and event_id in (None, n["event"]["event_id"])
        for n in data["notifications"]
    )


async def test_alerts_posts_notify_the_rooms_humans(stack: Stack, alice: Human) -> None:
    room_id = await alice.join(f"#alerts:{stack.server_name}")
    agent = register(stack)
    event_id = agent.send("#alerts", "[ALERT] build failed on main")["event_id"]

    async def notification() -> dict[str, Any] | None:
        _status, data = http_json(
            "GET",
            f"{stack.synapse_url}/_matrix/client/v3/notifications",
            token=alice.client.access_token,
        )
        found = (n for n in data.get("notifications", []) if n["event"]["event_id"] == event_id)
        return next(found, None)

    note = await until(notification, what="a push notification for the #alerts post")
    assert note["room_id"] == room_id and note["read"] is False
    assert note["event"]["sender"] == agent.user_id
    assert note["event"]["content"]["body"] == "[ALERT] build failed on main"
    assert "notify" in note["actions"]


# --- humans at a shell ----------------------------------------------------------------------


async def test_human_login_and_read_receipt_lowers_their_count(stack: Stack, alice: Human) -> None:
    room = await alice.join(f"#general:{stack.server_name}")
    status, login = http_json(
        "POST", stack.api_base + "/login", {"user": alice.user_id, "password": alice.password}
    )
    assert status == 201 and login["kind"] == "human", login
    me = Agent(stack.api_base, login["user_id"], login["nick"], login["token"])
    me.messages(room="#general", limit=1)
    agent = register(stack)
    agent.send("#general", "one")
    last = agent.send("#general", "two")["event_id"]
    wait_for(lambda: me.count("#general") == 2, what="the human's count")
    # The human reads in Element: a public read receipt.
    await alice.sync()
    resp = await alice.client.room_read_markers(room, last, last)
    assert isinstance(resp, nio.RoomReadMarkersResponse), resp
    wait_for(lambda: me.count("#general") == 0, what="the receipt lowering the count")
    # The human can also send through the API, as themself.
    sent = me.send("#general", "hello from my shell")
    newest = wait_for(
        lambda: [
            m
            for m in agent.messages(room="#general", limit=5)
            if m["event_id"] == sent["event_id"]
        ],
        what="the human's API message",
    )[0]
    assert newest["sender"] == alice.user_id and newest["body"] == "hello from my shell"


def test_wrong_password_is_refused(stack: Stack) -> None:
    human = stack.create_human(unique("carol_"))
    status, data = http_json(
        "POST", stack.api_base + "/login", {"user": human["user_id"], "password": "wrong-pass"}
    )
    assert status == 401 and "password" in data["error"]
    status, data = http_json(
        "POST", stack.api_base + "/login", {"user": "_ac_somebot", "password": "whatever1"}
    )
    assert status == 403


def test_user_add_creates_a_human_who_can_log_in(stack: Stack) -> None:
    name = unique("dave_")
    result = agent_chat_server(stack, "user", "add", name, stdin="correct horse battery\n")
    assert result.returncode == 0, result.stderr
    assert f"@{name}:{stack.server_name}" in result.stdout
    status, data = http_json(
        "POST", stack.api_base + "/login", {"user": name, "password": "correct horse battery"}
    )
    assert status == 201, data
    again = agent_chat_server(stack, "user", "add", name, stdin="correct horse battery\n")
    assert (
        again.returncode == 1 and again.stderr.count("\n") == 1 and "taken" in again.stderr.lower()
    )


def _stored_matrix_token(stack: Stack, user_id: str) -> str:
    """What the appservice's database holds as this human's Matrix token."""

    async def read() -> str:
        db = Database.create(stack.database, db_args={"min_size": 1, "max_size": 1})
        await db.start()
        try:
            q = "SELECT matrix_token FROM identity WHERE user_id=$1"
            return str(await db.fetchval(q, user_id))
        finally:
            await db.stop()

    return asyncio.run(read())


def test_a_humans_matrix_token_is_stored_sealed_and_works_after_a_restart(
    any_stack: Stack,
) -> None:
    stack = any_stack
    human = stack.create_human(unique("erin_"))
    status, login = http_json(
        "POST",
        stack.api_base + "/login",
        {"user": human["user_id"], "password": human["password"]},
    )
    assert status == 201, login
    stored = _stored_matrix_token(stack, human["user_id"])
    assert stored.startswith("ac1:") and "syt_" not in stored, stored
    # Sealed is the human's working Matrix token: it opens with the key from appservice.yaml.
    token = Sealer(stack.config.token_key).open(stored, human["user_id"])
    status, whoami = http_json(
        "GET", stack.synapse_url + "/_matrix/client/v3/account/whoami", token=token
    )
    assert status == 200 and whoami["user_id"] == human["user_id"], whoami
    # After a restart the appservice reads it back and still acts for the human.
    stack.stop_appservice()
    stack.start_appservice()
    me = Agent(stack.api_base, login["user_id"], login["nick"], login["token"])
    me.call("POST", "/join", {"room": "#general"})
    sent = me.send("#general", "still me after a restart")
    reader = register(stack)
    found = wait_for(
        lambda: [
            m
            for m in reader.messages(room="#general", limit=20)
            if m["event_id"] == sent["event_id"]
        ],
        what="the human's message after the restart",
    )[0]
    assert found["sender"] == human["user_id"]


# --- CI bots and webhooks -------------------------------------------------------------------


def test_bot_token_posts_to_alerts_urgent_for_every_agent(stack: Stack) -> None:
    agents = [register(stack) for _ in range(3)]
    for a in agents:
        a.messages(room="#alerts", limit=1)
    name = unique("ci-bot-")
    result = agent_chat_server(stack, "bot", "add", name)
    assert result.returncode == 0, result.stderr
    token = result.stdout.splitlines()[2].strip()
    status, me = http_json("GET", stack.api_base + "/whoami", token=token)
    assert status == 200 and me["kind"] == "bot"
    bot = Agent(stack.api_base, me["user_id"], me["nick"], token)
    bot.send("#alerts", "[ALERT] build failed: main @ abc123")
    for a in agents:
        entry = wait_for(lambda a=a: a.notify().get("#alerts"), what="alert")
        assert entry["urgent"] is True and entry["count"] == 1


@pytest.fixture
def hooks_room(stack: Stack) -> tuple[Agent, str]:
    """An agent in a fresh room that webhooks post into, with nothing unread."""
    watcher = register(stack)
    room = "#" + unique("ci-")
    assert watcher.call("POST", "/rooms", {"alias": room})[0] == 201
    return watcher, room


def add_webhook(stack: Stack, room: str, *flags: str) -> tuple[str, str | None]:
    result = agent_chat_server(stack, "webhook", "add", unique("hook-"), "--room", room, *flags)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    url = lines[lines.index(next(x for x in lines if x.startswith("URL"))) + 1].strip()
    secret = None
    if "--sign" in flags:
        secret = lines[lines.index(next(x for x in lines if x.startswith("signing secret"))) + 1]
    return url, secret


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def posted(watcher: Agent, room: str) -> list[str]:
    """What the webhooks posted into the room, once anything posted so far has arrived (the
    watcher's own sentinel comes after it)."""
    mark = sentinel(watcher, room)
    return [body for body in watcher.bodies(room) if body != mark]


def test_signed_webhook_posts_once_and_refuses_bad_signatures(stack: Stack, hooks_room) -> None:
    watcher, room = hooks_room
    url, secret = add_webhook(stack, room, "--sign")
    body = json.dumps({"text": "deploy finished", "id": "delivery-1"}).encode()
    status, data = post(url, body, {"X-Hub-Signature-256": sign(secret, body)})
    assert status == 201 and data["posted"] is True
    status, data = post(url, body, {"X-Hub-Signature-256": sign(secret, body)})
    assert status == 200 and data["posted"] is False and "duplicate" in data["reason"]
    other = json.dumps({"text": "forged"}).encode()
    status, data = post(url, other, {"X-Hub-Signature-256": sign("not-the-secret", other)})
    assert status == 401 and "does not match" in data["error"]
    status, data = post(url, other)
    assert status == 401 and "X-Hub-Signature-256" in data["error"]
    wait_for(lambda: watcher.count(room) == 1, what="the webhook post")
    assert posted(watcher, room) == ["deploy finished"]


def test_webhook_bad_input(stack: Stack, hooks_room) -> None:
    watcher, room = hooks_room
    url, _ = add_webhook(stack, room)
    status, data = post(url, json.dumps({"text": "x" * 70000}).encode())
    assert status == 413 and "KiB" in data["error"], data
    status, data = post(url, b"not json")
    assert status == 400 and '"text"' in data["error"]
    status, data = post(url, json.dumps({"urgent": True}).encode())
    assert status == 400 and "'text'" in data["error"]
    status, data = post(url.rsplit("/", 1)[0] + "/not-a-hook", json.dumps({"text": "x"}).encode())
    assert status == 404
    try:
        urllib.request.urlopen(url, timeout=10)
        raise AssertionError("GET was accepted")
    except urllib.error.HTTPError as e:
        assert e.code == 405 and "POST" in json.loads(e.read())["error"]
    assert posted(watcher, room) == []


def test_webhook_urgent_is_an_alert(stack: Stack, hooks_room) -> None:
    watcher, room = hooks_room
    url, _ = add_webhook(stack, room)
    status, _ = post(url, json.dumps({"text": "disk full on ci-3", "urgent": True}).encode())
    assert status == 201
    entry = wait_for(lambda: watcher.notify().get(room), what="urgent post")
    assert entry["urgent"] is True
    assert posted(watcher, room) == ["[ALERT] disk full on ci-3"]


def test_state_change_webhook_posts_once_per_change(stack: Stack, hooks_room) -> None:
    watcher, room = hooks_room
    url, _ = add_webhook(stack, room, "--state-change")
    outcomes = []
    for state in ("failing", "failing", "failing", "passing", "passing", "failing"):
        body = {"text": f"ci/main is {state}", "key": "ci/main", "state": state}
        status, data = post(url, json.dumps(body).encode())
        outcomes.append(data["posted"])
    assert outcomes == [True, False, False, True, False, True]
    status, data = post(url, json.dumps({"text": "no key"}).encode())
    assert status == 400 and "'key'" in data["error"]
    wait_for(lambda: watcher.count(room) == 3, what="three state changes")
    assert posted(watcher, room) == [
        "ci/main is failing",
        "ci/main is passing",
        "ci/main is failing",
    ]


def test_admin_routes_need_the_admin_token(stack: Stack) -> None:
    agent = register(stack)
    status, data = http_json("POST", stack.api_base + "/admin/bots", {"nick": "evilbot"})
    assert status == 401, data
    for token in (agent.token, stack.registration_token, stack.hs_token):
        status, data = http_json(
            "POST", stack.api_base + "/admin/bots", {"nick": "evilbot"}, token
        )
        assert status == 403, data


def test_a_bot_token_only_posts(stack: Stack, make_ac: Callable[..., Ac]) -> None:
    """Bots post to rooms and nothing else (api/bots.py): a leaked CI token reads nothing,
    opens no direct chat, creates no room and takes no claim."""
    agent = register(stack)
    added = agent_chat_server(stack, "bot", "add", unique("ci-bot-"))
    assert added.returncode == 0, added.stderr
    token = added.stdout.splitlines()[2].strip()
    status, me = http_json("GET", stack.api_base + "/whoami", token=token)
    assert status == 200 and me["kind"] == "bot", me
    bot = Agent(stack.api_base, me["user_id"], me["nick"], token)
    room = "#" + unique("builds-")
    assert agent.call("POST", "/rooms", {"alias": room})[0] == 201
    bot.send(room, "[ALERT] build failed on main")  # a public room: joined on the way
    assert bot.call("POST", "/join", {"room": "#status"})[0] == 200
    ac = make_ac()
    assert "sent" in ac.ok("send", room, "build fixed", AGENT_CHAT_TOKEN=token)
    claim = {"project": "p", "patterns": ["src/**"], "ttl_seconds": 60, "force": True}
    refused = {
        "dm": bot.call("PUT", "/send/t1", {"to": "@" + agent.nick, "body": "psst"}),
        "dm by id": bot.call("PUT", "/send/t2", {"to": agent.user_id, "body": "psst"}),
        "read": bot.call("GET", f"/messages?room={room.replace('#', '%23')}"),
        "notify": bot.call("GET", "/notify"),
        "search": bot.call("GET", "/search?q=build"),
        "channels": bot.call("GET", "/channels"),
        "who": bot.call("GET", "/who?room=%23general"),
        "create room": bot.call("POST", "/rooms", {"alias": "#" + unique("bots-")}),
        "claim": bot.call("POST", "/claims", claim),
    }
    for what, (status, data) in refused.items():
        assert status == 403 and data["errcode"] == "AC_BOT_POST_ONLY", (what, status, data)
    r = ac("listen", room, AGENT_CHAT_TOKEN=token)
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "only post" in r.stderr
    wait_for(lambda: "build fixed" in agent.bodies(room), what="the bot's posts")
    assert not [k for k in agent.notify() if k.startswith("@")]  # no direct chat was opened
