"""``ac setup gemini``: hooks (BeforeAgent, AfterTool, SessionEnd; timeouts in milliseconds)
and the MCP entry in ``settings.json``, custom commands ``commands/ac/*.toml`` (``/ac:chat``
...) and the skills in ``.agents/skills``, shared with Codex."""

from __future__ import annotations

import os

from .installer import HOOK_TIMEOUT_MS, integrations_dir

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .installer import Installer

GEMINI_COMMANDS = ("chat", "listen", "conventions")


def install(inst: Installer) -> None:
    base = inst.gemini_dir()
    wanted = [
        (
            "BeforeAgent",
            None,
            {
                "name": "agent-chat",
                "type": "command",
                "command": inst.hook_command("--json", "BeforeAgent"),
                "timeout": HOOK_TIMEOUT_MS,
            },
        ),
        (
            "AfterTool",
            "*",
            {
                "name": "agent-chat-after-tool",
                "type": "command",
                "command": inst.hook_command("--json", "AfterTool"),
                "timeout": HOOK_TIMEOUT_MS,
            },
        ),
        inst.end_hook(HOOK_TIMEOUT_MS, name="agent-chat-session-end"),
    ]
    path = os.path.join(base, "settings.json")
    inst.merge_hooks(path, wanted, lambda data: inst.set_mcp(data, path, ("mcpServers",)))
    for name in GEMINI_COMMANDS:
        inst.marked_file(
            os.path.join(integrations_dir(), "gemini", "commands", "ac", name + ".toml"),
            os.path.join(base, "commands", "ac", name + ".toml"),
        )
    # Gemini CLI 0.61 reads skills from .agents/skills (and sends their whole descriptions to
    # the model; custom commands' descriptions never reach it).
    inst.agents_skills({"codex": os.path.join(inst.codex_dir(), "hooks.json")})
