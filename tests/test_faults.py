"""Fault suite: the appservice killed mid-stream, Synapse restarted under load, the database
briefly unavailable, many agents at once. Each ends with exact counts, no message lost or
doubled, and the service still serving.

Run alone with ``pytest -m fault``. Each test uses its own stack (they kill things).
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import quote
import os
import secrets
import signal
import sqlite3
import threading
import time

import pytest

from agent_chat_server import control
from helpers import (
    START_TIMEOUT,
    Agent,
    Stack,
    create_pg_database,
    pg_execute,
    register,
    room_id_of,
    sentinel,
    start_stack,
    synapse,
    wait_for,
)

pytestmark = pytest.mark.fault


@pytest.fixture(params=["sqlite", "postgres"])
def fault_stack(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stack]:
    db = None
    if request.param == "postgres":
        db = create_pg_database("agent_chat_fault")
    try:
        st = start_stack(tmp_path / "server", database=db.url if db else None)
        try:
            yield st
        finally:
            control.stop(st.dd)
    finally:
        if db:
            db.drop()


def settle(agent: Agent, room: str, expected: int, timeout: float = 60) -> list[str]:
    """Wait for the count, then make sure it stays there (nothing doubled late): the agent's
    own sentinel, which its count leaves out, arrives after anything sent before it.

    Returns the room's bodies without the sentinel.
    """
    try:
        wait_for(lambda: agent.count(room) == expected, timeout=timeout, what=f"count {expected}")
    except AssertionError:
        raise AssertionError(
            f"count {agent.count(room)} != {expected}; messages: {agent.bodies(room)}"
        ) from None
    mark = sentinel(agent, room, timeout=timeout)
    assert agent.count(room) == expected
    return [body for body in agent.bodies(room) if body != mark]


def send_with_retries(agent: Agent, room: str, body: str, deadline: float = 60) -> None:
    """What `ac send` does: the same txn id until it goes through."""
    txn = secrets.token_hex(8)
    end = time.monotonic() + deadline
    while True:
        try:
            status, _data = agent.call("PUT", f"/send/{txn}", {"to": room, "body": body})
            if status == 200:
                return
        except OSError:
            pass
        if time.monotonic() > end:
            raise AssertionError(f"could not send {body!r}")
        time.sleep(0.2)


def test_appservice_killed_mid_stream_and_restarted(fault_stack: Stack) -> None:
    st = fault_stack
    a, b = register(st), register(st)
    room = room_id_of(st, f"#general:{st.server_name}")
    sent: list[str] = []  # acknowledged by Synapse: must arrive exactly once
    tried: list[str] = []  # attempted: a request cut off by the kill may or may not have landed
    stop = threading.Event()

    def stream() -> None:
        # Straight to Synapse as the agent: the stream goes on while the appservice is dead.
        i = 0
        while not stop.is_set():
            body = f"stream {i}"
            tried.append(body)
            try:
                status, _ = synapse(
                    st,
                    "PUT",
                    f"/_matrix/client/v3/rooms/{quote(room)}/send/m.room.message/s{i}",
                    {"msgtype": "m.text", "body": body},
                    as_user=a.user_id,
                )
            except OSError:
                status = 0
            if status == 200:
                sent.append(body)
            i += 1
            time.sleep(0.02)

    thread = threading.Thread(target=stream)
    thread.start()
    try:
        time.sleep(1.0)
        pid = int(st.dd.pid_file("appservice").read_text())
        os.kill(pid, signal.SIGKILL)  # no goodbye: mid-transaction if it was in one
        time.sleep(1.0)
    finally:
        stop.set()
        thread.join()
    # The supervisor stops Synapse when the appservice dies; start everything again.
    control.stop(st.dd)
    control.start_background(st.dd, timeout=START_TIMEOUT, tie_to_caller=True)
    wait_for(lambda: b.count("#general") >= len(sent), timeout=60, what="the stream")
    # Requests cut off by the kill may still land: everything sent lands before the sentinel.
    mark = sentinel(b, "#general", timeout=60)
    got = [body for body in b.bodies("#general") if body != mark]
    assert len(got) == len(set(got)) == b.count("#general")  # none doubled, counted once
    assert set(sent) <= set(got) <= set(tried)  # none acknowledged was lost
    assert a.send("#general", "still serving")["event_id"]


def test_synapse_restarted_under_load(fault_stack: Stack) -> None:
    st = fault_stack
    a, b = register(st), register(st)
    bodies_sent = [f"load {i}" for i in range(60)]

    def sender() -> None:
        for body in bodies_sent:
            send_with_retries(a, "#status", body)
            time.sleep(0.03)

    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(sender)
        time.sleep(0.5)
        st.restart_synapse()
        future.result(timeout=120)
    got = settle(b, "#status", len(bodies_sent))
    assert sorted(got, key=lambda s: int(s.split()[1])) == bodies_sent


def test_client_retrying_a_send_after_a_timeout(fault_stack: Stack) -> None:
    """Synapse stalls (SIGSTOP) under an agent's send: the client gives up waiting, retries
    with the same txn id while Synapse is still stalled, and again once it is back. The
    stalled attempt, the retries and Synapse's late answer add up to one message."""
    st = fault_stack
    a, b = register(st), register(st)
    body = "sent while Synapse stalled " + secrets.token_hex(3)
    path, payload = f"/send/{secrets.token_hex(8)}", {"to": "#general", "body": body}
    pid = int(st.dd.pid_file("synapse").read_text())
    os.kill(pid, signal.SIGSTOP)
    try:
        for _ in range(2):  # the first attempt and one retry, both cut off by the timeout
            with pytest.raises(OSError):  # TimeoutError, or URLError wrapping it
                a.call("PUT", path, payload, timeout=1.0)
    finally:
        os.kill(pid, signal.SIGCONT)
    answers = []
    for _ in range(3):  # retries after Synapse is back agree on one event
        status, data = a.call("PUT", path, payload, timeout=30)
        assert status == 200, data
        answers.append(data["event_id"])
    assert len(set(answers)) == 1
    assert settle(b, "#general", 1).count(body) == 1
    assert a.send("#general", "still serving")["event_id"]


