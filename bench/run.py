#!/usr/bin/env python3
"""Run every benchmark, print the tables and write them with the machine to docs/benchmarks.md.

    .venv/bin/python bench/run.py                    # full scale, SQLite (an hour or so)
    .venv/bin/python bench/run.py --postgres postgres://postgres@127.0.0.1:5432/postgres
    .venv/bin/python bench/run.py --quick            # small scale, a few minutes
    .venv/bin/python bench/run.py --only postgres --postgres URL   # one part, keeping the rest

Each script starts its own throwaway Synapse + appservice and compares against a baseline
measured in the same run (the seed's matrix-nio client, curl, raw Synapse pushes and sends):

- bench_client.py      ac's cold processes vs the seed design and curl
- bench_hook.py        the agent hook and tmux status script, cached and uncached
- bench_appservice.py  notify at scale, send → notify vs raw push, throughput vs raw sends,
                       the ledger update for a big room, the appservice's memory
- bench_wait.py        the /notify long-poll: server-side wake, send → `ac wait` vs raw push,
                       1,000 waiters (parts wait, wait-postgres)
- bench_mcp.py         `ac mcp`'s cold start to `initialize` answered, vs the SDK's smallest server
- bench_run.py         a keystroke's echo through `ac run -- cat` vs `cat` in a pty, its memory
- bench_load.py        a 30-agent burst of DMs and a shared room, first contact and warm, and
                       30 s of mixed load, SQLite and PostgreSQL (with --postgres) interleaved
- bench_run_wake.py    a DM → an idle Codex / Gemini CLI TUI's model request under `ac run`, and
                       a 20-DM storm (part run-wake; skips a CLI that is not installed)
- bench_wake.py        a DM → an idle Claude Code session's model request, under tmux against
                       the fake model, with send → `ac wait` as the baseline (part wake; says
                       so and skips that row without .cache/agent-clis)
- bench_presence.py    SessionEnd hook → `gone` in `ac who`, a wake waiter connecting → `idle ·
                       wakeable` (part presence)
- bench_waiters.py     128 idle wake waiter processes, one #alerts post: all exited, RSS, CPU per
                       wake, the hook's light waiter against `ac wait` (part waiters)
JSON results go to bench/results/.
"""

from __future__ import annotations

from pathlib import Path
import argparse
import os
import platform
import secrets
import subprocess
import sys
import time

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
DOC = ROOT / "docs" / "benchmarks.md"
# Parts of a run, and their headings in docs/benchmarks.md.
SECTIONS = {
    "client": "ac client, cold processes",
    "hook": "Hooks",
    "sqlite": "Appservice on SQLite",
    "postgres": "Appservice on PostgreSQL",
    "wait": "Long-poll wait on SQLite",
    "wait-postgres": "Long-poll wait on PostgreSQL",
    "wake": "Waking an idle Claude Code session",
    "mcp": "ac mcp cold start",
    "run": "ac run keystroke echo",
    "run-wake": "ac run waking idle Codex and Gemini CLI TUIs",
    "load": "Load: 30-agent pipeline and mixed load, SQLite and PostgreSQL",
    "presence": "Presence: gone and wakeable",
    "waiters": "Many idle wake waiters: one #alerts post (issue 27, item 3)",
}
# Parts that need --postgres (skipped without it, an error with --only).
NEEDS_POSTGRES = ("postgres", "wait-postgres")
INTRO = """# Benchmarks

Produced by `bench/run.py`; every ratio compares against a baseline measured in the same run on
the same machine. Each part says when and where it last ran: `--only` re-runs some parts and
keeps the others."""


def run(title: str, cmd: list[str]) -> str:
    print(f"\n== {title}\n$ {' '.join(cmd[1:])}", flush=True)
    started = time.monotonic()
    # stderr passes through: long runs report their progress there.
    proc = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    table = _table(proc.stdout)
    if proc.returncode != 0:
        if not table:
            print(proc.stdout[-3000:])
            raise SystemExit(f"{title} failed ({proc.returncode})")
        # A missed target is a result to show, not a reason to skip the other benchmarks.
        table += f"\n(exit status {proc.returncode}: a target above was missed)"
    print(table)
    print(f"({time.monotonic() - started:.0f} s)")
    return table


