"""Agents hear it live: the /notify long-poll, `ac wait` and `ac listen --follow`, against a real
Synapse and appservice on SQLite and PostgreSQL (issue 13, items 1, 2 and 5)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import quote
import json
import re
import socket
import subprocess
import time

import pytest

from helpers import AC, Ac, Agent, Stack, register, shared_room, spawn, unique, wait_for

# The API as a user sees it, on one process and on Synapse workers with appservice replicas.
pytestmark = pytest.mark.workers


def _notify(agent: Agent, query: str = "", timeout: float = 10.0) -> tuple[int, Any]:
    return agent.call("GET", "/notify" + (f"?{query}" if query else ""), timeout=timeout)


def _cursor(agent: Agent, query: str = "") -> str:
    status, data = _notify(agent, query)
    assert status == 200, data
    return str(data["cursor"])


def _metric(stack: Stack, name: str) -> float:
    import urllib.request

    with urllib.request.urlopen(stack.api_url + "/metrics", timeout=10) as resp:
        text = resp.read().decode()
    found = re.search(rf"^{name} (\S+)$", text, re.M)
    assert found, f"{name} not in /metrics"
    return float(found[1])


def _pair(stack: Stack) -> tuple[Agent, Agent, str]:
    """Two agents in a fresh room."""
    a, b = register(stack), register(stack)
    return a, b, shared_room(a, b, prefix="live-")


# --- the long-poll ---------------------------------------------------------------------------


def test_wait_answers_when_another_agent_sends(any_stack: Stack) -> None:
    a, b, room = _pair(any_stack)
    since = _cursor(b)
    with ThreadPoolExecutor(1) as pool:
        started = time.monotonic()
        waiting = pool.submit(_notify, b, f"wait=30&since={since}", 40)
        time.sleep(0.5)
        assert not waiting.done(), waiting.result()  # nothing changed: it holds
        a.send(room, "hello, are you there?")
        status, data = waiting.result(timeout=30)
    assert status == 200, data
    assert time.monotonic() - started < 10
    assert data["changed"] is True and data["new"] is True
    assert data["cursor"] != since
    assert {u["room"]: u["count"] for u in data["unread"]}[room] == 1
    # The new cursor holds again; the reader's own read changes the counts (not news).
    assert _notify(b, f"wait=0&since={data['cursor']}")[1]["changed"] is False
    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(_notify, b, f"wait=30&since={data['cursor']}", 40)
        time.sleep(0.3)
        b.messages(room=room)  # marks read
        status, after = waiting.result(timeout=30)
    assert status == 200 and after["changed"] is True and after["new"] is False
    assert room not in {u["room"] for u in after["unread"]}


def test_wait_times_out_with_the_same_counts(stack: Stack) -> None:
    _a, b, _room = _pair(stack)
    since = _cursor(b)
    started = time.monotonic()
    status, data = _notify(b, f"wait=1.5&since={since}")
    elapsed = time.monotonic() - started
    assert status == 200, data
    assert data == {"unread": data["unread"], "cursor": since, "changed": False, "new": False}
    assert 1.4 <= elapsed < 5, elapsed
    # Own messages change no counts of one's own: still nothing for the sender.
    status, data = _notify(b, f"wait=0&since={since}")
    assert data["changed"] is False


def test_filters_urgent_and_dm(any_stack: Stack) -> None:
    a, b, room = _pair(any_stack)
    urgent_since = _cursor(b, "filter=urgent")
    dm_since = _cursor(b, "filter=dm")
    either_since = _cursor(b, "filter=dm,urgent")
    a.send(room, "just chatting")
    wait_for(lambda: room in b.notify(), what="plain message counted")
    # A plain message moves neither filter.
    for query in (f"filter=urgent&since={urgent_since}", f"filter=dm&since={dm_since}"):
        status, data = _notify(b, f"wait=1&{query}")
        assert status == 200 and data["changed"] is False and data["unread"] == [], data
    a.send(room, f"[ALERT] @{b.nick} the build is broken")
    status, data = _notify(b, f"wait=20&filter=urgent&since={urgent_since}", 30)
    assert data["changed"] is True and [u["room"] for u in data["unread"]] == [room], data
    assert _notify(b, f"wait=0&filter=dm&since={dm_since}")[1]["changed"] is False
    a.send("@" + b.nick, "a direct word")
    status, data = _notify(b, f"wait=20&filter=dm&since={dm_since}", 30)
    assert data["changed"] is True and data["new"] is True, data
    assert [u["room"] for u in data["unread"]] == ["@" + a.nick]
    status, data = _notify(b, f"wait=0&filter=urgent,dm&since={either_since}")
    assert {u["room"] for u in data["unread"]} == {room, "@" + a.nick}


@pytest.mark.parametrize(
    "query, says",
    [
        ("wait=-1", "'wait' must be between 0 and 300"),
        ("wait=301", "'wait' must be between 0 and 300"),
        ("wait=nan", "'wait' must be between 0 and 300"),
        ("wait=soon", "'wait' must be a number of seconds"),
        ("filter=mentions", "'filter' is urgent, dm or urgent,dm"),
        ("filter=", "'filter' is urgent, dm or urgent,dm"),
        ("wait=5&since=garbage", "'since' is not a cursor"),
        ("wait=5&since=1.0123456789abcdef.0123456789abcdef", "another identity"),
    ],
)
def test_bad_input_is_a_clear_400(stack: Stack, query: str, says: str) -> None:
    agent = register(stack)
    started = time.monotonic()
    status, data = _notify(agent, query)
    assert (status, data["errcode"]) == (400, "M_INVALID_PARAM"), data
    assert says in data["error"]
    assert time.monotonic() - started < 3


def test_a_cursor_of_another_agent_is_refused(stack: Stack) -> None:
    a, b = register(stack), register(stack)
    status, data = _notify(b, f"wait=5&since={_cursor(a)}")
    assert status == 400 and "another identity" in data["error"], data


def test_a_dropped_waiter_leaves_nothing_behind(any_stack: Stack) -> None:
    agent = register(any_stack)
    since = _cursor(agent)
    before = _metric(any_stack, "agent_chat_notify_waiters")
    host, port = any_stack.api_url.split("//", 1)[1].rsplit(":", 1)
    socks = []
    for _ in range(5):
        s = socket.create_connection((host, int(port)), timeout=10)
        s.sendall(
            (
                f"GET /_agent_chat/v1/notify?wait=300&since={quote(since)} HTTP/1.1\r\n"
                f"Host: {host}\r\nAuthorization: Bearer {agent.token}\r\n\r\n"
            ).encode()
        )
        socks.append(s)
    wait_for(
        lambda: _metric(any_stack, "agent_chat_notify_waiters") >= before + 5,
        what="five waiters registered",
    )
    for s in socks:
        s.close()
    wait_for(
        lambda: _metric(any_stack, "agent_chat_notify_waiters") <= before,
        timeout=5,
        what="the dropped waiters forgotten (long before their 300 s timeout)",
    )


def test_a_caller_who_hangs_up_between_a_wake_and_the_next_round_is_not_waited_for() -> None:
    """The race behind a CI failure: a change wakes the waiter, the caller hangs up before the
    request runs again (so connection_lost finds only the spent future), and nothing changed
    for the caller, so the request goes round once more; it must end there, not register a
    waiter nobody will ever wake."""
    import asyncio

    from agent_chat_appservice.waiters import Waiters, cursor_of

    async def scenario() -> tuple[object, int]:
        waiters, connection, lost = Waiters(), object(), []

        async def read() -> list[Any]:
            return []  # nothing unread, before and after the wake

        task = asyncio.create_task(
            waiters.until_changed(
                "@a:x", connection, read, cursor_of([]), 300.0, hung_up=lambda: bool(lost)
            )
        )
        while len(waiters) == 0:
            await asyncio.sleep(0)
        waiters.wake(["@a:x"])  # the future is done; the task has not run yet
        lost.append(True)
        waiters.connection_lost(connection)
        answer = await asyncio.wait_for(task, 5)
        return answer, len(waiters)

    answer, left = asyncio.run(scenario())
    assert answer is None
    assert left == 0


# --- ac wait ---------------------------------------------------------------------------------


def _ac(stack: Stack, tmp_path: Path, agent: Agent) -> tuple[Ac, dict[str, str]]:
    return Ac(tmp_path / unique("home"), stack.api_url, None), {"AGENT_CHAT_TOKEN": agent.token}


def _start(ac: Ac, env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    """``ac ARGS`` in the background, killed when the test ends (helpers.spawn)."""
    return spawn(
        [AC, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ac.env(**env),
    )


def test_ac_wait_returns_when_something_new_arrives(any_stack: Stack, tmp_path: Path) -> None:
    a, b, room = _pair(any_stack)
    a.send(room, "old news, unread before the wait starts")
    wait_for(lambda: room in b.notify(), what="old message counted")
    ac, env = _ac(any_stack, tmp_path, b)
    proc = _start(ac, env, "wait", "--timeout", "60", "--oneline")
    time.sleep(1.5)
    assert proc.poll() is None, proc.communicate()  # old unread messages do not end it
    a.send(room, "fresh news")
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert out.strip() == f"{room}(2)"
    # --any: what is already unread is enough.
    r = ac("wait", "--any", "--timeout", "5", "--json", **env)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)[room]["count"] == 2


def test_ac_wait_times_out_with_its_own_exit_code(stack: Stack, tmp_path: Path) -> None:
    _a, b, _room = _pair(stack)
    ac, env = _ac(stack, tmp_path, b)
    started = time.monotonic()
    r = ac("wait", "--timeout", "1", **env)
    assert r.returncode == 5, (r.stdout, r.stderr)
    assert r.stdout == "" and r.stderr == ""
    assert time.monotonic() - started < 10
    r = ac("wait", "--timeout", "-3", **env)
    assert r.returncode == 1 and "--timeout" in r.stderr


def test_ac_wait_filters_dm(stack: Stack, tmp_path: Path) -> None:
    a, b, room = _pair(stack)
    ac, env = _ac(stack, tmp_path, b)
    proc = _start(ac, env, "wait", "--dm", "--timeout", "60", "--oneline")
    time.sleep(1.5)
    a.send(room, "room chatter does not wake a --dm wait")
    time.sleep(1.5)
    assert proc.poll() is None, proc.communicate()
    a.send("@" + b.nick, "psst")
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert out.strip() == f"@{a.nick}(1)"


def test_ac_wait_session_guard(stack: Stack, tmp_path: Path) -> None:
    """One wake per new event; none when nothing is new; at most one a --min-interval."""
    a, b, room = _pair(stack)
    ac, env = _ac(stack, tmp_path, b)
    session = ["--session", "s1", "--min-interval", "4", "--oneline"]
    # The first run of a session records where it stands: nothing new yet.
    assert ac("wait", *session, "--timeout", "1", **env).returncode == 5
    a.send(room, "one")
    wait_for(lambda: room in b.notify(), what="message counted")
    # The message arrived between runs: the next run wakes at once, once.
    started = time.monotonic()
    assert ac.ok("wait", *session, "--timeout", "20", **env).strip() == f"{room}(1)"
    assert time.monotonic() - started < 3
    assert ac("wait", *session, "--timeout", "1", **env).returncode == 5
    # A second message right away waits out the interval (no storm between two agents)...
    a.send(room, "two")
    started = time.monotonic()
    assert ac.ok("wait", *session, "--timeout", "20", **env).strip() == f"{room}(2)"
    assert time.monotonic() - started >= 2.0
    # ...unless it is urgent.
    a.send(room, f"[ALERT] @{b.nick} now")
    started = time.monotonic()
    assert ac.ok("wait", *session, "--timeout", "20", **env).strip() == f"{room}(3!)"
    assert time.monotonic() - started < 2.0
    # Reading is not news.
    b.messages(room=room)
    assert ac("wait", *session, "--timeout", "1", **env).returncode == 5


def _state_waiter(home: Path) -> str | None:
    """The waiter token in the (only) session state file under ``home``/wait."""
    files = list((home / "wait").glob("*.json"))
    return json.loads(files[0].read_text()).get("waiter") if len(files) == 1 else None


def test_ac_wait_session_takeover(stack: Stack, tmp_path: Path) -> None:
    """A newer waiter for the same session takes over: the older exits 5 without printing
    when its long-poll next answers, and only the newer wakes."""
    a, b, room = _pair(stack)
    ac, env = _ac(stack, tmp_path, b)
    session = ["wait", "--session", "s-takeover", "--min-interval", "0", "--oneline"]
    older = _start(ac, env, *session, "--timeout", "60")
    first = wait_for(lambda: _state_waiter(ac.home), what="the older waiter's state")
    assert first.startswith(f"{older.pid}-")
    newer = _start(ac, env, *session, "--timeout", "60")
    wait_for(lambda: _state_waiter(ac.home) not in (None, first), what="the newer's state")
    time.sleep(0.5)  # both are in their long-poll
    assert older.poll() is None and newer.poll() is None
    a.send(room, "one wake, not two")
    out, err = older.communicate(timeout=30)
    assert (older.returncode, out) == (5, ""), err
    out, err = newer.communicate(timeout=30)
    assert (newer.returncode, out.strip()) == (0, f"{room}(1)"), err


def test_ac_wait_ends_with_the_watched_process(stack: Stack, tmp_path: Path) -> None:
    """AGENT_CHAT_WAIT_WHILE_PID: once that process is gone, the wait ends (5, nothing printed)
    at its next answer, even for news; while it lives, a change that is not news goes on."""
    a, b, room = _pair(stack)
    ac, env = _ac(stack, tmp_path, b)
    a.send(room, "unread before")
    wait_for(lambda: room in b.notify(), what="message counted")
    session_cli = spawn(["sleep", "300"])
    try:
        waiting = _start(
            ac,
            {**env, "AGENT_CHAT_WAIT_WHILE_PID": str(session_cli.pid)},
            "wait",
            "--timeout",
            "120",
            "--oneline",
        )
        time.sleep(1.5)
        b.messages(room=room)  # a read: the poll answers, the process lives, it waits on
        time.sleep(1.0)
        assert waiting.poll() is None, waiting.communicate()
    finally:
        session_cli.kill()
        session_cli.wait()
    started = time.monotonic()
    a.send(room, "news for a session that is gone")
    out, err = waiting.communicate(timeout=30)
    assert (waiting.returncode, out) == (5, ""), err
    assert time.monotonic() - started < 10


def test_listen_follow_prints_a_message_sent_after_it_started(
    any_stack: Stack, tmp_path: Path
) -> None:
    a, b, room = _pair(any_stack)
    ac, env = _ac(any_stack, tmp_path, b)
    proc = _start(ac, env, "listen", room, "--follow", "--json")
    try:
        time.sleep(1.5)
        body = unique("live message ")
        a.send(room, body)
        assert proc.stdout is not None
        started = time.monotonic()
        line = proc.stdout.readline()
        assert json.loads(line)["body"] == body
        assert time.monotonic() - started < 10
    finally:
        proc.terminate()
        proc.communicate(timeout=10)
