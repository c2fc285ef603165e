#!/usr/bin/env python3
"""Wake benchmark for ``ac run`` (issue 23, "Numbers"): a DM to an idle Codex or Gemini CLI TUI
running under ``ac run`` reaches the model; p50 ≤ 500 ms, every DM woken; a storm of 20 DMs
in 10 s → at most 2 wakes.

Starts its own Synapse + appservice (as bench_wake.py does) with the same baseline (send →
`ac wait` vs a raw Synapse push), then for each CLI from .cache/agent-clis (scripts/
agent-clis.sh), interactive under tmux after `ac setup <cli>` in a temp HOME, every base URL on
tests/fake_models.py: N DMs spaced past the loop guard, each timed from the send to the fake
model's request whose prompt is the typed line; the split (news at `ac run`, line typed,
submitted) comes from ``AGENT_CHAT_RUN_TRACE``. Then the storm: typed lines counted.

    python bench/bench_run_wake.py [-n 10] [--spacing 11] [--cli codex,gemini]
"""

from __future__ import annotations

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
from bench_wait import AC, WaitBench
from bench_wake import cli_home, wake_main
from test_agent_clis import PROMPTS, write_cli_config

from agent_cli_helpers import BIN, Tmux, processes_with
from fake_models import FakeModels, Request, _last_user_parts
from helpers import register_at, wait_for

TARGET_MS = 500.0
STORM_WAKES = 2
WAKE_DEADLINE = 30.0
WORDS = ": new direct or urgent message"


def _typed(r: Request) -> bool:
    return r.is_agent_turn and WORDS in _last_user_parts(r.vendor, r.body)[0]


class RunWakeBench(WaitBench):
    async def run(self) -> None:  # type: ignore[override]
        await self.probe.start()
        timeout = aiohttp.ClientTimeout(total=400)
        async with aiohttp.ClientSession(timeout=timeout) as self.http:
            await self.baseline_pair("runwake")
        for name in self.args.cli.split(","):
            if not (BIN / name).exists() or not shutil.which("tmux"):
                self.results[name] = {"skipped": f"{BIN / name} or tmux not installed"}
                continue
            self.results[name] = await asyncio.to_thread(self.wake, name)

    def wake(self, name: str) -> dict[str, object]:
        api_url = self.config.api_url
        token = self.config.registration_token
        other = register_at(api_url, token)
        with tempfile.TemporaryDirectory(prefix="ac-bench-run-") as tmp, FakeModels() as models:
            me = "Run" + secrets.token_hex(3)
            marker = "AGENT_CHAT_RUN_BENCH"
            trace = Path(tmp) / "trace"
            home, project, env = cli_home(
                tmp,
                api_url,
                token,
                me,
                {
                    "AGENT_CHAT_RUN_TRACE": str(trace),
                    "FAKE_MODEL_API_KEY": "sk-fake",
                    "OPENAI_API_KEY": "sk-fake",
                    "OPENAI_BASE_URL": models.url + "/v1",
                    "GEMINI_API_KEY": "fake",
                    "GOOGLE_GEMINI_BASE_URL": models.url,
                    marker: secrets.token_hex(4),
                },
            )
            write_cli_config(name, home, models.url)
            p = subprocess.run(
                [AC, "setup", name], env=env, cwd=project, capture_output=True, text=True
            )
            assert p.returncode == 0, p.stderr
            args: list[str] = []
            if name == "codex":
                config = home / ".codex" / "config.toml"
                text = config.read_text().replace("[features]\n", "[features]\nplugins = false\n")
                config.write_text(text)
            else:
                args = ["--approval-mode", "yolo"]
            tmux = Tmux("ac-bench-run-" + secrets.token_hex(3), env)
            latencies: list[float] = []
            splits: list[tuple[float, float, float]] = []
            try:
                tmux.run(
                    "new-session", "-d", "-s", "main", "-x", "150", "-y", "45",
                    "-c", str(project), AC, "run", "--", str(BIN / name), *args,
                )  # fmt: skip
                wait_for(lambda: PROMPTS[name] in tmux.screen(), 90, f"{name}'s prompt")
                if name == "codex":
                    wait_for(lambda: "Hooks need review" in tmux.screen(), 30, "hooks review")
                    tmux.run("send-keys", "-t", "main", "Escape")
                    wait_for(lambda: "Hooks need review" not in tmux.screen(), 30, "review")
                time.sleep(3)
                for i in range(1, self.args.n + 1):
                    time.sleep(self.args.spacing if i > 1 else 0)
                    at = "@ " if name == "gemini" else "@"  # see run.Profile.file_mentions
                    line = f"{at}{other.nick}({i}){WORDS}"
                    since = len(models.requests)
                    trace.write_text("")
                    sent = time.monotonic()
                    other.send("@" + me, f"wake {i}")
                    woke = models.wait_for(
                        lambda r, since=since, line=line: (
                            r in models.requests[since:]
                            and r.is_agent_turn
                            and line in _last_user_parts(r.vendor, r.body)[0]
                        ),
                        WAKE_DEADLINE,
                    )
                    assert woke is not None, (f"no wake for DM {i}", tmux.screen())
                    latencies.append(woke.at - sent)
                    steps = _steps(trace, models.requests[since:], sent, woke)
                    splits.append(tuple(steps.get(e, 0.0) for e in SPLIT))
                    shown = "  ".join(
                        f"{e} {ms:.0f}" for e, ms in sorted(steps.items(), key=lambda x: x[1])
                    )
                    print(f"{name} wake {i}: {shown}", file=sys.stderr)
                # The storm: 20 DMs in 10 s, past the loop guard since the last wake.
                time.sleep(self.args.spacing)
                before = sum(1 for r in models.requests if _typed(r))
                start = time.monotonic()
                for j in range(20):  # one every 0.5 s, whatever a send takes
                    time.sleep(max(0.0, start + j * 0.5 - time.monotonic()))
                    other.send("@" + me, f"storm {j}")
                time.sleep(15)
                storm = sum(1 for r in models.requests if _typed(r)) - before
            except BaseException:
                print("the tmux screen:\n" + tmux.screen(), file=sys.stderr)
                raise
            finally:
                tmux.kill()
                time.sleep(1)
                for pid in processes_with(f"{marker}={env[marker]}"):
                    try:
                        os.kill(pid, 9)
                    except OSError:
                        pass
        return {
            "dms": len(latencies),
            "wake_ms": [x * 1000 for x in latencies],
            "wake_ms_median": median(latencies) * 1000,
            "wake_ms_max": max(latencies) * 1000,
            **{f"{e}_ms_median": median(s[k] for s in splits) for k, e in enumerate(SPLIT)},
            "storm_wakes": storm,
            "version": _version(name),
        }

    def report(self) -> str:
        rows = [super().report()]
        for name in self.args.cli.split(","):
            w = self.results.get(name) or {}
            if "skipped" in w or not w:
                rows.append(f"{name} under ac run: skipped: {w.get('skipped')}")
                continue
            ok = w["wake_ms_median"] <= TARGET_MS and w["storm_wakes"] <= STORM_WAKES
            self.missed = self.missed or not ok
            rows += [
                f"DM → idle {name} TUI's model request under ac run, p50: "
                f"{w['wake_ms_median']:.0f} ms (max {w['wake_ms_max']:.0f}; "
                f"{w['dms']} of {self.args.n} woken)  target ≤ {TARGET_MS:.0f} ms"
                + (" ✓" if w["wake_ms_median"] <= TARGET_MS else " ✗"),
                "  split, p50 ms after the send: "
                + ", ".join(f"{e} {w[e + '_ms_median']:.0f}" for e in SPLIT),
                f"  20 DMs in 10 s → {w['storm_wakes']} wakes (target ≤ {STORM_WAKES})"
                + (" ✓" if w["storm_wakes"] <= STORM_WAKES else " ✗"),
                f"  ({w['version']})",
            ]
        return "\n".join(rows)


