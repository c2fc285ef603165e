"""Held connections and rate limits (docs/security.md, threat 10: fairness), against a real
stack of its own whose limits are set low so that the tests reach them quickly:

* one identity's long-poll waits are capped, the oldest answered early (the newest never
  refused), while another identity's /health and /send are served;
* a client trickling its headers (slowloris) or its body is cut off at the deadline;
* connections beyond the cap are refused with a 503 at once, and served again afterwards;
* room creation, registration and login are rate-limited (429, Retry-After, a clear error),
  and the client address is taken from X-Forwarded-For only when the peer is a trusted proxy;
* the deduplication tables are pruned after their window, and a recent repeat is still
  deduplicated (both databases).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any
import asyncio
import http.client
import json
import re
import socket
import time
import urllib.request

import aiohttp
import pytest

from agent_chat_appservice.config import Config
from agent_chat_server import control
from agent_chat_server.files import load_yaml
from agent_chat_server.init import InitOptions, init_data_dir
from agent_chat_server.paths import DataDir
from helpers import START_TIMEOUT, Agent, Stack, free_ports, shared_room, unique, wait_for

#: The dedicated stack's limits: low, so a test reaches them in a few requests.
LIMITS: dict[str, Any] = {
    "max_waits_per_identity": 8,
    "header_timeout_seconds": 3.0,
    "body_timeout_seconds": 3.0,
    "max_connections": 300,
    "room_create_burst": 3,
    "room_create_per_minute": 1.0,
    "register_burst": 3,
    "register_per_minute": 1.0,
    "trusted_proxies": ["127.0.0.1"],
}


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A stack of its own with :data:`LIMITS` in appservice.yaml."""
    synapse_port, api_port = free_ports(2)
    dd = DataDir.at(tmp_path_factory.mktemp("limits") / "server")
    init_data_dir(dd, InitOptions(synapse_port=synapse_port, api_port=api_port))
    config = Config.load(dd.appservice_yaml)
    for key, value in LIMITS.items():
        setattr(config, key, value)
    config.save(dd.appservice_yaml)
    try:
        control.start_background(dd, timeout=START_TIMEOUT, tie_to_caller=True)
        hs = load_yaml(dd.homeserver_yaml)
        yield Stack(dd, control.load_config(dd), hs["registration_shared_secret"])
    finally:
        control.stop(dd)


_address = iter(range(1, 250))


def fresh_address() -> str:
    """A client address a trusted proxy (the test, from 127.0.0.1) names in X-Forwarded-For."""
    return f"198.51.100.{next(_address)}"


def call(
    stack: Stack,
    method: str,
    path: str,
    body: Any = None,
    token: str | None = None,
    forwarded_for: str | None = None,
    source: str | None = None,
) -> tuple[int, Any, dict[str, str]]:
    """One request with http.client: (status, JSON answer, headers); ``source`` binds the
    client's own address (any 127.x is loopback on Linux)."""
    host, port = stack.config.host, stack.config.port
    conn = http.client.HTTPConnection(
        host, port, timeout=30, source_address=(source, 0) if source else None
    )
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if forwarded_for:
        headers["X-Forwarded-For"] = forwarded_for
    try:
        data = json.dumps(body).encode() if body is not None else None
        conn.request(method, "/_agent_chat/v1" + path, body=data, headers=headers)
        resp = conn.getresponse()
        raw = resp.read()
        return resp.status, json.loads(raw) if raw else None, dict(resp.getheaders())
    finally:
        conn.close()


def register(stack: Stack, forwarded_for: str | None = None) -> Agent:
    status, data, _ = call(
        stack,
        "POST",
        "/register",
        {"registration_token": stack.registration_token},
        forwarded_for=forwarded_for or fresh_address(),
    )
    assert status == 201, data
    return Agent(stack.api_base, data["user_id"], data["nick"], data["token"])


def metric(stack: Stack, name: str) -> float:
    with urllib.request.urlopen(stack.api_url + "/metrics", timeout=10) as resp:
        text = resp.read().decode()
    found = re.search(rf"^{name} ([0-9.e+]+)$", text, re.M)
    assert found, f"{name} not in /metrics"
    return float(found[1])


# --- long-poll waits ---------------------------------------------------------------------------


