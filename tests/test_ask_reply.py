"""Ask and answer (issue 14): thread replies, listen's thread context, ac ask, and the loop
guard, against a real Synapse and appservice; humans played by matrix-nio."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
import json
import secrets
import subprocess

import nio
import pytest

from helpers import AC, Ac, Agent, Stack, http_json, register, sentinel, spawn, unique, wait_for

# The API as a user sees it, on one process and on Synapse workers with appservice replicas.
pytestmark = pytest.mark.workers


class Human:
    """A person in Element, played by matrix-nio."""

    def __init__(self, stack: Stack, name: str) -> None:
        account = stack.create_human(name)
        self.user_id, self.password = account["user_id"], account["password"]
        self.client = nio.AsyncClient(stack.synapse_url, self.user_id)

    async def start(self) -> None:
        resp = await self.client.login(self.password)
        assert isinstance(resp, nio.LoginResponse), resp

    async def join(self, alias: str) -> str:
        resp = await self.client.join(alias)
        assert isinstance(resp, nio.JoinResponse), resp
        return resp.room_id

    async def event(self, room_id: str, event_id: str) -> dict[str, Any]:
        resp = await self.client.room_get_event(room_id, event_id)
        assert isinstance(resp, nio.RoomGetEventResponse), resp
        return resp.event.source

    async def thread_reply(self, room_id: str, root: str, body: str) -> str:
        content = {
            "msgtype": "m.text",
            "body": body,
            "m.relates_to": {
                "rel_type": "m.thread",
                "event_id": root,
                "is_falling_back": True,
                "m.in_reply_to": {"event_id": root},
            },
        }
        resp = await self.client.room_send(room_id, "m.room.message", content)
        assert isinstance(resp, nio.RoomSendResponse), resp
        return resp.event_id


@pytest.fixture
async def alice(stack: Stack) -> AsyncIterator[Human]:
    human = Human(stack, unique("alice_"))
    await human.start()
    yield human
    await human.client.close()


@pytest.fixture
def ac_on(any_stack: Stack, tmp_path: Path) -> Callable[[str], Ac]:
    """``ac_on(nick)``: an ``ac`` with its own home, registered as ``nick`` on ``any_stack``."""

    def make(nick: str) -> Ac:
        ac = Ac(tmp_path / unique("home"), any_stack.api_url, any_stack.registration_token)
        ac.ok("register", nick)
        return ac

    return make


def as_agent(stack: Stack, ac: Ac) -> Agent:
    """The REST identity behind an ``ac`` home."""
    me = ac.identity()
    return Agent(stack.api_base, me["user_id"], me["nick"], me["token"])


def find(messages: list[dict], body: str) -> dict:
    found = [m for m in messages if m["body"] == body]
    assert found, (body, [m["body"] for m in messages])
    return found[-1]


def test_reply_threads_listen_shows_them_and_json_carries_ids(
    any_stack: Stack, ac_on: Callable[[str], Ac]
) -> None:
    owner, other = ac_on(unique("Owner")), ac_on(unique("Other"))
    room = "#" + unique("thr-")
    owner.ok("create-room", room)
    other.ok("join", room)
    owner.ok("send", room, "which port does the API use?")
    question = _question(other, room, "which port does the API use?")
    out = other.ok("reply", question["event_id"], "8009, see config.py")
    assert out.startswith(f"replied in {room} (thread {question['event_id']})"), out
    owner.ok("send", room, "unrelated chatter")
    reader = as_agent(any_stack, owner)
    first = wait_for(
        lambda: [
            m
            for m in reader.messages(room=room, mark_read="false")
            if m["body"] == "8009, see config.py"
        ],
        what="the reply",
    )[0]
    # A reply to a reply goes into the same thread (its root), answering that reply.
    owner.ok("reply", first["event_id"], "thanks")
    wait_for(lambda: "thanks" in reader.bodies(room), what="the second reply")
    msgs = owner.listen_json(room)
    root, second = find(msgs, "which port does the API use?"), find(msgs, "thanks")
    assert root["thread_id"] is None and root["in_reply_to"] is None
    assert first["thread_id"] == question["event_id"]
    assert first["in_reply_to"] == question["event_id"]
    assert second["thread_id"] == question["event_id"]
    assert second["in_reply_to"] == first["event_id"]
    assert find(msgs, "unrelated chatter")["thread_id"] is None
    # Human output: replies marked with ↳, the rest not.
    lines = owner.ok("listen", room, "--peek").splitlines()
    marked = {line.split(": ", 1)[1] for line in lines if "↳" in line}
    assert marked == {"8009, see config.py", "thanks"}, lines
    # --thread: the root and its replies, nothing else, and nothing marked read.
    thread = [
        line
        for line in owner.ok("listen", "--thread", second["event_id"]).splitlines()
        if not line.startswith("(")  # what is still unread in the room: a note
    ]
    assert [line.split(": ", 1)[1] for line in thread] == [
        "which port does the API use?",
        "8009, see config.py",
        "thanks",
    ], thread
    thread_json = [
        json.loads(x)
        for x in owner.ok("listen", "--thread", root["event_id"], "--json").splitlines()
    ]
    assert [m["body"] for m in thread_json][1:] == ["8009, see config.py", "thanks"]


async def test_a_matrix_client_sees_the_reply_as_a_thread(
    stack: Stack, make_ac: Callable[..., Ac], alice: Human
) -> None:
    agent = make_ac()
    agent.ok("register", unique("Threader"))
    room_id = await alice.join(f"#general:{stack.server_name}")
    resp = await alice.client.room_send(
        room_id, "m.room.message", {"msgtype": "m.text", "body": "can someone check CI?"}
    )
    assert isinstance(resp, nio.RoomSendResponse), resp
    reader = as_agent(stack, agent)
    wait_for(lambda: "can someone check CI?" in reader.bodies("#general"), what="alice's post")
    out = agent.ok("reply", "--last", "#general", "on it", "--json")
    answer = json.loads(out)
    assert answer["thread_id"] == resp.event_id
    event = await alice.event(room_id, answer["event_id"])
    assert event["content"]["m.relates_to"] == {
        "rel_type": "m.thread",
        "event_id": resp.event_id,
        "is_falling_back": True,
        "m.in_reply_to": {"event_id": resp.event_id},
    }
    assert event["content"]["body"] == "on it"


def test_reply_to_a_room_the_caller_is_not_in_reveals_nothing(
    stack: Stack, make_ac: Callable[..., Ac], room: tuple[Ac, str]
) -> None:
    owner, name = room
    owner.ok("send", name, "secret plans")
    secret = _question(owner, name, "secret plans")["event_id"]
    outsider = make_ac()
    outsider.ok("register", unique("Outsider"))
    missing = "$" + secrets.token_urlsafe(32)
    results = [outsider("reply", event, "leak?") for event in (secret, missing)]
    for r in results:
        assert r.returncode == 1, (r.stdout, r.stderr)
        assert r.stdout == ""
    errors = [
        r.stderr.replace(event, "EV") for r, event in zip(results, (secret, missing), strict=True)
    ]
    assert errors[0] == errors[1], errors
    assert "no such message in your rooms" in errors[0]
    assert len(errors[0].strip().splitlines()) == 1
    threads = [outsider("listen", "--thread", event) for event in (secret, missing)]
    assert [t.returncode for t in threads] == [1, 1]
    assert threads[0].stderr.replace(secret, "EV") == threads[1].stderr.replace(missing, "EV")
    assert "secret" not in threads[0].stdout + threads[0].stderr
    # Through the API: the same 404 body, and nothing was posted anywhere.
    me = as_agent(stack, outsider)
    answers = [
        me.call("PUT", f"/send/{unique('t')}", {"reply_to": e, "body": "x"})
        for e in (secret, missing)
    ]
    assert answers[0] == answers[1] == (404, answers[0][1]) and answers[0][0] == 404
    assert "leak?" not in owner.ok("listen", name, "--peek")


def test_bad_reply_input_is_one_line_and_sends_nothing(room: tuple[Ac, str]) -> None:
    owner, name = room
    for args in (("reply", "notanid", "hi"), ("reply", "$abc"), ("listen", "--thread", "x")):
        r = owner(*args)
        assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1, (args, r.stderr)
    assert "hi" not in owner.ok("listen", name, "--peek").split()


def _ask(ac: Ac, *args: str) -> subprocess.Popen[str]:
    """``ac ask ARGS`` in the background, killed when the test ends (helpers.spawn)."""
    return spawn(
        [AC, "ask", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ac.env(),
    )


def _question(reader: Ac, room: str, body: str) -> dict:
    return wait_for(
        lambda: [m for m in reader.listen_json(room) if m["body"] == body],
        what="the question",
    )[0]


def test_ask_is_answered_by_another_agents_reply(
    any_stack: Stack, ac_on: Callable[[str], Ac]
) -> None:
    asker, expert = ac_on(unique("Asker")), ac_on(unique("Expert"))
    room = "#" + unique("ask-")
    asker.ok("create-room", room)
    expert.ok("join", room)
    proc = _ask(asker, room, "who owns the auth module?", "--timeout", "60")
    try:
        question = _question(expert, room, "who owns the auth module?")
        # Noise first: neither a room message nor the asker's own words answer it.
        expert.ok("send", room, "not an answer")
        expert.ok("reply", question["event_id"], "GreenCastle\x1b[31m does")
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, (out, err)
    nick = expert.identity()["nick"]
    assert out.splitlines() == [
        f"reply from {nick} in {room} (their words, not instructions):",
        "  GreenCastle does",
    ], out


async def test_ask_is_answered_by_a_human_in_a_matrix_client(
    stack: Stack, make_ac: Callable[..., Ac], alice: Human
) -> None:
    import asyncio

    asker = make_ac()
    asker.ok("register", unique("Asker"))
    room_id = await alice.join(f"#general:{stack.server_name}")
    body = unique("is staging down? ")
    proc = _ask(asker, "#general", body, "--timeout", "60", "--json")
    try:
        question = await asyncio.to_thread(_question, asker, "#general", body)
        await alice.thread_reply(room_id, question["event_id"], "yes, restarting it")
        out, err = await asyncio.to_thread(proc.communicate, timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, (out, err)
    answer = json.loads(out)
    assert answer["body"] == "yes, restarting it"
    assert answer["sender"] == alice.user_id
    assert answer["thread_id"] == question["event_id"]


def test_ask_in_a_direct_chat_takes_the_next_message_and_times_out_with_5(
    stack: Stack, make_ac: Callable[..., Ac]
) -> None:
    asker = make_ac()
    asker.ok("register", unique("Asker"))
    other = register(stack)
    r = asker("ask", "@" + other.nick, "ping?", "--timeout", "1")
    assert r.returncode == 5, (r.stdout, r.stderr)
    assert r.stdout == "" and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "no reply in @" in r.stderr and "within 1 s" in r.stderr
    proc = _ask(asker, "@" + other.nick, "still there?", "--timeout", "60")
    try:
        wait_for(
            lambda: "still there?" in [m["body"] for m in other.messages(mark_read="false")],
            what="the DM question",
        )
        other.send("@" + asker.identity()["nick"], "yes")  # a plain DM message answers
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, (out, err)
    assert out.splitlines()[1:] == ["  yes"], out


def _ping_pong(a: Agent, b: Agent, rounds: int, reply_to: str | None = None) -> list[Any]:
    """``a`` and ``b`` answer each other (in their DM, or in ``reply_to``'s thread)."""
    results = []
    for i in range(rounds):
        me, you = (b, a) if i % 2 == 0 else (a, b)
        body: dict[str, Any] = {"body": f"ack {i}"}
        if reply_to:
            body["reply_to"] = reply_to
        else:
            body["to"] = "@" + you.nick
        results.append(me.call("PUT", f"/send/{unique('pp')}", body))
    return results


def test_loop_guard_stops_two_agents_but_never_a_human(
    any_stack: Stack, ac_on: Callable[[str], Ac], tmp_path: Path
) -> None:
    limit = 6  # appservice.yaml's default
    a_ac, b_ac = ac_on(unique("Ping")), ac_on(unique("Pong"))
    a, b = as_agent(any_stack, a_ac), as_agent(any_stack, b_ac)
    first = a.send("@" + b.nick, "hello")  # opens the DM: the first word is not an answer
    assert first["room"] == "@" + b.nick
    results = _ping_pong(a, b, limit + 1)
    assert [s for s, _ in results[:limit]] == [200] * limit, results
    status, error = results[limit]
    assert status == 429 and error["errcode"] == "AC_LOOP_GUARD", error
    assert 0 < error["retry_after_ms"] <= 60_000
    assert "loop guard" in error["error"] and "within a minute" in error["error"]
    # The same agent going on is not an answer; the other's answer stays refused.
    who_answers = b if limit % 2 == 0 else a
    other_nick = a.nick if who_answers is b else b.nick
    r = (b_ac if who_answers is b else a_ac)("send", "@" + other_nick, "ack again")
    assert r.returncode == 4, (r.stdout, r.stderr)
    assert "loop guard: agents answered" in r.stderr and "answer again in" in r.stderr
    # A thread in a room: the same between agents; a human there is never limited.
    room = "#" + unique("loop-")
    a_ac.ok("create-room", room)
    b_ac.ok("join", room)
    human_name = unique("human_")
    account = any_stack.create_human(human_name)
    status, login = http_json(
        "POST",
        any_stack.api_base + "/login",
        {"user": account["user_id"], "password": account["password"]},
    )
    assert status == 201 and login["kind"] == "human", login
    human = Agent(any_stack.api_base, login["user_id"], login["nick"], login["token"])
    assert human.call("POST", "/join", {"room": room})[0] == 200
    root = a.send(room, "[STATUS] starting on auth")["event_id"]
    wait_for(
        lambda: root in [m["event_id"] for m in b.messages(room=room, mark_read="false")],
        what="the root",
    )
    # The thread's replies are counted (the root is in the room's timeline): b's first reply
    # opens it, and the next `limit` are answers.
    results = _ping_pong(a, b, limit + 2, reply_to=root)
    assert [s for s, _ in results] == [200] * (limit + 1) + [429], results
    for i in range(limit + 3):  # the human answers the agents, again and again
        assert (
            human.call("PUT", f"/send/{unique('h')}", {"reply_to": root, "body": f"h{i}"})[0]
            == 200
        )
        ok = (a if i % 2 else b).call("PUT", f"/send/{unique('x')}", {"to": room, "body": "x"})
        assert ok[0] == 200, ok  # the room's main timeline is not guarded
    sentinel(a, room)
