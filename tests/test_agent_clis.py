"""The real agent CLIs (Claude Code, Codex, Gemini CLI) with `ac setup`, against a fake model.

Each CLI runs non-interactive turns (``claude -p``, ``codex exec``, ``gemini -p``) in a temp
HOME where ``ac setup <cli>`` was run against the test stack; every base URL points at
tests/fake_models.py, which records what the *model* received. Asserted: the hook line on turn
1, nothing new on an unchanged turn 2 (same session), the new line on turn 3 after another agent
sends, the tool-time line after a tool call, the ``ac mcp`` tools in the tool list, and the
skills' whole descriptions.

The CLIs come from scripts/agent-clis.sh (pinned versions, cached prefix; .ci/run calls it).
Without them these tests skip, saying so. Telemetry, auto-update and vendor traffic are off.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote
import json
import os
import shutil
import subprocess
import sys
import time

import pytest
import yaml

from agent_chat.config import save_config
from agent_chat.setup import integrations_dir
from agent_cli_helpers import (
    BIN,
    PREFIX,
    QUIET_ENV,
    REPO,
    Tmux,
    cmdline,
    processes_with,
    trust_claude,
)
from fake_models import FakeModels, Request, _last_user_parts
from helpers import Agent, Stack, register, unique, wait_for

pytestmark = pytest.mark.agent_cli

AC = str(Path(sys.executable).with_name("ac"))
TURN_TIMEOUT = 180.0
CLIS = ("claude", "codex", "gemini")
VENDOR = {"claude": "anthropic", "codex": "openai", "gemini": "gemini"}


def strings(value: Any) -> str:
    """Every string inside a JSON value, one per line (so quotes are not escaped)."""
    if isinstance(value, str):
        return value + "\n"
    if isinstance(value, dict):
        return "".join(strings(v) for v in value.values())
    if isinstance(value, list):
        return "".join(strings(v) for v in value)
    return ""


def skill_descriptions() -> dict[str, str]:
    out = {}
    for path in Path(integrations_dir()).rglob("SKILL.md"):
        front = yaml.safe_load(path.read_text(encoding="utf-8").split("---\n", 2)[1])
        out[front["name"]] = front["description"]
    return out


@dataclass
class Cli:
    name: str
    home: Path
    project: Path
    env: dict[str, str]
    models: FakeModels
    me: str

    @property
    def vendor(self) -> str:
        return VENDOR[self.name]

    def argv(self, prompt: str, resume: bool) -> list[str]:
        exe = str(BIN / self.name)
        if self.name == "claude":
            return [
                exe,
                "-p",
                prompt,
                "--allowedTools",
                "Bash mcp__agent-chat__notify",
                *(["--continue"] if resume else []),
            ]
        if self.name == "codex":
            flags = [
                "--skip-git-repo-check",
                "--dangerously-bypass-hook-trust",
                "--sandbox",
                "danger-full-access",
                # No curated-plugin sync (api.github.com, chatgpt.com) at start-up.
                "-c",
                "features.plugins=false",
            ]
            if resume:
                return [exe, "exec", *flags, "resume", "--last", prompt]
            return [exe, "exec", *flags, prompt]
        return [
            exe,
            "-p",
            prompt,
            "--approval-mode",
            "yolo",
            *(["--resume", "latest"] if resume else []),
        ]

    def turn(self, prompt: str, resume: bool = True) -> list[Request]:
        """Run one turn; return the agent-loop requests the model received during it."""
        since = len(self.models.requests)
        p = subprocess.run(
            self.argv(prompt, resume),
            cwd=self.project,
            env=self.env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=TURN_TIMEOUT,
        )
        assert p.returncode == 0, (self.name, prompt, p.stdout[-3000:], p.stderr[-3000:])
        turns = self.models.agent_turns(self.vendor, since)
        assert turns, (self.name, "no model request", p.stdout[-2000:], p.stderr[-2000:])
        return turns


def write_cli_config(name: str, home: Path, url: str) -> None:
    """Each CLI's own settings: the fake model, no telemetry or update checks."""
    if name == "codex":
        (home / ".codex").mkdir(parents=True, exist_ok=True)
        (home / ".codex" / "config.toml").write_text(
            'model = "fake-model"\n'
            'model_provider = "fake"\n'
            "check_for_update_on_startup = false\n"
            "[model_providers.fake]\n"
            'name = "fake"\n'
            f'base_url = "{url}/v1"\n'
            'wire_api = "responses"\n'
            'env_key = "FAKE_MODEL_API_KEY"\n'
            "[analytics]\n"
            "enabled = false\n"
            "[feedback]\n"
            "enabled = false\n"
        )
    elif name == "gemini":
        (home / ".gemini").mkdir(parents=True, exist_ok=True)
        settings = {
            "security": {"auth": {"selectedType": "gemini-api-key"}},
            "privacy": {"usageStatisticsEnabled": False},
            "general": {"disableAutoUpdate": True, "disableUpdateNag": True},
            "telemetry": {"enabled": False},
        }
        (home / ".gemini" / "settings.json").write_text(json.dumps(settings))


