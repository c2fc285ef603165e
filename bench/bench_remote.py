#!/usr/bin/env python3
"""Remote agents' latency (issue 25, "Numbers"), over network namespaces with 50 ms each way.

A server host S runs the stack with TLS (``init --public-url https://... --bind``), agent hosts
A and B reach it through tests/netproxy.py on the router, which delays every byte 50 ms each
way (this kernel has no netem). Measured in the same run:

- the link's RTT: a one-byte echo through the proxy over an open connection (the baseline);
- send → remote ``ac wait``: A sends a DM over HTTPS, as ``ac send`` does (through the host's
  connection keeper, :mod:`agent_chat.relay`, which the setup's first command started), B's
  ``ac wait --dm`` (a cold process, blocked beforehand) prints its line; p50 against
  2 × RTT + 30 ms;
- a remote ``ac notify --oneline``, cold (process start, one request over a warm connection
  of the keeper), against RTT + 40 ms; the same with the keeper off (``AGENT_CHAT_RELAY=off``:
  the process's own TCP and TLS handshakes, as the first command on a host pays).

    sudo .venv/bin/python bench/bench_remote.py [--rounds 15] [--json OUT]

Needs root for ``ip netns``; says so and exits 0 without it.
"""

from __future__ import annotations

from pathlib import Path
from statistics import median
import argparse
import compileall
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import netns  # noqa: E402

from agent_chat.errors import EXIT_RATE_LIMITED  # noqa: E402

AC = str(Path(sys.executable).with_name("ac"))
SERVER_CLI = str(Path(sys.executable).with_name("agent-chat-server"))
PUBLIC = netns.ROUTER_IP
ECHO_PORT = 7007
#: Agents the reliability part's sends are spread over (each under the 5-a-second limit).
SENDERS = 8

ECHO = """
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("{host}", {port})); s.listen(4)
while True:
    c, _ = s.accept()
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    while (b := c.recv(64)):
        c.sendall(b)
    c.close()
"""

# A's sender: one line on stdin per message ("TARGET BODY"), an HTTPS PUT each with ac's own
# client, trust settings and connection keeper; prints the wall clock before it.
SENDER = """
import json, os, sys, time
from agent_chat import http
from agent_chat.config import Settings
s = Settings()
data = json.load(open(os.path.join(s.home, "credentials.json")))
entry = data["servers"][s.server_url]
token = entry["identities"][entry["default"]]["token"]
for line in sys.stdin:
    target, _, body = line.strip().partition(" ")
    txn = os.urandom(8).hex()
    start = time.time()
    r = http.request("PUT", f"{s.server_url}/_agent_chat/v1/send/{txn}",
                     json.dumps({"to": target, "body": body}).encode(),
                     {"Authorization": "Bearer " + token})
    print(start, r.status, flush=True)
"""