def test_one_identity_holds_a_bounded_number_of_waits_and_others_are_served(
    limited: Stack,
) -> None:
    waiter, other = register(limited), register(limited)
    room = shared_room(other, waiter, prefix="waits-")
    status, data = waiter.call("GET", "/notify")
    assert status == 200, data
    cap = LIMITS["max_waits_per_identity"]
    url = f"{limited.api_base}/notify?wait=120&since={data['cursor']}"
    headers = {"Authorization": f"Bearer {waiter.token}"}

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 90

        async def until(check: Any, what: str) -> None:
            while not check():
                assert loop.time() < deadline, f"timed out waiting for {what}"
                await asyncio.sleep(0.05)

        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

            async def wait_once() -> dict[str, Any]:
                async with session.get(url, headers=headers) as resp:
                    assert resp.status == 200, await resp.text()
                    return dict(await resp.json())

            oldest = asyncio.create_task(wait_once())
            await until(lambda: metric(limited, "agent_chat_notify_waiters") == 1, "one wait")
            newer = [asyncio.create_task(wait_once()) for _ in range(200)]
            tasks = [oldest, *newer]
            try:
                # Everything beyond the newest `cap` is answered early, the oldest first,
                # with its normal answer (nothing changed): the client just polls again.
                await until(lambda: sum(t.done() for t in tasks) >= len(tasks) - cap, "evictions")
                assert oldest.done(), "the oldest wait is still held"
                answered = [t.result() for t in tasks if t.done()]
                assert all(a["changed"] is False and a["unread"] == [] for a in answered)
                assert metric(limited, "agent_chat_notify_waiters") <= cap

                # Meanwhile another identity is served; its message wakes the waits left.
                status, data = await asyncio.to_thread(other.call, "GET", "/health")
                assert status == 200, data
                await asyncio.to_thread(other.send, room, "still served")
                woken = await asyncio.wait_for(asyncio.gather(*newer), 60)
                assert sum(1 for a in woken if a["changed"]) >= 1
            finally:
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)

    asyncio.run(scenario())
    assert metric(limited, "agent_chat_notify_evicted_total") >= 200 - cap


# --- slow clients ------------------------------------------------------------------------------


def _closed_by_server(sock: socket.socket, trickle: bytes, every: float, within: float) -> bool:
    """Send ``trickle`` every ``every`` seconds until the server closes the connection (True)
    or ``within`` seconds pass (False)."""
    deadline = time.monotonic() + within
    sock.settimeout(every)
    while time.monotonic() < deadline:
        try:
            if sock.recv(4096) == b"":
                return True
        except TimeoutError:
            pass
        except ConnectionError:
            return True
        try:
            sock.sendall(trickle)
        except (BrokenPipeError, ConnectionError):
            return True
    return False


def test_slowloris_headers_are_cut_off(limited: Stack) -> None:
    timeout = LIMITS["header_timeout_seconds"]
    with socket.create_connection((limited.config.host, limited.config.port)) as sock:
        sock.sendall(b"GET /_agent_chat/v1/health HTTP/1.1\r\nHost: x\r\n")
        # One more header line a second, never the blank line that ends them: the server
        # must close the connection soon after the header deadline.
        assert _closed_by_server(sock, b"X-Slow: 1\r\n", 1.0, timeout + 30), (
            "a connection trickling header lines stayed open"
        )
    status, _, _ = call(limited, "GET", "/health")
    assert status == 200


def test_a_body_trickled_in_is_cut_off_with_408(limited: Stack) -> None:
    with socket.create_connection((limited.config.host, limited.config.port)) as sock:
        sock.sendall(
            b"POST /_agent_chat/v1/register HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"
        )
        sock.settimeout(LIMITS["body_timeout_seconds"] + 30)
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = sock.recv(4096)
            if not chunk:
                break
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]


def test_connections_beyond_the_cap_are_refused_then_served_again(limited: Stack) -> None:
    cap = LIMITS["max_connections"]
    held: list[socket.socket] = []
    try:
        for _ in range(cap):
            held.append(socket.create_connection((limited.config.host, limited.config.port)))
        # The cap is reached (the supervisor's own probes may hold a few more): the next
        # connection is answered 503 at once instead of waiting for a descriptor.
        with socket.create_connection((limited.config.host, limited.config.port)) as extra:
            extra.settimeout(30)
            answer = extra.recv(4096)
        assert answer.startswith(b"HTTP/1.1 503"), answer[:200]
        assert b"connection limit" in answer
    finally:
        for sock in held:
            sock.close()
    wait_for(lambda: call(limited, "GET", "/health")[0] == 200, what="health after the flood")
    assert metric(limited, "agent_chat_connections_refused_total") >= 1
    log = limited.dd.appservice_log.read_text()
    found = re.search(r"open-file limit (\d+): serving at most (\d+) connections", log)
    assert found and int(found[2]) == cap < int(found[1])


