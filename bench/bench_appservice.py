#!/usr/bin/env python3
"""Appservice benchmark: notify latency at scale, delivery latency against raw Synapse, and the
ledger update for a message into a room of N members.

It starts its own Synapse + appservice (the same code as ``agent-chat-server start``) in a
temporary directory, plus a bare "probe" appservice inside this process that only records when
Synapse pushes each event. The raw baseline is what the appservice does for a send, done
directly: a masqueraded Synapse send as the same agent into the same 1,000-member room, timed
until the probe has it; interleaved round by round with sends through the REST API.

    python bench/bench_appservice.py                       # 1000 agents, 100 rooms, SQLite
    python bench/bench_appservice.py --database postgres://postgres@127.0.0.1:5432/postgres
    python bench/bench_appservice.py --agents 200 --rooms 20 --history 1000   # quicker
    python bench/bench_appservice.py --keep /tmp/st --only delivery   # reuse a stack: iterate

Targets (issue 3): notify ≤ 5 ms median server-side, independent of history; send → visible in
another agent's notify ≤ 1.3 × raw push; a message into a room of 1,000 agents applied ≤ 20 ms.
Issue 8: REST API send throughput ≥ 80% of raw masqueraded sends; scale of 1,000 agents, 100
rooms and 100,000 messages of history (notify and send latency, the appservice's memory).
"""

from __future__ import annotations

from pathlib import Path
from statistics import median
from typing import Any
import argparse
import asyncio
import json
import os
import platform
import secrets
import socket
import sys
import tempfile
import time

from aiohttp import web
import aiohttp

from agent_chat_appservice.config import Config
from agent_chat_server import control
from agent_chat_server.files import load_yaml
from agent_chat_server.init import InitOptions, init_data_dir
from agent_chat_server.paths import DataDir


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]


