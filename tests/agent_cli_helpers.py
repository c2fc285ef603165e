"""What the real-CLI tests (test_agent_clis.py) and bench/bench_wake.py share: where the pinned
CLIs are, the environment that keeps them quiet, an interactive CLI under tmux, and the
settings that let an interactive Claude Code session start without a dialog."""

from __future__ import annotations

from pathlib import Path
import json
import os
import subprocess

REPO = Path(__file__).resolve().parent.parent
#: AGENT_CHAT_CLI_LATEST=1: the current releases (``AGENT_CHAT_CLI_LATEST=1
#: scripts/agent-clis.sh`` installs them in their own prefix) instead of the pinned versions.
LATEST = bool(os.environ.get("AGENT_CHAT_CLI_LATEST"))
PREFIX = Path(
    os.environ.get("AGENT_CHAT_CLI_PREFIX")
    or REPO / ".cache" / ("agent-clis-latest" if LATEST else "agent-clis")
)
BIN = PREFIX / "bin"

#: No telemetry, error reports, update checks or other vendor traffic, in any of the three.
QUIET_ENV = {
    "DISABLE_TELEMETRY": "1",
    "DISABLE_AUTOUPDATER": "1",
    "DISABLE_ERROR_REPORTING": "1",
    "DISABLE_BUG_COMMAND": "1",
    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    "CLAUDE_CODE_DISABLE_FEEDBACK_SURVEY": "1",
    "GEMINI_TELEMETRY_ENABLED": "false",
    "GEMINI_CLI_TRUST_WORKSPACE": "true",
    "NO_UPDATE_NOTIFIER": "1",
    "NO_BROWSER": "1",
}


class Tmux:
    """An interactive CLI in a detached tmux session on a private socket (killed at the end)."""

    def __init__(self, socket: str, env: dict[str, str]) -> None:
        self.socket = socket
        self.env = env

    def run(self, *args: str) -> str:
        p = subprocess.run(
            ["tmux", "-L", self.socket, *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert p.returncode == 0, (args, p.stderr)
        return p.stdout

    def screen(self) -> str:
        return self.run("capture-pane", "-p", "-t", "main")

    def kill(self) -> None:
        subprocess.run(
            ["tmux", "-L", self.socket, "kill-server"], env=self.env, capture_output=True
        )


def processes_with(marker: str) -> list[int]:
    """Our processes (their environment holds ``marker``): the wake hooks' `ac wait`."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if marker.encode() in environ.split(b"\0"):
            pids.append(int(entry.name))
    return pids


def trust_claude(home: Path, project: Path, api_key: str) -> None:
    """~/.claude.json (which `ac setup` wrote the MCP entry into): onboarding done, this
    folder trusted, the dummy API key approved, so no dialog stops the interactive session."""
    path = home / ".claude.json"
    data = json.loads(path.read_text()) if path.exists() else {}
    data.update(
        hasCompletedOnboarding=True,
        theme="dark",
        customApiKeyResponses={"approved": [api_key[-20:]], "rejected": []},
    )
    entry = data.setdefault("projects", {}).setdefault(str(project), {})
    entry.update(hasTrustDialogAccepted=True, hasCompletedProjectOnboarding=True)
    path.write_text(json.dumps(data))


def cmdline(pid: int) -> str:
    """A process's command line, for a message (its pid when it is gone)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:200]
    except OSError:
        return str(pid)
