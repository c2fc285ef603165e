"""Two homeservers federated: S1 and S2 in their own network namespaces, each with its own
appservice and agents (A on S1, C on S2), federation over TLS with each other's private CA
(``federation_custom_ca_list``), every byte through the 50 ms proxy on the router; server
names resolve there (s1.test, s2.test) through the namespaces' hosts files.

What crosses: direct messages both ways and a room of S1 that S2's agent joins by its alias,
each counted by the other server's ledger, ``who`` on either server listing the other's agent
as an agent with its server; a cut of the link between the servers heals with nothing lost
(Synapse retries the destination). Claims stay per server: each appservice keeps its own
(docs/remote.md).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
import json
import os
import shlex
import subprocess
import sys
import uuid

import netns
import pytest

from agent_chat_server.files import load_yaml
from helpers import wait_for

AC = str(Path(sys.executable).with_name("ac"))
SERVER_CLI = str(Path(sys.executable).with_name("agent-chat-server"))
R = netns.ROUTER_IP
S1, S2 = "s1.test:8448", "s2.test:9448"


def _env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENT_CHAT_")}
    env.update(AGENT_CHAT_HOME=str(home), **extra)
    return env


@dataclass
class Fed:
    net: netns.Net
    tmp: Path
    federation_control: Path
    nicks: dict[str, str]

    def ac(self, host: str, *args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
        env = _env(self.tmp / f"home-{host}", AGENT_CHAT_NICK=self.nicks[host])
        return self.net.run(host, AC, *args, env=env, timeout=timeout)

    def user(self, host: str) -> str:
        return f"@_ac_{self.nicks[host].lower()}:{S1 if host == 'a' else S2}"


def _init(
    net: netns.Net, host: str, dd: Path, tmp: Path, me: str, peer: str, peer_dd: Path
) -> None:
    port = me.rsplit(":", 1)[1]
    public = int(port) - 5  # 8443 / 9443: the client API; the Agent Chat API one above
    name = me.split(":")[0]
    done = net.run(
        host,
        SERVER_CLI,
        "init",
        "--data-dir",
        str(dd),
        "--server-name",
        me,
        "--bind",
        net_address(host),
        "--public-url",
        f"https://{name}:{public}",
        "--federation",
        "--federation-allow",
        peer,
        "--federation-ca",
        str(peer_dd / "tls" / "ca.pem"),
        "--federation-port",
        port,
        env=_env(tmp / "srv"),
    )
    assert done.returncode == 0, done.stdout + done.stderr


_ADDRESSES = {"s1": f"{netns.SUBNET}.1", "s2": f"{netns.SUBNET}.4"}


def net_address(host: str) -> str:
    return _ADDRESSES[host]


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fed]:
    netns.require()
    tmp = tmp_path_factory.mktemp("fed")
    net = netns.Net("fd")
    dirs = {"s1": tmp / "s1", "s2": tmp / "s2"}
    try:
        net.add_host("s1", 1)
        net.add_host("a", 2)
        net.add_host("s2", 4)
        net.add_host("c", 5)
        net.names({"s1.test": R, "s2.test": R})
        _init(net, "s1", dirs["s1"], tmp, S1, S2, dirs["s2"])
        _init(net, "s2", dirs["s2"], tmp, S2, S1, dirs["s1"])
        for host, dd in dirs.items():
            started = net.run(
                host,
                SERVER_CLI,
                "start",
                "--data-dir",
                str(dd),
                "--no-client-config",
                env=_env(tmp / "srv"),
                timeout=240,
            )
            assert started.returncode == 0, started.stdout + started.stderr
        s1, s2 = net_address("s1"), net_address("s2")
        net.proxy(
            [f"{R}:{p}={s1}:{p}" for p in (8443, 8444)]
            + [f"{R}:{p}={s2}:{p}" for p in (9443, 9444)],
            tmp / "clients.sock",
        )
        federation_control = tmp / "federation.sock"
        net.proxy([f"{R}:8448={s1}:8448", f"{R}:9448={s2}:9448"], federation_control)
        run = uuid.uuid4().hex[:5]
        fed = Fed(net, tmp, federation_control, {"a": f"Ann{run}", "c": f"Cid{run}"})
        for host, server in (("a", "s1"), ("c", "s2")):
            made = net.run(
                server,
                SERVER_CLI,
                "invite",
                "--data-dir",
                str(dirs[server]),
                env=_env(tmp / "srv"),
            )
            [line] = [x for x in made.stdout.splitlines() if x.startswith("ac config")]
            done = net.run(
                host, AC, *shlex.split(line)[1:], env=_env(tmp / f"home-{host}"), timeout=60
            )
            assert done.returncode == 0, done.stderr
            assert fed.ac(host, "notify", "--oneline").returncode == 0  # registers
        yield fed
    finally:
        for host, dd in dirs.items():
            if dd.exists():
                net.run(host, SERVER_CLI, "stop", "--data-dir", str(dd), env=_env(tmp / "srv"))
        net.close()


def test_federation_is_off_by_default_and_allow_listed(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    done = subprocess.run(
        [SERVER_CLI, "init", "--data-dir", str(plain), "--skip-db-check"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    hs = load_yaml(plain / "homeserver.yaml")
    assert hs["federation_domain_whitelist"] == []
    assert all("federation" not in r["names"] for lst in hs["listeners"] for r in lst["resources"])
    refused = subprocess.run(
        [SERVER_CLI, "init", "--data-dir", str(tmp_path / "x"), "--federation", "--skip-db-check"],
        capture_output=True,
        text=True,
    )
    assert refused.returncode == 1 and "--federation needs TLS" in refused.stderr
    assert not (tmp_path / "x" / "homeserver.yaml").exists()


def test_direct_messages_cross_both_ways_and_are_counted(fed: Fed) -> None:
    sent = fed.ac("c", "send", fed.user("a"), "hello from S2")
    assert sent.returncode == 0, sent.stderr

    def counted_on_s1() -> bool:
        line = fed.ac("a", "notify", "--oneline").stdout
        return fed.user("c") in line or fed.nicks["c"] in line

    # the first message may precede A's join of the new direct chat; the next one counts
    if not _within(counted_on_s1, 20):
        assert fed.ac("c", "send", fed.user("a"), "again from S2").returncode == 0
        wait_for(counted_on_s1, timeout=60, what="S1's ledger to count S2's agent")
    shown = fed.ac("a", "listen", fed.user("c"), "--last", "5")
    assert "from S2" in shown.stdout, shown.stderr
    back = fed.ac("a", "send", fed.user("c"), "hello from S1")
    assert back.returncode == 0, back.stderr

    def seen_on_s2() -> bool:
        return "hello from S1" in fed.ac("c", "listen", fed.user("a"), "--last", "5").stdout

    wait_for(seen_on_s2, timeout=60, what="S1's answer on S2")
    # a server not on the allow-list is refused
    other = fed.ac("c", "send", "@_ac_someone:s3.test:7448", "not allowed")
    assert other.returncode != 0


def test_a_room_on_s1_is_shared_with_s2s_agents(fed: Fed) -> None:
    room = f"#general:{S1}"
    joined = fed.ac("c", "join", room)
    assert joined.returncode == 0, joined.stderr
    text = f"room message from S1 {uuid.uuid4().hex[:6]}"
    assert fed.ac("a", "send", "#general", text).returncode == 0

    def counted_on_s2() -> bool:  # S2's ledger counts S1's agent's message, labelled as named
        return f"{room}(" in fed.ac("c", "notify", "--oneline").stdout

    wait_for(counted_on_s2, timeout=60, what="S2's ledger to count the message")
    shown = fed.ac("c", "listen", room, "--last", "5")
    assert text in shown.stdout, shown.stderr
    answer = fed.ac("c", "send", room, "room message from S2")
    assert answer.returncode == 0 and room in answer.stdout, answer.stderr

    def seen_on_s1() -> bool:
        return "room message from S2" in fed.ac("a", "listen", "#general", "--last", "5").stdout

    wait_for(seen_on_s1, timeout=60, what="S2's message in S1's room")
    # who on either server: the other server's agent with its server, as an agent (the room's
    # own server has no identity for it; its user id is in the agents' namespace)
    kinds = _kinds(fed.ac("a", "who", "#general", "--json"))
    assert kinds.get(fed.user("c")) == "agent", kinds
    assert kinds.get(fed.user("a")) == "agent", kinds
    kinds = _kinds(fed.ac("c", "who", room, "--json"))
    assert kinds.get(fed.user("a")) == "agent" and kinds.get(fed.user("c")) == "agent", kinds
    shown = fed.ac("a", "who", "#general")
    [line] = [x for x in shown.stdout.splitlines() if fed.user("c") in x]
    assert " agent " in line and "human" not in line, shown.stdout
    # claims stay per server: each appservice checks its own agents' claims only
    project = f"fed-{uuid.uuid4().hex[:6]}"
    assert fed.ac("a", "claim", "src/**", "--project", project).returncode == 0
    assert fed.ac("c", "claim", "src/**", "--project", project).returncode == 0


def test_a_cut_between_the_servers_heals_with_nothing_lost(fed: Fed) -> None:
    body = f"through the cut {uuid.uuid4().hex[:6]}"
    assert fed.ac("c", "send", fed.user("a"), "before the cut").returncode == 0
    wait_for(
        lambda: "before the cut" in fed.ac("a", "listen", fed.user("c"), "--last", "5").stdout,
        timeout=60,
        what="the direct chat to work",
    )
    assert netns.control(fed.federation_control, "cut 10") == "ok"
    sent = fed.ac("c", "send", fed.user("a"), body)  # S2 accepts it; S1 is out of reach
    assert sent.returncode == 0, sent.stderr

    def arrived() -> int:
        out = fed.ac("a", "listen", fed.user("c"), "--last", "20", "--peek").stdout
        return out.count(body)

    assert wait_for(arrived, timeout=90, what="the message sent during the cut") == 1


def _kinds(done: subprocess.CompletedProcess[str]) -> dict[str, str]:
    """user id -> kind from ``ac who --json``."""
    assert done.returncode == 0, done.stderr
    return {m["user_id"]: m["kind"] for m in json.loads(done.stdout)["members"]}


def _within(check: object, seconds: float) -> bool:
    try:
        wait_for(check, timeout=seconds)  # type: ignore[arg-type]
    except AssertionError:
        return False
    return True
