"""Benchmark what ``ac run -- CLI`` adds to a terminal: a keystroke's echo, and memory.

A pseudo-terminal stands for the person's terminal. In it runs either ``cat`` directly (the
baseline) or ``ac run --wake none -- cat`` (the wrapper copying both ways through a pty of its
own); one byte is written, and the time until its echo comes back is measured, N times,
interleaved. Reported: p50 and p99 of each and of the difference (target: p99 overhead <= 2 ms),
and the wrapper's resident memory (VmRSS of the ``ac run`` process; target <= 15 MiB).
``--wake none`` keeps the chat server out of it: the copy loop is what is measured. With
``--against REV`` the ``ac run`` of that git revision runs too, in the same interleaved loop,
and both trees start the same way (``python -c`` on the exported ``client/``).

    .venv/bin/python bench/bench_run.py            # 500 keystrokes each
    .venv/bin/python bench/bench_run.py -n 2000 --against HEAD~3
"""

from __future__ import annotations

from pathlib import Path
import argparse
import json
import os
import pty
import select
import statistics
import sys
import tempfile
import time

sys.path.insert(0, str(Path(__file__).parent))
from bench_client import LAUNCH, export_client

AC = str(Path(sys.executable).with_name("ac"))
ROOT = Path(__file__).resolve().parent.parent


def spawn(argv: list[str], env: dict[str, str]) -> tuple[int, int]:
    pid, fd = pty.fork()
    if pid == 0:
        os.execvpe(argv[0], argv, env)
    return pid, fd


def drain(fd: int, wait: float = 0.3) -> None:
    while select.select([fd], [], [], wait)[0]:
        try:
            if not os.read(fd, 65536):
                return
        except OSError:
            return


def echo_ms(fd: int) -> float:
    t0 = time.perf_counter()
    os.write(fd, b"x")
    got = b""
    while b"x" not in got:
        if not select.select([fd], [], [], 5.0)[0]:
            raise SystemExit("no echo within 5 s")
        got += os.read(fd, 1024)
    return (time.perf_counter() - t0) * 1000


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p * (len(ordered) - 1)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", "--keys", type=int, default=500, help="keystrokes each")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--against", metavar="REV", help="also the ac run of this git revision")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-run-") as home:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AGENT_CHAT_")}
        env.update(AGENT_CHAT_HOME=home, AGENT_CHAT_SERVER="http://127.0.0.1:9", TERM="xterm")
        run = ["run", "--wake", "none", "--", "cat"]
        procs = {"direct": spawn(["cat"], env)}
        if args.against:
            trees = {
                "ac_run": str(ROOT / "client"),
                "against": export_client(args.against, Path(home) / "against"),
            }
            for key, tree in trees.items():
                procs[key] = spawn([sys.executable, "-c", LAUNCH, tree, *run], env)
        else:
            procs["ac_run"] = spawn([AC, *run], env)
        for _, fd in procs.values():
            drain(fd)
        echoes: dict[str, list[float]] = {key: [] for key in procs}
        for _ in range(args.keys):
            for key, (_, fd) in procs.items():
                echoes[key].append(echo_ms(fd))
        rss = {key: rss_mib(pid) for key, (pid, _) in procs.items()}
        for pid, fd in procs.values():
            os.write(fd, b"\n\x04")
            os.close(fd)
            os.waitpid(pid, 0)
    base, through = echoes["direct"], echoes["ac_run"]
    over = [b - a for a, b in zip(base, through, strict=True)]
    results = {
        "keys": args.keys,
        "direct_p50_ms": statistics.median(base),
        "direct_p99_ms": pct(base, 0.99),
        "ac_run_p50_ms": statistics.median(through),
        "ac_run_p99_ms": pct(through, 0.99),
        "overhead_p50_ms": statistics.median(over),
        "overhead_p99_ms": pct(over, 0.99),
        "ac_run_rss_mib": rss["ac_run"],
    }
    if args.against:
        old = echoes["against"]
        old_over = [b - a for a, b in zip(base, old, strict=True)]
        results.update(
            against=args.against,
            against_p50_ms=statistics.median(old),
            against_p99_ms=pct(old, 0.99),
            against_overhead_p50_ms=statistics.median(old_over),
            against_overhead_p99_ms=pct(old_over, 0.99),
            against_rss_mib=rss["against"],
        )
    print(f"keystroke echo, {args.keys} keys each, interleaved")
    print(f"{'':<22}{'p50':>9}{'p99':>9}")
    rows = [("cat in a pty", "direct"), ("ac run -- cat", "ac_run"), ("overhead", "overhead")]
    if args.against:
        rows += [
            (f"@{args.against}", "against"),
            (f"@{args.against} overhead", "against_overhead"),
        ]
    for label, key in rows:
        p50, p99 = results[key + "_p50_ms"], results[key + "_p99_ms"]
        print(f"{label:<22}{p50:>6.2f} ms{p99:>6.2f} ms")
    print(f"ac run resident memory: {rss['ac_run']:.1f} MiB")
    if args.against:
        print(f"@{args.against} resident memory: {rss['against']:.1f} MiB")
    met = results["overhead_p99_ms"] <= 2.0 and rss["ac_run"] <= 15.0
    print(f"targets (p99 overhead <= 2 ms, RSS <= 15 MiB): {'met' if met else 'MISSED'}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
