"""``ac setup claude|codex|gemini|tmux|hook`` against a temporary HOME with existing settings.

Each installer: merges without clobbering the user's entries (backup first), running it twice
changes nothing, ``--dry-run`` writes nothing, ``--uninstall`` restores the original.
"""

from __future__ import annotations

from pathlib import Path
import json
import os
import stat
import subprocess
import sys
import tomllib

import pytest

from helpers import Stack, free_port

AC = str(Path(sys.executable).with_name("ac"))

USER_HOOK = {"type": "command", "command": "~/bin/my-lint.sh", "timeout": 30}
CLAUDE_ORIGINAL = {
    "model": "opus",
    "permissions": {"allow": ["Bash(git status)"]},
    "hooks": {
        "PostToolUse": [{"matcher": "Write|Edit", "hooks": [USER_HOOK]}],
        "Stop": [{"hooks": [{"type": "command", "command": "notify-send done"}]}],
    },
    "statusLine": {"type": "command", "command": "~/bin/my-status.sh"},
}


def run_setup(
    home: Path,
    chat_home: Path,
    *args: str,
    server: str | None = None,
    cwd: Path | None = None,
    ok: bool = True,
) -> subprocess.CompletedProcess[str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AGENT_CHAT_", "CLAUDE_", "CODEX_"))
    }
    env.update(
        HOME=str(home),
        AGENT_CHAT_HOME=str(chat_home),
        LC_ALL="C.UTF-8",
        AGENT_CHAT_SERVER=server or f"http://127.0.0.1:{free_port()}",
    )
    p = subprocess.run(
        [AC, "setup", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=str(cwd or home),
        timeout=60,
    )
    if ok:
        assert p.returncode == 0, (args, p.stdout, p.stderr)
    return p


def snapshot(root: Path) -> dict[str, str]:
    """Every file under root (backups and the client's own home excluded) and its text."""
    files = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if path.is_file() and ".bak-agent-chat-" not in rel and not rel.startswith("chat-home"):
            files[rel] = path.read_text()
    return files


@pytest.fixture
def home(tmp_path: Path) -> Path:
    h = tmp_path / "home"
    h.mkdir()
    return h


def our_handlers(settings: dict) -> list[tuple[str, str | None, dict]]:
    return [
        (event, group.get("matcher"), h)
        for event, groups in settings["hooks"].items()
        for group in groups
        for h in group["hooks"]
        if "ac-hook.sh" in h["command"]
    ]


def test_claude_merge_idempotent_uninstall(home: Path) -> None:
    chat = home / "chat-home"
    settings_path = home / ".claude" / "settings.json"
    settings_path.parent.mkdir()
    original_text = json.dumps(CLAUDE_ORIGINAL, indent=2) + "\n"
    settings_path.write_text(original_text)
    user_skill = home / ".claude" / "skills" / "listen" / "SKILL.md"
    user_skill.parent.mkdir(parents=True)
    user_skill.write_text("---\nname: listen\n---\nmy own listen skill\n")
    before = snapshot(home)

    dry = run_setup(home, chat, "claude", "--dry-run")
    assert "would update" in dry.stdout and snapshot(home) == before

    first = run_setup(home, chat, "claude")
    assert f"updated {settings_path} (backup: " in first.stdout
    backups = list(settings_path.parent.glob("settings.json.bak-agent-chat-*"))
    assert len(backups) == 1 and backups[0].read_text() == original_text
    merged = json.loads(settings_path.read_text())
    # The user's settings are all still there, untouched.
    assert merged["model"] == "opus" and merged["permissions"] == CLAUDE_ORIGINAL["permissions"]
    assert merged["hooks"]["PostToolUse"][0] == {"matcher": "Write|Edit", "hooks": [USER_HOOK]}
    # The user's Stop hook first, then our wake hook in a group of its own.
    assert merged["hooks"]["Stop"][0] == CLAUDE_ORIGINAL["hooks"]["Stop"][0]
    assert merged["statusLine"] == CLAUDE_ORIGINAL["statusLine"]  # theirs: left alone
    assert "already has a statusLine; left alone" in first.stdout
    ours = our_handlers(merged)
    assert sorted((e, m or "") for e, m, _ in ours) == [
        ("PostToolUse", "*"),
        ("SessionEnd", ""),
        ("SessionStart", ""),
        ("Stop", ""),
        ("UserPromptSubmit", ""),
    ]
    for event, _, handler in ours:
        assert handler["type"] == "command"
        assert ("--json PostToolUse" in handler["command"]) == (event == "PostToolUse")
        # The session-end hook: the server marks the session gone (presence).
        assert ("--end" in handler["command"].split()) == (event == "SessionEnd")
        if event in ("SessionStart", "Stop"):
            # Background, wakes the session on exit 2; Claude Code kills it at "timeout".
            assert handler["asyncRewake"] is True and handler["timeout"] == 86400
            assert handler["command"].split()[2:] == ["--wake", "--home", str(chat)]
        else:
            assert handler["timeout"] == 5 and "asyncRewake" not in handler  # seconds
    for name in ("chat", "chat-conventions"):
        text = (home / ".claude" / "skills" / name / "SKILL.md").read_text()
        assert text.startswith(f"---\nname: {name}\n") and "installed by `ac setup`" in text
    assert user_skill.read_text() == "---\nname: listen\n---\nmy own listen skill\n"
    assert "was not installed by ac setup; left alone" in first.stdout

    after_first = snapshot(home)
    second = run_setup(home, chat, "claude")
    assert "nothing to change" in second.stdout and snapshot(home) == after_first
    assert len(list(settings_path.parent.glob("settings.json.bak-agent-chat-*"))) == 1

    gone = run_setup(home, chat, "claude", "--uninstall")
    assert "removed" in gone.stdout
    assert json.loads(settings_path.read_text()) == CLAUDE_ORIGINAL
    assert snapshot(home) == before
    again = run_setup(home, chat, "claude", "--uninstall")
    assert "nothing to change" in again.stdout


def test_claude_fresh_home_gets_status_line_and_uninstall_leaves_nothing(home: Path) -> None:
    chat = home / "chat-home"
    run_setup(home, chat, "claude")
    settings = json.loads((home / ".claude" / "settings.json").read_text())
    assert "ac-hook.sh" in settings["statusLine"]["command"]
    assert settings["statusLine"]["command"].split()[-3:] == ["--status", "--home", str(chat)]
    run_setup(home, chat, "claude", "--uninstall")
    assert snapshot(home) == {}


def test_claude_project_scope(home: Path, tmp_path: Path) -> None:
    project = tmp_path / "project"
    (project / ".claude").mkdir(parents=True)
    shared = project / ".claude" / "settings.json"
    shared.write_text('{"hooks": {}}\n')
    run_setup(home, home / "chat-home", "claude", "--project", cwd=project)
    local = json.loads((project / ".claude" / "settings.local.json").read_text())
    assert len(our_handlers(local)) == 5  # prompt, tool, session end and the two wake hooks
    assert shared.read_text() == '{"hooks": {}}\n'  # the committed file is not touched
    assert (project / ".claude" / "skills" / "listen" / "SKILL.md").exists()
    assert not (home / ".claude").exists()
    run_setup(home, home / "chat-home", "claude", "--project", "--uninstall", cwd=project)
    assert sorted(p.name for p in (project / ".claude").iterdir()) == ["settings.json"]


def test_codex_hooks_json_and_skills(home: Path) -> None:
    chat = home / "chat-home"
    hooks_path = home / ".codex" / "hooks.json"
    hooks_path.parent.mkdir()
    original = {"hooks": {"UserPromptSubmit": [{"hooks": [USER_HOOK]}]}}
    hooks_path.write_text(json.dumps(original))
    (home / ".codex" / "config.toml").write_text('model = "gpt-5"\n')
    before = snapshot(home)
    out = run_setup(home, chat, "codex").stdout
    assert "trust them" in out
    merged = json.loads(hooks_path.read_text())
    assert merged["hooks"]["UserPromptSubmit"][0] == {"hooks": [USER_HOOK]}
    assert sorted(e for e, _, _ in our_handlers(merged)) == [
        "PostToolUse",
        "SessionEnd",
        "UserPromptSubmit",
    ]
    for event, _, handler in our_handlers(merged):
        if event == "SessionEnd":  # prints nothing; the server marks the session gone
            assert handler["command"].split()[2] == "--end" and handler["timeout"] == 5
            continue
        # JSON on every event: Codex fails on plain stdout starting with "[".
        assert handler["command"].split("--json ")[1].startswith(event)
    assert (home / ".agents" / "skills" / "chat" / "SKILL.md").exists()
    config = (home / ".codex" / "config.toml").read_text()
    assert config.startswith('model = "gpt-5"\n# >>> agent-chat')
    assert tomllib.loads(config) == {
        "model": "gpt-5",
        "mcp_servers": {
            "agent-chat": {
                "command": AC,
                "args": ["mcp"],
                "env": {"AGENT_CHAT_HOME": str(chat)},
                "env_vars": [
                    "AGENT_CHAT_HOME",
                    "AGENT_CHAT_SERVER",
                    "AGENT_CHAT_NICK",
                    "AGENT_CHAT_TOKEN",
                ],
            }
        },
        # Codex offers MCP tools to a custom provider's model only without this deferral.
        "features": {"tool_search_always_defer_mcp_tools": False},
    }
    after = snapshot(home)
    assert "nothing to change" in run_setup(home, chat, "codex").stdout
    assert snapshot(home) == after
    run_setup(home, chat, "codex", "--uninstall")
    assert json.loads(hooks_path.read_text()) == original
    assert snapshot(home) == before


def test_gemini_settings_and_commands(home: Path) -> None:
    chat = home / "chat-home"
    settings_path = home / ".gemini" / "settings.json"
    settings_path.parent.mkdir()
    original = {
        "theme": "GitHub",
        "mcpServers": {"x": {"command": "x"}},
        "hooks": {"AfterTool": [{"matcher": "write_file", "hooks": [USER_HOOK]}]},
    }
    settings_path.write_text(json.dumps(original, indent=4))
    before = snapshot(home)
    run_setup(home, chat, "gemini")
    merged = json.loads(settings_path.read_text())
    assert merged["theme"] == "GitHub" and merged["mcpServers"] == {
        **original["mcpServers"],
        "agent-chat": {"command": AC, "args": ["mcp"], "env": {"AGENT_CHAT_HOME": str(chat)}},
    }
    assert merged["hooks"]["AfterTool"][0] == original["hooks"]["AfterTool"][0]
    ours = our_handlers(merged)
    assert sorted(e for e, _, _ in ours) == ["AfterTool", "BeforeAgent", "SessionEnd"]
    for event, _, handler in ours:
        assert handler["timeout"] == 5000  # milliseconds in Gemini CLI
        if event == "SessionEnd":
            assert handler["command"].split()[2] == "--end"
        else:
            assert handler["command"].split("--json ")[1].startswith(event)
    for name in ("chat", "listen", "conventions"):
        text = (home / ".gemini" / "commands" / "ac" / (name + ".toml")).read_text()
        import tomllib

        data = tomllib.loads(text)
        assert data["prompt"] and data["description"]
    assert "nothing to change" in run_setup(home, chat, "gemini").stdout
    run_setup(home, chat, "gemini", "--uninstall")
    assert json.loads(settings_path.read_text()) == original
    assert snapshot(home) == before


def test_gemini_invalid_settings_are_not_touched(home: Path) -> None:
    settings_path = home / ".gemini" / "settings.json"
    settings_path.parent.mkdir()
    settings_path.write_text("{ not json")
    p = run_setup(home, home / "chat-home", "gemini", ok=False)
    assert p.returncode == 1 and "not valid JSON" in p.stderr
    assert settings_path.read_text() == "{ not json"
    assert not (home / ".gemini" / "commands").exists()


def test_tmux_block(home: Path) -> None:
    chat = home / "chat-home"
    conf = home / ".tmux.conf"
    original = "set -g mouse on\nset -g status-right '%H:%M'"  # no trailing newline
    conf.write_text(original)
    run_setup(home, chat, "tmux")
    text = conf.read_text()
    assert text.startswith(original + "\n")
    assert "set -ag status-right ' #(sh \"" in text and "ac-tmux.sh" in text
    assert "nothing to change" in run_setup(home, chat, "tmux").stdout
    assert conf.read_text() == text
    run_setup(home, chat, "tmux", "--uninstall")
    assert conf.read_text() == original + "\n"
    p = run_setup(home, chat, "tmux", "--project", ok=False)
    assert p.returncode == 1 and "no project settings" in p.stderr


def test_tmux_config_is_valid_for_tmux(home: Path) -> None:
    import shutil

    if not shutil.which("tmux"):
        pytest.skip("tmux not installed")
    chat = home / "chat-home"
    run_setup(home, chat, "tmux")
    sock = str(home / "tmux.sock")
    env = {**os.environ, "HOME": str(home)}
    try:
        subprocess.run(
            ["tmux", "-S", sock, "-f", str(home / ".tmux.conf"), "new-session", "-d"],
            check=True,
            env=env,
            timeout=10,
        )
        value = subprocess.run(
            ["tmux", "-S", sock, "show", "-gv", "status-right"],
            capture_output=True,
            text=True,
            env=env,
            timeout=10,
        ).stdout
        assert '#(sh "' in value and f'ac-tmux.sh" --home "{chat}")' in value
    finally:
        subprocess.run(["tmux", "-S", sock, "kill-server"], env=env, timeout=10)


def test_setup_hook_writes_private_credentials(home: Path, stack: Stack) -> None:
    from agent_chat.config import save_config

    chat = home / "chat-home"
    save_config(str(chat), {"server": {"registration_token": stack.registration_token}})
    out = run_setup(home, chat, "claude", server=stack.api_url).stdout
    creds = chat / "hook" / "default.curl"
    assert "hook credentials for " in out and str(creds) in out
    assert stat.S_IMODE(creds.stat().st_mode) == 0o600
    assert stat.S_IMODE((chat / "hook").stat().st_mode) == 0o700
    text = creds.read_text()
    assert f'url = "{stack.api_url}/_agent_chat/v1/notify"' in text
    token = json.loads((chat / "credentials.json").read_text())["servers"][stack.api_url]
    token = token["identities"][token["default"]]["token"]
    assert f'header = "Authorization: Bearer {token}"' in text
    assert token not in (home / ".claude" / "settings.json").read_text()
    assert (chat / "hook" / "ac-path").read_text().strip() == AC
    run_setup(home, chat, "hook", "--uninstall", server=stack.api_url)
    assert not (chat / "hook").exists()


def test_server_down_setup_still_installs(home: Path) -> None:
    out = run_setup(home, home / "chat-home", "claude").stdout
    assert "hook credentials not written yet" in out
    assert (home / ".claude" / "settings.json").exists()


def test_claude_mcp_entry_user_and_project_scope(home: Path, tmp_path: Path) -> None:
    """User scope: ~/.claude.json "mcpServers"; project: that project's entry in the same file
    (Claude's "local" scope), next to the state Claude Code keeps there."""
    chat = home / "chat-home"
    claude_json = home / ".claude.json"
    state = {"numStartups": 3, "projects": {"/elsewhere": {"mcpServers": {}}}}
    claude_json.write_text(json.dumps(state, indent=2) + "\n")
    claude_json.chmod(0o600)
    entry = {
        "type": "stdio",
        "command": AC,
        "args": ["mcp"],
        "env": {"AGENT_CHAT_HOME": str(chat)},
    }
    run_setup(home, chat, "claude")
    data = json.loads(claude_json.read_text())
    assert data == {**state, "mcpServers": {"agent-chat": entry}}
    assert stat.S_IMODE(claude_json.stat().st_mode) == 0o600
    project = tmp_path / "project"
    project.mkdir()
    run_setup(home, chat, "claude", "--project", cwd=project)
    data = json.loads(claude_json.read_text())
    assert data["projects"][str(project)] == {"mcpServers": {"agent-chat": entry}}
    assert not (project / ".mcp.json").exists()
    assert "nothing to change" in run_setup(home, chat, "claude", "--project", cwd=project).stdout
    run_setup(home, chat, "claude", "--project", "--uninstall", cwd=project)
    run_setup(home, chat, "claude", "--uninstall")
    assert json.loads(claude_json.read_text()) == state


def test_no_mcp_and_foreign_entries_are_left_alone(home: Path) -> None:
    chat = home / "chat-home"
    for target in ("claude", "codex", "gemini"):
        run_setup(home, chat, target, "--no-mcp")
    assert not (home / ".claude.json").exists()
    assert not (home / ".codex" / "config.toml").exists()
    assert "mcpServers" not in json.loads((home / ".gemini" / "settings.json").read_text())
    # Someone else's "agent-chat" entry (not `ac mcp`) is never replaced or removed.
    theirs = {"mcpServers": {"agent-chat": {"command": "npx", "args": ["other-agent-chat"]}}}
    (home / ".claude.json").write_text(json.dumps(theirs))
    codex = home / ".codex" / "config.toml"
    codex.write_text('[mcp_servers.agent-chat]\ncommand = "npx"\n')
    out = run_setup(home, chat, "claude").stdout + run_setup(home, chat, "codex").stdout
    assert out.count("left alone") >= 2
    assert json.loads((home / ".claude.json").read_text()) == theirs
    assert codex.read_text() == '[mcp_servers.agent-chat]\ncommand = "npx"\n'
    run_setup(home, chat, "claude", "--uninstall")
    run_setup(home, chat, "codex", "--uninstall")
    assert json.loads((home / ".claude.json").read_text()) == theirs
    assert codex.read_text() == '[mcp_servers.agent-chat]\ncommand = "npx"\n'


def test_codex_features_of_their_own_are_kept(home: Path) -> None:
    """A config.toml with its own [features] keeps it (TOML allows one such table): their
    deferral setting stands; without one, a note says what to add."""
    codex = home / ".codex" / "config.toml"
    codex.parent.mkdir()
    for theirs, noted in (
        ("[features]\nplugins = false\n", True),
        ("[features]\ntool_search_always_defer_mcp_tools = true\n", False),
    ):
        codex.write_text(theirs)
        out = run_setup(home, home / "chat-home", "codex").stdout
        assert ("add `tool_search_always_defer_mcp_tools = false` there" in out) is noted, out
        config = tomllib.loads(codex.read_text())
        assert config["features"] == tomllib.loads(theirs)["features"]
        assert config["mcp_servers"]["agent-chat"]["args"] == ["mcp"]
        run_setup(home, home / "chat-home", "codex", "--uninstall")
        assert codex.read_text() == theirs


def test_codex_config_that_cannot_take_the_table_is_not_touched(home: Path) -> None:
    codex = home / ".codex" / "config.toml"
    codex.parent.mkdir()
    codex.write_text('mcp_servers = { x = { command = "x" } }\n')
    p = run_setup(home, home / "chat-home", "codex", ok=False)
    assert p.returncode == 1 and "--no-mcp" in p.stderr
    assert codex.read_text() == 'mcp_servers = { x = { command = "x" } }\n'
    assert not (home / ".codex" / "hooks.json").exists()


def test_claude_no_wake_opts_out_and_removes_the_wake_hooks(home: Path) -> None:
    chat = home / "chat-home"
    settings_path = home / ".claude" / "settings.json"

    def events() -> list[str]:
        return sorted(e for e, _, _ in our_handlers(json.loads(settings_path.read_text())))

    # The session-end hook stays: presence does not depend on waking.
    run_setup(home, chat, "claude", "--no-wake")
    assert events() == ["PostToolUse", "SessionEnd", "UserPromptSubmit"]
    assert "nothing to change" in run_setup(home, chat, "claude", "--no-wake").stdout
    # Without --no-wake they are added; with it again, removed (the user's hooks stay).
    run_setup(home, chat, "claude")
    assert events() == ["PostToolUse", "SessionEnd", "SessionStart", "Stop", "UserPromptSubmit"]
    assert "nothing to change" in run_setup(home, chat, "claude").stdout
    data = json.loads(settings_path.read_text())
    data["hooks"]["Stop"].insert(0, {"hooks": [USER_HOOK]})
    settings_path.write_text(json.dumps(data))
    run_setup(home, chat, "claude", "--no-wake")
    assert events() == ["PostToolUse", "SessionEnd", "UserPromptSubmit"]
    assert json.loads(settings_path.read_text())["hooks"]["Stop"] == [{"hooks": [USER_HOOK]}]
    run_setup(home, chat, "claude")
    run_setup(home, chat, "claude", "--uninstall")
    assert json.loads(settings_path.read_text()) == {"hooks": {"Stop": [{"hooks": [USER_HOOK]}]}}


def test_plugin_hooks_json_has_the_wake_and_session_end_hooks() -> None:
    from agent_chat.setup import integrations_dir

    hooks = json.loads(Path(integrations_dir(), "hooks", "hooks.json").read_text())["hooks"]
    for event in ("SessionStart", "Stop"):
        (handler,) = [h for g in hooks[event] for h in g["hooks"]]
        assert handler["asyncRewake"] is True and handler["command"].endswith(" --wake")
    (end,) = [h for g in hooks["SessionEnd"] for h in g["hooks"]]
    assert end["command"].endswith(" --end") and "asyncRewake" not in end


def _fake_ac(tmp_path: Path, script: str) -> Path:
    """A stand-in for `ac` (the hook finds it through hook/ac-path) that logs its arguments."""
    chat = tmp_path / "chat"
    (chat / "hook").mkdir(parents=True)
    fake = tmp_path / "fake-ac"
    fake.write_text(f'#!/bin/sh\necho "$@" > {tmp_path}/args\n{script}\n')
    fake.chmod(0o755)
    (chat / "hook" / "ac-path").write_text(f"{fake}\n")
    return chat


@pytest.mark.parametrize(
    ("script", "code", "stderr"),
    [
        # Something arrived: exit 2 (wake), one line, labels and counts only.
        (
            "echo '@BlueLake(1) #alerts(2!)'",
            2,
            "[chat] @BlueLake(1) #alerts(2!): new direct or urgent message"
            " (read: ac listen --unread)\n",
        ),
        # Control characters and anything outside the labels' set are stripped.
        ("printf '@Blue\\033[31mLake(1)\\nsecond line'", 2, "[chat] @Blue31mLake(1): "),
        ("exit 5", 0, ""),  # timeout: nothing new
        ("echo '@X(1)'; exit 1", 0, ""),  # any error: never a wake
        ("exit 2", 0, ""),
        ("true", 0, ""),  # exit 0 but nothing printed
    ],
)
def test_wake_hook_exit_codes(tmp_path: Path, script: str, code: int, stderr: str) -> None:
    from agent_chat.setup import hook_script

    chat = _fake_ac(tmp_path, script)
    p = subprocess.run(
        ["sh", hook_script(), "--wake", "--home", str(chat)],
        input='{"session_id":"abc-123","hook_event_name":"Stop"}\n',
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "AGENT_CHAT_WAKE_TIMEOUT": "7"},
        timeout=30,
    )
    assert (p.returncode, p.stdout) == (code, "")
    assert p.stderr.startswith(stderr) and p.stderr.count("\n") == (1 if code else 0)
    args = (tmp_path / "args").read_text().split()
    assert args == [
        "wait",
        "--urgent",
        "--dm",
        "--oneline",
        "--session",
        "abc-123",
        "--timeout",
        "7",
    ]


