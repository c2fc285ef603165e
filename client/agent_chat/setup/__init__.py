"""``ac setup claude|codex|gemini|tmux|hook``: install the agent integrations.

Each installer merges into the agent CLI's own settings (never clobbering the user's entries,
with a backup before it changes a file it did not create), shows what it changed as a diff,
does nothing when run twice, and ``--uninstall`` removes exactly its own entries: hook handlers
whose command runs ``ac-hook.sh``, files carrying the ``installed by `ac setup``` marker, the
marked block in ``~/.tmux.conf``.

Where things go (``--user``, the default / ``--project``, in the current directory):

- claude: ``~/.claude/settings.json`` / ``.claude/settings.local.json`` (hooks on
  UserPromptSubmit and PostToolUse, the wake hooks on SessionStart and Stop unless
  ``--no-wake``, a statusLine if none is set) and ``skills/`` beside it.
  The project scope uses ``settings.local.json`` because the hook command is an absolute path
  on this machine, not something to commit.
- codex: ``~/.codex/hooks.json`` / ``.codex/hooks.json`` and ``~/.agents/skills`` /
  ``.agents/skills``.
- gemini: ``~/.gemini/settings.json`` / ``.gemini/settings.json`` (BeforeAgent and AfterTool,
  timeouts in milliseconds), custom commands ``commands/ac/*.toml`` (``/ac:chat`` ...) and the
  skills in ``~/.agents/skills`` / ``.agents/skills`` (shared with Codex: uninstalling one keeps
  them while the other is installed).
- tmux: a marked block in ``~/.tmux.conf`` appending the unread line to ``status-right``.
- hook: only the hook's credential files (``$AGENT_CHAT_HOME/hook/``), which the others write
  too.

Uninstalling also removes the folders setup created once they are empty (recorded in
``$AGENT_CHAT_HOME/setup-dirs.json``). One module per target; this package only re-exports.
"""

from __future__ import annotations

from .command import INSTALLERS, TARGETS, run
from .installer import (
    HOOK_MARKER,
    HOOK_TIMEOUT_MS,
    HOOK_TIMEOUT_S,
    MARK,
    MCP_NAME,
    SKILLS,
    WAKE_TIMEOUT_S,
    Installer,
    hook_script,
    integrations_dir,
)
from .plan import Plan, SetupError

__all__ = [
    "HOOK_MARKER",
    "HOOK_TIMEOUT_MS",
    "HOOK_TIMEOUT_S",
    "INSTALLERS",
    "MARK",
    "MCP_NAME",
    "SKILLS",
    "TARGETS",
    "WAKE_TIMEOUT_S",
    "Installer",
    "Plan",
    "SetupError",
    "hook_script",
    "integrations_dir",
    "run",
]
