#!/usr/bin/env python3
"""Scale-out benchmark (issue 15): one process of each against Synapse workers and appservice
replicas, in the same run, on the same machine.

Two deployments, each started the way an operator starts it (``agent-chat-server init`` then
``start``), each on fresh PostgreSQL databases:

- single: Synapse (one process) + one appservice;
- workers: Synapse main + an event persister + ``--workers`` generic workers (Redis), and
  ``--api-replicas`` appservice processes on one ledger (one of them writes it).

For each, ``--agents`` agents register (spread over the API replicas, as a router would), join
rooms of ``--room-size``, and then:

- throughput: ``--senders`` agents send ``--messages`` messages each, as fast as the API
  answers; messages per second acknowledged, and until the last one is counted in the ledger;
  CPU seconds per message summed over every process of the deployment;
- latency: send by one agent (through one replica) → another agent's long-poll ``/notify``
  answers (on another replica): p50/p95 over ``--rounds`` rounds;
- RSS of every process after the run.

The target on 2 cores is correctness and no more than 1.5x slower per message (the burst's
time per message, and latency p50, workers / single; CPU per message is reported beside
them); worker mode exists for more machines, not speed.

    python bench/bench_scale.py --postgres postgres://postgres@127.0.0.1:5432/postgres \\
        --redis redis://127.0.0.1:6379/5
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from statistics import median
from typing import Any
from urllib.parse import urlsplit, urlunsplit
import argparse
import asyncio
import json
import os
import secrets
import sys
import tempfile
import time

import aiohttp
import asyncpg

sys.path.insert(0, str(Path(__file__).parent))
from bench_appservice import free_port, p95
from bench_wait import cpu_seconds

from agent_chat_appservice.config import Config
from agent_chat_server import control
from agent_chat_server.init import InitOptions, init_data_dir
from agent_chat_server.paths import DataDir
from agent_chat_server.workers import load_topology


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def pids(dd: DataDir) -> dict[str, int]:
    """Every running process of the deployment (the supervisor's pid files), by name."""
    found = {}
    for path in sorted(dd.run.glob("*.pid")):
        if path.stem == "supervisor":
            continue
        try:
            pid = int(path.read_text().split()[0])
            os.kill(pid, 0)
        except (OSError, ValueError, IndexError):
            continue
        found[path.stem] = pid
    return found


@dataclass
class Deployment:
    name: str
    dd: DataDir
    config: Config
    api_urls: list[str]
    databases: list[str] = field(default_factory=list)
    results: dict[str, Any] = field(default_factory=dict)

    def api(self, i: int) -> str:
        return self.api_urls[i % len(self.api_urls)] + "/_agent_chat/v1"


async def create_database(admin: str, name: str) -> str:
    conn = await asyncpg.connect(admin)
    try:
        await conn.execute(
            f'CREATE DATABASE "{name}" LC_COLLATE "C" LC_CTYPE "C" TEMPLATE template0'
        )
    finally:
        await conn.close()
    parts = urlsplit(admin)
    return urlunsplit(parts._replace(path="/" + name))


async def drop_database(admin: str, url: str) -> None:
    conn = await asyncpg.connect(admin)
    try:
        name = urlsplit(url).path.lstrip("/")
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


def deploy(name: str, root: Path, args: argparse.Namespace, databases: list[str]) -> Deployment:
    """init + start one deployment; its API URLs (one per appservice process)."""
    dd = DataDir.at(root / name)
    appservice_db, synapse_db = databases
    options = InitOptions(
        synapse_port=free_port(),
        api_port=free_port(),
        database=appservice_db,
        synapse_database=synapse_db,
    )
    if name == "workers":
        options.workers = args.workers
        options.redis = args.redis
        options.api_replicas = args.api_replicas
        options.worker_port_base = free_port()
    init_data_dir(dd, options)
    config = Config.load(dd.appservice_yaml)
    # The benchmark drives a few agents hard; the per-agent limit is for runaway loops.
    config.send_rate_per_second, config.send_rate_burst = 10000.0, 10000
    # ...and registers and makes rooms from one address far faster than any team would.
    config.register_burst = config.room_create_burst = 100000
    config.loop_guard_answers_per_minute = 0
    config.save(dd.appservice_yaml)
    control.start_background(dd, timeout=180, tie_to_caller=True)
    topology = load_topology(dd)
    ports = topology.api_ports if topology else [config.port]
    urls = [f"http://127.0.0.1:{p}" for p in ports]
    return Deployment(name, dd, config, urls, databases)


class Run:
    def __init__(self, args: argparse.Namespace, deployment: Deployment) -> None:
        self.args = args
        self.d = deployment
        self.http: aiohttp.ClientSession

    async def call(
        self, method: str, url: str, token: str | None = None, body: Any = None
    ) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with self.http.request(method, url, json=body, headers=headers) as r:
            return r.status, await r.json(content_type=None)

    async def limited(self, coros: list, limit: int = 16) -> list:
        sem = asyncio.Semaphore(limit)

        async def one(c: Any) -> Any:
            async with sem:
                return await c

        return await asyncio.gather(*(one(c) for c in coros))

    async def register(self, i: int) -> dict[str, Any]:
        body = {"registration_token": self.d.config.registration_token}
        status, data = await self.call("POST", self.d.api(i) + "/register", body=body)
        assert status == 201, data
        return {**data, "api": self.d.api(i)}

    async def run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=300)
        async with aiohttp.ClientSession(
            timeout=timeout, connector=aiohttp.TCPConnector(limit=0)
        ) as self.http:
            started = time.perf_counter()
            agents = await self.limited([self.register(i) for i in range(self.args.agents)])
            self.d.results["register_seconds"] = time.perf_counter() - started
            rooms = await self.make_rooms(agents)
            await self.latency(agents, rooms)
            await self.throughput(agents, rooms)
        self.d.results["rss_mib"] = {n: rss_mib(p) for n, p in pids(self.d.dd).items()}

    async def make_rooms(self, agents: list[dict[str, Any]]) -> list[str]:
        size = self.args.room_size
        groups = [agents[i : i + size] for i in range(0, len(agents), size)]
        aliases = []
        for n, group in enumerate(groups):
            alias = f"#scale{n}x{secrets.token_hex(2)}"
            status, data = await self.call(
                "POST", group[0]["api"] + "/rooms", group[0]["token"], {"alias": alias}
            )
            assert status in (200, 201), data
            joins = [
                self.call("POST", a["api"] + "/join", a["token"], {"room": alias})
                for a in group[1:]
            ]
            for status, data in await self.limited(joins):
                assert status == 200, data
            aliases.append(alias)
        await asyncio.sleep(2)  # the joins reach the ledger
        return aliases

    async def latency(self, agents: list[dict[str, Any]], rooms: list[str]) -> None:
        """Sender on replica 1, waiter on replica 2 (the same when there is one)."""
        size = self.args.room_size
        sender, receiver = agents[0], agents[1]
        receiver_api = self.d.api(1)
        sender_api = self.d.api(0)
        assert len(rooms) and size >= 2
        samples = []
        for i in range(self.args.rounds):
            status, data = await self.call("GET", receiver_api + "/notify", receiver["token"])
            since = data["cursor"]
            waiting = asyncio.create_task(
                self.call(
                    "GET",
                    f"{receiver_api}/notify?wait=30&since={since}",
                    receiver["token"],
                )
            )
            await asyncio.sleep(0.05)  # the long-poll is registered
            t0 = time.perf_counter()
            status, data = await self.call(
                "PUT",
                f"{sender_api}/send/{secrets.token_hex(8)}",
                sender["token"],
                {"to": rooms[0], "body": f"latency {i}"},
            )
            assert status == 200, data
            status, data = await waiting
            assert status == 200 and data.get("new"), data
            samples.append((time.perf_counter() - t0) * 1000)
            # read it, so the next round starts from nothing unread
            await self.call(
                "GET", f"{receiver_api}/messages?room={rooms[0].replace('#', '%23')}",
                receiver["token"],
            )  # fmt: skip
        self.d.results["send_to_notify_ms_p50"] = median(samples)
        self.d.results["send_to_notify_ms_p95"] = p95(samples)

    async def counted(self, reader: dict[str, Any], room: str) -> int:
        _, data = await self.call("GET", reader["api"] + "/notify", reader["token"])
        return next((u["count"] for u in data["unread"] if u["room"] == room), 0)

    async def throughput(self, agents: list[dict[str, Any]], rooms: list[str]) -> None:
        size = self.args.room_size
        rooms_n = len(rooms)
        senders = [
            agents[(i % rooms_n) * size + 2 + i // rooms_n] for i in range(self.args.senders)
        ]
        room_of = [rooms[i % len(rooms)] for i in range(self.args.senders)]
        readers = {room: agents[n * size + 1] for n, room in enumerate(rooms)}
        before = {room: await self.counted(readers[room], room) for room in set(room_of)}
        cpu0 = {n: cpu_seconds(p) for n, p in pids(self.d.dd).items()}

        async def burst(i: int) -> None:
            for n in range(self.args.messages):
                status, data = await self.call(
                    "PUT",
                    f"{senders[i]['api']}/send/{secrets.token_hex(8)}",
                    senders[i]["token"],
                    {"to": room_of[i], "body": f"tp {i} {n}"},
                )
                assert status == 200, data

        t0 = time.perf_counter()
        await asyncio.gather(*(burst(i) for i in range(self.args.senders)))
        acked = time.perf_counter() - t0
        total = self.args.senders * self.args.messages
        expected = {room: before[room] for room in before}
        for room in room_of:
            expected[room] += self.args.messages
        while True:
            now = {room: await self.counted(readers[room], room) for room in expected}
            if all(now[r] >= expected[r] for r in expected):
                break
            if time.perf_counter() - t0 > 300:
                raise AssertionError(f"not all counted: {now} of {expected}")
            await asyncio.sleep(0.05)
        counted = time.perf_counter() - t0
        cpu = {n: cpu_seconds(p) - cpu0.get(n, 0.0) for n, p in pids(self.d.dd).items()}
        self.d.results.update(
            messages=total,
            acked_per_second=total / acked,
            counted_per_second=total / counted,
            cpu_ms_per_message=sum(cpu.values()) * 1000 / total,
            cpu_ms_per_message_by_process={n: c * 1000 / total for n, c in cpu.items()},
            exactly_once=all(now[r] == expected[r] for r in expected),
        )


def report(single: Deployment, workers: Deployment, args: argparse.Namespace) -> tuple[str, bool]:
    s, w = single.results, workers.results
    rows = [
        ("", "single", f"workers ({args.workers} + persister, {args.api_replicas} API)"),
        ("agents registered (s)", f"{s['register_seconds']:.1f}", f"{w['register_seconds']:.1f}"),
        ("sends acknowledged / s", f"{s['acked_per_second']:.0f}", f"{w['acked_per_second']:.0f}"),
        ("sends counted / s", f"{s['counted_per_second']:.0f}", f"{w['counted_per_second']:.0f}"),
        (
            "CPU per message (all processes)",
            f"{s['cpu_ms_per_message']:.1f} ms",
            f"{w['cpu_ms_per_message']:.1f} ms",
        ),
        (
            "send → other's notify p50 / p95",
            f"{s['send_to_notify_ms_p50']:.1f} / {s['send_to_notify_ms_p95']:.1f} ms",
            f"{w['send_to_notify_ms_p50']:.1f} / {w['send_to_notify_ms_p95']:.1f} ms",
        ),
        ("every message counted once", str(s["exactly_once"]), str(w["exactly_once"])),
    ]
    for name in sorted(set(s["rss_mib"]) | set(w["rss_mib"])):
        cells = []
        for r in (s, w):
            cpu = r["cpu_ms_per_message_by_process"].get(name)
            rss = r["rss_mib"].get(name)
            cells.append("" if rss is None else f"{rss:.0f} MiB, {cpu or 0:.1f} ms/msg")
        rows.append((f"{name}: RSS, CPU per message", *cells))
    # "No more than 1.5x slower per message": the time a message takes through the API (the
    # burst's throughput) and to reach another agent (latency). CPU is reported beside them.
    slower_throughput = s["acked_per_second"] / w["acked_per_second"]
    slower_latency = w["send_to_notify_ms_p50"] / s["send_to_notify_ms_p50"]
    cpu = w["cpu_ms_per_message"] / s["cpu_ms_per_message"]
    ok = max(slower_throughput, slower_latency) <= 1.5 and s["exactly_once"] and w["exactly_once"]
    rows.append(("time per message (throughput)", "", f"{slower_throughput:.2f}x (≤ 1.5x)"))
    rows.append(("latency p50, workers / single", "", f"{slower_latency:.2f}x (≤ 1.5x)"))
    rows.append(("CPU per message, workers / single", "", f"{cpu:.2f}x"))
    width = max(len(r[0]) for r in rows)
    text = "\n".join(f"{a:<{width}}  {b:<22}  {c}" for a, b, c in rows)
    return text, ok


async def _databases(admin: str, tag: str) -> list[str]:
    return [await create_database(admin, f"ac_scale_{tag}_{k}") for k in ("as", "syn")]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--postgres", required=True, help="PostgreSQL admin URL")
    parser.add_argument("--redis", required=True, help="redis://HOST:PORT/DB (a db of its own)")
    parser.add_argument("--agents", type=int, default=1000)
    parser.add_argument("--room-size", type=int, default=100)
    parser.add_argument("--senders", type=int, default=20)
    parser.add_argument("--messages", type=int, default=25, help="per sender")
    parser.add_argument("--rounds", type=int, default=30, help="latency rounds")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--api-replicas", type=int, default=2)
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    if args.agents < args.room_size or args.senders > args.agents // args.room_size * (
        args.room_size - 2
    ):
        parser.error("need --agents ≥ --room-size and room for --senders besides two per room")
    tag = secrets.token_hex(3)
    done: list[Deployment] = []
    with tempfile.TemporaryDirectory(prefix="ac-bench-scale-") as tmp:
        for name in ("single", "workers"):
            databases = asyncio.run(_databases(args.postgres, f"{tag}_{name}"))
            try:
                d = deploy(name, Path(tmp), args, databases)
                try:
                    asyncio.run(Run(args, d).run())
                finally:
                    control.stop(d.dd)
                done.append(d)
            finally:
                for url in databases:
                    asyncio.run(drop_database(args.postgres, url))
    text, ok = report(done[0], done[1], args)
    print(text)
    if args.json:
        args.json.write_text(json.dumps({d.name: d.results for d in done}, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
