"""``ac setup claude``: hooks (the wake and SessionEnd hooks too), a statusLine, skills and
the MCP entry.

User scope: ``~/.claude/settings.json`` (``$CLAUDE_CONFIG_DIR``), skills beside it and the MCP
entry in ``~/.claude.json``; project scope: ``.claude/settings.local.json`` (the hook command is
an absolute path on this machine, not something to commit) and the project's entry in
``~/.claude.json``.
"""

from __future__ import annotations

import os

from .installer import HOOK_MARKER, HOOK_TIMEOUT_S, TMUX_END, WAKE_TIMEOUT_S, strip_block

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ..shapes import JSONObject
    from .installer import Installer

EXCLUDE_BEGIN = (
    "# >>> agent-chat: added by `ac setup claude --project` (settings.local.json holds this "
    "machine's paths); --uninstall removes it"
)


def install(inst: Installer) -> None:
    user_dir = os.environ.get("CLAUDE_CONFIG_DIR") or os.path.join(inst.user_home, ".claude")
    base = inst.base(user_dir, ".claude")
    settings = os.path.join(
        base, "settings.json" if inst.scope == "user" else "settings.local.json"
    )
    timeout = HOOK_TIMEOUT_S
    wanted = [
        (
            "UserPromptSubmit",
            None,
            {"type": "command", "command": inst.hook_command(), "timeout": timeout},
        ),
        (
            "PostToolUse",
            "*",
            {
                "type": "command",
                "command": inst.hook_command("--json", "PostToolUse"),
                "timeout": timeout,
            },
        ),
    ]
    wanted.append(inst.end_hook(timeout))
    if inst.wake:
        # Background hooks that wake an idle session when a DM / urgent message arrives
        # (exit 2 = wake, stderr the line); the Stop one re-arms after every turn.
        wake = {
            "type": "command",
            "command": inst.hook_command("--wake"),
            "timeout": WAKE_TIMEOUT_S,
            "asyncRewake": True,
        }
        wanted += [("SessionStart", None, wake), ("Stop", None, dict(wake))]
    status = {"type": "command", "command": inst.hook_command("--status")}

    def status_line(data: JSONObject) -> None:
        current = data.get("statusLine")
        ours = isinstance(current, dict) and HOOK_MARKER in str(current.get("command"))
        if inst.uninstall:
            if ours:
                del data["statusLine"]
        elif current is None or (ours and current != status):
            data["statusLine"] = status
        elif not ours:
            inst.plan.note(
                "{} already has a statusLine; left alone (ours would be: {})".format(
                    settings, status["command"]
                )
            )

    inst.merge_hooks(settings, wanted, status_line)
    if inst.scope == "project":
        _keep_out_of_git(inst, settings)
    inst.skills(os.path.join(base, "skills"))
    # MCP servers: user scope in ~/.claude.json ("mcpServers"); project scope is Claude's
    # "local" scope, the project's entry in ~/.claude.json (like settings.local.json: the
    # command is an absolute path on this machine, and .mcp.json servers need approval).
    claude_json = (
        os.path.join(os.environ["CLAUDE_CONFIG_DIR"], ".claude.json")
        if os.environ.get("CLAUDE_CONFIG_DIR")
        else os.path.join(inst.user_home, ".claude.json")
    )
    keys = ("mcpServers",) if inst.scope == "user" else ("projects", inst.cwd, "mcpServers")
    inst.merge_mcp_json(claude_json, keys, claude=True)


def _keep_out_of_git(inst: Installer, settings: str) -> None:
    """settings.local.json holds absolute paths of this machine: a line in the repository's
    ``.git/info/exclude`` (never committed itself) keeps ``git add -A`` from committing it,
    unless git ignores it already. Outside a git repository there is nothing to do."""
    import subprocess

    try:
        found = subprocess.run(
            ["git", "rev-parse", "--show-toplevel", "--git-path", "info/exclude"],
            cwd=inst.cwd,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return
    lines = found.stdout.splitlines()
    if found.returncode != 0 or len(lines) < 2:
        return
    root, exclude = lines[0], os.path.join(inst.cwd, lines[1])
    rel = os.path.relpath(settings, root).replace(os.sep, "/")
    try:
        with open(exclude, encoding="utf-8") as f:
            text: str | None = f.read()
    except FileNotFoundError:
        text = None
    stripped = strip_block(text or "", EXCLUDE_BEGIN)
    if inst.uninstall or stripped != (text or ""):
        new = stripped if inst.uninstall else text or ""
    else:
        ignored = subprocess.run(
            ["git", "check-ignore", "-q", "--no-index", rel], cwd=root, capture_output=True
        )
        if ignored.returncode == 0:
            return  # the user's own rules already keep it out
        new = stripped + ("\n" if stripped and not stripped.endswith("\n") else "")
        new += f"{EXCLUDE_BEGIN}\n/{rel}\n{TMUX_END}\n"
    if inst.apply_block_edit(exclude, text, stripped, new) and not inst.uninstall:
        inst.plan.note(f"{rel} holds paths of this machine: git ignores it (.git/info/exclude)")
