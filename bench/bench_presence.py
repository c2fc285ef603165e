#!/usr/bin/env python3
"""Presence benchmark (issue 22, "Numbers"): how soon ``ac who`` tells the truth about a
session.

Starts its own Synapse + appservice (as bench_wait.py does) and one agent whose hooks are the
real ``ac-hook.sh`` (files written by ``ac register``), watched by another agent through
``GET /presence`` (what ``ac who`` shows), polled every few milliseconds. Each round uses a
fresh session id (the server writes a session's signs of life at most every 15 s each).

- gone: the session's hook runs (a sign of life; ``working`` once visible), then its
  SessionEnd hook (``ac-hook.sh --end``): from that hook's start, and from its exit, until
  ``gone`` is visible. Target ≤ 2 s.
- wakeable: a wake waiter connects (a ``/notify`` long-poll naming the session, as ``ac wait
  --session`` sends it): from the request sent until ``idle · wakeable`` is visible. Target
  ≤ 1 s. Also from a cold ``ac wait --session`` process's spawn (its start-up included).

    python bench/bench_presence.py                 # SQLite
    python bench/bench_presence.py --database postgres://postgres@127.0.0.1:5432/postgres
"""

from __future__ import annotations

from pathlib import Path
from statistics import median
from typing import Any
import argparse
import asyncio
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time

import aiohttp

sys.path.insert(0, str(Path(__file__).parent))
from bench_appservice import Bench, _redact, add_stack_arguments, p95, report, run_on_a_stack

ROOT = Path(__file__).resolve().parent.parent
AC = str(Path(sys.executable).with_name("ac"))
HOOK = str(ROOT / "client" / "agent_chat" / "integrations" / "hooks" / "ac-hook.sh")
GONE, WAKEABLE, WORKING = "gone", "idle · wakeable", "working"
#: Seconds between the observer's looks (its resolution).
LOOK = 0.005
GONE_TARGET_MS, WAKEABLE_TARGET_MS = 2000.0, 1000.0