def test_gemini_and_codex_share_the_skills_and_uninstall_leaves_no_empty_folders(
    home: Path,
) -> None:
    """Gemini CLI reads skills from ~/.agents/skills, as Codex does: `ac setup gemini` installs
    them there; uninstalling one of the two keeps them while the other is installed; the last
    uninstall removes them and the folders setup created (no empty ~/.agents left), never a
    folder that was there before."""
    chat = home / "chat-home"
    skill = home / ".agents" / "skills" / "chat" / "SKILL.md"
    (home / ".gemini").mkdir()  # the user's own folder: stays
    run_setup(home, chat, "gemini")
    assert "installed by `ac setup`" in skill.read_text()
    run_setup(home, chat, "codex")
    out = run_setup(home, chat, "gemini", "--uninstall").stdout
    assert skill.exists() and "codex reads them too" in out, out
    run_setup(home, chat, "codex", "--uninstall")
    assert not (home / ".agents").exists()
    assert not (home / ".codex").exists()
    assert (home / ".gemini").is_dir() and not any((home / ".gemini").iterdir())
    assert sorted(p.name for p in home.iterdir()) == [".gemini", "chat-home"]
    # A folder the user made before setup is theirs, even when it is empty afterwards.
    (home / ".agents").mkdir()
    run_setup(home, chat, "codex")
    run_setup(home, chat, "codex", "--uninstall")
    assert (home / ".agents").is_dir() and not any((home / ".agents").iterdir())