@pytest.fixture(params=CLIS)
def cli(request: pytest.FixtureRequest, stack: Stack, tmp_path: Path) -> Iterator[Cli]:
    name = request.param
    if not (BIN / name).exists():
        pytest.skip(f"{BIN / name} not installed: run scripts/agent-clis.sh (needs npm)")
    home = tmp_path / "home"
    project = home / "project"
    project.mkdir(parents=True)
    chat = home / ".agent-chat"
    save_config(str(chat), {"server": {"registration_token": stack.registration_token}})
    me = unique("Cli")
    with FakeModels() as models:
        write_cli_config(name, home, models.url)
        env = {
            "PATH": f"{BIN}:{Path(AC).parent}:/usr/local/bin:/usr/bin:/bin",
            "HOME": str(home),
            "TERM": "dumb",
            "LANG": "C.UTF-8",
            "TMPDIR": str(tmp_path),
            "AGENT_CHAT_HOME": str(chat),
            "AGENT_CHAT_SERVER": stack.api_url,
            "AGENT_CHAT_NICK": me,
            "AGENT_CHAT_HOOK_TTL": "0",
            # Dummy keys; every base URL is the fake.
            "ANTHROPIC_API_KEY": "sk-ant-fake",
            "ANTHROPIC_BASE_URL": models.url,
            "FAKE_MODEL_API_KEY": "sk-fake",
            "OPENAI_API_KEY": "sk-fake",
            "OPENAI_BASE_URL": models.url + "/v1",
            "GEMINI_API_KEY": "fake",
            "GOOGLE_GEMINI_BASE_URL": models.url,
            **QUIET_ENV,
        }
        p = subprocess.run(
            [AC, "setup", name], env=env, cwd=project, capture_output=True, text=True, timeout=60
        )
        assert p.returncode == 0, p.stderr
        assert "hook credentials for" in p.stdout, p.stdout
        yield Cli(name, home, project, env, models, me)


def reached(sender: Agent, event_id: str, stage: str) -> dict[str, Any] | None:
    """What the sender sees (``GET /receipts``): its message's one recipient at ``stage``."""
    status, data = sender.call("GET", f"/receipts?event={quote(event_id)}")
    assert status == 200, data
    (recipient,) = data["recipients"]
    found: dict[str, Any] | None = recipient["stages"].get(stage)
    return found


def count_is(agent: Agent, room: str, n: int) -> None:
    wait_for(lambda: agent.count(room) == n, what=f"{n} unread in {room}")


