#!/usr/bin/env python3
"""``ac tui`` benchmark (issue 24, "Numbers"), on a stack of its own, in one run:

- first paint, cold: ``ac tui`` started in a real terminal (tmux, 120×36) as a member of
  ``--rooms`` rooms holding ``--messages`` messages; the time from launch until the screen shows
  the connected status, the room list and the opened room's newest message (capture-pane
  polled every 10 ms). Target ≤ 1 s. The same in-process (Textual's headless driver), warm;
- live: an agent's message → on screen in the TUI (the refresh after it reached the timeline,
  headless, in this process) against ``ac wait`` returning for the same identity and the same
  message (a real cold process blocked beforehand). Target: ratio of medians ≤ 1.3;
- RSS of the process running the TUI before and after ``--traffic`` messages (an hour of a
  busy team: spread over every room, a tenth of them into the open one), and its CPU time
  during ``--idle`` seconds with nothing happening. Targets ≤ 100 MiB, ≈ 0.

    python bench/bench_tui.py                         # 100 rooms, 10,000 messages
    python bench/bench_tui.py --rooms 20 --messages 1000 --traffic 500   # quicker
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from statistics import median
from typing import Any
import argparse
import asyncio
import json
import os
import resource
import secrets
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, str(Path(__file__).parent))
from bench_appservice import add_stack_arguments, free_port, p95

from agent_chat import identity as ident
from agent_chat.api import Client
from agent_chat_appservice.config import Config
from agent_chat_server import control
from agent_chat_server.init import InitOptions, init_data_dir
from agent_chat_server.paths import DataDir

AC = str(Path(sys.executable).with_name("ac"))
API = "/_agent_chat/v1"


# --- a stack and a scene (also used by scripts/tui_screenshots.py) ------------------------------


class Stack:
    """Synapse + appservice in ``root``, limits raised for seeding (stopped by :meth:`stop`)."""

    def __init__(self, root: Path, database: str | None = None, synapse_db: str | None = None):
        self.dd = DataDir.at(root)
        options = InitOptions(
            synapse_port=free_port(),
            api_port=free_port(),
            database=database,
            synapse_database=synapse_db,
        )
        init_data_dir(self.dd, options)
        config = Config.load(self.dd.appservice_yaml)
        config.send_rate_per_second, config.send_rate_burst = 100000.0, 100000
        for name in ("room_create_burst", "register_burst"):
            if hasattr(config, name):  # limits of newer versions
                setattr(config, name, 100000)
        config.save(self.dd.appservice_yaml)
        self.config = config
        self.url = config.api_url

    def start(self) -> None:
        control.start_background(self.dd, timeout=120, tie_to_caller=True)

    def stop(self) -> None:
        control.stop(self.dd)

    def waiters(self) -> float:
        """Long-polls held by the appservice now (its /metrics)."""
        from agent_chat import http

        body = http.request("GET", self.url + "/metrics").body.decode()
        for line in body.splitlines():
            if line.startswith("agent_chat_notify_waiters "):
                return float(line.split()[1])
        return 0.0

    def register(self, nick: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"registration_token": self.config.registration_token}
        if nick:
            body["nick"] = nick
        return Client(self.url).call("POST", "/register", body=body, auth=False)

    def client(self, agent: dict[str, Any]) -> Client:
        return Client(self.url, str(agent["token"]))


def home_for(stack: Stack, agent: dict[str, Any], root: Path) -> dict[str, str]:
    """A client home holding ``agent``'s identity; the environment that selects it."""
    home = root / f"home-{agent['nick']}"
    home.mkdir(parents=True, exist_ok=True)
    data = ident.load_credentials(str(home))
    ident.store_identity(data, stack.url, ident.nick_key(str(agent["nick"])), agent)
    ident.save_credentials(str(home), data)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENT_CHAT_")}
    env.update(AGENT_CHAT_HOME=str(home), AGENT_CHAT_SERVER=stack.url)
    return env


def send(client: Client, to: str, body: str) -> str:
    answer = client.call("PUT", "/send/" + secrets.token_hex(8), body={"to": to, "body": body})
    return str(answer["event_id"])


