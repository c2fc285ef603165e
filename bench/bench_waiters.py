#!/usr/bin/env python3
"""Many idle wake waiters (issue 27, item 3): one #alerts post wakes them all.

Every idle Claude Code session holds a wake waiter (``ac-hook.sh --wake``, asyncRewake). This
starts N of them, each for its own agent, waits until all N hold the server's long-poll, posts
one message to #alerts (urgent for every reader) and measures, in the same run:

- ``hub``: the hook as Claude Code runs it (``sh ac-hook.sh --wake``, the session's JSON on
  stdin) for N agents of one home, each with its credentials file (``hook/<nick>.curl``): each
  hook's shell waits on a FIFO and the home's wake hub (``agent_chat.wake_hub``, one process)
  holds the N long-polls. A waiter's memory and CPU are its shell's plus its share (1/N) of
  the hub's; the hub's own are shown too;
- ``light``: the same hook with the credentials in the environment (no hub: it execs the light
  waiter, ``agent_chat.wake_waiter``, one process per session, each agent in a home of its own);
- ``ac wait``: the command the hook ran before, ``ac wait --urgent --dm --oneline --session
  SID`` with the hook's environment (the ``sh`` that waited around it is left out: ~1.6 MiB
  RSS and a little CPU more, in the old waiter's favour);

and for each:

- post → every waiter process exited (woken: the line written, ``woken`` reported): p50, p99,
  max; targets p99 ≤ 500 ms for 128 waiters, ≤ 3 s for 1,000;
- memory of one idle waiter: RSS (target ≤ 8 MiB) and PSS, medians;
- CPU per wake: the process's own CPU from just before the post to its exit
  (``/proc/PID/schedstat`` while it waits, then of its zombie), plus that of the child the
  light waiter leaves to send its ``woken`` report (this process is their subreaper), mean and
  p95; target ≤ 5 ms;
- every waiter woke exactly once (its exit code, and one line naming #alerts).

Rounds alternate which kind goes first; each round uses fresh homes (fresh session state).

    python bench/bench_waiters.py                  # 128 waiters, 3 rounds each, SQLite
    python bench/bench_waiters.py --thousand       # 1,000 waiters, 1 round each
    python bench/bench_waiters.py --database postgres://postgres@127.0.0.1:5432/postgres
"""

from __future__ import annotations

from pathlib import Path
from statistics import mean, median
import argparse
import asyncio
import compileall
import json
import os
import sys
import tempfile
import threading
import time

import aiohttp

sys.path.insert(0, str(Path(__file__).parent))
from bench_appservice import Bench, add_stack_arguments, report, run_on_a_stack

from agent_chat.hook_files import curl_config
from agent_chat.setup import hook_script
from agent_chat.wake_hub import HUB_DIR

ROOT = Path(__file__).resolve().parent.parent
AC = str(Path(sys.executable).with_name("ac"))
HOOK = hook_script()
KINDS = ("hub", "light", "ac wait")
#: Seconds between the last waiter connected and the measurement of memory and the post.
SETTLE = 2.0


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def children(pids: set[int]) -> dict[int, list[int]]:
    """Each of ``pids`` → its child processes (one scan of /proc)."""
    found: dict[int, list[int]] = {p: [] for p in pids}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if ppid in found:
            found[ppid].append(int(entry))
    return found


def memory_kib(pid: int) -> tuple[int, int]:
    """(RSS, PSS) of one process, KiB."""
    rss = pss = 0
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Rss:"):
            rss = int(line.split()[1])
        elif line.startswith("Pss:"):
            pss = int(line.split()[1])
    return rss, pss


def cpu_ns(pid: int) -> int:
    return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0])