def test_database_briefly_unavailable(fault_stack: Stack) -> None:
    st = fault_stack
    a, b = register(st), register(st)
    room = room_id_of(st, f"#alerts:{st.server_name}")
    unblock = _block_database(st)
    try:
        for i in range(5):
            status, data = synapse(
                st,
                "PUT",
                f"/_matrix/client/v3/rooms/{quote(room)}/send/m.room.message/db{i}",
                {"msgtype": "m.text", "body": f"during outage {i}"},
                as_user=a.user_id,
            )
            assert status == 200, data
        time.sleep(6)  # longer than SQLite's busy timeout: transactions fail and are retried
    finally:
        unblock()
    assert settle(b, "#alerts", 5, timeout=90) == [f"during outage {i}" for i in range(5)]
    assert a.send("#alerts", "recovered")["event_id"]


def _block_database(st: Stack):
    """Make the appservice's database refuse writes; returns the function that ends it."""
    if st.database.startswith("sqlite:"):
        conn = sqlite3.connect(st.database.split(":", 1)[1], isolation_level=None, timeout=10)
        conn.execute("BEGIN EXCLUSIVE")

        def unblock() -> None:
            conn.execute("ROLLBACK")
            conn.close()

        return unblock
    dbname = st.database.rsplit("/", 1)[1]
    admin = st.database.rsplit("/", 1)[0] + "/postgres"
    pg_execute(admin, f'ALTER DATABASE "{dbname}" ALLOW_CONNECTIONS false')
    pg_execute(
        admin,
        f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{dbname}'",
    )

    def unblock() -> None:
        pg_execute(admin, f'ALTER DATABASE "{dbname}" ALLOW_CONNECTIONS true')

    return unblock


def test_fifty_agents_sending_at_once(fault_stack: Stack) -> None:
    st = fault_stack
    with ThreadPoolExecutor(16) as pool:
        agents = list(pool.map(lambda _: register(st), range(50)))
    reader = register(st)
    name = "#" + "crowd" + secrets.token_hex(2)
    assert reader.call("POST", "/rooms", {"alias": name})[0] == 201
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda ag: ag.call("POST", "/join", {"room": name}), agents))

    def burst(agent: Agent) -> None:
        for i in range(4):
            send_with_retries(agent, name, f"{agent.nick} {i}")

    with ThreadPoolExecutor(50) as pool:
        list(pool.map(burst, agents))
    got = settle(reader, name, 200)
    assert len(got) == 200 and len(set(got)) == 200
    # Everyone else's counts are exact too: 196 from the others, none of their own, and the
    # reader's sentinel.
    sample = agents[:5]
    for agent in sample:
        assert agent.count(name) == 197
