"""Delivery stages a sender can see: counted → shown → woken → read, on the real stack.

A DM goes through the real pieces: the hook script (``ac-hook.sh``, stdin JSON as the agent CLIs
give it) shows a line, ``ac wait --session`` wakes, ``ac listen`` reads; the sender follows it
with ``ac receipts`` and ends ``ac send --wait``. Both databases (``any_stack``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote
import json
import secrets
import threading
import time

from agent_chat.setup import hook_script
from conftest import Stack
from helpers import Agent, http_json, register, unique, wait_for

HOOK = hook_script()
ROOT = Path(__file__).resolve().parent.parent


def receipts(agent: Agent, event_id: str, **query: str) -> tuple[int, Any]:
    qs = "&".join(f"{k}={quote(v)}" for k, v in {"event": event_id, **query}.items())
    return agent.call("GET", f"/receipts?{qs}", timeout=30)


def stage_of(agent: Agent, event_id: str, recipient: Agent) -> str:
    status, data = receipts(agent, event_id)
    assert status == 200, data
    (found,) = [r for r in data["recipients"] if r["user_id"] == recipient.user_id]
    return str(found["stage"])


def dm(stack: Stack) -> tuple[Agent, Agent, str]:
    """A sender, a recipient, and the event id of a DM the recipient has counted."""
    a, b = register(stack), register(stack)
    sent = a.send(b.user_id, "hello " + unique("m"))
    wait_for(lambda: b.count("@" + a.nick) == 1, what="the DM counted")
    return a, b, sent["event_id"]


def test_stages_through_the_api(any_stack: Stack) -> None:
    """counted, then shown/woken reported by the recipient's session, then read by reading:
    each with its time, and shown/woken with session and CLI."""
    a, b, event_id = dm(any_stack)
    status, data = receipts(a, event_id)
    assert status == 200, data
    (r,) = data["recipients"]
    assert (r["user_id"], r["stage"], data["reached"]) == (b.user_id, "counted", False)
    # The recipient's notify line carries what it covers; its session reports it shown.
    status, notify = b.call("GET", "/notify")
    (entry,) = [u for u in notify["unread"] if u["room"] == "@" + a.nick]
    covers = [[entry["room_id"], entry["latest"]]]
    status, out = b.call(
        "POST", "/stages", {"stage": "shown", "session": "s-1", "cli": "claude", "covers": covers}
    )
    assert status == 200 and out["recorded"], out
    status, data = receipts(a, event_id)
    (r,) = data["recipients"]
    assert r["stage"] == "shown"
    assert r["stages"]["shown"]["session"] == "s-1" and r["stages"]["shown"]["cli"] == "claude"
    status, out = b.call(
        "POST", "/stages", {"stage": "woken", "session": "s-1", "cli": "claude", "covers": covers}
    )
    assert stage_of(a, event_id, b) == "woken"
    b.messages(room=a.user_id)  # reads (marks read)
    status, data = receipts(a, event_id)
    (r,) = data["recipients"]
    assert r["stage"] == "read" and r["at"] and data["reached"]
    assert list(r["stages"]) == ["counted", "shown", "woken", "read"]


def test_wait_for_read_is_answered_when_the_recipient_reads(any_stack: Stack) -> None:
    a, b, event_id = dm(any_stack)
    result: dict[str, Any] = {}

    def waiting() -> None:
        result["answer"] = receipts(a, event_id, wait="60", stage="read")

    t = threading.Thread(target=waiting)
    t.start()
    time.sleep(0.3)  # not a timing assertion: the wait merely starts before the read
    assert t.is_alive()
    b.messages(room=a.user_id)
    t.join(30)
    status, data = result["answer"]
    assert status == 200 and data["reached"] and data["recipients"][0]["stage"] == "read"


def test_wait_times_out_with_the_stage_reached(any_stack: Stack) -> None:
    a, _, event_id = dm(any_stack)
    status, data = receipts(a, event_id, wait="0.5", stage="read")
    assert status == 200 and data["reached"] is False
    assert data["recipients"][0]["stage"] == "counted"


def test_receipts_reveal_nothing_of_others_messages(any_stack: Stack) -> None:
    """Not your message, not your room, no such event: the same 404."""
    a, b, event_id = dm(any_stack)
    outsider = register(any_stack)
    answers = [
        receipts(outsider, event_id),  # a room it is not in
        receipts(b, event_id),  # in the room, but not its message
        receipts(a, "$nosuchevent"),
    ]
    assert [s for s, _ in answers] == [404, 404, 404]
    assert len({json.dumps(d, sort_keys=True) for _, d in answers}) == 1


def test_bad_reports_are_refused(any_stack: Stack) -> None:
    a, b, event_id = dm(any_stack)
    status, notify = b.call("GET", "/notify")
    room_id = notify["unread"][0]["room_id"]
    good = {"stage": "shown", "session": "s", "covers": [[room_id, 10**9]]}
    for bad in (
        {**good, "session": "x" * 129},
        {**good, "session": "a\nb"},
        {**good, "session": "a\x1b[31m"},
        {**good, "stage": "read"},
        {**good, "cli": "claude code"},
        {**good, "covers": [["notaroom", 1]]},
    ):
        status, data = b.call("POST", "/stages", bad)
        assert status == 400, (bad, data)
    assert stage_of(a, event_id, b) == "counted"
    # Reported by someone else (the outsider) for a room it is not in: nothing moves.
    outsider = register(any_stack)
    status, out = outsider.call("POST", "/stages", good)
    assert status == 200 and out["recorded"] == []
    assert stage_of(a, event_id, b) == "counted"
    # A report cannot claim past the room's newest message.
    status, out = b.call("POST", "/stages", good)
    assert out["recorded"][0]["pos"] < 10**9
    status, data = receipts(a, event_id, stage="heard")
    assert status == 400


def test_a_humans_read_receipt_moves_read(any_stack: Stack) -> None:
    """A human in Element sends m.read for the agent's DM: the agent sees ``read``."""
    a = register(any_stack)
    localpart, password = unique("reader"), secrets.token_urlsafe(12)
    any_stack.create_human(localpart, password)
    client = any_stack.synapse_url + "/_matrix/client/v3"
    login = {
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": localpart},
        "password": password,
    }
    status, data = http_json("POST", client + "/login", login)
    assert status == 200, data
    token, human = data["access_token"], data["user_id"]
    sent = a.send(human, "please review " + unique("pr"))
    room = quote(sent["room_id"])
    wait_for(
        lambda: http_json("POST", f"{client}/join/{room}", {}, token)[0] == 200,
        what="the human joins the DM",
    )
    assert stage_of(a, sent["event_id"], Agent("", human, "", "")) == "counted"
    event = quote(sent["event_id"])
    status, _ = http_json("POST", f"{client}/rooms/{room}/receipt/m.read/{event}", {}, token)
    assert status == 200
    wait_for(
        lambda: stage_of(a, sent["event_id"], Agent("", human, "", "")) == "read",
        what="the human's receipt as read",
    )