class PresenceBench(Bench):
    async def run(self) -> None:  # type: ignore[override]
        await self.probe.start()
        timeout = aiohttp.ClientTimeout(total=400)
        async with aiohttp.ClientSession(timeout=timeout) as self.http:
            self.observer = await self.register()
            with tempfile.TemporaryDirectory(prefix="ac-bench-presence-") as tmp:
                self.agent_env = await self.agent(Path(tmp))
                await self.gone(self.args.rounds)
                await self.wakeable(self.args.rounds)
                await self.cold_waiter(self.args.ac_rounds)

    async def agent(self, home: Path) -> dict[str, str]:
        """An identity registered by ``ac`` (which writes the hook's files); its env."""
        home.mkdir(exist_ok=True)
        (home / "config.toml").write_text(
            f'[server]\nregistration_token = "{self.config.registration_token}"\n'
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AGENT_CHAT_", "CLAUDE"))}
        env.update(
            AGENT_CHAT_HOME=str(home),
            AGENT_CHAT_SERVER=self.config.api_url,
            AGENT_CHAT_HOOK_TTL="0",
            AGENT_CHAT_CLI="claude",
        )
        self.nick = "Pres" + secrets.token_hex(3)
        done = subprocess.run([AC, "register", self.nick], env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        creds = json.loads((home / "credentials.json").read_text())
        (ident,) = creds["servers"][self.config.api_url]["identities"].values()
        self.nick, self.token = ident["nick"], ident["token"]
        return env

    async def state(self, sid: str) -> str | None:
        status, data, _ = await self.api_call(
            "GET", f"/presence?users=@{self.nick}", self.observer["token"]
        )
        assert status == 200, data
        (found,) = data["identities"]
        return next((s["state"] for s in found["sessions"] if s["session"] == sid), None)

    async def until(self, sid: str, state: str, limit: float = 30.0) -> float:
        """Look until the observer sees ``state``; when it did (perf_counter)."""
        deadline = time.perf_counter() + limit
        while await self.state(sid) != state:
            if time.perf_counter() > deadline:
                raise SystemExit(f"session {sid} never showed {state!r}")
            await asyncio.sleep(LOOK)
        return time.perf_counter()

    async def hook(self, sid: str, *args: str) -> float:
        """Run ``ac-hook.sh`` for the session as Claude Code does; when it exited."""
        event = {"session_id": sid, "hook_event_name": "UserPromptSubmit", "cwd": "/src/bench"}
        proc = await asyncio.create_subprocess_exec(
            "sh",
            HOOK,
            *args,
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=self.agent_env,
        )
        await proc.communicate(json.dumps(event).encode())
        assert proc.returncode == 0, proc.returncode
        return time.perf_counter()

    async def gone(self, rounds: int) -> None:
        working, from_start, from_exit, hook_ms = [], [], [], []
        for i in range(rounds):
            sid = f"bench-gone-{i}-{secrets.token_hex(3)}"
            t0 = time.perf_counter()
            await self.hook(sid)
            working.append((await self.until(sid, WORKING) - t0) * 1000)
            t0 = time.perf_counter()
            t_exit = await self.hook(sid, "--end")
            t_seen = await self.until(sid, GONE)
            from_start.append((t_seen - t0) * 1000)
            from_exit.append((t_seen - t_exit) * 1000)
            hook_ms.append((t_exit - t0) * 1000)
        self.results["gone"] = {
            "rounds": rounds,
            "hook_to_working_ms_median": median(working),
            "end_hook_start_to_gone_ms_median": median(from_start),
            "end_hook_start_to_gone_ms_p95": p95(from_start),
            "end_hook_start_to_gone_ms_max": max(from_start),
            "end_hook_exit_to_gone_ms_median": median(from_exit),
            "end_hook_run_ms_median": median(hook_ms),
        }

    async def wakeable(self, rounds: int) -> None:
        seen = []
        headers = {"Authorization": f"Bearer {self.token}", "Agent-Chat-Cli": "claude"}
        for i in range(rounds):
            sid = f"bench-wake-{i}-{secrets.token_hex(3)}"
            _, data, _ = await self.api_call("GET", "/notify", self.token)
            url = f"{self.api}/notify?wait=60&since={data['cursor']}"

            async def hold(url: str = url, sid: str = sid) -> None:
                async with self.http.get(url, headers={**headers, "Agent-Chat-Waiter": sid}) as r:
                    await r.read()

            t0 = time.perf_counter()
            waiter = asyncio.create_task(hold())
            seen.append((await self.until(sid, WAKEABLE) - t0) * 1000)
            waiter.cancel()
            await asyncio.gather(waiter, return_exceptions=True)
        self.results["wakeable"] = {
            "rounds": rounds,
            "connect_to_wakeable_ms_median": median(seen),
            "connect_to_wakeable_ms_p95": p95(seen),
            "connect_to_wakeable_ms_max": max(seen),
        }

    async def cold_waiter(self, rounds: int) -> None:
        seen = []
        for i in range(rounds):
            sid = f"bench-acwait-{i}-{secrets.token_hex(3)}"
            t0 = time.perf_counter()
            proc = await asyncio.create_subprocess_exec(
                AC,
                *("wait", "--urgent", "--dm", "--session", sid, "--timeout", "60"),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env=self.agent_env,
            )
            try:
                seen.append((await self.until(sid, WAKEABLE) - t0) * 1000)
            finally:
                proc.kill()
                await proc.wait()
        self.results["cold_waiter"] = {
            "rounds": rounds,
            "spawn_to_wakeable_ms_median": median(seen),
            "spawn_to_wakeable_ms_p95": p95(seen),
        }

    def report(self) -> str:
        r: dict[str, Any] = self.results
        rows: list[tuple[str, str, str]] = []

        def row(name: str, value: str, target: str, ok: bool | None = None) -> None:
            if ok is False:
                self.missed = True
            rows.append((name, value, target + ("" if ok is None else " ✓" if ok else " ✗")))

        row("database", _redact(self.args.database) or "sqlite", "appservice")
        if g := r.get("gone"):
            row(
                "hook runs → `working` visible, p50",
                f"{g['hook_to_working_ms_median']:.1f} ms ({g['rounds']} sessions)",
                "",
            )
            row(
                "SessionEnd hook starts → `gone` visible, p95",
                f"{g['end_hook_start_to_gone_ms_p95']:.1f} ms (p50 "
                f"{g['end_hook_start_to_gone_ms_median']:.1f}, max "
                f"{g['end_hook_start_to_gone_ms_max']:.1f})",
                f"≤ {GONE_TARGET_MS:g} ms",
                g["end_hook_start_to_gone_ms_p95"] <= GONE_TARGET_MS,
            )
            row(
                "SessionEnd hook exits → `gone` visible, p50",
                f"{g['end_hook_exit_to_gone_ms_median']:.1f} ms (the hook itself "
                f"{g['end_hook_run_ms_median']:.1f})",
                "",
            )
        if w := r.get("wakeable"):
            row(
                "waiter connects → `idle · wakeable` visible, p95",
                f"{w['connect_to_wakeable_ms_p95']:.1f} ms (p50 "
                f"{w['connect_to_wakeable_ms_median']:.1f}, max "
                f"{w['connect_to_wakeable_ms_max']:.1f})",
                f"≤ {WAKEABLE_TARGET_MS:g} ms",
                w["connect_to_wakeable_ms_p95"] <= WAKEABLE_TARGET_MS,
            )
        if c := r.get("cold_waiter"):
            row(
                "cold `ac wait --session` spawned → wakeable, p50",
                f"{c['spawn_to_wakeable_ms_median']:.1f} ms (p95 "
                f"{c['spawn_to_wakeable_ms_p95']:.1f}; start-up included)",
                "",
            )
        width = max(len(x[0]) for x in rows)
        return "\n".join(f"{n:<{width}}  {v:<44}  {t}".rstrip() for n, v, t in rows)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=50, help="sessions per measurement")
    parser.add_argument("--ac-rounds", type=int, default=10, help="cold `ac wait` processes")
    add_stack_arguments(parser)
    args = parser.parse_args()
    args.keep = None
    bench = PresenceBench(args)
    run_on_a_stack(bench, "ac-bench-presence-")
    return report(bench)


if __name__ == "__main__":
    sys.exit(main())