# --- rate limits -------------------------------------------------------------------------------


def test_room_creation_is_limited_per_identity(limited: Stack) -> None:
    agent, other = register(limited), register(limited)
    for _ in range(LIMITS["room_create_burst"]):
        status, data = agent.call("POST", "/rooms", {"alias": "#" + unique("many-")})
        assert status == 201, data
    status, data, headers = call(
        limited, "POST", "/rooms", {"alias": "#" + unique("many-")}, token=agent.token
    )
    assert status == 429 and data["errcode"] == "M_LIMIT_EXCEEDED", data
    assert "rooms created" in data["error"] and "try again in" in data["error"]
    assert int(headers["Retry-After"]) >= 1 and data["retry_after_ms"] > 0
    # Another identity is not affected.
    status, data = other.call("POST", "/rooms", {"alias": "#" + unique("other-")})
    assert status == 201, data


def test_registration_is_limited_per_client_address(limited: Stack) -> None:
    address = fresh_address()
    for _ in range(LIMITS["register_burst"]):
        register(limited, forwarded_for=address)
    body = {"registration_token": limited.registration_token}
    status, data, headers = call(limited, "POST", "/register", body, forwarded_for=address)
    assert status == 429 and "registrations from your address" in data["error"], data
    assert int(headers["Retry-After"]) >= 1
    # Another address (as named by the trusted proxy) has its own bucket.
    register(limited, forwarded_for=fresh_address())


def test_forwarded_for_counts_only_from_a_trusted_proxy(limited: Stack) -> None:
    """From 127.0.0.2 (not a trusted proxy) X-Forwarded-For is ignored: changing it does not
    give a client a fresh bucket."""
    body = {"registration_token": limited.registration_token}
    statuses = []
    for _ in range(LIMITS["register_burst"] + 1):
        status, _, _ = call(
            limited, "POST", "/register", body, forwarded_for=fresh_address(), source="127.0.0.2"
        )
        statuses.append(status)
    assert statuses == [201] * LIMITS["register_burst"] + [429], statuses


def test_login_guesses_are_limited_per_account(limited: Stack) -> None:
    name = unique("guessed")
    human = limited.create_human(name)
    bystander = limited.create_human(unique("bystander"))
    # Failed guesses from many addresses count against the one account.
    for _ in range(5):
        status, data, _ = call(
            limited,
            "POST",
            "/login",
            {"user": name, "password": "wrong-guess"},
            forwarded_for=fresh_address(),
        )
        assert status == 401, data
    status, data, headers = call(
        limited,
        "POST",
        "/login",
        {"user": name, "password": human["password"]},
        forwarded_for=fresh_address(),
    )
    assert status == 429 and "failed logins for this account" in data["error"], data
    assert int(headers["Retry-After"]) >= 1
    # Another account logs in as usual, and successes never count.
    for _ in range(7):
        status, data, _ = call(
            limited,
            "POST",
            "/login",
            {"user": bystander["user_id"], "password": bystander["password"]},
            forwarded_for=fresh_address(),
        )
        assert status == 201, data


def test_config_refuses_bad_limits(tmp_path: Path) -> None:
    base = {
        "server_name": "x",
        "homeserver_url": "http://127.0.0.1:1",
        "as_token": "a",
        "hs_token": "h",
        "registration_token": "r",
        "database": "sqlite:x.db",
    }
    path = tmp_path / "appservice.yaml"
    for bad, message in (
        ({"trusted_proxies": ["not-an-address"]}, "trusted_proxies"),
        ({"max_waits_per_identity": 0}, "max_waits_per_identity"),
        ({"header_timeout_seconds": 0}, "header_timeout_seconds"),
        ({"max_connections": 3}, "max_connections"),
    ):
        path.write_text(json.dumps({**base, **bad}))
        with pytest.raises(Exception, match=message):
            Config.load(path)