def test_hook_lines_mcp_tools_and_skills_reach_the_model(cli: Cli, stack: Stack) -> None:
    other = register(stack, unique("Peer"))
    line = lambda n: f"[chat] @{other.nick}({n})"  # noqa: E731

    # Turn 1: a DM is waiting; the model gets the line with the prompt.
    dm = other.send("@" + cli.me, "first")
    reader = _reader(cli)
    count_is(reader, "@" + other.nick, 1)
    first = cli.turn("turn one", resume=False)
    assert line(1) in strings(first[0].body), f"{cli.name}: turn 1 lacks {line(1)}"
    # The sender sees it shown, by this CLI's session (the hook's report of what it printed).
    shown = wait_for(lambda: reached(other, dm["event_id"], "shown"), what="shown")
    assert shown["cli"] == cli.name and shown.get("session"), (cli.name, shown)

    # The skills' descriptions arrive whole (Gemini CLI: from ~/.agents/skills, listed in
    # <available_skills>; its custom commands' descriptions never reach the model).
    text = strings(first[0].body)
    for skill, description in skill_descriptions().items():
        assert description in text, f"{cli.name}: skill {skill} description cut or absent"
    if cli.name == "gemini":
        listed = text.split("<available_skills>", 1)[-1].split("</available_skills>", 1)[0]
        assert "<available_skills>" in text and all(s in listed for s in skill_descriptions()), (
            text[-3000:]
        )

    # Turn 2, same session, nothing new: no new line.
    seen = strings(first[-1].body).count(line(1))
    second = cli.turn("turn two")
    assert strings(second[0].body).count(line(1)) == seen, f"{cli.name}: line repeated"

    # Turn 3: another message; the new line.
    other.send("@" + cli.me, "second")
    count_is(reader, "@" + other.nick, 2)
    third = cli.turn("turn three")
    assert line(2) in strings(third[0].body), f"{cli.name}: turn 3 lacks {line(2)}"

    # Turn 4: a tool call during which another message arrives; the line after the tool.
    script = cli.home / "send-during-tool.sh"
    script.write_text(_send_script(stack, other, cli.me, reader, 3))
    fourth = cli.turn(f"turn four RUN: sh {script}")
    after_tool = [r for r in fourth if _last_user_parts(r.vendor, r.body)[1]]
    assert after_tool, f"{cli.name}: the tool result never reached the model"
    assert line(3) in strings(after_tool[0].body), f"{cli.name}: no tool-time line {line(3)}"

    # The MCP tools of `ac mcp` were offered, on turn 1 already (`ac mcp` answers well inside
    # Codex's default 1 s grace for optional servers): in the request's tools, or deferred
    # (Claude Code 2.1.337: named in the system prompt, loaded through ToolSearch).
    turns = first + second + third + fourth
    names = {n for r in turns for n in r.tool_names}
    ours = {n for n in first[0].tool_names if "agent-chat" in n or "agent_chat" in n}
    if ours:
        # Codex: only because `ac setup codex` turned off tool_search_always_defer_mcp_tools
        # (with it on, a custom provider's model is offered none of the server's tools).
        assert any(n.endswith("send") for n in ours), (cli.name, sorted(names))
        assert any(n.endswith("notify") for n in ours), (cli.name, sorted(names))
    else:
        _deferred_mcp_tool_works(cli, first[0], other)

    # Every turn's session has ended: the CLI ran the SessionEnd hook `ac setup` installed
    # (the MCP server's own session, `cli: mcp`, has no such hook).
    def states() -> list[str]:
        status, data = reader.call("GET", "/presence")
        assert status == 200, data
        sessions = data["identities"][0]["sessions"]
        return [str(s["state"]) for s in sessions if s["cli"] == cli.name]

    wait_for(lambda: states() and set(states()) == {"gone"}, what=f"{cli.name}: sessions gone")


DEFERRED = "mcp__agent-chat__notify"


def _deferred_mcp_tool_works(cli: Cli, first: Request, other: Agent) -> None:
    """MCP tools deferred behind ToolSearch: named in the request (not in ``tools``); the
    model selects one with ToolSearch, then calls it, and gets our answer."""
    text = strings(first.body)
    assert "ToolSearch" in first.tool_names and DEFERRED in text, (
        cli.name,
        sorted(first.tool_names),
        text[-2000:],
    )
    query = json.dumps({"query": "select:" + DEFERRED})
    turn = cli.turn(f"CALL: ToolSearch {query} THEN {DEFERRED} {{}}")
    loaded = [r for r in turn if DEFERRED in r.tool_names]
    assert loaded, (cli.name, "ToolSearch did not load it", turn[-1].text[-3000:])
    answer = f"@{other.nick}: 3 direct messages"  # the notify tool's words, not the hook's
    answered = [r for r in turn if answer in r.text]
    assert answered, (cli.name, f"no answer from {DEFERRED}", turn[-1].text[-2000:])