def _git_repo(path: Path) -> Path:
    path.mkdir(parents=True)
    subprocess.run(["git", "init", "-q", str(path)], check=True)
    return path


def test_setup_git_backs_up_an_existing_hook_and_says_removed(home: Path, tmp_path: Path) -> None:
    repo = _git_repo(tmp_path / "repo")
    hook = repo / ".git" / "hooks" / "pre-commit"
    original = "#!/bin/sh\necho mine\n"
    hook.write_text(original)
    out = run_setup(home, home / "chat-home", "git", cwd=repo).stdout
    assert out.startswith(f"installed the claims check in {hook} (backup: "), out
    backups = list(hook.parent.glob("pre-commit.bak-agent-chat-*"))
    assert [b.read_text() for b in backups] == [original]
    out = run_setup(home, home / "chat-home", "git", "--uninstall", cwd=repo).stdout
    assert out.startswith(f"removed the claims check in {hook} (backup: "), out
    assert "removeed" not in out and hook.read_text() == original


def test_claude_project_settings_are_kept_out_of_git(home: Path, tmp_path: Path) -> None:
    repo = _git_repo(tmp_path / "project")
    run_setup(home, home / "chat-home", "claude", "--project", cwd=repo)
    assert (repo / ".claude" / "settings.local.json").exists()
    status = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=all"],
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "settings.local.json" not in status and ".claude/skills/" in status, status
    exclude = repo / ".git" / "info" / "exclude"
    assert "/.claude/settings.local.json" in exclude.read_text()
    again = run_setup(home, home / "chat-home", "claude", "--project", cwd=repo).stdout
    assert "exclude" not in again  # twice changes nothing
    run_setup(home, home / "chat-home", "claude", "--project", "--uninstall", cwd=repo)
    assert "agent-chat" not in exclude.read_text()
