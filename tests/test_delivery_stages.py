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
import os
import secrets
import subprocess
import threading
import time

from agent_chat.setup import hook_script
from helpers import (
    AC,
    Ac,
    Agent,
    McpProcess,
    Stack,
    http_json,
    password_login,
    register,
    spawn,
    start_wake_hook,
    stop,
    unique,
    wait_for,
)

HOOK = hook_script()


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
    covers = f"{entry['latest']}:{entry['room_id']}"
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


def test_the_service_is_no_recipient(any_stack: Stack) -> None:
    """The service's own user is in the rooms it made (#status...) and counted there like
    anyone, but it never reads: it is not listed, so a wait for everyone can end."""
    a, b = register(any_stack), register(any_stack)
    sent = a.send("#status", "[STATUS] " + unique("m"))
    wait_for(lambda: b.count("#status") >= 1, what="the message counted")
    status, data = receipts(a, sent["event_id"])
    assert status == 200, data
    listed = {r["user_id"] for r in data["recipients"]}
    assert b.user_id in listed and a.user_id not in listed
    assert f"@_ac_bot:{any_stack.server_name}" not in listed, data["recipients"]


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
    good = {"stage": "shown", "session": "s", "covers": f"{10**9}:{room_id}"}
    for bad in (
        {**good, "session": "x" * 129},
        {**good, "session": "a\nb"},
        {**good, "session": "a\x1b[31m"},
        {**good, "stage": "read"},
        {**good, "cli": "claude code"},
        {**good, "covers": "1:notaroom"},
        {**good, "covers": [[room_id, 1]]},
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
    token, human = password_login(client, localpart, password)
    sent = a.send(human, "please review " + unique("pr"))
    room = quote(sent["room_id"])
    wait_for(
        lambda: http_json("POST", f"{client}/join/{room}", {}, token)[0] == 200,
        what="the human joins the DM",
    )
    wait_for(lambda: receipts(a, sent["event_id"])[0] == 200, what="the DM stored")
    assert stage_of(a, sent["event_id"], Agent("", human, "", "")) == "counted"
    event = quote(sent["event_id"])
    status, _ = http_json("POST", f"{client}/rooms/{room}/receipt/m.read/{event}", {}, token)
    assert status == 200
    wait_for(
        lambda: stage_of(a, sent["event_id"], Agent("", human, "", "")) == "read",
        what="the human's receipt as read",
    )


# --- the real pieces: hook script, ac wait --session, ac listen, ac receipts, ac send --wait ---


def hook_env(ac: Ac, **extra: str) -> dict[str, str]:
    """The environment an agent CLI gives its hooks (here: Claude Code's)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AGENT_CHAT_", "CLAUDE"))}
    env.update(AGENT_CHAT_HOME=str(ac.home), AGENT_CHAT_SERVER=ac.server)
    env.update(AGENT_CHAT_HOOK_TTL="0", CLAUDE_PROJECT_DIR="/w")
    env.update(extra)
    return env


def run_hook(ac: Ac, sid: str, *args: str) -> subprocess.CompletedProcess[str]:
    stdin = json.dumps(
        {"session_id": sid, "hook_event_name": "UserPromptSubmit", "cwd": "/src/webshop"}
    )
    return subprocess.run(
        ["sh", HOOK, *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=hook_env(ac),
        timeout=20,
    )


def agents(stack: Stack, tmp_path: Path) -> tuple[Ac, str, Ac, str]:
    sender, recipient = (Ac(tmp_path / n, stack.api_url, stack.registration_token) for n in "sr")
    s_nick, r_nick = unique("Sender"), unique("Recipient")
    sender.ok("register", s_nick)
    recipient.ok("register", r_nick)
    return sender, s_nick, recipient, r_nick


def receipts_json(ac: Ac, *args: str) -> dict[str, Any]:
    return json.loads(ac.ok("receipts", *args, "--json"))


def test_a_dm_goes_counted_shown_woken_read(any_stack: Stack, tmp_path: Path) -> None:
    sender, s_nick, recipient, r_nick = agents(any_stack, tmp_path)
    sent = json.loads(sender.ok("send", "@" + r_nick, "first", "--json"))
    wait_for(lambda: recipient.ok("notify", "--oneline").strip(), what="the DM counted")
    (r,) = receipts_json(sender, sent["event_id"])["recipients"]
    assert r["stage"] == "counted"
    # A hook run prints the line into the session's context: shown, with session and CLI.
    hook = run_hook(recipient, "sess-1")
    assert hook.returncode == 0 and f"@{s_nick}(1)" in hook.stdout, hook
    shown = wait_for(
        lambda: receipts_json(sender, "--last", "@" + r_nick)["recipients"][0]["stages"].get(
            "shown"
        ),
        what="shown recorded by the hook's background report",
    )
    assert shown["session"] == "sess-1" and shown["cli"] == "claude"
    assert "shown" in sender.ok("receipts", "--last")
    # The same line again is not printed again (and reports nothing more).
    assert run_hook(recipient, "sess-1").stdout == ""
    # The wake hook: waits in ac wait --session; a new DM ends it with exit 2: woken.
    waker = start_wake_hook(hook_env(recipient), "sess-1")
    try:
        wait_for(
            lambda: presence_state(sender, r_nick) == "idle · wakeable",
            what="the wake waiter seen as idle · wakeable",
        )
        second = json.loads(sender.ok("send", "@" + r_nick, "second", "--json"))
        assert waker.wait(60) == 2
    finally:
        stop(waker)
    woken = wait_for(
        lambda: receipts_json(sender, second["event_id"])["recipients"][0]["stages"].get("woken"),
        what="woken recorded",
    )
    assert woken["session"] == "sess-1" and woken["cli"] == "claude"
    # Reading returns the bodies: read. send --wait read ends when the recipient reads.
    third = spawn(
        [AC, "send", "@" + r_nick, "third", "--wait", "read", "--timeout", "60"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=sender.env(),
    )
    try:
        wait_for(lambda: "third" in recipient.ok("listen", "--peek"), what="the third DM")
        recipient.ok("listen", "@" + s_nick)
        out, err = third.communicate(timeout=60)
        assert third.returncode == 0, (out, err)
    finally:
        stop(third)
    assert f"{r_nick}: read" in out
    for event_id in (sent["event_id"], second["event_id"]):
        (r,) = receipts_json(sender, event_id)["recipients"]
        assert r["stage"] == "read" and list(r["stages"]) == ["counted", "shown", "woken", "read"]
    # The sender's own messages in `ac listen --json` carry the same.
    mine = sender.listen_json("@" + r_nick)
    assert [m["receipts"][0]["stage"] for m in mine if m["body"] in ("first", "third")] == [
        "read",
        "read",
    ]


def presence_state(ac: Ac, nick: str) -> str | None:
    """The state ``ac who`` shows for ``nick`` (in the direct chat with it)."""
    data = json.loads(ac.ok("who", "@" + nick, "--json"))
    (member,) = [m for m in data["members"] if m["display_name"] == nick]
    return member.get("presence", {}).get("state")


def test_send_wait_times_out_with_the_stage_reached(any_stack: Stack, tmp_path: Path) -> None:
    sender, _, _, r_nick = agents(any_stack, tmp_path)
    r = sender("send", "@" + r_nick, "anyone?", "--wait", "shown", "--timeout", "1")
    assert r.returncode == 5, r
    assert f"{r_nick}: counted" in r.stdout and "within 1 s" in r.stderr
    r = sender("send", "@" + r_nick, "again", "--wait", "shown", "--timeout", "0.5", "--json")
    assert r.returncode == 5
    data = json.loads(r.stdout)
    assert data["receipts"]["reached"] is False
    assert data["receipts"]["recipients"][0]["stage"] == "counted"


def test_send_wait_bad_input_sends_nothing(any_stack: Stack, tmp_path: Path) -> None:
    sender, _, _, _ = agents(any_stack, tmp_path)
    room = "#" + unique("stages-")
    sender.ok("create-room", room)
    for args in (
        ("--wait", "delivered"),
        ("--wait", "read", "--for", "Nobody" + unique("x")),
        ("--timeout", "3"),
    ):
        r = sender("send", room, "should not be sent", *args)
        assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1, r
    assert "should not be sent" not in sender.ok("listen", room, "--peek")
    r = sender("receipts", "$nosuchevent")
    assert r.returncode == 1 and "no such message" in r.stderr
    r = sender("receipts")
    assert r.returncode == 1


def test_mcp_notify_reports_shown(any_stack: Stack, tmp_path: Path) -> None:
    """The MCP notify tool's answer goes into the model's context: shown, by cli mcp."""
    sender, _, recipient, r_nick = agents(any_stack, tmp_path)
    sent = json.loads(sender.ok("send", "@" + r_nick, "over MCP", "--json"))
    wait_for(lambda: recipient.ok("notify", "--oneline").strip(), what="the DM counted")
    server = McpProcess(recipient.env())
    try:
        server.initialize()
        text, error = server.call("notify")
        assert not error and "1 direct message" in text, text
    finally:
        server.close()
    (r,) = receipts_json(sender, sent["event_id"])["recipients"]
    assert r["stage"] == "shown" and r["stages"]["shown"]["cli"] == "mcp"


def test_mcp_send_waits_for_a_stage(any_stack: Stack, tmp_path: Path) -> None:
    """The MCP send tool's wait: says who reached what, or that not everyone did."""
    sender, _, _, r_nick = agents(any_stack, tmp_path)
    server = McpProcess(sender.env())
    try:
        server.initialize()
        text, error = server.call("send", to="@" + r_nick, message="hi", wait="read", timeout=1)
        assert not error and "not every recipient is read yet" in text, text
        assert f"{r_nick}: counted" in text
        text, error = server.call("send", to="@" + r_nick, message="x", wait="heard")
        assert error and "wait is shown, woken or read" in text
    finally:
        server.close()


def test_an_ask_answer_and_a_search_hit_move_read(any_stack: Stack, tmp_path: Path) -> None:
    """Bodies returned outside ``ac listen`` are read: the answer ``ac ask`` prints, a search
    hit; a hit behind an unread message that was not shown marks nothing."""
    asker, a_nick, peer, p_nick = agents(any_stack, tmp_path)
    asker.ok("send", "@" + p_nick, "hello")  # the direct chat
    peer.ok("listen")
    ask = spawn(
        [AC, "ask", "@" + p_nick, "which port?", "--timeout", "60"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=asker.env(),
    )
    try:
        wait_for(lambda: peer.ok("notify", "--oneline").strip(), what="the question counted")
        peer.ok("send", "@" + a_nick, "port 8443")
        out, err = ask.communicate(timeout=60)
        assert ask.returncode == 0 and "port 8443" in out, (out, err)
    finally:
        stop(ask)
    last = receipts_json(peer, "--last", "@" + a_nick)["recipients"][0]
    assert last["stage"] == "read", last
    # Search: the hit that is the oldest unread message is read; one behind an unread
    # message the search did not show stays as it was.
    hit = json.loads(peer.ok("send", "@" + a_nick, "the zebracorn build is green", "--json"))
    wait_for(
        lambda: "zebracorn" in asker.ok("search", "zebracorn", "--json"), what="the hit indexed"
    )
    assert receipts_json(peer, hit["event_id"])["recipients"][0]["stage"] == "read"
    peer.ok("send", "@" + a_nick, "lunch at noon?")
    behind = json.loads(peer.ok("send", "@" + a_nick, "the okapiwhale deploy", "--json"))
    wait_for(lambda: "okapiwhale" in asker.ok("search", "okapiwhale", "--json"), what="indexed")
    assert receipts_json(peer, behind["event_id"])["recipients"][0]["stage"] == "counted"
    assert "lunch at noon?" in asker.ok("listen")  # listen still shows what search did not