def _reader(cli: Cli) -> Agent:
    """Our own identity (written by `ac setup`), to watch our counts without reading them."""
    curl = (cli.home / ".agent-chat" / "hook" / (cli.me + ".curl")).read_text()
    token = curl.split("Bearer ", 1)[1].split('"', 1)[0]
    return Agent(cli.env["AGENT_CHAT_SERVER"] + "/_agent_chat/v1", "", cli.me, token)


def _send_script(stack: Stack, other: Agent, me: str, reader: Agent, n: int) -> str:
    """A shell command (the tool) that sends a DM as ``other`` and waits until it is counted."""
    base = stack.api_url + "/_agent_chat/v1"
    body = json.dumps({"to": "@" + me, "body": "during the tool"})
    return (
        f"curl -sf -X PUT -H 'Authorization: Bearer {other.token}' "
        f"-H 'Content-Type: application/json' -d '{body}' {base}/send/{unique('txn')}\n"
        "i=0\n"
        "while [ $i -lt 100 ]; do\n"
        f"  curl -sf -H 'Authorization: Bearer {reader.token}' {base}/notify?format=oneline"
        f" | grep -q '({n})' && break\n"
        "  i=$((i + 1)); sleep 0.1\n"
        "done\n"
        "echo sent\n"
    )


def test_cli_install_script_is_idempotent() -> None:
    if not shutil.which("npm") or not (BIN / "claude").exists():
        pytest.skip("npm or the CLIs not installed")
    p = subprocess.run(
        [str(REPO / "scripts" / "agent-clis.sh")],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "AGENT_CHAT_CLI_PREFIX": str(PREFIX)},
    )
    assert p.returncode == 0 and "up to date" in p.stdout, p.stdout + p.stderr


# --- waking an idle interactive Claude Code session (issue 13, item 4) ------------------------

#: Seconds from "the DM was sent" to "the fake model got the wake": the issue's target is 2 s;
#: the assertion is generous for CI, the figure is printed (pytest -s) for the README.
WAKE_DEADLINE = 30.0
QUIET_WINDOW = 6.0


