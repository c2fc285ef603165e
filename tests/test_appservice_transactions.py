"""The homeserver-facing endpoint: token checks, exactly-once counting, bad records, downtime."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote
import secrets
import time

import pytest

from helpers import Agent, Stack, http_json, register, room_id_of, sentinel, synapse, wait_for


def put_transaction(
    stack: Stack,
    txn_id: str,
    events: list[Any],
    ephemeral: list[Any] | None = None,
    token: str | None = "hs",
) -> tuple[int, Any]:
    body: dict[str, Any] = {"events": events}
    if ephemeral is not None:
        body["ephemeral"] = ephemeral
    return http_json(
        "PUT",
        f"{stack.api_url}/_matrix/app/v1/transactions/{txn_id}",
        body,
        token=stack.hs_token if token == "hs" else token,
    )


def fake_message(room_id: str, sender: str, body: str, **content: Any) -> dict[str, Any]:
    return {
        "type": "m.room.message",
        "room_id": room_id,
        "sender": sender,
        "event_id": "$fake" + secrets.token_hex(12),
        "origin_server_ts": int(time.time() * 1000),
        "content": {"msgtype": "m.text", "body": body, **content},
    }


def general(stack: Stack) -> str:
    return room_id_of(stack, f"#general:{stack.server_name}")


def settled_count(agent: Agent, room: str) -> int:
    """The count once everything sent before now has arrived (for asserting 'not more than'):
    the agent's own sentinel, which its count leaves out, comes after all of it."""
    sentinel(agent, room)
    return agent.count(room)


@pytest.mark.parametrize(
    "method, path",
    [
        ("PUT", "/_matrix/app/v1/transactions/t-auth"),
        ("POST", "/_matrix/app/v1/ping"),
        ("GET", "/_matrix/app/v1/users/%40_ac_x%3Aagent-chat.local"),
        ("GET", "/_matrix/app/v1/rooms/%23general%3Aagent-chat.local"),
    ],
)
@pytest.mark.parametrize("how", ["missing", "wrong", "query"])
def test_homeserver_routes_need_the_hs_token_in_the_header(
    stack: Stack, method: str, path: str, how: str
) -> None:
    a, b = register(stack), register(stack)
    before = settled_count(b, "#general")
    body = {"events": [fake_message(general(stack), a.user_id, "forged")]}
    url = stack.api_url + path
    token: str | None = None
    if how == "wrong":
        token = stack.hs_token[:-1] + ("x" if stack.hs_token[-1] != "x" else "y")
    elif how == "query":
        url += "?access_token=" + quote(stack.hs_token)
    status, data = http_json(method, url, body if method != "GET" else None, token=token)
    assert status == 403 and data["errcode"] == "M_FORBIDDEN", data
    assert settled_count(b, "#general") == before


def test_the_same_transaction_twice_counts_once(any_stack: Stack) -> None:
    a, b = register(any_stack), register(any_stack)
    before = settled_count(b, "#general")
    event = fake_message(general(any_stack), a.user_id, "delivered twice")
    txn = "dup-" + secrets.token_hex(4)
    assert put_transaction(any_stack, txn, [event])[0] == 200
    assert put_transaction(any_stack, txn, [event])[0] == 200
    # The same event inside another transaction is still the same message.
    assert put_transaction(any_stack, txn + "-b", [event])[0] == 200
    assert settled_count(b, "#general") == before + 1
    bodies = [m["body"] for m in b.messages(room="#general", limit=100, mark_read="false")]
    assert bodies.count("delivered twice") == 1


def test_a_reused_txn_id_with_new_contents_is_applied(any_stack: Stack) -> None:
    """Synapse can restart its txnId counter; an old id must not swallow new events."""
    a, b = register(any_stack), register(any_stack)
    before = settled_count(b, "#general")
    txn = "reused-" + secrets.token_hex(4)
    room = general(any_stack)
    assert put_transaction(any_stack, txn, [fake_message(room, a.user_id, "first")])[0] == 200
    assert put_transaction(any_stack, txn, [fake_message(room, a.user_id, "second")])[0] == 200
    assert settled_count(b, "#general") == before + 2


def test_a_reused_txn_id_with_another_receipt_is_applied(any_stack: Stack) -> None:
    """Receipt-only transactions differ only in their ephemeral data: a reused txnId carrying
    another receipt is new, not a repeat (found when a human's read receipt went missing)."""
    a, b = register(any_stack), register(any_stack)
    room = general(any_stack)
    first, second = fake_message(room, a.user_id, "one"), fake_message(room, a.user_id, "two")
    assert put_transaction(any_stack, "msgs-" + secrets.token_hex(4), [first, second])[0] == 200
    wait_for(lambda: b.count("#general") == 2, what="two unread messages")

    def receipt(event_id: str) -> dict[str, Any]:
        return {
            "type": "m.receipt",
            "room_id": room,
            "content": {event_id: {"m.read": {b.user_id: {"ts": 1}}}},
        }

    txn = "rcpt-" + secrets.token_hex(4)
    assert put_transaction(any_stack, txn, [], [receipt(first["event_id"])])[0] == 200
    assert b.count("#general") == 1
    assert put_transaction(any_stack, txn, [], [receipt(second["event_id"])])[0] == 200
    assert b.count("#general") == 0