class Probe:
    """A bare appservice: answers every transaction at once and notes when each event came."""

    def __init__(self, server_name: str, saved: dict[str, Any] | None = None) -> None:
        saved = saved or {}
        self.port = saved.get("port") or free_port()
        self.as_token = saved.get("as_token") or secrets.token_urlsafe(24)
        self.hs_token = saved.get("hs_token") or secrets.token_urlsafe(24)
        self.server_name = server_name
        self.arrived: dict[str, float] = {}
        self.waiters: dict[str, asyncio.Future] = {}

    def registration(self) -> dict[str, Any]:
        return {
            "id": "bench-probe",
            "url": f"http://127.0.0.1:{self.port}",
            "as_token": self.as_token,
            "hs_token": self.hs_token,
            "sender_localpart": "_probe_bot",
            "namespaces": {
                "users": [{"exclusive": True, "regex": "@_probe_.*"}],
                "aliases": [],
                "rooms": [],
            },
            "rate_limited": False,
        }

    async def start(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_put("/_matrix/app/v1/transactions/{txn}", self._transaction)
        app.router.add_post("/_matrix/app/v1/ping", lambda _: web.json_response({}))
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def _transaction(self, request: web.Request) -> web.Response:
        now = time.perf_counter()
        data = await request.json()
        for event in data.get("events", []):
            event_id = event.get("event_id")
            self.arrived[event_id] = now
            waiter = self.waiters.pop(event_id, None)
            if waiter and not waiter.done():
                waiter.set_result(now)
        return web.json_response({})


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.results: dict[str, Any] = {}
        self.missed = False  # a target in the report was missed

    # --- setup ------------------------------------------------------------------------------

    def setup_stack(self, root: Path) -> None:
        self.dd = DataDir.at(root)
        self.saved_file = root / "bench-state.json"
        if self.saved_file.exists():  # --keep: the stack and agents of an earlier run
            saved = json.loads(self.saved_file.read_text())
            self.config = Config.load(self.dd.appservice_yaml)
            self.probe = Probe(self.config.server_name, saved["probe"])
            self.saved_agents = saved["agents"]
            self.api = self.config.api_url + "/_agent_chat/v1"
            self.synapse = self.config.homeserver_url
            return
        self.saved_agents = []
        init_data_dir(
            self.dd,
            InitOptions(
                synapse_port=free_port(),
                api_port=free_port(),
                database=self.args.database,
                synapse_database=self.args.synapse_database,
            ),
        )
        config = Config.load(self.dd.appservice_yaml)
        # The benchmark drives a few agents hard; the per-agent limit is for runaway loops.
        config.send_rate_per_second, config.send_rate_burst = 10000.0, 10000
        # ...and registers and makes rooms from one address far faster than any team would.
        config.register_burst = config.room_create_burst = 100000
        config.save(self.dd.appservice_yaml)
        self.config = config
        self.probe = Probe(config.server_name)
        probe_file = root / "probe-registration.yaml"
        probe_file.write_text(json.dumps(self.probe.registration()))
        hs = load_yaml(self.dd.homeserver_yaml)
        hs["app_service_config_files"] = [*list(hs["app_service_config_files"]), str(probe_file)]
        self.dd.homeserver_yaml.write_text(json.dumps(hs))  # JSON is YAML
        self.api = config.api_url + "/_agent_chat/v1"
        self.synapse = config.homeserver_url

    async def api_call(
        self, method: str, path: str, token: str | None = None, body: Any = None
    ) -> tuple[int, Any, float | None]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with self.http.request(method, self.api + path, json=body, headers=headers) as r:
            data = await r.json(content_type=None)
            timing = r.headers.get("Server-Timing", "")
            dur = float(timing.split("dur=")[1]) if "dur=" in timing else None
            return r.status, data, dur

    async def register(self) -> dict[str, str]:
        status, data, _ = await self.api_call(
            "POST", "/register", body={"registration_token": self.config.registration_token}
        )
        assert status == 201, data
        return data

    async def create_room(self, token: str, alias: str) -> str:
        """Create a public room (or, on a kept stack, join the one an earlier run made)."""
        status, data, _ = await self.api_call("POST", "/rooms", token, {"alias": alias})
        if status == 409:
            status, data, _ = await self.api_call("POST", "/join", token, {"room": alias})
        assert status in (200, 201), data
        return data["room_id"]

    async def gather_limited(self, coros: list, limit: int = 16) -> list:
        sem = asyncio.Semaphore(limit)

        async def run(c):
            async with sem:
                return await c

        return await asyncio.gather(*(run(c) for c in coros))

    async def notify_count(self, token: str, room: str) -> int:
        _, data, _ = await self.api_call("GET", "/notify", token)
        return next((u["count"] for u in data["unread"] if u["room"] == room), 0)

    async def send(self, token: str, to: str, body: str) -> str:
        status, data, _ = await self.api_call(
            "PUT", f"/send/{secrets.token_hex(8)}", token, {"to": to, "body": body}
        )
        assert status == 200, data
        return data["event_id"]

    async def metrics(self) -> dict[str, float]:
        async with self.http.get(self.config.api_url + "/metrics") as r:
            text = await r.text()
        return {
            k: float(v)
            for k, v in (x.rsplit(" ", 1) for x in text.splitlines() if x and x[0] != "#")
        }

    # --- the bare probe: what Synapse pushes, and when -----------------------------------------

    async def probe_joins(self, room: str) -> str:
        """The probe's user (registered on first use) joins ``room`` (a room id, or an alias with
        its ``#`` as ``%23``), so that Synapse pushes the room's events to the probe too.
        Returns the room id."""
        headers = {"Authorization": f"Bearer {self.probe.as_token}"}
        async with self.http.post(
            f"{self.synapse}/_matrix/client/v3/register",
            json={"type": "m.login.application_service", "username": "_probe_user"},
            headers=headers,
        ) as r:
            assert r.status in (200, 400), await r.text()
        async with self.http.post(
            f"{self.synapse}/_matrix/client/v3/join/{room}",
            params={"user_id": f"@_probe_user:{self.config.server_name}"},
            json={},
            headers=headers,
        ) as r:
            assert r.status == 200, await r.text()
            return (await r.json())["room_id"]

    async def raw_send(self, room_id: str, user_id: str, body: str, txn: str) -> str:
        """What the appservice does for a send, done directly: a masqueraded Synapse send as
        ``user_id``. Returns the event id."""
        async with self.http.put(
            f"{self.synapse}/_matrix/client/v3/rooms/{room_id}/send/m.room.message/{txn}",
            params={"user_id": user_id},
            json={"msgtype": "m.text", "body": body},
            headers={"Authorization": f"Bearer {self.config.as_token}"},
        ) as r:
            assert r.status == 200, await r.text()
            return (await r.json())["event_id"]

    async def probe_has(self, event_id: str, timeout: float = 10) -> None:
        """Return once Synapse has pushed ``event_id`` to the probe."""
        if event_id not in self.probe.arrived:
            fut = asyncio.get_running_loop().create_future()
            self.probe.waiters[event_id] = fut
            if event_id not in self.probe.arrived:
                await asyncio.wait_for(fut, timeout)

    # --- measurements -------------------------------------------------------------------------

    async def delivery(self, sender: dict, receiver: dict, rounds: int) -> None:
        """API send → receiver's notify shows it, against Synapse send → probe receives it."""
        room_id = await self.probe_joins(f"%23general:{self.config.server_name}")
        raw, ours, sent, ours_push, raw_sent = [], [], [], [], []
        base = await self.notify_count(receiver["token"], "#general")

        async def raw_round(i: int) -> tuple[float, float]:
            """A raw send as the same agent into the same room, until the probe has it."""
            t0 = time.perf_counter()
            event_id = await self.raw_send(
                room_id, sender["user_id"], f"raw {i}", f"raw{i}{secrets.token_hex(4)}"
            )
            send_ms = (time.perf_counter() - t0) * 1000
            await self.probe_has(event_id)
            return send_ms, (self.probe.arrived[event_id] - t0) * 1000

        for i in range(rounds):
            send_ms, push_ms = await raw_round(i)
            raw.append(push_ms)
            raw_sent.append(send_ms)
            base += 1  # the raw message counts for the receiver too
            while await self.notify_count(receiver["token"], "#general") < base:
                await asyncio.sleep(0.001)
            # ours: API send, until the receiver's notify shows it
            t0 = time.perf_counter()
            event_id = await self.send(sender["token"], "#general", f"ours {i}")
            sent.append((time.perf_counter() - t0) * 1000)
            base += 1
            # Poll only once Synapse has pushed the event (to the probe): polling earlier takes
            # CPU from Synapse on a small machine and would slow the very push being timed.
            # This can only make our figure later, never earlier.
            await self.probe_has(event_id)
            while await self.notify_count(receiver["token"], "#general") < base:
                await asyncio.sleep(0.0005)
            ours.append((time.perf_counter() - t0) * 1000)
            # the probe is in #general too: when Synapse pushed this same event to an appservice
            if event_id in self.probe.arrived:
                ours_push.append((self.probe.arrived[event_id] - t0) * 1000)
        self.results["delivery"] = {
            "rounds": rounds,
            "raw_push_ms_median": median(raw),
            "raw_push_ms_p95": p95(raw),
            "api_send_to_notify_ms_median": median(ours),
            "api_send_to_notify_ms_p95": p95(ours),
            "ratio": median(ours) / median(raw),
            "api_send_ms_median": median(sent),
            "raw_send_ms_median": median(raw_sent),
            "same_event_push_to_probe_ms_median": median(ours_push) if ours_push else None,
        }

    async def notify_latency(self, token: str, samples: int) -> dict[str, float]:
        server, client = [], []
        for _ in range(samples):
            t0 = time.perf_counter()
            _status, data, dur = await self.api_call("GET", "/notify", token)
            client.append((time.perf_counter() - t0) * 1000)
            server.append(dur)
        return {
            "server_ms_median": median(server),
            "server_ms_p95": p95(server),
            "client_rtt_ms_median": median(client),
            "entries": len(data["unread"]),
        }

    async def throughput(self, agents: list[dict], per_agent: int) -> None:
        """N agents sending at once: through the REST API, and as raw masqueraded Synapse sends
        (what the appservice itself does for each send), into the same fresh room."""
        owner = agents[0]
        room_id = await self.create_room(owner["token"], "#tput")
        await self.gather_limited(
            [self.api_call("POST", "/join", a["token"], {"room": "#tput"}) for a in agents[1:]], 8
        )
        headers = {"Authorization": f"Bearer {self.config.as_token}"}

        async def raw_send(agent: dict, i: int) -> None:
            async with self.http.put(
                f"{self.synapse}/_matrix/client/v3/rooms/{room_id}/send/m.room.message/"
                f"raw{secrets.token_hex(8)}",
                params={"user_id": agent["user_id"]},
                json={"msgtype": "m.text", "body": f"raw {i}"},
                headers=headers,
            ) as r:
                assert r.status == 200, await r.text()

        async def api_send(agent: dict, i: int) -> None:
            await self.send(agent["token"], "#tput", f"api {i}")

        async def run(fn) -> float:
            async def one_agent(agent: dict) -> None:
                for i in range(per_agent):
                    await fn(agent, i)

            t0 = time.perf_counter()
            await asyncio.gather(*(one_agent(a) for a in agents))
            return len(agents) * per_agent / (time.perf_counter() - t0)

        rates: dict[str, list[float]] = {"raw": [], "api": []}
        for _ in range(3):  # interleaved, so both see the same machine
            rates["raw"].append(await run(raw_send))
            rates["api"].append(await run(api_send))
        raw, api = max(rates["raw"]), max(rates["api"])
        self.results["throughput"] = {
            "agents": len(agents),
            "messages_per_agent": per_agent,
            "raw_msgs_per_second": raw,
            "api_msgs_per_second": api,
            "api_over_raw": api / raw,
            "runs": rates,
        }

    def appservice_rss_mib(self) -> float | None:
        try:
            pid = int(self.dd.pid_file("appservice").read_text())
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        except (OSError, ValueError):
            return None
        return None

    async def big_room(self, agents: list[dict], rounds: int) -> None:
        owner = agents[0]
        await self.create_room(owner["token"], "#big")
        t0 = time.perf_counter()
        await self.gather_limited(
            [self.api_call("POST", "/join", a["token"], {"room": "#big"}) for a in agents[1:]], 8
        )
        join_s = time.perf_counter() - t0
        _status, who, _ = await self.api_call("GET", "/who?room=%23big", owner["token"])
        members = len(who["members"])
        apply_ms = []
        receiver = agents[-1]
        for i in range(rounds):
            before = await self.metrics()
            count_before = await self.notify_count(receiver["token"], "#big")
            await self.send(owner["token"], "#big", f"to everyone {i}")
            while await self.notify_count(receiver["token"], "#big") == count_before:
                await asyncio.sleep(0.001)
            # The count is visible a moment before the appservice records the apply time.
            after = await self.metrics()
            key = "agent_chat_transaction_apply_seconds_count"
            while after[key] == before[key]:
                await asyncio.sleep(0.001)
                after = await self.metrics()
            n = (
                after["agent_chat_transaction_apply_seconds_count"]
                - before["agent_chat_transaction_apply_seconds_count"]
            )
            total = (
                after["agent_chat_transaction_apply_seconds_sum"]
                - before["agent_chat_transaction_apply_seconds_sum"]
            )
            apply_ms.append(total / n * 1000)
        self.results["big_room"] = {
            "members": members,
            "join_all_seconds": join_s,
            "ledger_apply_ms_median": median(apply_ms),
            "ledger_apply_ms_max": max(apply_ms),
        }

    async def send_latency(self, token: str, to: str, samples: int) -> dict[str, float]:
        """The API send call, one at a time (what `ac send` waits for)."""
        times = []
        for i in range(samples):
            t0 = time.perf_counter()
            await self.send(token, to, f"latency probe {i}")
            times.append((time.perf_counter() - t0) * 1000)
        return {"ms_median": median(times), "ms_p95": p95(times)}

    async def scale(self, agents: list[dict]) -> None:
        """The receiver in every room with unread messages; notify and send latency before and
        after the history, which many agents write at once, each into a room of its own."""
        a = self.args
        sender, receiver = agents[0], agents[1]
        writers = agents[2:] or [sender]
        t0 = time.perf_counter()
        names = [f"#room{i:03d}" for i in range(a.rooms)]
        for name in names:
            await self.create_room(sender["token"], name)
        joins = [(receiver, n) for n in names] + [
            (writers[i % len(writers)], n) for i, n in enumerate(names)
        ]
        await self.gather_limited(
            [self.api_call("POST", "/join", who["token"], {"room": n}) for who, n in joins], 8
        )
        await self.gather_limited([self.send(sender["token"], n, "hello") for n in names], 8)
        while (
            len((await self.api_call("GET", "/notify", receiver["token"]))[1]["unread"]) < a.rooms
        ):
            await asyncio.sleep(0.01)
        self.results["rooms"] = {"rooms": a.rooms, "setup_seconds": time.perf_counter() - t0}
        before = await self.notify_latency(receiver["token"], a.samples)
        send_before = await self.send_latency(sender["token"], names[0], 50)

        t0 = time.perf_counter()
        done = 0
        for start in range(0, a.history, 1000):  # in slices, so progress shows on long runs
            batch = range(start, min(a.history, start + 1000))
            await self.gather_limited(
                [
                    self.send(writers[r % len(writers)]["token"], names[r], f"history {i}")
                    for i in batch
                    for r in [i % len(names)]
                ],
                32,
            )
            done += len(batch)
            if a.history >= 20000:
                rate = done / (time.perf_counter() - t0)
                print(f"history: {done}/{a.history} ({rate:.0f} msg/s)", file=sys.stderr)
        history_s = time.perf_counter() - t0
        # Wait until the ledger has every message: the receiver's counts add up.
        expected = a.rooms + a.history + 50
        while True:
            _, data, _ = await self.api_call("GET", "/notify", receiver["token"])
            if sum(u["count"] for u in data["unread"]) >= expected:
                break
            await asyncio.sleep(0.05)
        after = await self.notify_latency(receiver["token"], a.samples)
        send_after = await self.send_latency(sender["token"], names[0], 50)
        self.results["notify"] = {
            "agents": a.agents,
            "unread_rooms": before["entries"],
            "before_history": before,
            "history_messages": a.history,
            "history_send_seconds": history_s,
            "history_msgs_per_second": a.history / history_s,
            "after_history": after,
            "after_over_before": after["server_ms_median"] / before["server_ms_median"],
            "send_before_history": send_before,
            "send_after_history": send_after,
        }

    async def run(self) -> None:
        a = self.args
        only = set(a.only.split(",")) if a.only else {"delivery", "scale", "throughput", "big"}
        self.http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64))
        await self.probe.start()
        try:
            t0 = time.perf_counter()
            missing = a.agents - len(self.saved_agents)
            new = await self.gather_limited([self.register() for _ in range(missing)], 8)
            agents = self.saved_agents + new
            self.results["register"] = {
                "agents": len(agents),
                "seconds": time.perf_counter() - t0,
                "reused": len(self.saved_agents),
            }
            if a.keep:
                probe = self.probe
                state = {
                    "port": probe.port,
                    "as_token": probe.as_token,
                    "hs_token": probe.hs_token,
                }
                self.saved_file.write_text(json.dumps({"probe": state, "agents": agents}))
            sender, receiver = agents[0], agents[1]
            if "delivery" in only:
                await self.delivery(sender, receiver, a.rounds)
            if "scale" in only:
                await self.scale(agents)
            if "throughput" in only:
                await self.throughput(agents[: a.concurrent], a.per_agent)
            if "big" in only:
                await self.big_room(agents, a.big_rounds)
            self.results["appservice_rss_mib"] = self.appservice_rss_mib()
        finally:
            await self.http.close()
            await self.probe.runner.cleanup()

    def verdict(self, met: bool) -> str:
        """A target's mark in the table; a missed one makes the script exit 1."""
        self.missed = self.missed or not met
        return "ok" if met else "MISSED"

    def report(self) -> str:
        r = self.results
        rows = [
            ("database", _redact(self.args.database) or "sqlite", "appservice"),
            ("", _redact(self.args.synapse_database) or "sqlite", "Synapse"),
            (
                "agents registered",
                f"{r['register']['agents']} in {r['register']['seconds']:.1f} s",
                "",
            ),
        ]
        if d := r.get("delivery"):
            rows += [
                ("raw Synapse send → push (median)", f"{d['raw_push_ms_median']:.1f} ms", ""),
                (
                    "API send → other's notify (median)",
                    f"{d['api_send_to_notify_ms_median']:.1f} ms",
                    f"ratio {d['ratio']:.3f}; target ≤ 1.3 {self.verdict(d['ratio'] <= 1.3)}",
                ),
                (
                    "  of which the API send call",
                    f"{d['api_send_ms_median']:.1f} ms",
                    f"raw Synapse send call {d['raw_send_ms_median']:.1f} ms",
                ),
                (
                    "  same event pushed to the probe at",
                    f"{d['same_event_push_to_probe_ms_median'] or 0:.1f} ms",
                    "",
                ),
            ]
        if n := r.get("notify"):
            sb, sa = n["send_before_history"], n["send_after_history"]
            rows += [
                (
                    f"notify, {n['unread_rooms']} unread rooms, server (median)",
                    f"{n['before_history']['server_ms_median']:.2f} ms",
                    f"target ≤ 5 ms {self.verdict(n['before_history']['server_ms_median'] <= 5)}",
                ),
                (
                    f"notify after {n['history_messages']} more messages",
                    f"{n['after_history']['server_ms_median']:.2f} ms",
                    f"after/before {n['after_over_before']:.2f}",
                ),
                (
                    "API send call, before / after the history",
                    f"{sb['ms_median']:.1f} ms",
                    f"{sa['ms_median']:.1f} ms after",
                ),
                (
                    f"history sends over {r['rooms']['rooms']} rooms",
                    f"{n['history_msgs_per_second']:.0f} msg/s",
                    f"{n['history_send_seconds']:.0f} s",
                ),
            ]
        if b := r.get("big_room"):
            rows.append(
                (
                    f"ledger apply, room of {b['members']} members (median)",
                    f"{b['ledger_apply_ms_median']:.2f} ms",
                    f"max {b['ledger_apply_ms_max']:.2f} ms; target ≤ 20 ms "
                    f"{self.verdict(b['ledger_apply_ms_median'] <= 20)}",
                )
            )
        if t := r.get("throughput"):
            rows += [
                (
                    f"raw masqueraded sends, {t['agents']} agents at once",
                    f"{t['raw_msgs_per_second']:.0f} msg/s",
                    "",
                ),
                (
                    f"REST API sends, {t['agents']} agents at once",
                    f"{t['api_msgs_per_second']:.0f} msg/s",
                    f"{t['api_over_raw']:.0%} of raw; target ≥ 80% "
                    f"{self.verdict(t['api_over_raw'] >= 0.8)}",
                ),
            ]
        rows.append(
            ("appservice memory (RSS) at the end", f"{r['appservice_rss_mib'] or 0:.0f} MiB", "")
        )
        width = max(len(k) for k, _, _ in rows)
        return "\n".join(f"{k:<{width}}  {v:>14}  {note}" for k, v, note in rows)