def _table(stdout: str) -> str:
    """The script's result table: its output minus progress lines."""
    lines = [
        line
        for line in stdout.splitlines()
        if line.strip() and not line.startswith(("starting", "wrote ", "registering"))
    ]
    return "\n".join(lines)


def _commit() -> str:
    """The checkout's commit, marked when it has uncommitted changes to the code measured."""
    git = ["git", "-C", str(ROOT)]
    head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    if head.returncode != 0:
        return "unknown (not a git checkout)"
    dirty = subprocess.run(
        [*git, "diff", "--quiet", "HEAD", "--", "client", "appservice", "server", "bench"]
    ).returncode
    return head.stdout.strip() + (" with uncommitted changes" if dirty else "")


def write_doc(fresh: dict[str, str]) -> None:
    """Rewrite docs/benchmarks.md with the parts just run; parts not run keep their last text."""
    previous: dict[str, str] = {}
    if DOC.exists():
        for chunk in DOC.read_text().split("\n## ")[1:]:
            title, _, body = chunk.partition("\n")
            previous[title.strip()] = body.strip()
    # Sections in the order the file has them (a hand-written one is kept as it is), then
    # the parts new to it.
    new_text = {SECTIONS[key]: body for key, body in fresh.items()}
    titles = list(previous) + [t for t in SECTIONS.values() if t not in previous]
    parts = [INTRO]
    for title in titles:
        body = new_text.get(title) or previous.get(title)
        if body:
            parts += ["", f"## {title}", "", body]
    DOC.parent.mkdir(exist_ok=True)
    DOC.write_text("\n".join(parts) + "\n")