def test_malformed_events_do_not_stop_the_others(any_stack: Stack) -> None:
    a, b = register(any_stack), register(any_stack)
    before = settled_count(b, "#general")
    room = general(any_stack)
    hostile = "nul\x00 and a lone surrogate \ud800 and ESC\x1b[2J"
    events: list[Any] = [
        "not an event",
        None,
        {"type": "m.room.message"},
        {**fake_message(room, a.user_id, "x"), "content": "not a dict"},
        {**fake_message(room, a.user_id, "x"), "content": {"body": 5, "msgtype": "m.text"}},
        {**fake_message(room, a.user_id, "x"), "room_id": "not-a-room"},
        {**fake_message(room, a.user_id, "x"), "origin_server_ts": "yesterday"},
        {**fake_message(room, a.user_id, "x"), "event_id": "$" + "x" * 400},
        {
            "type": "m.room.member",
            "room_id": room,
            "sender": a.user_id,
            "state_key": 7,
            "content": {"membership": "join"},
        },
        fake_message(room, a.user_id, "good one"),
        fake_message(room, a.user_id, hostile),
    ]
    ephemeral: list[Any] = ["junk", {"type": "m.receipt", "room_id": room, "content": []}]
    status, data = put_transaction(any_stack, "bad-" + secrets.token_hex(4), events, ephemeral)
    assert status == 200, data
    assert settled_count(b, "#general") == before + 2
    bodies = [m["body"] for m in b.messages(room="#general", limit=5)]
    assert "good one" in bodies
    assert hostile in bodies  # stored and returned intact, NUL and all, on either database


def test_non_state_events_never_change_room_config(any_stack: Stack) -> None:
    a = register(any_stack)
    room = general(any_stack)
    forged = [
        {  # a topic change without state_key is a plain message event: ignored
            "type": "m.room.topic",
            "room_id": room,
            "sender": a.user_id,
            "event_id": "$t" + secrets.token_hex(8),
            "origin_server_ts": 1,
            "content": {"topic": "PWNED"},
        },
        {  # a canonical alias with a state_key other than "" is not the room's alias
            "type": "m.room.canonical_alias",
            "room_id": room,
            "sender": a.user_id,
            "state_key": "x",
            "event_id": "$u" + secrets.token_hex(8),
            "origin_server_ts": 1,
            "content": {"alias": f"#pwned:{any_stack.server_name}"},
        },
    ]
    assert put_transaction(any_stack, "state-" + secrets.token_hex(4), forged)[0] == 200
    _status, data = a.call("GET", "/channels")
    general_entry = next(c for c in data["channels"] if c["room_id"] == room)
    assert general_entry["room"] == "#general" and "PWNED" not in str(general_entry["topic"])


def test_appservice_down_then_back_counts_exactly(any_stack: Stack) -> None:
    a, b = register(any_stack), register(any_stack)
    before = settled_count(b, "#status")
    room = room_id_of(any_stack, f"#status:{any_stack.server_name}")
    any_stack.stop_appservice()
    try:
        # The API is down, so send straight to Synapse as the agent (as the appservice would).
        for i in range(5):
            status, data = synapse(
                any_stack,
                "PUT",
                f"/_matrix/client/v3/rooms/{quote(room)}/send/m.room.message/down{secrets.token_hex(4)}",
                {"msgtype": "m.text", "body": f"while you were out {i}"},
                as_user=a.user_id,
            )
            assert status == 200, data
    finally:
        any_stack.start_appservice()
    wait_for(lambda: b.count("#status") == before + 5, timeout=30, what="replayed messages")
    assert settled_count(b, "#status") == before + 5
    bodies = [m["body"] for m in b.messages(room="#status", unread="true")]
    assert bodies == [f"while you were out {i}" for i in range(5)]
    # Identities and tokens survived the restart.
    status, me = a.call("GET", "/whoami")
    assert status == 200 and me["user_id"] == a.user_id


def test_identity_and_counts_survive_a_synapse_restart(stack: Stack) -> None:
    a, b = register(stack), register(stack)
    a.send("#general", "before the restart")
    wait_for(lambda: b.count("#general") >= 1, what="count before")
    before = settled_count(b, "#general")
    stack.restart_synapse()
    assert b.count("#general") == before
    a.send("#general", "after the restart")
    wait_for(lambda: b.count("#general") == before + 1, timeout=30, what="count after")
    status, me = b.call("GET", "/whoami")
    assert status == 200 and me["nick"] == b.nick