def _redact(url: str | None) -> str | None:
    """A database URL for the report: the database's name, not who connects how."""
    return f"postgres …/{url.rsplit('/', 1)[-1]}" if url else None


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--agents", type=int, default=1000)
    parser.add_argument("--rooms", type=int, default=100)
    parser.add_argument(
        "--history", type=int, default=100000, help="messages spread over the rooms (scale)"
    )
    parser.add_argument("--rounds", type=int, default=200, help="delivery latency rounds")
    parser.add_argument("--samples", type=int, default=300, help="notify calls per measurement")
    parser.add_argument("--big-rounds", type=int, default=10)
    parser.add_argument("--concurrent", type=int, default=50, help="agents sending at once")
    parser.add_argument("--per-agent", type=int, default=8, help="messages each, per run")
    add_stack_arguments(parser)
    parser.add_argument(
        "--keep",
        type=Path,
        help="keep the stack and its agents in this directory and reuse them next time "
        "(for quick experiments; the rooms a run creates stay too, so use a new one per --only)",
    )
    parser.add_argument(
        "--only", help="comma-separated parts to run: delivery,scale,throughput,big (default all)"
    )
    bench = Bench(parser.parse_args())
    run_on_a_stack(bench, "ac-bench-")
    bench.results["machine"] = {
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
    }
    return report(bench)


def add_stack_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of every benchmark that starts its own stack: its databases, its output."""
    parser.add_argument("--database", help="appservice database URL (default: SQLite)")
    parser.add_argument("--synapse-database", help="Synapse's database URL (default: SQLite)")
    parser.add_argument("--json", type=Path, help="write the results here")


def run_on_a_stack(bench: Bench, prefix: str) -> None:
    """Start Synapse + appservice (in ``--keep``'s directory, or a temp one), run the bench on
    them, stop them."""
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        bench.setup_stack(bench.args.keep or Path(tmp) / "server")
        control.start_background(bench.dd, timeout=120, tie_to_caller=True)
        try:
            asyncio.run(bench.run())
        finally:
            control.stop(bench.dd)


def report(bench: Bench) -> int:
    """Print the report, write the JSON results (``--json``); 1 when a target was missed."""
    print(bench.report())
    if bench.args.json:
        bench.args.json.write_text(json.dumps(bench.results, indent=2))
    return 1 if bench.missed else 0


if __name__ == "__main__":
    sys.exit(main())
