#!/usr/bin/env python3
"""Long-poll benchmark (issue 13, "Numbers"): how fast a waiting agent hears a message, and
what a thousand waiters cost the appservice.

Starts its own Synapse + appservice (as bench_appservice.py does, with its bare "probe"
appservice in this process) and measures, in the same run:

- server-side wake: a homeserver transaction PUT straight to the appservice (as Synapse would)
  → the waiting ``GET /notify?wait=…`` answered, minus the transaction's own apply time (from
  /metrics): p50 target ≤ 5 ms;
- end to end: API send by agent A → agent B's ``ac wait`` (a real cold process, started and
  blocked beforehand) prints its line, against the baseline of the same run: a raw masqueraded
  Synapse send as A → the probe has the event; ratio target ≤ 1.2;
- delivery stages: A's ``ac send @B MSG --wait read`` (a real cold process, blocked on the
  receipts long-poll) prints B's ``read`` after B reads through the API, against the raw
  masqueraded send → probe push of the same run: ratio target ≤ 1.3;
- 1,000 concurrent waiters on one appservice: RSS growth (≤ 30 MiB), CPU time the appservice
  uses during ~10 s of idling with them all waiting against ~10 s of idling with no waiter in
  the same run (the waiters should add ≈ 0), and one message into a room they are all in
  answers every waiter exactly once.

    python bench/bench_wait.py                 # SQLite
    python bench/bench_wait.py --database postgres://postgres@127.0.0.1:5432/postgres
"""

from __future__ import annotations

from pathlib import Path
from statistics import median
import argparse
import asyncio
import os
import secrets
import sys
import time

import aiohttp

sys.path.insert(0, str(Path(__file__).parent))
from bench_appservice import Bench, add_stack_arguments, p95, report, run_on_a_stack