def floor() -> tuple[int, int]:
    """(RSS, PSS) in KiB of this interpreter doing nothing (``python -S``, no module of ours):
    what any Python waiter costs before its first line of code."""
    import subprocess

    with subprocess.Popen(
        [sys.executable, "-S", "-c", "import sys; print(); sys.stdin.read()"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    ) as bare:
        assert bare.stdout is not None and bare.stdin is not None
        bare.stdout.readline()
        try:
            return memory_kib(bare.pid)
        finally:
            bare.stdin.close()


def process_cpu_ns(pid: int) -> int:
    """CPU of a whole process, its ended threads included (``/proc/PID/stat``'s utime and
    stime, in clock ticks: 10 ms; ``schedstat`` covers only the main thread)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])
    return ticks * 1_000_000_000 // os.sysconf("SC_CLK_TCK")


def hub_pid(root: Path) -> int | None:
    """The wake hub of the shared home (hub rounds), if one runs."""
    try:
        return int((root / "shared" / HUB_DIR / "pid").read_text())
    except (OSError, ValueError):
        return None


def stop_hub(root: Path) -> None:
    """Kill the round's hub and reap it (it became ours when the hook that started it ended)."""
    pid = hub_pid(root)
    if pid is None:
        return
    try:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
    except (ProcessLookupError, ChildProcessError):
        pass


class WaitersBench(Bench):
    async def run(self) -> None:  # type: ignore[override]
        await self.probe.start()
        timeout = aiohttp.ClientTimeout(total=600)
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as self.http:
            count = self.args.waiters
            sender = await self.register()
            agents = await self.gather_limited([self.register() for _ in range(count)], 8)
            await self.gather_limited(
                [
                    self.api_call("POST", "/join", a["token"], {"room": "#alerts"})
                    for a in [sender, *agents]
                ],
                8,
            )
            await asyncio.sleep(1.0)  # joins pushed back by Synapse
            self.results = {"waiters": count, "rounds": self.args.rounds, "floor": floor()}
            for kind in KINDS:
                self.results[kind] = {
                    "exit_ms": [],
                    "rss_kib": [],
                    "pss_kib": [],
                    "cpu_ms": [],
                    "report_cpu_ms": [],
                }
                self.results[kind]["processes"] = 0
                self.results[kind]["woken_once"] = True
                self.results[kind]["hub_rss_kib"] = []
                self.results[kind]["hub_pss_kib"] = []
            for r in range(self.args.rounds):
                for kind in KINDS if r % 2 == 0 else KINDS[::-1]:
                    if self.args.only and kind != self.args.only:
                        continue
                    await self.round(kind, sender, agents, f"{r}")

    def spawn_all(self, kind: str, agents: list[dict], tag: str, root: Path) -> dict[int, Path]:
        """Start one waiter per agent in one new process group; pid → the file its wake line
        goes to."""
        output: dict[int, Path] = {}
        group = 0
        base = {k: v for k, v in os.environ.items() if not k.startswith(("AGENT_CHAT_", "CLAUDE"))}
        for i, agent in enumerate(agents):
            home = root / ("shared" if kind == "hub" else f"{i}")
            if not (home / "hook").exists():  # once per home: hooks started read it
                (home / "hook").mkdir(parents=True)
                (home / "hook" / "ac-path").write_text(AC + "\n")
            session = f"bench-{tag}-{i}"
            stdin = root / f"stdin-{i}.json"
            stdin.write_text(json.dumps({"session_id": session, "hook_event_name": "Stop"}) + "\n")
            env = dict(
                base,
                AGENT_CHAT_HOME=str(home),
                AGENT_CHAT_WAKE_TIMEOUT="600",
                CLAUDE_PROJECT_DIR=str(root),
            )
            if kind == "hub":  # one home, a credentials file per agent: the hub serves them
                nick = agent["nick"]
                config = curl_config(self.config.api_url, agent["token"], nick)
                (home / "hook" / f"{nick}.curl").write_text(config)
                env.update(AGENT_CHAT_NICK=nick)
            else:
                env.update(AGENT_CHAT_SERVER=self.config.api_url, AGENT_CHAT_TOKEN=agent["token"])
            out, err = root / f"stdout-{i}", root / f"stderr-{i}"
            if kind in ("hub", "light"):
                argv = ["sh", HOOK, "--wake"]
            else:  # the command the hook ran (the shell around it is left out: see above)
                argv = [AC, "wait", "--urgent", "--dm", "--oneline", "--session", session]
                argv += ["--timeout", "600"]
                env.update(AGENT_CHAT_WAIT_WHILE_PID=str(os.getpid()), AGENT_CHAT_CLI="claude")
            pid = os.posix_spawn(
                argv[0] if argv[0] != "sh" else "/bin/sh",
                argv,
                env,
                file_actions=[
                    (os.POSIX_SPAWN_OPEN, 0, str(stdin), os.O_RDONLY, 0),
                    (os.POSIX_SPAWN_OPEN, 1, str(out), os.O_WRONLY | os.O_CREAT, 0o600),
                    (os.POSIX_SPAWN_OPEN, 2, str(err), os.O_WRONLY | os.O_CREAT, 0o600),
                ],
                setpgroup=group,
            )
            group = group or pid
            output[pid] = err if kind != "ac wait" else out
        return output

    async def round(self, kind: str, sender: dict, agents: list[dict], tag: str) -> None:
        count = len(agents)
        with tempfile.TemporaryDirectory(prefix="ac-bench-waiters-") as tmp:
            base = (await self.metrics()).get("agent_chat_notify_waiters", 0)
            output = self.spawn_all(kind, agents, f"{kind[:2]}{tag}", Path(tmp))
            group = next(iter(output))
            exits: dict[int, tuple[float, int, int]] = {}
            posted = threading.Event()
            reports: list[int] = []

            def reap() -> None:
                # WNOWAIT first: the exited process's own CPU is still readable (a zombie).
                # The light waiter's `woken` report runs in a child that outlives it: an
                # orphan, so ours (a subreaper), in the same group; its CPU is the wake's too.
                while True:
                    try:
                        found = os.waitid(os.P_PGID, group, os.WEXITED | os.WNOWAIT)
                    except ChildProcessError:
                        return
                    assert found is not None
                    at, cpu = time.perf_counter(), cpu_ns(found.si_pid)
                    _, status = os.waitpid(found.si_pid, 0)
                    if found.si_pid in output:
                        exits[found.si_pid] = (at, status, cpu)
                    elif posted.is_set():  # what arming the hook ran (mkfifo, sleep) is not
                        reports.append(cpu)

            reaper = threading.Thread(target=reap, daemon=True)
            reaper.start()
            try:
                deadline = time.monotonic() + 300
                while (await self.metrics()).get("agent_chat_notify_waiters", 0) < base + count:
                    assert time.monotonic() < deadline, "the waiters did not all connect"
                    assert not exits, f"a waiter ended before the post: {exits}"
                    await asyncio.sleep(0.05)
                await asyncio.sleep(SETTLE)
                tree = children(set(output))
                hub = hub_pid(Path(tmp))
                before: dict[int, int] = {}
                for pid, kids in tree.items():
                    kids = [k for k in kids if k != hub]  # the hub is counted on its own
                    rss = pss = 0
                    for p in (pid, *kids):
                        try:
                            r, s = memory_kib(p)
                        except ProcessLookupError:  # a hub that lost the race to start
                            continue
                        rss, pss = rss + r, pss + s
                    self.results[kind]["rss_kib"].append(rss)
                    self.results[kind]["pss_kib"].append(pss)
                    self.results[kind]["processes"] = 1 + len(kids)
                    before[pid] = cpu_ns(pid)
                if hub is not None:
                    hub_rss, hub_pss = memory_kib(hub)
                    self.results[kind]["hub_rss_kib"].append(hub_rss)
                    self.results[kind]["hub_pss_kib"].append(hub_pss)
                    hub_before = process_cpu_ns(hub)
                posted.set()
                t0 = time.perf_counter()
                await self.send(sender["token"], "#alerts", f"one alert for everyone {tag}")
                await asyncio.to_thread(reaper.join, 120)
                assert len(exits) == count, f"{count - len(exits)} waiters did not exit"
                if hub is not None:  # its `woken` reports go after the lines: let them end
                    await asyncio.sleep(SETTLE)
                    reports.append(process_cpu_ns(hub) - hub_before)
            finally:
                try:
                    os.killpg(group, 9)
                except ProcessLookupError:
                    pass
                stop_hub(Path(tmp))
            self.results[kind]["report_cpu_ms"].append(sum(reports) / 1e6 / count)
            for pid, (at, status, cpu) in exits.items():
                self.results[kind]["exit_ms"].append((at - t0) * 1000)
                self.results[kind]["cpu_ms"].append((cpu - before[pid]) / 1e6)
                line = output[pid].read_text()
                once = (
                    os.waitstatus_to_exitcode(status) == (0 if kind == "ac wait" else 2)
                    and len(line.splitlines()) == 1
                    and "#alerts(" in line
                )
                self.results[kind]["woken_once"] &= once

    def report(self) -> str:
        rows: list[tuple[str, ...]] = [("", *KINDS, "target")]
        n = self.results["waiters"]
        target_p99 = 500 if n <= 128 else 3000
        judged = self.results["hub"]  # what the hook does by default
        for kind in KINDS:  # a waiter's share of the hub that holds them all
            found = self.results[kind]
            for key, hub_key in (("rss_kib", "hub_rss_kib"), ("pss_kib", "hub_pss_kib")):
                share = mean(found[hub_key]) / n if found[hub_key] else 0.0
                found[key + "_each"] = [v + share for v in found[key]]

        def row(name: str, fmt: str, key: str, fn, target: str = "", ok=None) -> None:
            values = [
                fmt.format(fn(self.results[k][key])) if self.results[k][key] else "-"
                for k in KINDS
            ]
            met = None if ok is None or not judged[key] else ok(fn(judged[key]))
            self.missed |= met is False
            mark = {None: "", True: " ✓", False: " ✗"}[met]
            rows.append((name, *values, target + mark))

        row("post → all exited, p50", "{:.0f} ms", "exit_ms", median)
        row(
            "post → all exited, p99",
            "{:.0f} ms",
            "exit_ms",
            lambda v: pct(v, 0.99),
            f"≤ {target_p99} ms",
            lambda x: x <= target_p99,
        )
        row("post → all exited, max", "{:.0f} ms", "exit_ms", max)
        row(
            "waiter RSS, median",
            "{:.2f} MiB",
            "rss_kib_each",
            lambda v: median(v) / 1024,
            "≤ 8 MiB",
            lambda x: x <= 8,
        )
        row("waiter PSS, median", "{:.2f} MiB", "pss_kib_each", lambda v: median(v) / 1024)
        row("  the hub's share", "{:.2f} MiB", "hub_rss_kib", lambda v: mean(v) / n / 1024)
        row("the hub itself, RSS", "{:.1f} MiB", "hub_rss_kib", lambda v: median(v) / 1024)
        row("the hub itself, PSS", "{:.1f} MiB", "hub_pss_kib", lambda v: median(v) / 1024)
        rows.append(
            ("processes per waiter", *(str(self.results[k]["processes"]) for k in KINDS), "")
        )
        for kind in KINDS:  # the report's child, per wake, added to the waiter's own
            extra = mean(self.results[kind]["report_cpu_ms"] or [0.0])
            self.results[kind]["wake_cpu_ms"] = [c + extra for c in self.results[kind]["cpu_ms"]]
        row(
            "CPU per wake, mean",
            "{:.1f} ms",
            "wake_cpu_ms",
            mean,
            "≤ 5 ms",
            lambda x: x <= 5,
        )
        row("CPU per wake, p95", "{:.1f} ms", "wake_cpu_ms", lambda v: pct(v, 0.95))
        row("  of which the hub's or the report's child", "{:.1f} ms", "report_cpu_ms", mean)
        once = [str(self.results[k]["woken_once"]) for k in KINDS]
        if not judged["woken_once"]:
            self.missed = True
        rows.append(("every waiter woke once", *once, "all"))
        title = f"{n} waiters × {self.results['rounds']} rounds, one #alerts post per round"
        rss, pss = self.results["floor"]
        rows.append(("bare `python -S`, RSS / PSS", f"{rss / 1024:.1f} / {pss / 1024:.1f} MiB"))
        rows[-1] += ("",) * (len(rows[0]) - len(rows[-1]))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines = [title]
        for r in rows:
            lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
        return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--waiters", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3, help="rounds of each kind")
    parser.add_argument("--thousand", action="store_true", help="1,000 waiters, 1 round each")
    parser.add_argument("--only", choices=KINDS, help="one kind only (to iterate)")
    add_stack_arguments(parser)
    args = parser.parse_args()
    # bytecode as a normal install has it (this environment may set PYTHONDONTWRITEBYTECODE)
    compileall.compile_dir(str(ROOT / "client" / "agent_chat"), quiet=1)
    if args.thousand:
        args.waiters, args.rounds = 1000, 1
    args.keep = None
    import ctypes

    # The waiters' orphans (the light waiter's report child) become ours, to be counted.
    ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    bench = WaitersBench(args)
    run_on_a_stack(bench, "ac-bench-waiters-")
    return report(bench)


if __name__ == "__main__":
    sys.exit(main())
