"""``ac setup codex``: hooks in ``hooks.json``, the skills in ``.agents/skills`` and a marked
``[mcp_servers.agent-chat]`` block in ``config.toml`` (``$CODEX_HOME``, default ``~/.codex``)."""

from __future__ import annotations

import os
import tomllib

from ..files import read_text
from .installer import HOOK_TIMEOUT_S, MCP_NAME, TMUX_END, strip_block, toml_value
from .plan import SetupError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .installer import Installer

CODEX_MCP_BEGIN = (
    "# >>> agent-chat: added by `ac setup codex`; `ac setup codex --uninstall` removes it"
)
#: Codex starts MCP servers with a bare environment: these names are passed through from the
#: environment Codex runs in (``env_vars``), so ``ac mcp`` is the same identity as ``ac``.
CODEX_ENV_VARS = ("AGENT_CHAT_HOME", "AGENT_CHAT_SERVER", "AGENT_CHAT_NICK", "AGENT_CHAT_TOKEN")
#: codex-cli 0.171.0 defers every MCP server's tools behind its ``tool_search`` tool, which it
#: offers only for models whose metadata says they support it (OpenAI's own); with a custom
#: provider or an unknown model the tools are listed but never offered to the model (seen in
#: tests/test_agent_clis.py; openai/codex#19871, #27580). This feature switch offers them.
CODEX_NO_DEFER = "tool_search_always_defer_mcp_tools"


def install(inst: Installer) -> None:
    base = inst.codex_dir()
    wanted = [
        (
            # JSON: Codex reads plain stdout starting with "[" as JSON, fails, and drops it.
            "UserPromptSubmit",
            None,
            {
                "type": "command",
                "command": inst.hook_command("--json", "UserPromptSubmit"),
                "timeout": HOOK_TIMEOUT_S,
            },
        ),
        (
            "PostToolUse",
            "*",
            {
                "type": "command",
                "command": inst.hook_command("--json", "PostToolUse"),
                "timeout": HOOK_TIMEOUT_S,
            },
        ),
        # codex-cli 0.171.0 runs SessionEnd hooks (its session-end.command.input schema).
        inst.end_hook(HOOK_TIMEOUT_S),
    ]
    inst.merge_hooks(os.path.join(base, "hooks.json"), wanted)
    inst.agents_skills({"gemini": os.path.join(inst.gemini_dir(), "settings.json")})
    codex_mcp(inst, os.path.join(base, "config.toml"))
    if not inst.uninstall:
        inst.plan.note("Codex runs new hooks only after you trust them: open /hooks in Codex once")


def codex_mcp(inst: Installer, path: str) -> None:
    """A marked ``[mcp_servers.agent-chat]`` block at the end of Codex's config.toml."""
    if not inst.mcp:
        return
    text = read_text(path)
    stripped = strip_block(text or "", CODEX_MCP_BEGIN)
    if inst.uninstall:
        new = stripped
    else:
        try:
            theirs = tomllib.loads(stripped)
        except tomllib.TOMLDecodeError as e:
            raise SetupError(f"{path} is not valid TOML ({e}); nothing was changed") from None
        if MCP_NAME in (theirs.get("mcp_servers") or {}):
            inst.plan.note(f"{path} already has [mcp_servers.{MCP_NAME}]; left alone")
            new = text or ""
        else:
            entry = inst.mcp_entry()
            lines = [CODEX_MCP_BEGIN, f"[mcp_servers.{MCP_NAME}]"]
            lines += [f"{k} = {toml_value(v)}" for k, v in entry.items()]
            lines.append(f"env_vars = {toml_value(list(CODEX_ENV_VARS))}")
            lines += codex_features(inst, path, theirs)
            block = "\n".join([*lines, TMUX_END, ""])
            sep = "\n" if stripped and not stripped.endswith("\n") else ""
            new = stripped + sep + block
            try:
                tomllib.loads(new)  # never write a file Codex cannot read
            except tomllib.TOMLDecodeError as e:
                raise SetupError(
                    f"cannot add [mcp_servers.{MCP_NAME}] to {path} ({e}); add it yourself "
                    "or pass --no-mcp; nothing was changed"
                ) from None
    inst.apply_block_edit(path, text, stripped, new)


def codex_features(inst: Installer, path: str, theirs: dict[str, object]) -> list[str]:
    """Our block's ``[features]`` table (MCP tools offered, not deferred), unless the file
    has its own ``features``: then their choice stands, or a note says what to add."""
    features = theirs.get("features")
    if features is None:
        return ["[features]", f"{CODEX_NO_DEFER} = false"]
    if not isinstance(features, dict) or CODEX_NO_DEFER not in features:
        inst.plan.note(
            f"{path} has its own [features]: add `{CODEX_NO_DEFER} = false` there, or "
            "Codex offers the agent-chat tools only to models with its tool_search "
            "(not with a custom model provider)"
        )
    return []
