"""Benchmark ``ac mcp``'s cold start: process start → ``initialize`` answered (and ``tools/list``).

Codex waits ``mcp_optional_startup_grace_ms`` (1,000 ms by default) for an optional MCP server
and starts the turn without its tools when the server is slower; the target is a median of at
most 300 ms. Each run starts a fresh process, writes ``initialize`` at once (as a client does
right after spawning it) and times until the answer's line arrives, then ``tools/list``.

Baselines in the same run: the interpreter alone (``python -c pass``: the floor), and, when the
official MCP SDK is installed, the smallest SDK server with one tool (what ``ac mcp`` cost before
its own protocol layer). No chat server is needed: neither request touches the network.

    .venv/bin/python bench/bench_mcp.py             # 20 cold starts of each
    .venv/bin/python bench/bench_mcp.py -n 50 --json bench/results/mcp.json
"""

from __future__ import annotations

from pathlib import Path
import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

BIN = Path(sys.executable).parent
AC = str(BIN / "ac")
PY = sys.executable
TARGET_MS = 300.0
INIT = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "bench", "version": "1"},
    },
}
SDK_SERVER = """
try:
    from mcp.server.mcpserver import MCPServer as S
except ImportError:
    from mcp.server.fastmcp import FastMCP as S
s = S("bench")
@s.tool()
def notify() -> str:
    return "nothing unread"
s.run()
"""


def _line(obj: dict) -> bytes:
    return json.dumps(obj).encode() + b"\n"


def one_start(cmd: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(ms to the initialize answer, ms to the tools/list answer) of one fresh process."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        proc.stdin.write(_line(INIT))
        proc.stdin.flush()
        answer = json.loads(proc.stdout.readline())
        init_ms = (time.perf_counter() - t0) * 1000
        if answer.get("id") != 1 or "result" not in answer:
            raise SystemExit(f"{cmd}: bad initialize answer {answer}")
        proc.stdin.write(_line({"jsonrpc": "2.0", "method": "notifications/initialized"}))
        proc.stdin.write(_line({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}))
        proc.stdin.flush()
        while json.loads(proc.stdout.readline()).get("id") != 2:
            pass
        list_ms = (time.perf_counter() - t0) * 1000
    finally:
        proc.stdin.close()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return init_ms, list_ms


def floor(env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    subprocess.run([PY, "-c", "pass"], env=env, check=True)
    return (time.perf_counter() - t0) * 1000


def stats(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "median_ms": statistics.median(ordered),
        "p90_ms": ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))],
        "max_ms": ordered[-1],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", "--runs", type=int, default=20, help="cold starts of each")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-mcp-") as home:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AGENT_CHAT_")}
        env["AGENT_CHAT_HOME"] = home
        env["AGENT_CHAT_SERVER"] = "http://127.0.0.1:9"  # never contacted
        kinds: dict[str, list[str]] = {"ac mcp": [AC, "mcp"]}
        if importlib.util.find_spec("mcp") is not None:
            kinds["MCP SDK, one tool"] = [PY, "-c", SDK_SERVER]
        init: dict[str, list[float]] = {k: [] for k in kinds}
        listed: dict[str, list[float]] = {k: [] for k in kinds}
        interp: list[float] = []
        for cmd in kinds.values():  # warm the page cache; not counted
            one_start(cmd, env)
        for _ in range(args.runs):  # interleaved: load changes hit every row alike
            interp.append(floor(env))
            for name, cmd in kinds.items():
                a, b = one_start(cmd, env)
                init[name].append(a)
                listed[name].append(b)
    results = {
        name: {"initialize": stats(init[name]), "tools_list": stats(listed[name])}
        for name in kinds
    }
    results["python -c pass"] = {"initialize": stats(interp), "tools_list": stats(interp)}
    ac = results["ac mcp"]["initialize"]["median_ms"]
    print(f"cold starts: {args.runs} of each, interleaved")
    print(f"{'server':<22}{'initialize p50':>16}{'p90':>9}{'tools/list p50':>16}")
    for name, row in results.items():
        i, t = row["initialize"], row["tools_list"]
        p50, p90, listed_p50 = i["median_ms"], i["p90_ms"], t["median_ms"]
        print(f"{name:<22}{p50:>13.0f} ms{p90:>6.0f} ms{listed_p50:>13.0f} ms")
    if "MCP SDK, one tool" in results:
        sdk = results["MCP SDK, one tool"]["initialize"]["median_ms"]
        print(f"ac mcp answers initialize {sdk / ac:.1f}x sooner than the SDK server")
    verdict = "met" if ac <= TARGET_MS else "MISSED"
    print(f"target: initialize answered <= {TARGET_MS:.0f} ms (median): {ac:.0f} ms, {verdict}")
    if args.json:
        Path(args.json).write_text(json.dumps({"runs": args.runs, "results": results}, indent=1))
        print(f"wrote {args.json}")
    return 0 if ac <= TARGET_MS else 1


if __name__ == "__main__":
    sys.exit(main())
