#!/usr/bin/env python3
"""Wake benchmark (issue 13, "Numbers"): a DM to an idle Claude Code session reaches the model
≤ 2 s after the send.

Starts its own Synapse + appservice (as bench_wait.py does) and, in the same run:

- baseline: API send by agent A → agent B's `ac wait` (a cold process blocked on the
  long-poll) prints, against a raw masqueraded Synapse send → push (bench_wait's end to end);
- the real Claude Code from .cache/agent-clis (scripts/agent-clis.sh), interactive under tmux,
  after `ac setup claude` (its asyncRewake wake hooks) in a temp HOME, every base URL on
  tests/fake_models.py (no vendor traffic, telemetry and updates off): one turn, then idle;
  then N DMs from another agent, spaced past the wake loop guard (10 s) so that each is a
  separate wake, each timed from the send to the fake model's request carrying its line.

Without Claude Code or tmux it says so and exits 0 after the baseline.

    python bench/bench_wake.py [-n 5] [--spacing 12] [--ac-rounds 10]
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from statistics import median
import argparse
import asyncio
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time

import aiohttp

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from bench_appservice import add_stack_arguments, report, run_on_a_stack
from bench_wait import AC, WaitBench

from agent_chat.config import save_config
from agent_cli_helpers import BIN, QUIET_ENV, Tmux, processes_with, trust_claude
from fake_models import FakeModels
from helpers import register_at, wait_for

#: The issue's target: DM sent → the (fake) model's request, every time.
TARGET_S = 2.0
#: Seconds to wait for one wake before calling it missed.
WAKE_DEADLINE = 30.0


def missing() -> str | None:
    """Why the Claude Code part cannot run here, or None."""
    if not (BIN / "claude").exists():
        return f"{BIN / 'claude'} not installed (scripts/agent-clis.sh, needs npm)"
    if not shutil.which("tmux"):
        return "tmux not installed (scripts/agent-clis.sh installs it where it can)"
    return None


def cli_home(
    tmp: str, api_url: str, token: str, nick: str, extra: dict[str, str]
) -> tuple[Path, Path, dict[str, str]]:
    """A throwaway HOME in ``tmp`` for one agent CLI: its project folder, an Agent Chat home
    that registers ``nick`` on first use, and the environment the CLI runs in (``extra`` and
    the real-CLI tests' quiet settings: no vendor traffic)."""
    home = Path(tmp) / "home"
    project = home / "project"
    project.mkdir(parents=True)
    chat = home / ".agent-chat"
    save_config(str(chat), {"server": {"registration_token": token}})
    env = {
        "PATH": f"{BIN}:{Path(AC).parent}:/usr/local/bin:/usr/bin:/bin",
        "HOME": str(home),
        "TERM": "xterm-256color",
        "LANG": "C.UTF-8",
        "TMPDIR": tmp,
        "AGENT_CHAT_HOME": str(chat),
        "AGENT_CHAT_SERVER": api_url,
        "AGENT_CHAT_NICK": nick,
        **extra,
        **QUIET_ENV,
    }
    return home, project, env


class WakeBench(WaitBench):
    async def run(self) -> None:  # type: ignore[override]
        await self.probe.start()
        timeout = aiohttp.ClientTimeout(total=400)
        async with aiohttp.ClientSession(timeout=timeout) as self.http:
            await self.baseline_pair("wake")
        why = missing()
        if why:
            self.results["wake"] = {"skipped": why}
            return
        # Blocking (subprocesses, tmux, sleeps) in a thread; the probe keeps serving.
        self.results["wake"] = await asyncio.to_thread(self.wake)

    def wake(self) -> dict[str, object]:
        api_url = self.config.api_url
        token = self.config.registration_token
        other = register_at(api_url, token)
        with tempfile.TemporaryDirectory(prefix="ac-bench-wake-") as tmp, FakeModels() as models:
            me = "Woken" + secrets.token_hex(3)
            marker = "AGENT_CHAT_WAKE_BENCH"
            home, project, env = cli_home(
                tmp,
                api_url,
                token,
                me,
                {
                    "AGENT_CHAT_HOOK_TTL": "0",
                    "AGENT_CHAT_WAKE_TIMEOUT": "300",
                    "ANTHROPIC_API_KEY": "sk-ant-fake",
                    "ANTHROPIC_BASE_URL": models.url,
                    marker: secrets.token_hex(4),
                },
            )
            p = subprocess.run(
                [AC, "setup", "claude"], env=env, cwd=project, capture_output=True, text=True
            )
            assert p.returncode == 0, p.stderr
            trust_claude(home, project, env["ANTHROPIC_API_KEY"])
            tmux = Tmux("ac-bench-wake-" + secrets.token_hex(3), env)
            latencies: list[float] = []
            try:
                tmux.run(
                    "new-session", "-d", "-s", "main", "-x", "200", "-y", "50",
                    "-c", str(project), str(BIN / "claude"),
                )  # fmt: skip
                wait_for(lambda: "\u276f" in tmux.screen(), 60, "the prompt (\u276f)")
                time.sleep(2)  # SessionStart hooks start, the input box settles
                tmux.run("send-keys", "-t", "main", "-l", "turn one")
                tmux.run("send-keys", "-t", "main", "Enter")
                first = models.wait_for(lambda r: r.is_agent_turn, 180)
                assert first is not None, tmux.screen()
                wait_for(lambda: "OK" in tmux.screen(), 60, "the reply on screen")
                for i in range(1, self.args.n + 1):
                    time.sleep(self.args.spacing)  # idle, and past the loop guard
                    line = f"@{other.nick}({i})"
                    since = len(models.requests)
                    sent = time.monotonic()
                    other.send("@" + me, f"wake {i}")
                    woke = models.wait_for(
                        lambda r, since=since, line=line: (
                            r in models.requests[since:] and r.is_agent_turn and line in r.text
                        ),
                        WAKE_DEADLINE,
                    )
                    assert woke is not None, (f"no wake for DM {i}", tmux.screen())
                    latencies.append(woke.at - sent)
                    print(f"wake {i}: {(woke.at - sent) * 1000:.0f} ms", file=sys.stderr)
            except BaseException:
                print("the tmux screen:\n" + tmux.screen(), file=sys.stderr)
                raise
            finally:
                tmux.kill()
                _end_waiters(f"{marker}={env[marker]}")
        return {
            "dms": len(latencies),
            "spacing_s": self.args.spacing,
            "wake_ms": [x * 1000 for x in latencies],
            "wake_ms_median": median(latencies) * 1000,
            "wake_ms_max": max(latencies) * 1000,
            "claude_code": _version(),
        }

    def report(self) -> str:
        table = super().report()
        w = self.results.get("wake") or {}
        if "skipped" in w:
            return table + f"\nClaude Code wake: skipped: {w['skipped']}"
        if not w:
            return table
        ok = w["wake_ms_max"] <= TARGET_S * 1000
        self.missed = self.missed or not ok
        name = "DM → idle Claude Code's model request, p50"
        value = f"{w['wake_ms_median']:.0f} ms (max {w['wake_ms_max']:.0f}; {w['dms']} wakes)"
        width = max(len(x.split("  ")[0]) for x in table.splitlines()) if table else 0
        width = max(width, len(name))
        target = f"≤ {TARGET_S * 1000:.0f} ms, every wake" + (" ✓" if ok else " ✗")
        return "\n".join(
            [table, f"{name:<{width}}  {value:<40}  {target}", f"({w['claude_code']})"]
        )


def _version() -> str:
    p = subprocess.run([str(BIN / "claude"), "--version"], capture_output=True, text=True)
    return "Claude Code " + p.stdout.strip()


def _end_waiters(marker: str) -> None:
    """The wake hook's `ac wait` ends with the session (it watches the CLI's process); kill
    whatever is left after that."""
    deadline = time.monotonic() + 45
    while processes_with(marker) and time.monotonic() < deadline:
        time.sleep(0.5)
    for pid in processes_with(marker):
        try:
            os.kill(pid, 15)
        except OSError:
            pass


def wake_main(
    doc: str | None,
    bench_class: type[WaitBench],
    prefix: str,
    n: int,
    spacing: float,
    more: Callable[[argparse.ArgumentParser], None] | None = None,
) -> int:
    """The wake benches' command line (this one and bench_run_wake.py): ``-n`` DMs spaced
    ``--spacing`` s apart, the baseline's ``--ac-rounds``, the stack's options, ``more``'s."""
    parser = argparse.ArgumentParser(
        description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-n", type=int, default=n, help="DMs, each a separate wake")
    parser.add_argument(
        "--spacing", type=float, default=spacing, help="idle seconds before each DM (guard: 10)"
    )
    if more is not None:
        more(parser)
    parser.add_argument("--ac-rounds", type=int, default=10, help="baseline `ac wait` rounds")
    add_stack_arguments(parser)
    args = parser.parse_args()
    args.keep = None
    bench = bench_class(args)
    run_on_a_stack(bench, prefix)
    return report(bench)


def main() -> int:
    return wake_main(__doc__, WakeBench, "ac-bench-wake-", n=5, spacing=12.0)


if __name__ == "__main__":
    sys.exit(main())
