"""agent-chat-server's help and usage errors: one exit-code table, usage errors exit 2."""

from __future__ import annotations

from pathlib import Path
import subprocess
import sys

SERVER = [sys.executable, "-m", "agent_chat_server"]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*SERVER, *args], capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL
    )


def test_the_exit_code_table_is_in_the_main_help_once_and_subcommands_point_to_it() -> None:
    main = _run("--help")
    assert main.returncode == 0
    assert "Synapse died" in main.stdout and "crash loop" in main.stdout
    for command in ("status", "start", "agents", "webhook", "invite"):
        sub = _run(command, "--help")
        assert sub.returncode == 0, sub.stderr
        assert "Synapse died" not in sub.stdout, command
        assert "all of them: agent-chat-server --help" in sub.stdout, command


def test_prune_without_idle_is_a_usage_error(tmp_path: Path) -> None:
    result = _run("agents", "prune", "--data-dir", str(tmp_path))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "agent-chat-server: say how idle: agents prune --idle 30d"
    ]