@pytest.mark.parametrize("cli", ["claude"], indirect=True)
def test_dm_wakes_an_idle_interactive_claude_code(cli: Cli, stack: Stack) -> None:
    if not shutil.which("tmux"):
        pytest.skip("tmux not installed (scripts/agent-clis.sh installs it where it can)")
    settings = json.loads((cli.home / ".claude" / "settings.json").read_text())
    assert {"SessionStart", "Stop"} <= set(settings["hooks"]), settings
    trust_claude(cli.home, cli.project, cli.env["ANTHROPIC_API_KEY"])
    other = register(stack, unique("Peer"))
    marker = f"AGENT_CHAT_WAKE_TEST={unique('w')}"
    env = {
        **cli.env,
        "TERM": "xterm-256color",
        # Leftover waiters end by themselves soon even if the cleanup below missed one.
        "AGENT_CHAT_WAKE_TIMEOUT": "300",
        marker.split("=")[0]: marker.split("=")[1],
    }
    tmux = Tmux(unique("ac-wake"), env)
    try:
        tmux.run(
            "new-session", "-d", "-s", "main", "-x", "200", "-y", "50", "-c", str(cli.project),
            str(BIN / "claude"),
        )  # fmt: skip
        wait_for(lambda: "\u276f" in tmux.screen(), 60, "the prompt (\u276f)")
        time.sleep(2)  # let SessionStart hooks start and the input box settle

        # One turn, then idle.
        tmux.run("send-keys", "-t", "main", "-l", "turn one")
        tmux.run("send-keys", "-t", "main", "Enter")
        first = cli.models.wait_for(lambda r: r.is_agent_turn, TURN_TIMEOUT)
        assert first is not None, tmux.screen()
        wait_for(lambda: "OK" in tmux.screen(), 60, "the reply on screen")

        # Nothing new: no wake (the Stop hook re-armed and is waiting).
        time.sleep(QUIET_WINDOW)
        idle = len(cli.models.agent_turns("anthropic"))
        assert idle == 1, [strings(r.body)[-500:] for r in cli.models.agent_turns("anthropic")]

        # Another agent sends a DM: the idle session wakes, the model gets the line.
        at = "@ " if cli.name == "gemini" else "@"  # "@word" opens Gemini's file completion
        wake_line = f"[chat] {at}{other.nick}(1): new direct or urgent message"
        since = len(cli.models.requests)
        sent = time.monotonic()
        dm = other.send("@" + cli.me, "are you there? (a body the wake must not carry)")
        woke = cli.models.wait_for(
            lambda r: r.is_agent_turn and wake_line in strings(r.body), WAKE_DEADLINE
        )
        assert woke is not None, ("no wake", tmux.screen())
        latency = woke.at - sent
        # The sender sees it woken (the wake hook's report), by this Claude Code session.
        woken = wait_for(lambda: reached(other, dm["event_id"], "woken"), what="woken")
        assert woken["cli"] == "claude" and woken.get("session"), woken
        print(f"\nwake latency (DM sent -> fake model request): {latency * 1000:.0f} ms")
        assert "a body the wake must not carry" not in woke.text
        # Claude Code's fixed rewake wording: 2.1.197 "Stop hook feedback"; 2.1.337 a
        # "[SYSTEM NOTIFICATION - NOT USER INPUT]" reminder; the line intact in both.
        assert "Stop hook feedback" in woke.text or "SYSTEM NOTIFICATION" in woke.text

        # At most one wake for that one event: the woken turn's Stop hook re-arms and waits.
        time.sleep(QUIET_WINDOW)
        later = [r for r in cli.models.requests[since:] if r.is_agent_turn]
        assert len(later) == 1, [strings(r.body)[-300:] for r in later]
        assert latency < WAKE_DEADLINE
    except BaseException:
        print("the tmux screen:\n" + tmux.screen())
        raise
    finally:
        tmux.kill()
        # The wake hook's `ac wait` ends with the session (it watches the CLI's process and
        # renews its long-poll every 30 s); kill what is left after that, and say so.
        deadline = time.monotonic() + 45
        while processes_with(marker) and time.monotonic() < deadline:
            time.sleep(0.5)
        leftover = processes_with(marker)
        for pid in leftover:
            try:
                os.kill(pid, 15)
            except OSError:
                pass
    assert not leftover, f"wake hook processes outlived the session: {leftover}"


# --- waking an idle Codex / Gemini CLI TUI under `ac run` (issue 23) ---------------------------

#: What each TUI shows at its empty prompt.
PROMPTS = {"codex": "Ask Codex to do anything", "gemini": "Type your message"}


def _start_wrapped(cli: Cli, marker: str, *options: str) -> Tmux:
    """``ac run OPTIONS -- CLI`` under tmux, at its prompt (dialogs answered)."""
    args: list[str] = []
    if cli.name == "codex":
        # The curated-plugin sync (vendor traffic) off, in the config: a -c override makes the
        # TUI ask about its background server's settings.
        config = cli.home / ".codex" / "config.toml"
        text = config.read_text().replace("[features]\n", "[features]\nplugins = false\n")
        config.write_text(text)
        args = ["--dangerously-bypass-approvals-and-sandbox"]  # the slow tool runs unasked
    else:
        args = ["--approval-mode", "yolo"]
    env = {**cli.env, "TERM": "xterm-256color", marker.split("=")[0]: marker.split("=")[1]}
    tmux = Tmux(unique("ac-run"), env)
    tmux.run(
        "new-session", "-d", "-s", "main", "-x", "150", "-y", "45", "-c", str(cli.project),
        AC, "run", *options, "--", str(BIN / cli.name), *args,
    )  # fmt: skip
    wait_for(lambda: PROMPTS[cli.name] in tmux.screen(), 90, f"{cli.name}'s prompt")
    if cli.name == "codex":  # it asks to review the new hooks: skipped (not tested here)
        wait_for(lambda: "Hooks need review" in tmux.screen(), 30, "the hooks review")
        tmux.run("send-keys", "-t", "main", "Escape")
        wait_for(lambda: "Hooks need review" not in tmux.screen(), 30, "the review done")
        wait_for(lambda: PROMPTS[cli.name] in tmux.screen(), 30, f"{cli.name}'s prompt")
    return tmux