AC = str(Path(sys.executable).with_name("ac"))
#: Seconds between the last waiter counted and the idle CPU measurement with them waiting.
SETTLE = 2.0


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class WaitBench(Bench):
    async def run(self) -> None:  # type: ignore[override]
        await self.probe.start()
        timeout = aiohttp.ClientTimeout(total=400)
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as self.http:
            a, b = await self.register(), await self.register()
            room = "#" + "wait" + secrets.token_hex(3)
            room_id = await self.create_room(a["token"], room)
            status, data, _ = await self.api_call("POST", "/join", b["token"], {"room": room})
            assert status == 200, data
            await self.server_wake(a, b, room_id, self.args.rounds)
            await self.end_to_end(a, b, room, room_id, self.args.ac_rounds)
            await self.send_wait_read(a, b, room_id, self.args.stage_rounds)
            await self.many_waiters(a, self.args.waiters, self.args.idle)

    async def cursor(self, token: str) -> str:
        _, data, _ = await self.api_call("GET", "/notify", token)
        return str(data["cursor"])

    async def wait_once(self, token: str, since: str, wait: float = 60) -> tuple[dict, float]:
        status, data, _ = await self.api_call("GET", f"/notify?wait={wait}&since={since}", token)
        assert status == 200, data
        return data, time.perf_counter()

    async def waiting(self, at_least: int) -> None:
        while (await self.metrics()).get("agent_chat_notify_waiters", 0) < at_least:
            await asyncio.sleep(0.005)

    async def server_wake(self, a: dict, b: dict, room_id: str, rounds: int) -> None:
        """A transaction PUT as Synapse would → the waiter answered (minus the apply)."""
        url = f"{self.config.api_url}/_matrix/app/v1/transactions/"
        headers = {"Authorization": f"Bearer {self.config.hs_token}"}
        woken, apply, put = [], [], []
        for i in range(rounds):
            since = await self.cursor(b["token"])
            waiter = asyncio.create_task(self.wait_once(b["token"], since))
            await self.waiting(1)
            before = (await self.metrics())["agent_chat_transaction_apply_seconds_sum"]
            event = {
                "type": "m.room.message",
                "room_id": room_id,
                "sender": a["user_id"],
                "event_id": f"$benchwait{i}{secrets.token_hex(6)}",
                "origin_server_ts": int(time.time() * 1000),
                "content": {"msgtype": "m.text", "body": f"wake {i}"},
            }
            t0 = time.perf_counter()
            async with self.http.put(
                url + secrets.token_hex(8), json={"events": [event]}, headers=headers
            ) as r:
                assert r.status == 200, await r.text()
            t_put = time.perf_counter()
            data, t_answer = await waiter
            assert data["changed"] and data["new"], data
            applied = (await self.metrics())["agent_chat_transaction_apply_seconds_sum"] - before
            woken.append((t_answer - t0 - applied) * 1000)
            apply.append(applied * 1000)
            put.append((t_put - t0) * 1000)
        self.results["server_wake"] = {
            "rounds": rounds,
            "applied_to_answered_ms_median": median(woken),
            "applied_to_answered_ms_p95": p95(woken),
            "apply_ms_median": median(apply),
            "transaction_put_ms_median": median(put),
        }

    async def baseline_pair(self, prefix: str) -> None:
        """Two agents in a fresh room, and ``ac wait``'s rounds between them: the baseline the
        wake benches (bench_wake, bench_run_wake) put their figures beside."""
        a, b = await self.register(), await self.register()
        room = "#" + prefix + secrets.token_hex(3)
        room_id = await self.create_room(a["token"], room)
        status, data, _ = await self.api_call("POST", "/join", b["token"], {"room": room})
        assert status == 200, data
        await self.end_to_end(a, b, room, room_id, self.args.ac_rounds)

    async def end_to_end(self, a: dict, b: dict, room: str, target_room: str, rounds: int) -> None:
        """API send → another agent's `ac wait` prints, vs raw masqueraded send → probe push."""
        # The probe joins the same public room: both paths deliver into one room.
        await self.probe_joins(target_room)
        env = {k: v for k, v in os.environ.items() if not k.startswith("AGENT_CHAT_")}
        env.update(AGENT_CHAT_SERVER=self.config.api_url, AGENT_CHAT_TOKEN=b["token"])
        raw, ours = [], []
        for i in range(rounds):
            # raw: what the appservice does for a send, done directly, until the probe has it
            t0 = time.perf_counter()
            event_id = await self.raw_send(
                target_room, a["user_id"], f"raw {i}", f"raw{i}{secrets.token_hex(4)}"
            )
            await self.probe_has(event_id)
            raw.append((self.probe.arrived[event_id] - t0) * 1000)
            await asyncio.sleep(0.2)  # the raw message reaches the ledger too: let it settle
            # ours: B's `ac wait` blocked on the long-poll; A sends through the API
            base = (await self.metrics()).get("agent_chat_notify_waiters", 0)
            proc = await asyncio.create_subprocess_exec(
                AC, "wait", "--timeout", "60", "--oneline", env=env,
                stdout=asyncio.subprocess.PIPE,
            )  # fmt: skip
            await self.waiting(base + 1)
            t0 = time.perf_counter()
            await self.send(a["token"], room, f"ours {i}")
            assert proc.stdout is not None
            line = await asyncio.wait_for(proc.stdout.readline(), 30)
            ours.append((time.perf_counter() - t0) * 1000)
            assert line.strip(), "ac wait printed nothing"
            await proc.wait()
            assert proc.returncode == 0, proc.returncode
        self.results["end_to_end"] = {
            "rounds": rounds,
            "raw_push_ms_median": median(raw),
            "send_to_ac_wait_ms_median": median(ours),
            "send_to_ac_wait_ms_p95": p95(ours),
            "ratio": median(ours) / median(raw),
        }

    async def send_wait_read(self, a: dict, b: dict, target_room: str, rounds: int) -> None:
        """B reads → A's `ac send --wait read` prints B's stage, vs raw send → probe push."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("AGENT_CHAT_")}
        env.update(AGENT_CHAT_SERVER=self.config.api_url, AGENT_CHAT_TOKEN=a["token"])
        status, data, _ = await self.api_call("GET", "/whoami", b["token"])
        nick = data["nick"]
        raw, ours = [], []
        for i in range(rounds):
            t0 = time.perf_counter()
            event_id = await self.raw_send(
                target_room, a["user_id"], f"raw {i}", f"rawr{i}{secrets.token_hex(4)}"
            )
            await self.probe_has(event_id)
            raw.append((self.probe.arrived[event_id] - t0) * 1000)
            await asyncio.sleep(0.2)
            proc = await asyncio.create_subprocess_exec(
                AC, "send", "@" + nick, f"read me {i}", "--wait", "read", "--timeout", "60",
                env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
            assert proc.stdout is not None
            sent = await asyncio.wait_for(proc.stdout.readline(), 30)
            assert sent.startswith(b"sent to"), sent
            # The message is counted for B, and A's process holds its receipts long-poll.
            while not (await self.api_call("GET", "/notify", b["token"]))[1]["unread"]:
                await asyncio.sleep(0.005)
            await asyncio.sleep(0.05)
            t0 = time.perf_counter()
            status, data, _ = await self.api_call("GET", "/messages?unread=true", b["token"])
            assert status == 200 and data["messages"], data
            line = await asyncio.wait_for(proc.stdout.readline(), 30)
            ours.append((time.perf_counter() - t0) * 1000)
            assert b": read" in line, line
            assert await proc.wait() == 0
        self.results["send_wait_read"] = {
            "rounds": rounds,
            "raw_push_ms_median": median(raw),
            "read_to_sender_ms_median": median(ours),
            "read_to_sender_ms_p95": p95(ours),
            "ratio": median(ours) / median(raw),
        }

    def auth(self, agent: dict) -> dict[str, str]:
        return {"Authorization": f"Bearer {agent['token']}"}

    async def many_waiters(self, sender: dict, count: int, idle: float) -> None:
        """``count`` waiters (spread over agents in one room): memory, idle CPU, one answer
        each per change."""
        per_agent = self.args.waiters_per_agent
        agents = await self.gather_limited(
            [self.register() for _ in range(-(-count // per_agent))], 8
        )
        room = "#" + "crowd" + secrets.token_hex(3)
        await self.create_room(sender["token"], room)
        await self.gather_limited(
            [self.api_call("POST", "/join", x["token"], {"room": room}) for x in agents], 8
        )
        await asyncio.sleep(1.0)  # joins pushed back by Synapse
        cursors = await asyncio.gather(*(self.cursor(x["token"]) for x in agents))
        pid = int(self.dd.pid_file("appservice").read_text())
        rss_before = self.appservice_rss_mib() or 0.0
        # The baseline, same run, same appservice: idle with no waiter at all.
        cpu0 = cpu_seconds(pid)
        await asyncio.sleep(idle)
        cpu_baseline = cpu_seconds(pid) - cpu0
        answers: list[int] = [0] * count
        connector = aiohttp.TCPConnector(limit=0)
        timeout = aiohttp.ClientTimeout(total=400)
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:

            async def wait(i: int) -> None:
                agent, since = agents[i // per_agent], cursors[i // per_agent]
                async with session.get(
                    self.api + "/notify",
                    params={"wait": "120", "since": since},
                    headers=self.auth(agent),
                ) as r:
                    data = await r.json()
                    assert r.status == 200 and data["changed"], data
                    answers[i] += 1

            tasks = [asyncio.create_task(wait(i)) for i in range(count)]
            await self.waiting(count)
            rss_waiting = self.appservice_rss_mib() or 0.0
            # A waiter is counted before its first ledger read: let the last reads finish.
            await asyncio.sleep(SETTLE)
            cpu0 = cpu_seconds(pid)
            await asyncio.sleep(idle)
            cpu_idle = cpu_seconds(pid) - cpu0
            t0 = time.perf_counter()
            await self.send(sender["token"], room, "one change for everyone")
            await asyncio.wait_for(asyncio.gather(*tasks), 120)
            all_answered_ms = (time.perf_counter() - t0) * 1000
        await asyncio.sleep(0.5)
        left = (await self.metrics()).get("agent_chat_notify_waiters", -1)
        self.results["many_waiters"] = {
            "waiters": count,
            "agents": len(agents),
            "rss_before_mib": rss_before,
            "rss_waiting_mib": rss_waiting,
            "rss_growth_mib": rss_waiting - rss_before,
            "idle_seconds": idle,
            "cpu_seconds_while_idle": cpu_idle,
            "cpu_seconds_while_idle_no_waiters": cpu_baseline,
            "answered_exactly_once": all(n == 1 for n in answers),
            "send_to_all_answered_ms": all_answered_ms,
            "waiters_left": left,
        }

    def report(self) -> str:
        r = self.results
        rows: list[tuple[str, str, str]] = []

        def row(name: str, value: str, target: str, ok: bool | None = None) -> None:
            if ok is False:
                self.missed = True
            rows.append((name, value, target + ("" if ok is None else " ✓" if ok else " ✗")))

        if "server_wake" in r:
            w = r["server_wake"]
            row(
                "transaction applied → waiter answered, p50",
                f"{w['applied_to_answered_ms_median']:.2f} ms"
                f" (p95 {w['applied_to_answered_ms_p95']:.2f}; apply {w['apply_ms_median']:.2f})",
                "≤ 5 ms",
                w["applied_to_answered_ms_median"] <= 5,
            )
        if "end_to_end" in r:
            e = r["end_to_end"]
            row(
                "send → other agent's `ac wait` prints, p50",
                f"{e['send_to_ac_wait_ms_median']:.1f} ms (p95 {e['send_to_ac_wait_ms_p95']:.1f})",
                "",
            )
            row(
                "raw masqueraded send → push (same room), p50",
                f"{e['raw_push_ms_median']:.1f} ms",
                "baseline",
            )
            row("ratio", f"{e['ratio']:.2f}×", "≤ 1.2×", e["ratio"] <= 1.2)
        if "send_wait_read" in r:
            e = r["send_wait_read"]
            row(
                "read → sender's `ac send --wait read` prints it, p50",
                f"{e['read_to_sender_ms_median']:.1f} ms (p95 {e['read_to_sender_ms_p95']:.1f})",
                "",
            )
            row("raw masqueraded send → push, p50", f"{e['raw_push_ms_median']:.1f} ms", "")
            row("ratio", f"{e['ratio']:.2f}×", "≤ 1.3×", e["ratio"] <= 1.3)
        if "many_waiters" in r:
            m = r["many_waiters"]
            row(
                f"{m['waiters']} waiters: appservice RSS growth",
                f"{m['rss_growth_mib']:.1f} MiB ({m['rss_before_mib']:.0f} → "
                f"{m['rss_waiting_mib']:.0f})",
                "≤ 30 MiB",
                m["rss_growth_mib"] <= 30,
            )
            row(
                f"CPU while idle {m['idle_seconds']:.0f} s, no waiters",
                f"{m['cpu_seconds_while_idle_no_waiters'] * 1000:.0f} ms",
                "baseline (a 0.5 s homeserver watch runs anyway)",
            )
            extra = m["cpu_seconds_while_idle"] - m["cpu_seconds_while_idle_no_waiters"]
            row(
                f"CPU while idle {m['idle_seconds']:.0f} s with them waiting",
                f"{m['cpu_seconds_while_idle'] * 1000:.0f} ms ({extra * 1000:+.0f} ms for them)",
                "≈ baseline",
            )
            row(
                "one message → every waiter answered once",
                f"{m['answered_exactly_once']} in {m['send_to_all_answered_ms']:.0f} ms;"
                f" {m['waiters_left']:.0f} left",
                "all, once",
                m["answered_exactly_once"] and m["waiters_left"] == 0,
            )
        width = max(len(x[0]) for x in rows) if rows else 0
        return "\n".join(f"{n:<{width}}  {v:<40}  {t}" for n, v, t in rows)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=100, help="server-side wake rounds")
    parser.add_argument("--ac-rounds", type=int, default=60, help="`ac wait` rounds")
    parser.add_argument("--stage-rounds", type=int, default=30, help="`send --wait` rounds")
    parser.add_argument("--waiters", type=int, default=1000)
    parser.add_argument("--waiters-per-agent", type=int, default=5)
    parser.add_argument("--idle", type=float, default=10.0, help="idle seconds measured")
    add_stack_arguments(parser)
    args = parser.parse_args()
    args.keep = None
    bench = WaitBench(args)
    run_on_a_stack(bench, "ac-bench-wait-")
    return report(bench)


if __name__ == "__main__":
    sys.exit(main())
