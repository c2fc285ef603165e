"""Several appservice processes on one PostgreSQL ledger (issue 15): one Synapse, three
appservice replicas started as an operator would (``python -m agent_chat_appservice -c
appservice.yaml --port P``), real processes killed for real.

What a user would notice if any of this broke: a waiting agent not hearing a message sent
through another replica, a runaway agent getting three times its send limit, a retried send
posted twice, two agents given one name, a human's login working on one replica only, or the
service going deaf when the process that writes the ledger dies.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
import secrets
import signal
import subprocess
import sys
import time

import pytest

from agent_chat_appservice.config import Config
from agent_chat_server.files import dump_yaml, load_yaml, write_atomic
from agent_chat_server.init import InitOptions, init_data_dir
from agent_chat_server.paths import DataDir
from helpers import (
    Agent,
    create_pg_database,
    free_ports,
    http_json,
    register_at,
    run_async,
    shared_room,
    try_send,
    unique,
    wait_for,
)

START = 90.0
#: A small send limit, so the shared-limit test needs few messages.
BURST = 8


@dataclass
class Cluster:
    dd: DataDir
    config: Config
    shared_secret: str
    ports: list[int]
    procs: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)

    def url(self, port: int) -> str:
        return f"http://127.0.0.1:{port}"

    def start(self, port: int) -> None:
        log = open(self.dd.root / f"appservice-{port}.log", "ab")  # noqa: SIM115 (the child's)
        self.procs[port] = subprocess.Popen(
            [
                *(sys.executable, "-m", "agent_chat_appservice"),
                *("-c", str(self.dd.appservice_yaml), "--port", str(port)),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        wait_for(lambda: self.health(port) is not None, START, f"replica on {port} healthy")

    def health(self, port: int) -> dict | None:
        try:
            status, data = http_json("GET", self.url(port) + "/_agent_chat/v1/health", timeout=5)
        except OSError:
            return None
        return data if status == 200 else None

    def writers(self) -> list[int]:
        return [p for p in self.procs if (h := self.health(p)) and h["ledger_writer"]]

    def kill(self, port: int) -> None:
        proc = self.procs.pop(port)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    def at(self, agent: Agent, port: int) -> Agent:
        """The same identity, calling another replica."""
        return replace(agent, api_base=self.url(port) + "/_agent_chat/v1")

    def register(self, port: int, nick: str | None = None, exact: bool = False) -> Agent:
        return register_at(self.url(port), self.config.registration_token, nick, exact)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    db = create_pg_database("agent_chat_replicas")
    synapse_port, transactions_port, *api_ports = free_ports(5)
    dd = DataDir.at(tmp_path_factory.mktemp("replicas") / "server")
    init_data_dir(
        dd, InitOptions(synapse_port=synapse_port, api_port=api_ports[0], database=db.url)
    )
    # What `init --api-replicas` writes: the writer's port, and Synapse pointed at it.
    config = Config.load(dd.appservice_yaml)
    config.transactions_port = transactions_port
    config.send_rate_burst, config.send_rate_per_second = BURST, 0.2
    config.save(dd.appservice_yaml)
    registration = load_yaml(dd.registration_yaml)
    registration["url"] = f"http://127.0.0.1:{transactions_port}"
    write_atomic(dd.registration_yaml, dump_yaml(registration))
    synapse_log = open(dd.root / "synapse-console.log", "ab")  # noqa: SIM115 (the child's)
    synapse = subprocess.Popen(
        [sys.executable, "-m", "synapse.app.homeserver", "-c", str(dd.homeserver_yaml)],
        stdout=synapse_log,
        stderr=subprocess.STDOUT,
    )
    synapse_log.close()
    cluster = Cluster(
        dd, config, load_yaml(dd.homeserver_yaml)["registration_shared_secret"], api_ports
    )
    try:
        for port in api_ports:
            cluster.start(port)
        yield cluster
    finally:
        for proc in [*cluster.procs.values(), synapse]:
            proc.terminate()
        for proc in [*cluster.procs.values(), synapse]:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        db.drop()


def _pair(cluster: Cluster) -> tuple[Agent, Agent, str]:
    """Two agents (registered through different replicas) in a fresh room."""
    a, b = cluster.register(cluster.ports[0]), cluster.register(cluster.ports[1])
    return a, b, shared_room(a, b, prefix="rep-")


def test_exactly_one_replica_writes_the_ledger(cluster: Cluster) -> None:
    assert len(cluster.writers()) == 1
    # Every replica serves the API; only the writer answers on the transactions port.
    for port in cluster.ports:
        assert cluster.health(port) is not None


def test_a_waiter_on_one_replica_hears_a_send_through_another(cluster: Cluster) -> None:
    a, b, room = _pair(cluster)
    listener = cluster.at(b, cluster.ports[2])
    status, data = listener.call("GET", "/notify")
    assert status == 200, data
    since = data["cursor"]
    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(
            listener.call, "GET", f"/notify?wait=30&since={since}", None, None, 40
        )
        time.sleep(0.5)  # the long-poll is registered on replica 3
        started = time.monotonic()
        cluster.at(a, cluster.ports[1]).send(room, "through replica 2")
        status, data = waiting.result(40)
        took = time.monotonic() - started
    assert status == 200, data
    assert data["changed"] and data["new"], data
    assert any(u["room"] == room and u["count"] == 1 for u in data["unread"]), data
    assert took < 10, f"the waiter answered after {took:.1f} s, not on the change"


def test_the_send_limit_holds_across_replicas(cluster: Cluster) -> None:
    a, _, room = _pair(cluster)
    answers = []
    for i in range(BURST + 4):  # spread over all three replicas
        port = cluster.ports[i % 3]
        status, data = cluster.at(a, port).call(
            "PUT", f"/send/{secrets.token_hex(6)}", {"to": room, "body": f"n{i}"}
        )
        answers.append((status, data))
    statuses = [s for s, _ in answers]
    # One bucket of BURST for the caller, not BURST per replica.
    assert statuses.count(200) == BURST, statuses
    limited = [d for s, d in answers if s == 429]
    assert limited and all(d["errcode"] == "M_LIMIT_EXCEEDED" for d in limited), limited


def test_the_loop_guard_sees_a_pair_split_across_replicas(cluster: Cluster) -> None:
    """Two agents answering each other in a DM, each through its own replica: neither replica
    sends both sides, yet the seventh answer within a minute is refused (the default limit)."""
    a = cluster.register(cluster.ports[0])
    b = cluster.at(cluster.register(cluster.ports[0]), cluster.ports[1])
    turns = [(a, "@" + b.nick, b), (b, "@" + a.nick, a)]
    answers = []
    for i in range(8):
        sender, to, other = turns[i % 2]
        before = other.count("@" + sender.nick)
        status, data = sender.call(
            "PUT", f"/send/{secrets.token_hex(6)}", {"to": to, "body": f"turn {i}"}
        )
        answers.append((status, data))
        if status == 200:  # the other side reads it, as an agent in a loop would
            label, seen = "@" + sender.nick, before
            wait_for(lambda o=other, k=label, n=seen: o.count(k) > n, what="the turn counted")
    assert [s for s, _ in answers] == [200] * 7 + [429], answers
    assert answers[-1][1]["errcode"] == "AC_LOOP_GUARD", answers[-1]


def test_one_txn_sent_to_two_replicas_at_once_posts_once(cluster: Cluster) -> None:
    a, b, room = _pair(cluster)
    txn = secrets.token_hex(8)
    body = {"to": room, "body": "only once " + txn}

    def put(port: int) -> tuple[int, dict]:
        return cluster.at(a, port).call("PUT", f"/send/{txn}", body, None, 30)

    with ThreadPoolExecutor(2) as pool:
        first, second = pool.map(put, cluster.ports[:2])
    assert first[0] == second[0] == 200, (first, second)
    assert first[1]["event_id"] == second[1]["event_id"]
    wait_for(lambda: b.count(room) >= 1, what="the message counted")
    time.sleep(0.5)  # a second event, if there were one, would be counted by now
    assert b.bodies(room).count(body["body"]) == 1
    assert b.count(room) == 1


def test_two_replicas_never_give_out_one_name(cluster: Cluster) -> None:
    nick = "twin" + secrets.token_hex(2)

    def take(port: int) -> tuple[int, dict]:
        body = {"registration_token": cluster.config.registration_token, "nick": nick}
        return http_json("POST", cluster.url(port) + "/_agent_chat/v1/register", body)

    with ThreadPoolExecutor(3) as pool:
        answers = list(pool.map(take, cluster.ports))
    assert all(s == 201 for s, _ in answers), answers
    nicks = [d["nick"] for _, d in answers]
    assert len(set(nicks)) == 3 and nick in nicks, nicks

    def exact(port: int) -> int:
        body = {"registration_token": cluster.config.registration_token, "nick": nick + "x"}
        body["exact"] = True
        return http_json("POST", cluster.url(port) + "/_agent_chat/v1/register", body)[0]

    with ThreadPoolExecutor(3) as pool:
        statuses = sorted(pool.map(exact, cluster.ports))
    assert statuses == [201, 409, 409], statuses


def test_a_human_logged_in_through_one_replica_acts_through_another(cluster: Cluster) -> None:
    _, b, room = _pair(cluster)
    localpart = unique("hum")
    password = secrets.token_urlsafe(12)
    _register_human(cluster, localpart, password)
    status, data = http_json(
        "POST",
        cluster.url(cluster.ports[0]) + "/_agent_chat/v1/login",
        {"user": localpart, "password": password},
    )
    assert status == 201, data  # a first login
    human = Agent(
        cluster.url(cluster.ports[2]) + "/_agent_chat/v1",
        data["user_id"],
        localpart,
        data["token"],
    )
    status, data = human.call("POST", "/join", {"room": room})
    assert status == 200, data
    human.send(room, "a human, through replica 3")
    wait_for(lambda: b.count(room) >= 1, what="the human's message counted")
    (message,) = b.messages(room=room, mark_read="false")
    assert message["sender"] == human.user_id


def _register_human(cluster: Cluster, localpart: str, password: str) -> None:
    import hashlib
    import hmac

    synapse = cluster.config.homeserver_url + "/_synapse/admin/v1/register"
    _, nonce = http_json("GET", synapse)
    mac = hmac.new(cluster.shared_secret.encode(), digestmod=hashlib.sha1)
    mac.update(
        b"\x00".join([nonce["nonce"].encode(), localpart.encode(), password.encode(), b"notadmin"])
    )
    status, data = http_json(
        "POST",
        synapse,
        {
            "nonce": nonce["nonce"],
            "username": localpart,
            "password": password,
            "mac": mac.hexdigest(),
        },
    )
    assert status == 200, data


def test_killing_the_writer_mid_burst_hands_over_and_counts_each_message_once(
    cluster: Cluster,
) -> None:
    """SIGKILL the ledger writer (an API replica too) while 20 agents send through all three
    replicas: another replica takes over within 10 s, the senders' retries (same txn id, next
    replica) go through, and every acknowledged message is counted exactly once."""
    (writer,) = cluster.writers()
    ports = list(cluster.ports)
    survivor = next(p for p in ports if p != writer)
    reader = cluster.register(survivor)
    senders = [cluster.register(survivor) for _ in range(20)]
    room = shared_room(reader, *senders, prefix="burst-")
    acknowledged: list[str] = []

    def burst(i: int) -> None:
        at = i % len(ports)
        for n in range(3):
            txn, body = secrets.token_hex(6), f"{i}-{n}"
            for _ in range(40):  # as `ac` does: retry with the same txn id, elsewhere if down
                if try_send(cluster.at(senders[i], ports[at]), room, body, txn) == 200:
                    acknowledged.append(body)
                    break
                at = (at + 1) % len(ports)
                time.sleep(0.25)
            time.sleep(0.1)

    with ThreadPoolExecutor(20) as pool:
        running = [pool.submit(burst, i) for i in range(20)]
        time.sleep(0.2)
        killed_at = time.monotonic()
        cluster.kill(writer)
        wait_for(lambda: len(cluster.writers()) == 1, 10, "another replica writing the ledger")
        took_over = time.monotonic() - killed_at
        for f in running:
            f.result(120)
    assert took_over < 10, took_over
    assert len(acknowledged) == 60, f"{len(acknowledged)} of 60 sends acknowledged"
    # Every acknowledged message reaches the ledger once: no loss, no double count.
    wait_for(lambda: reader.count(room) >= 60, 60, "all 60 messages counted")
    time.sleep(1.0)
    assert reader.count(room) == 60
    assert sorted(reader.bodies(room)) == sorted(acknowledged)
    cluster.start(writer)  # back, as a replica this time
    (now,) = cluster.writers()
    assert now != writer


def test_a_replica_that_stops_hearing_the_others_ends_and_starts_afresh(cluster: Cluster) -> None:
    """PostgreSQL drops the connections the replicas listen on (a restart, a network cut): a
    replica deaf to the others' changes would leave its long-polls hanging, so each ends with
    status 1 for its supervisor to start again, and the started ones serve as before."""
    import asyncpg

    async def drop_listeners() -> int:
        conn = await asyncpg.connect(cluster.config.database)
        try:
            return len(
                await conn.fetch(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname=current_database() AND query LIKE 'LISTEN%'"
                )
            )
        finally:
            await conn.close()

    assert run_async(drop_listeners) == len(cluster.procs)
    for proc in cluster.procs.values():
        assert proc.wait(15) == 1
    for port in list(cluster.procs):
        cluster.procs.pop(port)
        cluster.start(port)
    assert len(cluster.writers()) == 1
    a, b, room = _pair(cluster)
    a.send(room, "after the restart")
    wait_for(lambda: b.count(room) == 1, what="the message counted")
