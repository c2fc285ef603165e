"""The Claude Code plugin: ``client/agent_chat/integrations/`` is both the plugin root and a
one-plugin marketplace (``/plugin marketplace add DIR`` then ``/plugin install
agent-chat@agent-chat``). Checks the JSON shapes against the documented ones and runs the hook
commands the way Claude Code would (``sh -c`` with CLAUDE_PLUGIN_ROOT set)."""

from __future__ import annotations

from pathlib import Path
import json
import os
import re
import shlex
import subprocess

from agent_chat.setup import HOOK_TIMEOUT_S, SKILLS, integrations_dir
from helpers import free_port

ROOT = Path(integrations_dir())
MANIFEST = ROOT / ".claude-plugin" / "plugin.json"
MARKETPLACE = ROOT / ".claude-plugin" / "marketplace.json"
HOOKS = ROOT / "hooks" / "hooks.json"


def load(path: Path) -> dict:
    data = json.loads(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def test_manifest() -> None:
    manifest = load(MANIFEST)
    assert manifest["name"] == "agent-chat"
    assert re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", manifest["name"])  # kebab-case, no spaces
    assert all(isinstance(v, str) for v in manifest.values())
    # Components sit at the default places, so the manifest names none of them.
    assert not {"hooks", "skills", "commands", "mcpServers"} & set(manifest)


def test_marketplace_lists_this_directory() -> None:
    market = load(MARKETPLACE)
    assert isinstance(market["name"], str) and isinstance(market["owner"]["name"], str)
    [entry] = market["plugins"]
    assert entry["name"] == load(MANIFEST)["name"]
    assert entry["source"].startswith("./")  # relative sources must start with ./
    assert (MARKETPLACE.parent.parent / entry["source"]).resolve() == ROOT.resolve()


def test_hooks_json_shape() -> None:
    hooks = load(HOOKS)["hooks"]
    assert set(hooks) == {"UserPromptSubmit", "PostToolUse", "SessionStart", "Stop", "SessionEnd"}
    # SessionStart and Stop carry only the background wake hook (asyncRewake: it wakes the
    # model by exiting 2 and exits 0 when nothing is new); nothing there injects context.
    for event in ("SessionStart", "Stop"):
        [group] = hooks[event]
        [wake] = group["hooks"]
        assert wake["asyncRewake"] is True and wake["type"] == "command"
        words = shlex.split(wake["command"])
        assert words == ["sh", "${CLAUDE_PLUGIN_ROOT}/hooks/ac-hook.sh", "--wake"]
    [prompt] = hooks["UserPromptSubmit"]
    assert "matcher" not in prompt  # UserPromptSubmit has no matcher (it would be ignored)
    [post] = hooks["PostToolUse"]
    assert post["matcher"] == "*"
    for group, args in ((prompt, []), (post, ["--json", "PostToolUse"])):
        [handler] = group["hooks"]
        assert set(handler) == {"type", "command", "timeout"}
        assert handler["type"] == "command"
        # Seconds (not milliseconds), the same as `ac setup claude` writes.
        assert handler["timeout"] == HOOK_TIMEOUT_S and isinstance(handler["timeout"], int)
        words = shlex.split(handler["command"])
        assert words == ["sh", "${CLAUDE_PLUGIN_ROOT}/hooks/ac-hook.sh", *args]
        assert (ROOT / "hooks" / "ac-hook.sh").is_file()


def test_skills_are_in_the_plugin() -> None:
    names = sorted(p.parent.name for p in (ROOT / "skills").glob("*/SKILL.md"))
    assert names == sorted(SKILLS)
    for name in names:
        text = (ROOT / "skills" / name / "SKILL.md").read_text(encoding="utf-8")
        front = text.split("---\n")[1]
        assert re.search(rf"^name: {re.escape(name)}$", front, re.M)
        assert re.search(r"^description: \S", front, re.M)


def test_hook_commands_run_under_sh_with_the_plugin_root(tmp_path: Path) -> None:
    """Claude Code runs the command through a shell with CLAUDE_PLUGIN_ROOT in the
    environment: the hook must start, and stay silent when the server is down."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENT_CHAT_")}
    env.update(
        CLAUDE_PLUGIN_ROOT=str(ROOT),
        AGENT_CHAT_HOME=str(tmp_path),
        AGENT_CHAT_TOKEN="t",
        AGENT_CHAT_SERVER=f"http://127.0.0.1:{free_port()}",
    )
    stdin = json.dumps({"session_id": "p", "hook_event_name": "UserPromptSubmit"})
    for groups in load(HOOKS)["hooks"].values():
        for handler in groups[0]["hooks"]:
            p = subprocess.run(
                ["sh", "-c", handler["command"]],
                input=stdin,
                text=True,
                capture_output=True,
                env=env,
                timeout=10,
            )
            assert (p.returncode, p.stdout, p.stderr) == (0, "", "")
    assert (tmp_path / "hook" / "line.default").exists()  # it did ask (and failed)


def test_the_package_ships_the_plugin_files() -> None:
    manifest_in = (ROOT.parents[2] / "MANIFEST.in").read_text(encoding="utf-8")
    line = next(x for x in manifest_in.splitlines() if x.startswith("recursive-include"))
    assert "*.json" in line.split()