def seed(
    stack: Stack, watcher: dict[str, Any], rooms: int, messages: int, workers: int = 8
) -> list[str]:
    """``rooms`` rooms the watcher is in, ``messages`` messages spread over them by a few
    agents; the rooms' aliases (the last one gets the newest message)."""
    owner = stack.client(watcher)
    names = [f"#r{i:03d}-{secrets.token_hex(2)}" for i in range(rooms)]
    senders = [stack.register() for _ in range(4)]
    clients = [stack.client(s) for s in senders]
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(lambda name: owner.call("POST", "/rooms", body={"alias": name}), names))
        joins = [(c, name) for c in clients for name in names]
        list(pool.map(lambda j: j[0].call("POST", "/join", body={"room": j[1]}), joins))
    prefixes = ["", "", "[STATUS] ", "[DONE] ", "", "[BLOCKED] ", ""]

    def one(i: int) -> None:
        send(clients[i % len(clients)], names[i % rooms], f"{prefixes[i % 7]}message {i}")

    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(one, range(messages)))
    return names


# --- measuring --------------------------------------------------------------------------------


def tmux_first_paint(env: dict[str, str], expect: list[str], runs: int) -> list[float]:
    """Cold ``ac tui`` in tmux: seconds from launch until every string in ``expect`` shows."""
    times = []
    socket = "ac-bench-" + secrets.token_hex(3)

    def tmux(*args: str) -> str:
        return subprocess.run(
            ["tmux", "-L", socket, *args], env=env, capture_output=True, text=True, timeout=30
        ).stdout

    try:
        for _ in range(runs):
            t0 = time.perf_counter()
            tmux("new-session", "-d", "-s", "main", "-x", "120", "-y", "36", AC, "tui", "--peek")
            while True:
                screen = tmux("capture-pane", "-p", "-t", "main")
                if all(e in screen for e in expect):
                    times.append(time.perf_counter() - t0)
                    break
                if time.perf_counter() - t0 > 30:
                    raise RuntimeError("no first paint within 30 s:\n" + screen)
                time.sleep(0.01)
            tmux("kill-session", "-t", "main")
    finally:
        subprocess.run(["tmux", "-L", socket, "kill-server"], env=env, capture_output=True)
    return times


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def in_process(
    stack: Stack,
    env: dict[str, str],
    other: dict[str, Any],
    rooms: list[str],
    args: argparse.Namespace,
) -> dict[str, Any]:
    """First paint (warm), live latency against ``ac wait``, RSS and idle CPU, headless."""
    from agent_chat.config import Settings
    from agent_chat.context import Context
    from agent_chat.tui.app import AgentChatApp
    from agent_chat.tui.session import Session

    results: dict[str, Any] = {}
    rss_before = rss_mib()
    loop = asyncio.get_running_loop()
    sender = stack.client(other)
    t0, m0 = time.perf_counter(), time.monotonic()
    app = AgentChatApp(Session(Context(False, Settings(env))))
    async with app.run_test(size=(120, 36)) as pilot:
        while not (app.current and app.states.get(app.current) and app.timeline.messages):
            await pilot.pause(0.005)
        await pilot.pause()
        results["first_paint_warm_s"] = time.perf_counter() - t0
        results["first_paint_steps_s"] = {k: v - m0 for k, v in app.marks.items()}
        received: dict[str, float] = {}
        distribute = app.distribute

        def timed(messages: list[dict[str, Any]]) -> bool:
            for m in messages:
                received.setdefault(str(m.get("event_id")), time.monotonic())
            return distribute(messages)  # (the app draws the counts after it if True)

        app.distribute = timed  # type: ignore[method-assign]
        stamped = asyncio.Event()
        stamp = app._stamp

        def stamp_and_tell(messages: list[dict[str, Any]]) -> None:
            stamp(messages)
            stamped.set()

        app._stamp = stamp_and_tell  # type: ignore[method-assign]
        open_label = app.rooms[app.current].label
        app.timeline.action_last()  # follow the newest, as someone watching live does
        await pilot.pause(0.2)
        # live: one message → the TUI's screen, and ac wait for the same identity
        load_before = os.getloadavg()[0]
        tui_ms, wait_ms = [], []
        parts: list[tuple[float, float, float, float, float]] = []
        for i in range(args.rounds):
            proc = await asyncio.create_subprocess_exec(
                AC, "wait", "--timeout", "60", "--oneline", env=env,
                stdout=asyncio.subprocess.PIPE,
            )  # fmt: skip
            # Until both long-polls are held: the TUI's own and this ac wait's.
            while await loop.run_in_executor(None, stack.waiters) < 2:
                await asyncio.sleep(0.005)
            body = f"live {i} {secrets.token_hex(3)}"
            stamped.clear()
            t0 = time.monotonic()
            event_id = await loop.run_in_executor(None, send, sender, open_label, body)
            assert proc.stdout is not None
            line = await asyncio.wait_for(proc.stdout.readline(), 30)
            wait_ms.append((time.monotonic() - t0) * 1000)
            assert line.strip(), "ac wait printed nothing"
            await proc.wait()
            while event_id not in app.shown_at:
                await stamped.wait()
                stamped.clear()
            tui_ms.append((app.shown_at[event_id] - t0) * 1000)
            if app.poller is not None:
                parts.append(
                    (
                        (app.poller.answered_at - t0) * 1000,
                        (app.poller.fetched_at - app.poller.answered_at) * 1000,
                        (received[event_id] - app.poller.fetched_at) * 1000,
                        (app.added_at - received[event_id]) * 1000,
                        (app.shown_at[event_id] - app.added_at) * 1000,
                    )
                )
        # The same without an `ac wait` beside it (its process exits while the TUI draws:
        # on 2 cores that is CPU taken from the TUI's frame), alternated rounds after these.
        alone_ms = []
        for i in range(args.rounds // 2):
            while await loop.run_in_executor(None, stack.waiters) < 1:
                await asyncio.sleep(0.005)
            await asyncio.sleep(0.05)
            stamped.clear()
            t0 = time.monotonic()
            event_id = await loop.run_in_executor(None, send, sender, open_label, f"alone {i}")
            while event_id not in app.shown_at:
                await stamped.wait()
                stamped.clear()
            alone_ms.append((app.shown_at[event_id] - t0) * 1000)
            await asyncio.sleep(0.2)
        results["live"] = {
            "tui_alone_ms_median": median(alone_ms) if alone_ms else None,
            "rounds": args.rounds,
            "tui_on_screen_ms_median": median(tui_ms),
            "tui_on_screen_ms_p95": p95(tui_ms),
            "ac_wait_ms_median": median(wait_ms),
            "ac_wait_ms_p95": p95(wait_ms),
            "ratio": median(tui_ms) / median(wait_ms),
            "load_average": (load_before, os.getloadavg()[0]),
            "tui_long_poll_answered_ms_median": median(p[0] for p in parts) if parts else None,
            "tui_fetch_ms_median": median(p[1] for p in parts) if parts else None,
            "tui_fetched_to_loop_ms_median": median(p[2] for p in parts) if parts else None,
            "tui_loop_to_timeline_ms_median": median(p[3] for p in parts) if parts else None,
            "tui_timeline_to_screen_ms_median": median(p[4] for p in parts) if parts else None,
        }
        # traffic: an hour's worth, then the process's memory
        rss_start = rss_mib()

        def traffic(i: int) -> None:
            room = open_label if i % 10 == 0 else rooms[i % len(rooms)]
            send(sender, room, f"traffic {i} " + "x" * (i % 200))

        def all_traffic() -> None:
            with ThreadPoolExecutor(8) as pool:
                list(pool.map(traffic, range(args.traffic)))

        await loop.run_in_executor(None, all_traffic)
        last = f"traffic {args.traffic - 10}" if args.traffic >= 10 else None
        deadline = time.monotonic() + 60
        while last and not any(
            str(m.get("body", "")).startswith(last) for m in app.timeline.messages[-20:]
        ):
            if time.monotonic() > deadline:
                break
            await pilot.pause(0.05)
        await pilot.pause(1)
        results["memory"] = {
            "rss_before_app_mib": rss_before,
            "rss_app_running_mib": rss_start,
            "rss_after_traffic_mib": rss_mib(),
            "traffic_messages": args.traffic,
            "timeline_messages_kept": len(app.timeline.messages),
        }
        # idle: nothing happens; what does the process spend?
        cpu0, w0 = cpu_seconds(), time.monotonic()
        await asyncio.sleep(args.idle)
        results["idle"] = {
            "seconds": time.monotonic() - w0,
            "cpu_seconds": cpu_seconds() - cpu0,
        }
    return results


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rooms", type=int, default=100)
    parser.add_argument("--messages", type=int, default=10000)
    parser.add_argument("--rounds", type=int, default=30, help="live latency rounds")
    parser.add_argument("--cold-runs", type=int, default=5, help="cold first paints in tmux")
    parser.add_argument("--traffic", type=int, default=3000, help="messages for the RSS part")
    parser.add_argument("--idle", type=float, default=10.0, help="seconds of idle CPU")
    add_stack_arguments(parser)
    args = parser.parse_args()
    results: dict[str, Any] = {"rooms": args.rooms, "messages": args.messages}
    with tempfile.TemporaryDirectory(prefix="ac-bench-tui-") as tmp:
        stack = Stack(Path(tmp) / "server", args.database, args.synapse_database)
        stack.start()
        try:
            watcher, other = stack.register("Watcher"), stack.register("Typist")
            t0 = time.perf_counter()
            rooms = seed(stack, watcher, args.rooms, args.messages)
            results["seed_seconds"] = time.perf_counter() - t0
            for name in rooms:
                stack.client(other).call("POST", "/join", body={"room": name})
            env = home_for(stack, watcher, Path(tmp))
            if shutil.which("tmux"):  # connected, the room list, and a room's messages
                expect = ["connected", rooms[0], ": message "]
                cold = tmux_first_paint(env, expect, args.cold_runs)
                results["first_paint_cold_s"] = {"median": median(cold), "max": max(cold)}
            results.update(asyncio.run(in_process(stack, env, other, rooms, args)))
        finally:
            stack.stop()
    print(report(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


def report(r: dict[str, Any]) -> str:
    live, mem, idle = r["live"], r["memory"], r["idle"]
    alone = live.get("tui_alone_ms_median") or float("nan")
    cold = r.get("first_paint_cold_s", {})
    rows = [
        ("rooms / messages on the server", f"{r['rooms']} / {r['messages']:,}", ""),
        ("first paint, cold (tmux) median", f"{cold.get('median', float('nan')):.2f} s",
         "target ≤ 1 s"),
        ("first paint, cold, slowest", f"{cold.get('max', float('nan')):.2f} s", ""),
        ("first paint, in-process (warm)", f"{r['first_paint_warm_s']:.2f} s", ""),
        ("agent send → on the TUI's screen", f"{live['tui_on_screen_ms_median']:.1f} ms",
         f"p95 {live['tui_on_screen_ms_p95']:.1f} ms"),
        ("agent send → ac wait returns", f"{live['ac_wait_ms_median']:.1f} ms",
         f"p95 {live['ac_wait_ms_p95']:.1f} ms"),
        ("ratio (TUI / ac wait)", f"{live['ratio']:.2f}", "target ≤ 1.3"),
        ("agent send → on the TUI's screen, no ac wait beside it", f"{alone:.1f} ms",
         f"{alone / live['ac_wait_ms_median']:.2f}× ac wait"),
        ("  load average before → after", "{:.2f} → {:.2f}".format(*live["load_average"]), ""),
        ("  TUI: long-poll answered", f"{live['tui_long_poll_answered_ms_median']:.1f} ms", ""),
        ("  TUI: fetching the message", f"{live['tui_fetch_ms_median']:.1f} ms", ""),
        ("  TUI: fetched → event loop", f"{live['tui_fetched_to_loop_ms_median']:.1f} ms", ""),
        ("  TUI: in the loop → in the timeline",
         f"{live['tui_loop_to_timeline_ms_median']:.1f} ms", ""),
        ("  TUI: in the timeline → on screen",
         f"{live['tui_timeline_to_screen_ms_median']:.1f} ms", ""),
        ("RSS with the TUI running", f"{mem['rss_app_running_mib']:.1f} MiB", ""),
        (f"RSS after {mem['traffic_messages']:,} messages",
         f"{mem['rss_after_traffic_mib']:.1f} MiB", "target ≤ 100 MiB"),
        (f"CPU while idle {idle['seconds']:.0f} s", f"{idle['cpu_seconds'] * 1000:.0f} ms", "≈ 0"),
    ]  # fmt: skip
    steps = r.get("first_paint_steps_s", {})
    rows[4:4] = [(f"  {k}", f"{v:.2f} s", "") for k, v in steps.items()]
    width = max(len(a) for a, _, _ in rows)
    return "\n".join(f"{a:<{width}}  {b:>14}  {c}" for a, b, c in rows)


if __name__ == "__main__":
    sys.exit(main())
