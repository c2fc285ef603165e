"""Unit tests, no Synapse: per-caller state stays bounded, background work is drained on stop,
and the start-up ping says when it gives up."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any
import asyncio
import logging

import pytest

from agent_chat_appservice.api.base import Context, RateLimiter
from agent_chat_appservice.background import Background
from agent_chat_appservice.config import Config
from agent_chat_appservice.recent import RecentMap


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
