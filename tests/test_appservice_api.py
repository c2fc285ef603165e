"""The appservice REST API and ledger against a real Synapse, on SQLite and on PostgreSQL."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote
import re

import pytest

from helpers import Stack, http_json, register, room_id_of, sentinel, synapse, unique, wait_for

# The API as a user sees it, on one process and on Synapse workers with appservice replicas.
pytestmark = pytest.mark.workers

# --- rooms and identities -------------------------------------------------------------------


def test_default_rooms_are_public_and_listed(any_stack: Stack) -> None:
    status, data = synapse(any_stack, "GET", "/_matrix/client/v3/publicRooms")
    assert status == 200, data
    aliases = {r.get("canonical_alias") for r in data["chunk"]}
    for name in ("general", "status", "alerts"):
        assert f"#{name}:{any_stack.server_name}" in aliases
    topics = {r.get("canonical_alias"): r.get("topic") for r in data["chunk"]}
    assert "build failures" in topics[f"#alerts:{any_stack.server_name}"]
    # The bot created them, so it is their admin (room v12: the creator outranks everyone).
    room = room_id_of(any_stack, f"#general:{any_stack.server_name}")
    status, create = synapse(
        any_stack,
        "GET",
        f"/_matrix/client/v3/rooms/{quote(room)}/state/m.room.create/?format=event",
    )
    assert status == 200 and create["sender"] == any_stack.config.bot_mxid, create


def test_register_auto_name_joins_default_rooms_and_sets_display_name(any_stack: Stack) -> None:
    agent = register(any_stack)
    assert re.fullmatch(r"[A-Z][a-z]+[A-Z][a-z]+", agent.nick), agent.nick
    assert agent.user_id == f"@_ac_{agent.nick.lower()}:{any_stack.server_name}"
    status, profile = synapse(
        any_stack, "GET", f"/_matrix/client/v3/profile/{quote(agent.user_id)}/displayname"
    )
    assert status == 200 and profile["displayname"] == agent.nick
    status, whoami = agent.call("GET", "/whoami")
    assert status == 200 and whoami == {
        "user_id": agent.user_id,
        "nick": agent.nick,
        "kind": "agent",
    }
    status, chans = agent.call("GET", "/channels")
    assert {c["room"] for c in chans["channels"]} == {"#general", "#status", "#alerts"}


def test_nick_collision_appends_number_and_exact_is_refused(any_stack: Stack) -> None:
    nick = unique("Lake")
    first = register(any_stack, nick)
    second = register(any_stack, nick)
    assert first.nick == nick and second.nick == nick + "2"
    status, data = http_json(
        "POST",
        any_stack.api_base + "/register",
        {"registration_token": any_stack.registration_token, "nick": nick, "exact": True},
    )
    assert status == 409 and data["errcode"] == "M_USER_IN_USE"
    assert "taken" in data["error"]


@pytest.mark.parametrize(
    "body, status, errcode",
    [
        ({"registration_token": "wrong"}, 403, "M_FORBIDDEN"),
        ({}, 403, "M_FORBIDDEN"),
        ({"REG": 1, "nick": "x"}, 403, "M_FORBIDDEN"),
    ],
)
def test_register_needs_the_registration_token(
    stack: Stack, body: dict, status: int, errcode: str
) -> None:
    got, data = http_json("POST", stack.api_base + "/register", body)
    assert (got, data["errcode"]) == (status, errcode)


@pytest.mark.parametrize("nick", ["a", "1abc", "has space", "bot", "x" * 40, "ünï"])
def test_register_refuses_bad_names(stack: Stack, nick: str) -> None:
    status, data = http_json(
        "POST",
        stack.api_base + "/register",
        {"registration_token": stack.registration_token, "nick": nick},
    )
    assert status == 400 and data["errcode"] == "M_INVALID_USERNAME", data


def test_humans_keep_ordinary_usernames(stack: Stack) -> None:
    for name in ("alice", "bob", "ci_admin"):
        human = stack.create_human(unique(name + "_"))
        assert human["user_id"].startswith("@" + name)
    # ...but nobody outside the appservice can take an agent's name.
    status, data = http_json(
        "POST",
        stack.synapse_url + "/_matrix/client/v3/register",
        {
            "username": "_ac_" + unique("sneaky"),
            "password": "x" * 12,
            "auth": {"type": "m.login.dummy"},
        },
    )
    assert status in (400, 403) and data["errcode"] in ("M_EXCLUSIVE", "M_FORBIDDEN"), data


def test_create_room_and_join(any_stack: Stack) -> None:
    alice, bob = register(any_stack), register(any_stack)
    name = "#" + unique("builds")
    status, data = alice.call("POST", "/rooms", {"alias": name, "topic": "CI chatter"})
    assert status == 201 and data["room"] == name, data
    status, again = alice.call("POST", "/rooms", {"alias": name})
    assert status == 409, again
    status, joined = bob.call("POST", "/join", {"room": name})
    assert status == 200 and joined["room_id"] == data["room_id"]
    status, who = bob.call("GET", f"/who?room={quote(name)}")
    assert {m["user_id"] for m in who["members"]} >= {alice.user_id, bob.user_id}
    kinds = {m["user_id"]: m["kind"] for m in who["members"]}
    assert kinds[alice.user_id] == "agent" and kinds[any_stack.config.bot_mxid] == "bot"
    status, public = synapse(any_stack, "GET", "/_matrix/client/v3/publicRooms")
    assert f"{name}:{any_stack.server_name}" in {r.get("canonical_alias") for r in public["chunk"]}


# --- the ledger -----------------------------------------------------------------------------


def test_message_counts_for_everyone_but_the_sender(any_stack: Stack) -> None:
    a, b, c = register(any_stack), register(any_stack), register(any_stack)
    before_b, before_c = b.count("#status"), c.count("#status")
    a.send("#status", "[STATUS] working on: auth module")
    wait_for(lambda: b.count("#status") == before_b + 1, what="b's count")
    wait_for(lambda: c.count("#status") == before_c + 1, what="c's count")
    assert a.count("#status") == 0
    entry = b.notify()["#status"]
    assert entry["urgent"] is False and a.nick in entry["senders"]
    assert "body" not in entry  # notify never carries bodies


def test_own_messages_are_never_unread_and_notify_names_who_wrote_to_you(any_stack: Stack) -> None:
    a, b = register(any_stack), register(any_stack)
    name = "#" + unique("turns")
    assert a.call("POST", "/rooms", {"alias": name})[0] == 201
    assert b.call("POST", "/join", {"room": name})[0] == 200
    a.send(name, "one")
    b.send(name, "two")
    a.send(name, "three")  # the room's newest message is a's own
    wait_for(lambda: b.count(name) == 2 and a.count(name) == 1, what="counts of 2 and 1")
    assert b.notify()[name]["senders"] == [a.nick]
    assert a.notify()[name]["senders"] == [b.nick]  # who last wrote to a, not a
    assert [m["body"] for m in a.messages(room=name, unread="true")] == ["two"]
    assert a.count(name) == 0
    b.send(name, "four")
    wait_for(lambda: a.count(name) == 1, what="b's new message")
    a.send(name, "five")
    wait_for(lambda: b.count(name) == 3, what="a's fifth")
    assert a.count(name) == 1 and a.notify()[name]["senders"] == [b.nick]
    _status, chans = a.call("GET", "/channels")
    assert {c["room"]: c["unread"] for c in chans["channels"]}[name] == 1


@pytest.mark.parametrize(
    "room, body, urgent",
    [
        ("#alerts", "build broken", True),
        ("#general", "[ALERT] prod is down", True),
        ("#general", "deploying now !urgent", True),
        ("#general", "lunch?", False),
    ],
)
def test_urgency_rules(stack: Stack, room: str, body: str, urgent: bool) -> None:
    a, b = register(stack), register(stack)
    a.send(room, body)
    entry = wait_for(lambda: b.notify().get(room), what="unread entry")
    assert entry["urgent"] is urgent


def test_mention_is_urgent_only_for_the_mentioned(any_stack: Stack) -> None:
    a, b, c = register(any_stack), register(any_stack), register(any_stack)
    b.messages(room="#general", limit=1)  # read up to now
    c.messages(room="#general", limit=1)
    a.send("#general", f"@{b.nick} can you review my PR?")
    wait_for(lambda: b.count("#general") and c.count("#general"), what="counts")
    assert b.notify()["#general"]["urgent"] is True
    assert c.notify()["#general"]["urgent"] is False


def test_direct_message_counts_under_the_senders_name(any_stack: Stack) -> None:
    a, b = register(any_stack), register(any_stack)
    sent = a.send("@" + b.nick, "psst, got a minute?")
    assert sent["room"] == "@" + b.nick
    wait_for(lambda: b.count("@" + a.nick) == 1, what="DM count")

    # The DM is a real Matrix direct chat, which the agent recipient joins (in the background:
    # the send does not wait for it).
    def membership() -> object:
        status, member = synapse(
            any_stack,
            "GET",
            f"/_matrix/client/v3/rooms/{quote(sent['room_id'])}/state/m.room.member/"
            f"{quote(b.user_id)}",
            as_user=b.user_id,
        )
        return status == 200 and member["membership"] == "join"

    wait_for(membership, what="the recipient joined")
    # A second message goes to the same room.
    again = a.send("@" + b.nick, "still there?")
    assert again["room_id"] == sent["room_id"]
    wait_for(lambda: b.count("@" + a.nick) == 2, what="second DM")
    msgs = b.messages(room="@" + a.nick, unread="true")
    assert [m["body"] for m in msgs] == ["psst, got a minute?", "still there?"]
    assert b.count("@" + a.nick) == 0


def test_reading_resets_count_and_sends_a_read_receipt(any_stack: Stack) -> None:
    a, b = register(any_stack), register(any_stack)
    b.messages(room="#general", limit=1)
    human = any_stack.create_human(unique("watcher_"))
    general = room_id_of(any_stack, f"#general:{any_stack.server_name}")
    status, _ = http_json(
        "POST",
        f"{any_stack.synapse_url}/_matrix/client/v3/join/{quote(general)}",
        {},
        human["access_token"],
    )
    assert status == 200
    for i in range(3):
        a.send("#general", f"update {i}")
    wait_for(lambda: b.count("#general") == 3, what="three unread")
    msgs = b.messages(room="#general", unread="true")
    assert [m["body"] for m in msgs] == ["update 0", "update 1", "update 2"]
    assert b.count("#general") == 0
    last = msgs[-1]["event_id"]

    # Synapse caches identical sync responses, so poll incrementally from a since token.
    status, sync = http_json(
        "GET",
        f"{any_stack.synapse_url}/_matrix/client/v3/sync?timeout=0",
        token=human["access_token"],
    )
    seen: list[Any] = [sync["rooms"]["join"].get(general, {}).get("ephemeral")]
    since = [sync["next_batch"]]

    def receipt_seen() -> bool:
        for event in seen[-1]["events"] if seen[-1] else []:
            if event["type"] == "m.receipt" and b.user_id in event["content"].get(last, {}).get(
                "m.read", {}
            ):
                return True
        _status, sync = http_json(
            "GET",
            f"{any_stack.synapse_url}/_matrix/client/v3/sync?timeout=500&since={since[0]}",
            token=human["access_token"],
        )
        since[0] = sync["next_batch"]
        seen.append(sync["rooms"]["join"].get(general, {}).get("ephemeral"))
        return False

    try:
        wait_for(receipt_seen, what="the agent's m.read receipt at Synapse")
    except AssertionError:
        raise AssertionError(f"no receipt for {last} by {b.user_id}; ephemeral: {seen}") from None


def test_listen_modes_last_unread_since_and_no_mark(any_stack: Stack) -> None:
    a, b = register(any_stack), register(any_stack)
    name = "#" + unique("modes")
    assert a.call("POST", "/rooms", {"alias": name})[0] == 201
    assert b.call("POST", "/join", {"room": name})[0] == 200
    for i in range(5):
        a.send(name, f"[DONE] step {i}")
    wait_for(lambda: b.count(name) == 5, what="five unread")
    last2 = b.messages(room=name, limit=2, mark_read="false")
    assert [m["body"] for m in last2] == ["[DONE] step 3", "[DONE] step 4"]
    assert last2[0]["prefix"] == "DONE" and last2[0]["sender_name"] == a.nick
    assert b.count(name) == 5  # mark_read=false kept them unread
    first2 = b.messages(room=name, unread="true", limit=2)
    assert [m["body"] for m in first2] == ["[DONE] step 0", "[DONE] step 1"]
    assert b.count(name) == 3  # read up to what was shown, not beyond
    since = b.messages(room=name, since=first2[-1]["event_id"], mark_read="false")
    assert [m["body"] for m in since] == ["[DONE] step 2", "[DONE] step 3", "[DONE] step 4"]


def test_send_with_the_same_txn_id_posts_once(any_stack: Stack) -> None:
    a, b = register(any_stack), register(any_stack)
    b.messages(room="#general", limit=1)
    first = a.send("#general", "only once", txn="retry-me")
    second = a.send("#general", "only once", txn="retry-me")
    assert first == second
    wait_for(lambda: b.count("#general") >= 1, what="count")
    mark = sentinel(b, "#general")  # a second post, had there been one, came before it
    bodies = [m["body"] for m in b.messages(room="#general", limit=50, mark_read="false")]
    assert bodies.count("only once") == 1 and bodies[-2:] == ["only once", mark]
    assert b.count("#general") == 1  # b's own sentinel is not unread to b


def test_send_is_rate_limited_with_retry_after(stack: Stack) -> None:
    a = register(stack)
    statuses = []
    for i in range(stack.config.send_rate_burst * 3):
        status, data = a.call("PUT", f"/send/rl{i}", {"to": "#general", "body": f"spam {i}"})
        statuses.append(status)
        if status == 429:
            assert data["errcode"] == "M_LIMIT_EXCEEDED" and data["retry_after_ms"] > 0
            break
    assert statuses[-1] == 429 and statuses.count(200) >= stack.config.send_rate_burst


# --- bad input and errors -------------------------------------------------------------------


@pytest.mark.parametrize(
    "method, path, body, status, errcode",
    [
        ("PUT", "/send/t1", {"to": "#general"}, 400, "M_BAD_JSON"),
        ("PUT", "/send/t2", {"to": "general", "body": "x"}, 400, "M_INVALID_PARAM"),
        ("PUT", "/send/t3", {"to": "#nosuchroom", "body": "x"}, 404, "M_NOT_FOUND"),
        ("PUT", "/send/t4", {"to": "@NobodyAtAll", "body": "x"}, 404, "M_NOT_FOUND"),
        ("PUT", "/send/t5", {"to": "#general", "body": "x" * 40000}, 413, "M_TOO_LARGE"),
        ("PUT", "/send/t6", ["not", "an", "object"], 400, "M_BAD_JSON"),
        ("GET", "/messages?limit=0", None, 400, "M_INVALID_PARAM"),
        ("GET", "/messages?limit=abc", None, 400, "M_INVALID_PARAM"),
        ("GET", "/who", None, 400, "M_INVALID_PARAM"),
        ("GET", "/nope", None, 404, "M_UNRECOGNIZED"),
        ("DELETE", "/notify", None, 405, "M_UNRECOGNIZED"),
    ],
)
def test_bad_requests_get_clear_errors(
    stack: Stack, method: str, path: str, body: Any, status: int, errcode: str
) -> None:
    a = register(stack)
    got, data = a.call(method, path, body)
    assert (got, data["errcode"]) == (status, errcode), data
    assert data["error"] and "\n" not in data["error"]


def test_every_route_needs_the_callers_token(stack: Stack) -> None:
    for method, path in [
        ("GET", "/notify"),
        ("GET", "/whoami"),
        ("GET", "/channels"),
        ("GET", "/messages"),
        ("GET", "/who?room=%23general"),
        ("PUT", "/send/x"),
        ("POST", "/rooms"),
        ("POST", "/join"),
    ]:
        status, data = http_json(method, stack.api_base + path, {} if method != "GET" else None)
        assert status == 401 and data["errcode"] == "M_MISSING_TOKEN", (path, data)
        status, data = http_json(method, stack.api_base + path, None, token="ac_forged")
        assert status == 401 and data["errcode"] == "M_UNKNOWN_TOKEN", (path, data)
    a = register(stack)
    status, data = http_json("GET", f"{stack.api_base}/notify?access_token={a.token}")
    assert status == 400 and "query string" in data["error"]


def test_one_agent_cannot_read_anothers_direct_chat(any_stack: Stack) -> None:
    a, b, eve = register(any_stack), register(any_stack), register(any_stack)
    dm = a.send("@" + b.nick, "secret plan")["room_id"]
    # Stored first (Synapse pushes it a moment after the send), so the checks below mean something.
    stored = wait_for(
        lambda: a.messages(room="@" + b.nick, mark_read="false"), what="the DM in the ledger"
    )
    for path in (f"/messages?room={quote(dm)}", f"/who?room={quote(dm)}"):
        status, data = eve.call("GET", path)
        assert status == 404, data
        assert "secret" not in str(data)
    status, data = eve.call("POST", "/join", {"room": dm})
    assert status == 404, data
    status, data = eve.call("GET", f"/messages?room={quote('@' + a.nick)}")
    assert status == 404
    assert all("secret" not in m["body"] for m in eve.messages(limit=100))
    # since= pointing into someone else's room reveals nothing either
    event_id = stored[-1]["event_id"]
    status, data = eve.call("GET", f"/messages?since={quote(event_id)}")
    assert status == 404 and "secret" not in str(data)


def test_health_and_openapi_are_public(stack: Stack) -> None:
    status, data = http_json("GET", stack.api_base + "/health")
    assert status == 200 and data["status"] == "ok" and data["homeserver"] is True
    status, text = http_json("GET", stack.api_base + "/openapi.yaml")
    assert status == 200 and "openapi: 3" in text and "/send/{txn_id}" in text


def test_metrics_and_server_timing(stack: Stack) -> None:
    a, b = register(stack), register(stack)
    a.send("#general", "metrics please")
    wait_for(lambda: b.count("#general"), what="count")
    status, text = http_json("GET", stack.api_url + "/metrics")
    assert status == 200
    values = dict(
        line.rsplit(" ", 1) for line in text.splitlines() if line and not line.startswith("#")
    )
    assert float(values['agent_chat_transactions_total{outcome="applied"}']) > 0
    assert float(values['agent_chat_registrations_total{kind="agent"}']) >= 2
    assert float(values["agent_chat_ledger_messages_total"]) >= 1
    assert "hs_token" not in text and stack.hs_token not in text
    import urllib.request

    with urllib.request.urlopen(stack.api_base + "/health") as resp:
        assert resp.headers["Server-Timing"].startswith("app;dur=")


def test_notify_oneline_for_shell_hooks(stack: Stack) -> None:
    a, b = register(stack), register(stack)
    for room in ("#general", "#alerts"):
        b.messages(room=room, limit=1)
    a.send("#general", "one")
    a.send("#alerts", "two")
    a.send("@" + b.nick, "three")
    wait_for(lambda: len(b.notify()) >= 3, what="three unread rooms")
    import urllib.request

    req = urllib.request.Request(stack.api_base + "/notify?format=oneline")
    req.add_header("Authorization", f"Bearer {b.token}")
    with urllib.request.urlopen(req) as resp:
        assert resp.headers["Content-Type"].startswith("text/plain")
        line = resp.read().decode()
    assert line == f"#alerts(1!) #general(1) @{a.nick}(1)\n"
    b.messages(limit=100)
    with urllib.request.urlopen(req) as resp:
        assert resp.read() == b""
    status, _data = b.call("GET", "/notify?format=xml")
    assert status == 400


def test_metrics_only_for_loopback_callers() -> None:
    from agent_chat_appservice.service import _is_loopback

    assert _is_loopback("127.0.0.1") and _is_loopback("::1") and _is_loopback("127.0.0.2")
    assert not _is_loopback("100.64.1.2") and not _is_loopback(None) and not _is_loopback("x")
