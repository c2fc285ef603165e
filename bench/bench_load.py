#!/usr/bin/env python3
"""Load benchmark (issue 27): a team's burst and a team's steady traffic, on SQLite and
PostgreSQL side by side, in the shape of the only peer that publishes load figures (MCP Agent
Mail's Rust port: "30-agent pipeline 150/150, p99 6.8 s"; "30 s mixed load ~49 ops/s, p99
2.6 s").

Starts two stacks at once (Synapse + appservice, as bench_appservice.py does): the appservice on
SQLite, and on PostgreSQL when ``--database`` names one; rounds alternate between them, so both
see the same machine. In each round, on each stack:

- pipeline, first contact: 30 fresh agents, each sends 5 messages to the next one's direct
  chat (30 chats, created by the sends themselves), all agents at once; every recipient is on
  the ``/notify`` long-poll and reads what woke it (``/messages?unread=true``);
- pipeline, warm: the same 30 agents and chats again;
- pipeline, shared room: the 30 agents in one room, 5 messages each, seen by the 29 others.

Measured: send → seen by the recipient (p50/p99), the send call (p50/p99), and every message
seen exactly once by each recipient (lost / doubled counted, never assumed), and the
appservice's apply time per message counted, from ``/metrics``.

Then the mixed load, on each stack: N clients (10, then 30) for ``--duration`` seconds each
pick 40% notify, 25% send (into one room), 20% listen, 10% claims check, 5% who; ops/s, p50/p99
over all calls, errors, and an observer's count of the room against the sends answered 200
(lost / doubled).

    python bench/bench_load.py                                   # SQLite only
    python bench/bench_load.py --database postgres://postgres@127.0.0.1:5432/DB
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
import argparse
import asyncio
import json
import random
import secrets
import sys
import tempfile
import time

import aiohttp

sys.path.insert(0, str(Path(__file__).parent))
from bench_appservice import _redact, add_stack_arguments
from bench_wait import WaitBench

from agent_chat_server import control

#: The peer's published figures, quoted beside ours in the table.
PEER = {
    "pipeline": "MCP Agent Mail (Rust): 150/150 delivered, p99 6.8 s",
    "mixed": "MCP Agent Mail (Rust): ~49 ops/s, p99 2.6 s",
}
#: The mixed load's operations and their weights.
MIX = (("notify", 40), ("send", 25), ("listen", 20), ("claims", 10), ("who", 5))


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


class Side(WaitBench):
    """One stack (its database named by ``label``) and what ran on it."""

    def __init__(self, args: argparse.Namespace, label: str, database: str | None) -> None:
        side_args = argparse.Namespace(**vars(args))
        side_args.database = database
        side_args.keep = None
        super().__init__(side_args)
        self.label = label
        #: kind of run → pooled samples and counts
        self.pipe: dict[str, dict[str, Any]] = {}
        self.mixed: dict[int, dict[str, Any]] = {}

    async def apply_totals(self) -> tuple[float, float]:
        m = await self.metrics()
        return (
            m.get("agent_chat_transaction_apply_seconds_sum", 0.0),
            m.get("agent_chat_ledger_messages_total", 0.0),
        )

    # --- the pipeline ------------------------------------------------------------------------

    async def listen(
        self, agent: dict, expected: set[str], seen: dict[str, float], doubled: list[str],
        deadline: float,
    ) -> None:  # fmt: skip
        """``agent`` on the long-poll until it has read every body in ``expected``; notes when
        it first saw each (and any second time: doubled)."""
        _, data, _ = await self.api_call("GET", "/notify", agent["token"])
        since = str(data["cursor"])
        while not expected <= seen.keys() and time.perf_counter() < deadline:
            left = max(1.0, deadline - time.perf_counter())
            status, data, _ = await self.api_call(
                "GET", f"/notify?wait={min(30, left):.0f}&since={since}", agent["token"]
            )
            if status != 200:
                await asyncio.sleep(0.05)
                continue
            since = str(data["cursor"])
            if not data.get("changed"):
                continue
            status, got, _ = await self.api_call(
                "GET", "/messages?unread=true&limit=1000", agent["token"]
            )
            now = time.perf_counter()
            for m in got.get("messages", []) if status == 200 else []:
                body = m["body"]
                if body not in expected:
                    continue
                if body in seen:
                    doubled.append(body)
                else:
                    seen[body] = now

    async def pipeline(self, kind: str, agents: list[dict], room: str | None) -> None:
        """Every agent sends ``per`` messages (to the next agent, or into ``room``) at once;
        each recipient reads them from its long-poll."""
        per, n = self.args.per_agent, len(agents)
        tag = secrets.token_hex(3)
        sent_at: dict[str, float] = {}
        call_ms: list[float] = []
        opening_ms: list[float] = []  # each sender's first call (first contact: it makes the chat)
        errors = 0
        # body → who must see it
        plan: list[tuple[dict, str, str]] = []  # (sender, to, body)
        wanted: list[set[str]] = [set() for _ in agents]
        for i, a in enumerate(agents):
            for k in range(per):
                body = f"{kind} {tag} {i}.{k}"
                if room is None:
                    plan.append((a, "@" + agents[(i + 1) % n]["nick"], body))
                    wanted[(i + 1) % n].add(body)
                else:
                    plan.append((a, room, body))
                    for j in range(n):
                        if j != i:
                            wanted[j].add(body)
        seen: list[dict[str, float]] = [{} for _ in agents]
        doubled: list[list[str]] = [[] for _ in agents]
        deadline = time.perf_counter() + self.args.pipeline_timeout
        listeners = [
            asyncio.create_task(self.listen(a, wanted[j], seen[j], doubled[j], deadline))
            for j, a in enumerate(agents)
        ]
        await self.waiting_for(listeners, n)
        apply0, counted0 = await self.apply_totals()

        async def sender(i: int) -> None:
            nonlocal errors
            for k, (a, to, body) in enumerate(plan[i * per : (i + 1) * per]):
                t0 = time.perf_counter()
                sent_at[body] = t0
                status, _data, _ = await self.api_call(
                    "PUT", f"/send/{secrets.token_hex(8)}", a["token"], {"to": to, "body": body}
                )
                call_ms.append((time.perf_counter() - t0) * 1000)
                if k == 0:
                    opening_ms.append(call_ms[-1])
                errors += status != 200

        await asyncio.gather(*(sender(i) for i in range(n)))
        await asyncio.gather(*listeners)
        apply1, counted1 = await self.apply_totals()
        latencies = [(t - sent_at[body]) * 1000 for got in seen for body, t in got.items()]
        expected = sum(len(w) for w in wanted)
        pooled = self.pipe.setdefault(
            kind,
            {"seen_ms": [], "call_ms": [], "opening_ms": [], "expected": 0, "seen": 0,
             "doubled": 0, "errors": 0, "apply_s": 0.0, "counted": 0.0, "sends": 0},
        )  # fmt: skip
        pooled["seen_ms"] += latencies
        pooled["call_ms"] += call_ms
        pooled["opening_ms"] += opening_ms
        pooled["expected"] += expected
        pooled["seen"] += len(latencies)
        pooled["doubled"] += sum(len(d) for d in doubled)
        pooled["errors"] += errors
        pooled["apply_s"] += apply1 - apply0
        pooled["counted"] += counted1 - counted0
        pooled["sends"] += len(plan)
        print(
            f"{self.label} {kind}: {len(latencies)}/{expected} seen, p50 "
            f"{pct(latencies, 0.5):.0f} ms, p99 {pct(latencies, 0.99):.0f} ms",
            file=sys.stderr,
        )

    async def waiting_for(self, listeners: list[asyncio.Task], count: int) -> None:
        """Until ``count`` long-polls wait (the listeners are on it), or one of them failed."""
        while (await self.metrics()).get("agent_chat_notify_waiters", 0) < count:
            for t in listeners:
                if t.done():
                    t.result()  # raises what failed
            await asyncio.sleep(0.01)

    async def pipeline_round(self) -> None:
        n, only = self.args.agents, self.args.only
        agents = await self.gather_limited([self.register() for _ in range(n)], 8)
        await self.pipeline("first contact", agents, None)
        if "warm" in only:
            await self.pipeline("warm", agents, None)
        if "shared" not in only:
            return
        room = "#pipe" + secrets.token_hex(3)
        await self.create_room(agents[0]["token"], room)
        await self.gather_limited(
            [self.api_call("POST", "/join", a["token"], {"room": room}) for a in agents[1:]], 8
        )
        await asyncio.sleep(0.5)  # the joins reach the ledger before the burst
        await self.pipeline("shared room", agents, room)

    # --- the mixed load ----------------------------------------------------------------------

    async def mixed_load(self, clients: int, duration: float) -> None:
        agents = await self.gather_limited([self.register() for _ in range(clients + 1)], 8)
        observer, agents = agents[0], agents[1:]
        room = "#load" + secrets.token_hex(3)
        await self.create_room(observer["token"], room)
        await self.gather_limited(
            [self.api_call("POST", "/join", a["token"], {"room": room}) for a in agents], 8
        )
        project = "bench-" + secrets.token_hex(3)
        status, data, _ = await self.api_call(
            "POST", "/claims", agents[0]["token"],
            {"project": project, "patterns": ["src/auth/**"], "reason": "load"},
        )  # fmt: skip
        assert status in (200, 201), data
        await asyncio.sleep(0.5)
        names, weights = zip(*MIX, strict=True)
        latencies: list[float] = []
        by_op: dict[str, list[float]] = {name: [] for name in names}
        errors = 0
        sent_ok = 0
        apply0, counted0 = await self.apply_totals()
        rng = random.Random(clients)
        stop = time.perf_counter() + duration
        who = room.replace("#", "%23")

        async def client(agent: dict) -> None:
            nonlocal errors, sent_ok
            token = agent["token"]
            while time.perf_counter() < stop:
                op = rng.choices(names, weights)[0]
                t0 = time.perf_counter()
                try:
                    if op == "notify":
                        status, _, _ = await self.api_call("GET", "/notify", token)
                    elif op == "send":
                        status, _, _ = await self.api_call(
                            "PUT", f"/send/{secrets.token_hex(8)}", token,
                            {"to": room, "body": f"load {secrets.token_hex(4)}"},
                        )  # fmt: skip
                        sent_ok += status == 200
                    elif op == "listen":
                        status, _, _ = await self.api_call(
                            "GET", "/messages?unread=true&limit=50", token
                        )
                    elif op == "claims":
                        status, _, _ = await self.api_call(
                            "POST", "/claims/check", token,
                            {"project": project, "paths": ["src/auth/login.py", "README.md"]},
                        )  # fmt: skip
                    else:
                        status, _, _ = await self.api_call("GET", f"/who?room={who}", token)
                except (TimeoutError, aiohttp.ClientError):
                    status = 0
                ms = (time.perf_counter() - t0) * 1000
                latencies.append(ms)
                by_op[op].append(ms)
                errors += status != 200

        t0 = time.perf_counter()
        await asyncio.gather(*(client(a) for a in agents))
        elapsed = time.perf_counter() - t0
        # Lost or doubled: the observer (a member who never reads) counts the room's messages.
        count, deadline = -1, time.perf_counter() + 60
        while time.perf_counter() < deadline:
            count = await self.notify_count(observer["token"], room)
            if count >= sent_ok:
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.0)  # anything doubled would arrive just after
        count = await self.notify_count(observer["token"], room)
        apply1, counted1 = await self.apply_totals()
        self.mixed[clients] = {
            "ops": len(latencies),
            "ops_per_s": len(latencies) / elapsed,
            "p50_ms": pct(latencies, 0.5),
            "p99_ms": pct(latencies, 0.99),
            "p99_by_op_ms": {k: pct(v, 0.99) for k, v in by_op.items()},
            "errors": errors,
            "sends_ok": sent_ok,
            "lost": max(0, sent_ok - count),
            "doubled": max(0, count - sent_ok),
            "apply_ms_per_message": _per(apply1 - apply0, counted1 - counted0),
        }
        print(
            f"{self.label} mixed {clients}: {len(latencies) / elapsed:.0f} ops/s, "
            f"p99 {pct(latencies, 0.99):.0f} ms",
            file=sys.stderr,
        )


def _per(seconds: float, count: float) -> float:
    return seconds / count * 1000 if count else float("nan")


class Load:
    """Both stacks, their rounds interleaved."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.sides = [Side(args, "SQLite", None)]
        if args.database:
            self.sides.append(Side(args, "PostgreSQL", args.database))
        self.missed = False

    async def run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=300)
        for side in self.sides:
            side.http = aiohttp.ClientSession(
                timeout=timeout, connector=aiohttp.TCPConnector(limit=0)
            )
        try:
            pipeline = {"first", "warm", "shared"} & set(self.args.only)
            for _ in range(self.args.rounds if pipeline else 0):
                for side in self.sides:
                    await side.pipeline_round()
            for clients in self.args.clients if "mixed" in self.args.only else []:
                for side in self.sides:
                    await side.mixed_load(clients, self.args.duration)
        finally:
            for side in self.sides:
                await side.http.close()

    def results(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for side in self.sides:
            pipe = {}
            for kind, p in side.pipe.items():
                pipe[kind] = {
                    "seen_p50_ms": pct(p["seen_ms"], 0.5),
                    "seen_p99_ms": pct(p["seen_ms"], 0.99),
                    "call_p50_ms": pct(p["call_ms"], 0.5),
                    "call_p99_ms": pct(p["call_ms"], 0.99),
                    "opening_call_p50_ms": pct(p["opening_ms"], 0.5),
                    "opening_call_max_ms": max(p["opening_ms"], default=float("nan")),
                    "expected": p["expected"],
                    "seen": p["seen"],
                    "lost": p["expected"] - p["seen"],
                    "doubled": p["doubled"],
                    "errors": p["errors"],
                    "sends": p["sends"],
                    "apply_ms_per_message": _per(p["apply_s"], p["counted"]),
                }
            out[side.label] = {
                "database": _redact(side.args.database) or "sqlite",
                "pipeline": pipe,
                "mixed": side.mixed,
            }
        return out

    def report(self) -> str:
        r = self.results()
        lines = [
            f"{self.args.rounds} interleaved round(s) of {self.args.agents} agents × "
            f"{self.args.per_agent} messages; mixed load {self.args.duration:.0f} s each. "
            "Appservice database as named; Synapse on SQLite.",
            "",
            f"{'pipeline':<28} {'db':<10} {'seen p50/p99 ms':>16} {'send call p50/p99':>18}"
            f" {'apply/msg':>10} {'errors':>6} {'lost':>5} {'doubled':>7}",
        ]
        for kind in ("first contact", "warm", "shared room"):
            for label, side in r.items():
                p = side["pipeline"].get(kind)
                if not p:
                    continue
                lines.append(
                    f"{kind:<28} {label:<10} "
                    f"{p['seen_p50_ms']:>7.0f} / {p['seen_p99_ms']:<6.0f} "
                    f"{p['call_p50_ms']:>8.0f} / {p['call_p99_ms']:<7.0f}"
                    f" {p['apply_ms_per_message']:>7.2f} ms {p['errors']:>6}"
                    f" {p['lost']:>5} {p['doubled']:>7}"
                )
                self.missed |= bool(p["lost"] or p["doubled"] or p["errors"])
                if kind == "first contact":
                    lines.append(
                        f"{'  its first send (the chat)':<28} {label:<10} {'':>16} "
                        f"{p['opening_call_p50_ms']:>8.0f} / {p['opening_call_max_ms']:<7.0f}"
                        " (p50 / max)"
                    )
        lines.append(f"{'  peer, 30-agent pipeline':<28} {PEER['pipeline']}")
        lines += [
            "",
            f"{'mixed load':<28} {'db':<10} {'ops/s':>6} {'p50/p99 ms':>14} {'apply/msg':>10}"
            f" {'errors':>6} {'lost':>5} {'doubled':>7}",
        ]
        for clients in self.args.clients:
            for label, side in r.items():
                m = side["mixed"].get(clients)
                if not m:
                    continue
                lines.append(
                    f"{f'{clients} clients, {self.args.duration:.0f} s':<28} {label:<10} "
                    f"{m['ops_per_s']:>6.0f} {m['p50_ms']:>6.0f} / {m['p99_ms']:<6.0f}"
                    f" {m['apply_ms_per_message']:>7.2f} ms {m['errors']:>6}"
                    f" {m['lost']:>5} {m['doubled']:>7}"
                )
                self.missed |= bool(m["lost"] or m["doubled"] or m["errors"])
        lines.append(f"{'  peer, 30 s mixed load':<28} {PEER['mixed']}")
        if "PostgreSQL" in r and "SQLite" in r:
            lines += ["", "PostgreSQL / SQLite, same run:"]
            for kind in ("first contact", "warm", "shared room"):
                s, p = r["SQLite"]["pipeline"].get(kind), r["PostgreSQL"]["pipeline"].get(kind)
                if s and p:
                    p50 = p["seen_p50_ms"] / s["seen_p50_ms"]
                    p99 = p["seen_p99_ms"] / s["seen_p99_ms"]
                    lines.append(
                        f"  {kind:<26} send → seen p50 {p50:.2f}× (target ≤ 1.2), "
                        f"p99 {p99:.2f}× (target ≤ 1.5)"
                    )
        return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--agents", type=int, default=30)
    parser.add_argument("--per-agent", type=int, default=5, help="messages each agent sends")
    parser.add_argument("--rounds", type=int, default=3, help="pipeline rounds per database")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of mixed load")
    parser.add_argument(
        "--clients", type=lambda s: [int(x) for x in s.split(",")], default=[10, 30],
        help="concurrent clients of the mixed load, comma-separated",
    )  # fmt: skip
    parser.add_argument("--pipeline-timeout", type=float, default=120.0)
    parser.add_argument(
        "--only", type=lambda s: s.split(","), default=["first", "warm", "shared", "mixed"],
        help="parts to run, comma-separated: first, warm, shared, mixed (first contact always "
        "runs before warm and shared: it creates their agents' direct chats)",
    )  # fmt: skip
    parser.add_argument(
        "--dir", type=Path, help="keep the stacks (and their logs) here, not in a temp dir"
    )
    add_stack_arguments(parser)
    args = parser.parse_args()
    load = Load(args)
    with tempfile.TemporaryDirectory(prefix="ac-bench-load-") as tmp:
        started = []
        try:
            for side in load.sides:
                side.setup_stack((args.dir or Path(tmp)) / side.label.lower())
                control.start_background(side.dd, timeout=120, tie_to_caller=True)
                started.append(side)
            asyncio.run(load.run())
        finally:
            for side in started:
                control.stop(side.dd)
    print(load.report())
    if args.json:
        args.json.write_text(json.dumps(load.results(), indent=2))
    return 1 if load.missed else 0


if __name__ == "__main__":
    sys.exit(main())
