"""Per-caller state stays bounded, background work is drained on stop, the start-up ping says
when it gives up (unit tests, no Synapse); and against the real stack, a request body nested
too deep or holding NUL or control characters is a one-line 400 before anything is done."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any
import asyncio
import json
import logging
import urllib.error
import urllib.request

import pytest

from agent_chat_appservice.api.base import Context, RateLimiter
from agent_chat_appservice.background import Background
from agent_chat_appservice.config import Config
from agent_chat_appservice.recent import RecentMap
from helpers import (
    Stack,
    agent_chat_server,
    register,
    sentinel,
    shared_room,
    synapse,
    unique,
    wait_for,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_recent_map_forgets_the_old_and_keeps_at_most_cap() -> None:
    clock = Clock()
    recent: RecentMap[str, int] = RecentMap(max_age=10, cap=3, clock=clock)
    for i in range(5):
        recent.set(f"k{i}", i)
    assert len(recent) == 3 and recent.get("k0") is None and recent.get("k4") == (4, 1000.0)
    recent.set("k2", 22)  # set again: now the newest, so k3 is the oldest
    recent.set("k5", 5)
    assert recent.get("k3") is None and recent.get("k2") == (22, 1000.0)
    clock.now += 10
    assert recent.get("k5") is None  # too old to answer, even before it is dropped
    recent.set("k6", 6)
    assert len(recent) == 1


def test_rate_limiter_keeps_no_bucket_per_caller_ever_seen() -> None:
    clock = Clock()
    limiter = RateLimiter(per_second=1.0, burst=3, cap=100, clock=clock)
    for i in range(10_000):
        assert limiter.check(f"@caller{i}:x") is None
    assert len(limiter) == 100
    # A bucket idle long enough to refill is dropped: the caller starts again with a full one.
    clock.now += 3
    assert limiter.check("@new:x") is None
    assert len(limiter) == 1


def test_rate_limiter_still_limits_a_busy_caller_among_many() -> None:
    clock = Clock()
    limiter = RateLimiter(per_second=1.0, burst=3, cap=100, clock=clock)
    assert [limiter.check("@busy:x") for _ in range(3)] == [None, None, None]
    for i in range(50):
        limiter.check(f"@other{i}:x")
    assert limiter.check("@busy:x") == 1001  # ms until one token has refilled
    clock.now += 1
    assert limiter.check("@busy:x") is None


def test_context_remembers_at_most_cap_recently_active_callers() -> None:
    touched: list[str] = []

    class FakeIdentity:
        def __init__(self, user_id: str) -> None:
            self.user_id = user_id

        async def touch(self) -> None:
            touched.append(self.user_id)

    clock = Clock()
    context = Context(
        config=None,  # touch needs none of these
        hs=None,
        rooms=None,
        identities=None,
        send_limiter=RateLimiter(1.0, 1),
        _touched=RecentMap(60.0, 50, clock),
    )

    async def scenario() -> None:
        for i in range(1000):
            await context.touch(FakeIdentity(f"@a{i}:x"))
        assert len(context._touched) == 50
        touched.clear()
        await context.touch(FakeIdentity("@a999:x"))
        assert touched == []  # touched within the minute: no write
        clock.now += 60
        await context.touch(FakeIdentity("@a999:x"))
        assert touched == ["@a999:x"]

    asyncio.run(scenario())


def test_drain_finishes_work_cancels_loops_and_bounds_the_wait(
    caplog: pytest.LogCaptureFixture,
) -> None:
    done: list[str] = []

    async def work(name: str, seconds: float) -> None:
        await asyncio.sleep(seconds)
        done.append(name)

    async def forever() -> None:
        await asyncio.Event().wait()

    async def failing() -> None:
        raise RuntimeError("boom")

    async def scenario() -> None:
        background = Background()
        loop = background.spawn(forever(), loop=True)
        background.spawn(work("receipt", 0.05))
        slow = background.spawn(work("slow", 30))
        background.spawn(failing())
        await asyncio.sleep(0)
        started = asyncio.get_running_loop().time()
        await background.drain(timeout=0.5)
        assert asyncio.get_running_loop().time() - started < 5
        assert done == ["receipt"]
        assert loop.cancelled() and slow.cancelled()
        assert len(background) == 0

    with caplog.at_level(logging.WARNING, logger="agent_chat.background"):
        asyncio.run(scenario())
    messages = [r.getMessage() for r in caplog.records]
    assert any("failed" in m for m in messages), messages
    assert any("1 background task(s) still running" in m for m in messages), messages


def test_start_up_ping_says_when_it_gives_up(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from agent_chat_appservice import service as service_module

    config = Config(
        server_name="x",
        homeserver_url="http://127.0.0.1:9",
        as_token="as",
        hs_token="hs",
        registration_token="reg",
        database="sqlite::memory:",
    )
    svc = service_module.AgentChatService(config)

    async def refuse() -> int:
        raise ConnectionRefusedError("connection refused")

    async def no_sleep(_: float) -> None:
        return None

    svc.hs = SimpleNamespace(ping=refuse)
    monkeypatch.setattr(service_module.asyncio, "sleep", no_sleep)
    with caplog.at_level(logging.WARNING, logger="agent_chat.service"):
        asyncio.run(svc._ping_homeserver(attempts=3))
    warnings: list[Any] = [r.getMessage() for r in caplog.records]
    assert any("failed 3 times, giving up" in m and "refused" in m for m in warnings), warnings


# --- request bodies: deep nesting, NUL and controls are a 400 before anything is done ------
# (issue 21, item 15: 30,000 nested '[' was a 500 with a traceback on public routes, and a NUL
# in a room's alias or topic a 500 with the room half-created on PostgreSQL)


def _post_raw(url: str, data: bytes, token: str | None = None) -> tuple[int, Any]:
    """POST bytes as they are (json.dumps cannot write a body nested 30,000 deep)."""
    req = urllib.request.Request(url, data=data, method="POST")
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def _one_line_400(status: int, body: Any) -> None:
    assert status == 400, (status, body)
    assert body["error"] and "\n" not in body["error"], body


def _joined_rooms(stack: Stack, user_id: str) -> set[str]:
    status, data = synapse(stack, "GET", "/_matrix/client/v3/joined_rooms", as_user=user_id)
    assert status == 200, data
    return set(data["joined_rooms"])


def test_deep_nesting_is_400_on_public_and_agent_routes(any_stack: Stack) -> None:
    deep = b"[" * 30_000
    for route in ("/register", "/login"):
        _one_line_400(*_post_raw(any_stack.api_base + route, deep))
    agent = register(any_stack)
    nested = b'{"alias": "#x", "topic": ' + b"[" * 100 + b"]" * 100 + b"}"
    for route in ("/rooms", "/claims", "/claims/check"):
        status, body = _post_raw(any_stack.api_base + route, nested, agent.token)
        _one_line_400(status, body)
        assert "nests deeper than" in body["error"], body
    status, body = _post_raw(any_stack.api_base + "/rooms", deep, agent.token)
    _one_line_400(status, body)
    # a legitimate body nested a little is still fine
    status, body = agent.call("POST", "/rooms", {"alias": "#" + unique("nest-"), "x": [[["ok"]]]})
    assert status == 201, body


@pytest.mark.parametrize(
    "fields",
    [
        {"alias": "#nul\u0000room"},
        {"alias": "#ok-{}", "topic": "a topic\u0000with NUL"},
        {"alias": "#ok-{}", "extra": {"deep": ["\u0000"]}},  # anywhere in the body
        {"alias": "#esc\u001b[31m-{}"},  # a one-line field holds no control character
        {"alias": "#ok-{}", "topic": "\ud800"},  # a lone surrogate
    ],
)
def test_nul_and_controls_create_no_room(any_stack: Stack, fields: dict[str, Any]) -> None:
    agent = register(any_stack)
    tag = unique("")
    body = {k: v.replace("{}", tag) if isinstance(v, str) else v for k, v in fields.items()}
    before = _joined_rooms(any_stack, agent.user_id)
    status, answer = agent.call("POST", "/rooms", body)
    _one_line_400(status, answer)
    assert _joined_rooms(any_stack, agent.user_id) == before
    status, channels = agent.call("GET", "/channels")
    assert status == 200 and not any(tag in c["room"] for c in channels["channels"]), channels
    # nothing half-made: the same alias without the bad character is free
    clean = "#ok-" + tag
    status, answer = agent.call("POST", "/rooms", {"alias": clean})
    assert status == 201, answer


def test_nul_outside_a_message_body_sends_nothing(any_stack: Stack) -> None:
    """NUL in the target or any other field of a send is a 400 and nothing is sent; in the
    body it is carried, as before (Matrix allows it, and the ledger stores it safely)."""
    sender, reader = register(any_stack), register(any_stack)
    room = shared_room(sender, reader)
    for bad in (
        {"to": room + "\u0000", "body": "hi"},
        {"to": room, "body": "hi", "notice": "\u0000"},
        {"to": room, "body": "hi", "x\u0000": 1},
        {"to": room + "\u001b[2J", "body": "hi"},
    ):
        status, answer = sender.call("PUT", "/send/" + unique("t"), bad)
        _one_line_400(status, answer)
    mark = sentinel(sender, room, reader)
    assert [b for b in reader.bodies(room) if b != mark] == []
    # a message body keeps its newlines and tabs, and NUL does not stop it
    sender.send(room, "line one\n\tline two")
    sender.send(room, "nul\u0000byte")
    wait_for(
        lambda: {"nulbyte", "nul\x00byte"} & set(reader.bodies(room)), what="the message with NUL"
    )
    assert "line one\n\tline two" in reader.bodies(room)


def test_nul_in_a_webhook_payload_posts_nothing(any_stack: Stack) -> None:
    watcher = register(any_stack)
    room = "#" + unique("hooks-")
    status, data = watcher.call("POST", "/rooms", {"alias": room})
    assert status == 201, data
    result = agent_chat_server(any_stack, "webhook", "add", unique("hook-"), "--room", room)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    url = next(lines[i + 1].strip() for i, x in enumerate(lines) if x.startswith("URL"))
    _one_line_400(*_post_raw(url, b'{"text": "build \\u0000 failed"}'))
    _one_line_400(*_post_raw(url, b'{"text": "deep", "x": ' + b"[" * 30_000 + b"}"))
    mark = sentinel(watcher, room)
    assert [b for b in watcher.bodies(room) if b != mark] == []