#: A wake's steps, ms after the send: the news at ``ac run``, the line typed (after the quiet
#: wait), the CLI's first output after it (its echo), the submit key, the CLI's first model
#: request after it (Gemini CLI: its router call), the agent turn carrying the line.
SPLIT = ("news", "typed", "echoed", "submitted", "first_request", "request")


def _steps(trace: Path, requests: list[Request], sent: float, woke: Request) -> dict[str, float]:
    steps: dict[str, float] = {}
    for row in trace.read_text().splitlines():
        at, event = row.split(None, 1)
        name = event.split()[0]
        if name in (*SPLIT, "resubmitted") and name not in steps:
            steps[name] = (float(at) - sent) * 1000
    submitted = sent + steps.get("submitted", 0.0) / 1000
    after = [r.at for r in requests if r.at >= submitted]
    if after:
        steps["first_request"] = (min(after) - sent) * 1000
    steps["request"] = (woke.at - sent) * 1000
    if "resubmitted" in steps:  # the first submit key was lost: what the CLI drew, when
        for row in trace.read_text().splitlines():
            at, event = row.split(None, 1)
            print(f"  {(float(at) - sent) * 1000:7.0f} {event[:110]}", file=sys.stderr)
    return steps


def _version(name: str) -> str:
    p = subprocess.run([str(BIN / name), "--version"], capture_output=True, text=True)
    return f"{name} " + p.stdout.strip().splitlines()[-1] if p.stdout.strip() else name


def main() -> int:
    def cli(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--cli", default="codex,gemini", help="which CLIs (comma-separated)")

    return wake_main(__doc__, RunWakeBench, "ac-bench-run-wake-", n=10, spacing=11.0, more=cli)


if __name__ == "__main__":
    sys.exit(main())