@pytest.mark.parametrize("cli", ["codex", "gemini"], indirect=True)
def test_ac_run_wakes_an_idle_tui(cli: Cli, stack: Stack) -> None:
    if not shutil.which("tmux"):
        pytest.skip("tmux not installed")
    marker = f"AGENT_CHAT_RUN_TEST={unique('r')}"
    tmux = _start_wrapped(cli, marker, "--min-interval", "0")
    other = register(stack, unique("Peer"))
    try:
        # The TUI settles at its prompt (Gemini CLI ignores Enter for a few seconds after
        # it first shows it).
        time.sleep(5)
        at = "@ " if cli.name == "gemini" else "@"  # "@word" opens Gemini's file completion
        wake_line = f"[chat] {at}{other.nick}(1): new direct or urgent message"
        sent = time.monotonic()
        other.send("@" + cli.me, "are you there? (a body the wake must not carry)")
        woke = cli.models.wait_for(
            lambda r: r.is_agent_turn and wake_line in strings(r.body), WAKE_DEADLINE
        )
        assert woke is not None, ("no wake", tmux.screen())
        print(f"\n{cli.name} under ac run: DM -> model request {(woke.at - sent) * 1000:.0f} ms")
        assert "a body the wake must not carry" not in woke.text
        # Once: the woken turn ends, nothing new arrives, no second line typed.
        time.sleep(QUIET_WINDOW)
        typed = [
            r
            for r in cli.models.agent_turns(cli.vendor)
            if wake_line in _last_user_parts(r.vendor, r.body)[0]
        ]
        assert len(typed) == 1, [_last_user_parts(r.vendor, r.body)[0][-200:] for r in typed]

        # The agent at work (a slow tool call): the line comes after the turn, not into it.
        tmux.run("send-keys", "-t", "main", "-l", "RUN: sleep 8")
        time.sleep(0.5)  # as a person would: Codex takes a burst ending in Enter for a paste
        tmux.run("send-keys", "-t", "main", "Enter")
        calling = cli.models.wait_for(
            lambda r: r.is_agent_turn and "RUN: sleep 8" in _last_user_parts(r.vendor, r.body)[0],
            TURN_TIMEOUT,
        )
        assert calling is not None, ("the turn never started", tmux.screen())
        line2 = f"[chat] {at}{other.nick}(2): new direct or urgent message"
        other.send("@" + cli.me, "while you work")
        later = cli.models.wait_for(
            lambda r: r.is_agent_turn and line2 in _last_user_parts(r.vendor, r.body)[0],
            WAKE_DEADLINE + 10,
        )
        assert later is not None, ("no wake after the turn", tmux.screen())
        results = [
            r
            for r in cli.models.agent_turns(cli.vendor)
            if r.at > calling.at and _last_user_parts(r.vendor, r.body)[1]
        ]
        assert results and results[0].at < later.at, "the line arrived before the tool's end"
    except BaseException:
        print("the tmux screen:\n" + tmux.screen())
        raise
    finally:
        tmux.kill()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(
            " app-server" not in cmdline(p) for p in processes_with(marker)
        ):
            time.sleep(0.5)
        # Codex's app-server daemon outlives its TUI by design (with or without ac run).
        daemons = [p for p in processes_with(marker) if " app-server" in cmdline(p)]
        leftover = [p for p in processes_with(marker) if p not in daemons]
        commands = [cmdline(pid) for pid in leftover]
        for pid in leftover + daemons:
            try:
                os.kill(pid, 15)
            except OSError:
                pass
    assert not leftover, f"processes outlived the session: {commands}"