def env_for(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENT_CHAT_")}
    env.update(AGENT_CHAT_HOME=str(home), **extra)
    return env


def rtt(net: netns.Net, rounds: int) -> list[float]:
    code = (
        "import socket, time, sys\n"
        f"c = socket.create_connection(('{PUBLIC}', {ECHO_PORT}))\n"
        "c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)\n"
        "for _ in range(int(sys.argv[1])):\n"
        "    t = time.perf_counter(); c.sendall(b'x'); c.recv(1)\n"
        "    print(time.perf_counter() - t)\n"
    )
    done = net.run("a", sys.executable, "-c", code, str(rounds))
    return [float(x) for x in done.stdout.split()]


def send_to_wait(
    net: netns.Net,
    sending: tuple[str, dict[str, str], str],
    waiting: tuple[str, dict[str, str], list[str], list[str]],
    rounds: int,
) -> list[float]:
    """Seconds from a send to the waiter's ``ac wait`` printing it, ``rounds`` times.

    ``sending``: the sender's host, environment and target (``@Nick`` or a room); one
    process (SENDER) sends each message on a fresh connection. ``waiting``: the waiter's host,
    environment, the ``ac`` arguments that mark its messages read before each round, and the
    ``ac wait`` arguments: a cold ``ac wait`` is started, given time to block, then the message
    is sent."""
    host_a, a_env, target = sending
    host_b, b_env, mark_read, wait_args = waiting
    sender = subprocess.Popen(
        net.argv(host_a, sys.executable, "-c", SENDER),
        env=a_env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    net.procs.append(sender)
    assert sender.stdin is not None and sender.stdout is not None
    waits: list[float] = []
    for i in range(rounds):
        net.run(host_b, AC, *mark_read, env=b_env)
        waiter = net.start(host_b, AC, *wait_args, "--timeout", "30", "--oneline", env=b_env)
        time.sleep(1.2)  # its long-poll is at the server (two RTTs and a cold start)
        sender.stdin.write(f"{target} bench message {i}\n")
        sender.stdin.flush()
        start = float(sender.stdout.readline().split()[0])
        assert waiter.stdout is not None
        waiter.stdout.readline()
        waits.append(time.time() - start)
        waiter.wait(timeout=30)
    sender.stdin.close()
    sender.wait(timeout=30)
    return waits


def timeline(log: Path, title: str, start: float, end: float) -> None:
    """What the proxy read between ``start`` and ``end``: ms after ``start``, the connection,
    ``+`` accepted (the port) / ``>`` towards the server / ``<`` back, bytes (each delivered
    50 ms later)."""
    print(f"{title}: {(end - start) * 1000:.1f} ms; what the proxy read (ms after the start):")
    for line in log.read_text().splitlines():
        at, conn, way, size = line.split()
        if start <= float(at) <= end:
            print(f"  {(float(at) - start) * 1000:8.1f}  conn {conn:>4} {way} {size:>6}")


def reliability(net: netns.Net, tmp: Path, nicks: dict[str, str], count: int) -> dict[str, object]:
    """``count`` cold ``ac send``s from A, four at a time, while the proxy resets 1% of
    connections; B then reads the room: every message exactly once, none lost.

    The sends are spread over :data:`SENDERS` agents of A's home: through the connection
    keeper one agent would send faster than the server's per-agent limit (5 a second), and
    what this measures is the link, not the limit (a 429 is counted apart if one comes)."""
    from concurrent.futures import ThreadPoolExecutor

    run = os.urandom(3).hex()
    senders = [env_for(tmp / "a", AGENT_CHAT_NICK=f"BenchR{run}{k}") for k in range(SENDERS)]
    for env in senders:  # registered (and in #general) before the resets start
        net.run("a", AC, "notify", "--oneline", env=env)
    b_env = env_for(tmp / "b", AGENT_CHAT_NICK=nicks["b"])
    assert netns.control(tmp / "proxy.sock", "reset 0.01") == "ok"

    def send(i: int) -> int:
        env = senders[i % SENDERS]
        return net.run("a", AC, "send", "#general", f"rel-{run}-{i}", env=env).returncode

    started = time.perf_counter()
    with ThreadPoolExecutor(4) as pool:
        codes = list(pool.map(send, range(count)))
    took = time.perf_counter() - started
    stats = netns.control(tmp / "proxy.sock", "stats")
    netns.control(tmp / "proxy.sock", "reset 0")
    got = net.run("b", AC, "listen", "#general", "--last", "1000", "--json", "--peek", env=b_env)
    bodies = [json.loads(x)["body"] for x in got.stdout.splitlines() if x.startswith("{")]
    mine = [b for b in bodies if b.startswith(f"rel-{run}-")]
    lost = count - len(set(mine))
    doubled = len(mine) - len(set(mine))
    failed = sum(1 for c in codes if c)
    limited = sum(1 for c in codes if c == EXIT_RATE_LIMITED)
    print(
        f"{count} sends with 1% of connections reset ({stats}): {failed} failed "
        f"({limited} rate-limited), {lost} lost, {doubled} doubled, in {took:.0f} s"
    )
    return {
        "reliability": {
            "messages": count,
            "failed": failed,
            "rate_limited": limited,
            "lost": lost,
            "doubled": doubled,
            "proxy": stats,
            "seconds": round(took, 1),
        }
    }


def federation(rounds: int, tmp: Path, trace: bool = False) -> dict[str, object]:
    """S1 and S2 federated (each other's private CA), A on S1 sends into S1's #general, C on
    S2 (joined by its alias) waits: p50 against 3 × RTT + 60 ms."""
    net = netns.Net("bf")
    dirs = {"s1": tmp / "f-s1", "s2": tmp / "f-s2"}
    names = {"s1": "s1.test:8448", "s2": "s2.test:9448"}
    out: dict[str, object] = {}
    try:
        ips = {"s1": net.add_host("s1", 1), "s2": net.add_host("s2", 4)}
        net.add_host("a", 2)
        net.add_host("c", 5)
        net.names({"s1.test": PUBLIC, "s2.test": PUBLIC})
        for me, peer in (("s1", "s2"), ("s2", "s1")):
            port = int(names[me].rsplit(":", 1)[1])
            done = net.run(
                me,
                SERVER_CLI,
                "init",
                "--data-dir",
                str(dirs[me]),
                "--server-name",
                names[me],
                "--bind",
                ips[me],
                "--public-url",
                f"https://{me}.test:{port - 5}",
                "--federation",
                "--federation-allow",
                names[peer],
                "--federation-ca",
                str(dirs[peer] / "tls" / "ca.pem"),
                "--federation-port",
                str(port),
                env=env_for(tmp / "srv"),
            )
            assert done.returncode == 0, done.stderr
        for me in ("s1", "s2"):
            started = net.run(
                me,
                SERVER_CLI,
                "start",
                "--data-dir",
                str(dirs[me]),
                "--no-client-config",
                env=env_for(tmp / "srv"),
                timeout=240,
            )
            assert started.returncode == 0, started.stderr
        net.start("s1", sys.executable, "-c", ECHO.format(host=ips["s1"], port=ECHO_PORT))
        routes = [f"{PUBLIC}:{p}={ips['s1']}:{p}" for p in (8443, 8444, 8448, ECHO_PORT)]
        routes += [f"{PUBLIC}:{p}={ips['s2']}:{p}" for p in (9443, 9444, 9448)]
        log = tmp / "fproxy.log" if trace else None
        net.proxy(routes, tmp / "fproxy.sock", delay=0.05, log=log)
        nicks = {"a": "FedA", "c": "FedC"}
        for host, server in (("a", "s1"), ("c", "s2")):
            made = net.run(
                server, SERVER_CLI, "invite", "--data-dir", str(dirs[server]), env=env_for(tmp)
            )
            [line] = [x for x in made.stdout.splitlines() if x.startswith("ac config")]
            net.run(host, AC, *shlex.split(line)[1:], env=env_for(tmp / f"f{host}"))
        a_env = env_for(tmp / "fa", AGENT_CHAT_NICK=nicks["a"])
        c_env = env_for(tmp / "fc", AGENT_CHAT_NICK=nicks["c"])
        room = f"#general:{names['s1']}"
        net.run("a", AC, "send", "#general", "warm up", env=a_env)
        joined = net.run("c", AC, "join", room, env=c_env)
        assert joined.returncode == 0, joined.stderr
        time.sleep(1.0)
        base = median(rtt(net, rounds * 2))
        waits = send_to_wait(
            net,
            ("a", a_env, "#general"),
            ("c", c_env, ["listen", room, "--last", "1"], ["wait"]),
            rounds,
        )
        if log is not None:
            t0 = time.time()
            send_to_wait(
                net, ("a", a_env, "#general"), ("c", c_env, ["listen", room], ["wait"]), 1
            )
            timeline(log, "send → federated ac wait (the wait's start included)", t0, time.time())
        out = {
            "federation_rtt_ms": round(base * 1000, 1),
            "federated_send_to_wait_ms": [round(w * 1000, 1) for w in waits],
            "federated_target_ms": round((3 * base + 0.060) * 1000, 1),
        }
        p50 = median(waits)
        mark = "ok" if p50 <= 3 * base + 0.060 else "MISSED"
        print(
            f"{'send → federated ac wait returns, p50':<50} {p50 * 1000:8.1f} "
            f"{(3 * base + 0.060) * 1000:10.0f}  {mark}"
        )
        return out
    finally:
        for me, dd in dirs.items():
            net.run(me, SERVER_CLI, "stop", "--data-dir", str(dd), env=env_for(tmp / "srv"))
        net.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--trace",
        action="store_true",
        help="then one cold notify and one send → wait more, with the proxy's timestamps",
    )
    parser.add_argument(
        "--federation", action="store_true", help="also two federated servers (~1 min more)"
    )
    parser.add_argument(
        "--messages",
        type=int,
        default=0,
        metavar="N",
        help="also N `ac send`s (4 at a time) with 1%% of connections reset: each must be "
        "posted exactly once (at most 1000)",
    )
    args = parser.parse_args()
    # bytecode as a normal install has it (this environment may set PYTHONDONTWRITEBYTECODE)
    compileall.compile_dir(str(ROOT / "client" / "agent_chat"), quiet=1)
    if os.geteuid() != 0:
        print("bench_remote: skipped: network namespaces need root")
        return 0
    tmp = Path(tempfile.mkdtemp(prefix="bench-remote-"))
    net = netns.Net("bn")
    results: dict[str, object] = {}
    try:
        s_ip = net.add_host("s", 1)
        net.add_host("a", 2)
        net.add_host("b", 3)
        dd = tmp / "server"
        started = net.run(
            "s",
            SERVER_CLI,
            "start",
            "--data-dir",
            str(dd),
            "--bind",
            s_ip,
            "--public-url",
            f"https://{PUBLIC}:8443",
            "--no-client-config",
            env=env_for(tmp / "s"),
            timeout=240,
        )
        if started.returncode:
            print(started.stdout, started.stderr)
            return 1
        net.start("s", sys.executable, "-c", ECHO.format(host=s_ip, port=ECHO_PORT))
        routes = [f"{PUBLIC}:{p}={s_ip}:{p}" for p in (8443, 8444, ECHO_PORT)]
        log = tmp / "proxy.log" if args.trace else None
        net.proxy(routes, tmp / "proxy.sock", delay=0.05, log=log)
        made = net.run("s", SERVER_CLI, "invite", "--data-dir", str(dd), env=env_for(tmp / "s"))
        [line] = [x for x in made.stdout.splitlines() if x.startswith("ac config")]
        nicks = {"a": "BenchA", "b": "BenchB", "sa": "BenchSA", "sb": "BenchSB"}
        local = line.replace(f"https://{PUBLIC}:8444", f"https://{s_ip}:8444")
        for home, host, setup in (
            ("a", "a", line),
            ("b", "b", line),
            ("sa", "s", local),  # the same agents on the server's host: no link at all
            ("sb", "s", local),
        ):
            net.run(host, AC, *shlex.split(setup)[1:], env=env_for(tmp / home))
            net.run(
                host,
                AC,
                "notify",
                "--oneline",
                env=env_for(tmp / home, AGENT_CHAT_NICK=nicks[home]),
            )

        time.sleep(1.0)
        link = rtt(net, args.rounds * 2)
        base = median(link)
        results["rtt_ms"] = round(base * 1000, 1)

        def dm_to_wait(
            sender_home: str, waiter_home: str, host_a: str, host_b: str, rounds: int = 0
        ) -> list[float]:
            return send_to_wait(
                net,
                (
                    host_a,
                    env_for(tmp / sender_home, AGENT_CHAT_NICK=nicks[sender_home]),
                    f"@{nicks[waiter_home]}",
                ),
                (
                    host_b,
                    env_for(tmp / waiter_home, AGENT_CHAT_NICK=nicks[waiter_home]),
                    ["listen", "--last", "1"],
                    ["wait", "--dm"],
                ),
                rounds or args.rounds,
            )

        def notify_cold(home: str, host: str, **extra: str) -> list[float]:
            env = env_for(tmp / home, AGENT_CHAT_NICK=nicks[home], **extra)
            cold: list[float] = []
            for _ in range(args.rounds):
                t = time.perf_counter()
                net.run(host, AC, "notify", "--oneline", env=env)
                cold.append(time.perf_counter() - t)
            return cold

        waits = dm_to_wait("a", "b", "a", "b")
        local_waits = dm_to_wait("sa", "sb", "s", "s")
        results["send_to_wait_ms"] = [round(w * 1000, 1) for w in waits]
        results["local_send_to_wait_ms"] = [round(w * 1000, 1) for w in local_waits]
        a_env = env_for(tmp / "a", AGENT_CHAT_NICK=nicks["a"])
        cold = notify_cold("a", "a")
        direct_cold = notify_cold("a", "a", AGENT_CHAT_RELAY="off")
        local_cold = notify_cold("sa", "s")
        results["local_notify_cold_ms"] = [round(c * 1000, 1) for c in local_cold]
        results["notify_cold_no_keeper_ms"] = [round(c * 1000, 1) for c in direct_cold]
        if log is not None:
            t0 = time.time()
            net.run("a", AC, "notify", "--oneline", env=a_env)
            timeline(log, "remote ac notify --oneline, cold", t0, time.time())
            t0 = time.time()
            dm_to_wait("a", "b", "a", "b", 1)
            timeline(log, "send → remote ac wait (the wait's start included)", t0, time.time())
        if args.messages:
            results.update(reliability(net, tmp, nicks, min(args.messages, 1000)))
        nothing: list[float] = []
        for _ in range(args.rounds):  # the same process start and `ip netns exec`, no request
            t = time.perf_counter()
            net.run("a", sys.executable, "-c", "import agent_chat.cli", env=a_env)
            nothing.append(time.perf_counter() - t)
        results["notify_cold_ms"] = [round(c * 1000, 1) for c in cold]
        results["python_start_ms"] = [round(c * 1000, 1) for c in nothing]

        p50_wait, p50_cold = median(waits), median(cold)
        rows = [
            ("link RTT (one-byte echo through the proxy)", base, None),
            ("send → remote ac wait returns, p50", p50_wait, 2 * base + 0.030),
            ("  the same on the server's host (no link), p50", median(local_waits), None),
            ("remote ac notify --oneline, cold, p50", p50_cold, base + 0.040),
            ("  the same without the keeper (its own handshakes)", median(direct_cold), None),
            ("  the same on the server's host (no link), p50", median(local_cold), None),
            ("  process start (python -c import agent_chat.cli)", median(nothing), None),
        ]
        print(f"{'measure':<50} {'ms':>8} {'target ms':>10}")
        for name, value, target in rows:
            mark = "" if target is None else ("  ok" if value <= target else "  MISSED")
            t = "" if target is None else f"{target * 1000:.0f}"
            print(f"{name:<50} {value * 1000:8.1f} {t:>10}{mark}")
        print(
            f"link's share: send → wait {(p50_wait - median(local_waits)) / base:.2f} RTT, "
            f"notify cold {(p50_cold - median(local_cold)) / base:.2f} RTT"
        )
        results["targets_ms"] = {
            "send_to_wait": round((2 * base + 0.030) * 1000, 1),
            "notify_cold": round((base + 0.040) * 1000, 1),
        }
    finally:
        net.run("s", SERVER_CLI, "stop", "--data-dir", str(tmp / "server"), env=env_for(tmp / "s"))
        net.close()
    if args.federation:  # after the first network is gone: three servers at once would skew it
        results.update(federation(args.rounds, tmp, args.trace))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