def postgres_database(admin_url: str) -> tuple[str, callable]:
    import psycopg2

    name = "agent_chat_bench_" + secrets.token_hex(4)
    conn = psycopg2.connect(admin_url)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    conn.close()

    def drop() -> None:
        conn = psycopg2.connect(admin_url)
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.close()

    return admin_url.rsplit("/", 1)[0] + "/" + name, drop


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--postgres",
        help="also run the appservice benchmark on PostgreSQL "
        "(an admin URL; a fresh database is created and dropped)",
    )
    parser.add_argument("--quick", action="store_true", help="small scale (a few minutes)")
    parser.add_argument(
        "--history",
        type=int,
        help="messages of history for the appservice's scale test (default 100,000, which "
        "takes 20-50 minutes per database here, as fast as Synapse takes them; --quick: 300)",
    )
    parser.add_argument(
        "--postgres-history", type=int, help="the same for the PostgreSQL run (default: as above)"
    )
    parser.add_argument(
        "--only",
        help=f"run just these parts, comma-separated ({', '.join(SECTIONS)}); the others "
        "keep their last results in docs/benchmarks.md",
    )
    parser.add_argument("--no-doc", action="store_true", help="do not rewrite docs/benchmarks.md")
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    py = sys.executable
    scale = (
        [
            "--agents",
            "60",
            "--rooms",
            "10",
            "--history",
            "300",
            "--rounds",
            "40",
            "--samples",
            "100",
            "--big-rounds",
            "3",
            "--concurrent",
            "30",
            "--per-agent",
            "5",
        ]
        if args.quick
        else []
    )
    if args.history is not None:
        scale += ["--history", str(args.history)]
    pg_scale = scale + (
        ["--history", str(args.postgres_history)] if args.postgres_history is not None else []
    )
    wanted = set(args.only.split(",")) if args.only else set(SECTIONS)
    unknown = wanted - set(SECTIONS)
    if unknown:
        parser.error(
            f"--only: unknown part(s) {', '.join(sorted(unknown))}; "
            f"pick from {', '.join(SECTIONS)}"
        )
    for part in NEEDS_POSTGRES:
        if part in wanted and not args.postgres:
            if args.only:
                parser.error(f"--only {part} needs --postgres URL")
            wanted.discard(part)
    stamp = (
        f"Run {time.strftime('%Y-%m-%d %H:%M %Z')} at commit {_commit()} on "
        f"{platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
        f"{' (quick scale)' if args.quick else ''}."
    )
    fresh: dict[str, str] = {}

    def script(name: str, *args: str) -> list[str]:
        return [py, f"bench/{name}", *args]

    if "client" in wanted:
        runs = "10" if args.quick else "30"
        out = str(RESULTS / "client.json")
        fresh["client"] = run("client", script("bench_client.py", "-n", runs, "--json-out", out))
    if "hook" in wanted:
        runs = "50" if args.quick else "300"
        out = str(RESULTS / "hook.json")
        fresh["hook"] = run("hook", script("bench_hook.py", "-n", runs, "--out", out))
    if "sqlite" in wanted:
        out = str(RESULTS / "appservice-sqlite.json")
        fresh["sqlite"] = run(
            "appservice, SQLite", script("bench_appservice.py", *scale, "--json", out)
        )
    if "postgres" in wanted:
        url, drop = postgres_database(args.postgres)
        out = str(RESULTS / "appservice-postgres.json")
        try:
            fresh["postgres"] = run(
                "appservice, PostgreSQL",
                script("bench_appservice.py", *pg_scale, "--database", url, "--json", out),
            )
        finally:
            drop()
    wait_scale = (
        ["--rounds", "30", "--ac-rounds", "10", "--waiters", "200", "--idle", "3"]
        if args.quick
        else []
    )
    if "wait" in wanted:
        out = str(RESULTS / "wait-sqlite.json")
        fresh["wait"] = run("wait, SQLite", script("bench_wait.py", *wait_scale, "--json", out))
    if "wait-postgres" in wanted:
        url, drop = postgres_database(args.postgres)
        out = str(RESULTS / "wait-postgres.json")
        try:
            fresh["wait-postgres"] = run(
                "wait, PostgreSQL",
                script("bench_wait.py", *wait_scale, "--database", url, "--json", out),
            )
        finally:
            drop()
    if "wake" in wanted:
        out = str(RESULTS / "wake.json")
        wakes = ["-n", "3", "--ac-rounds", "5"] if args.quick else []
        fresh["wake"] = run("wake", script("bench_wake.py", *wakes, "--json", out))
    if "mcp" in wanted:
        out = str(RESULTS / "mcp.json")
        runs = ["-n", "10"] if args.quick else []
        fresh["mcp"] = run("mcp", script("bench_mcp.py", *runs, "--json", out))
    if "run" in wanted:
        out = str(RESULTS / "run.json")
        keys = ["-n", "200"] if args.quick else []
        fresh["run"] = run("run", script("bench_run.py", *keys, "--json", out))
    if "load" in wanted:
        out = str(RESULTS / "load.json")
        loads = ["--rounds", "1", "--duration", "10"] if args.quick else []
        # Without --postgres: SQLite alone.
        url, drop = postgres_database(args.postgres) if args.postgres else (None, lambda: None)
        pg = ["--database", url] if url else []
        try:
            fresh["load"] = run("load", script("bench_load.py", *loads, *pg, "--json", out))
        finally:
            drop()
    if "presence" in wanted:
        out = str(RESULTS / "presence.json")
        rounds = ["--rounds", "10", "--ac-rounds", "3"] if args.quick else []
        fresh["presence"] = run("presence", script("bench_presence.py", *rounds, "--json", out))
    if "waiters" in wanted:
        out = str(RESULTS / "waiters.json")
        rounds = ["--rounds", "1"] if args.quick else []
        fresh["waiters"] = run("waiters", script("bench_waiters.py", *rounds, "--json", out))
    if "run-wake" in wanted:
        out = str(RESULTS / "run-wake.json")
        dms = ["-n", "3", "--ac-rounds", "5"] if args.quick else []
        fresh["run-wake"] = run("run-wake", script("bench_run_wake.py", *dms, "--json", out))
    if not args.no_doc:
        write_doc({key: f"{stamp}\n\n```\n{table}\n```" for key, table in fresh.items()})
        print(f"\nwrote {DOC.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
