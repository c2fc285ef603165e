"""``ac setup claude|codex|gemini|tmux|hook``: install the agent integrations.

Each installer merges into the agent CLI's own settings (never clobbering the user's entries,
with a backup before it changes a file it did not create), shows what it changed as a diff,
does nothing when run twice, and ``--uninstall`` removes exactly its own entries: hook handlers
whose command runs ``ac-hook.sh``, files carrying the ``installed by `ac setup``` marker, the
marked block in ``~/.tmux.conf``.

Where things go (``--user``, the default / ``--project``, in the current directory):

- claude: ``~/.claude/settings.json`` / ``.claude/settings.local.json`` (hooks on
  UserPromptSubmit and PostToolUse, a statusLine if none is set) and ``skills/`` beside it.
  The project scope uses ``settings.local.json`` because the hook command is an absolute path
  on this machine, not something to commit.
- codex: ``~/.codex/hooks.json`` / ``.codex/hooks.json`` and ``~/.agents/skills`` /
  ``.agents/skills``.
- gemini: ``~/.gemini/settings.json`` / ``.gemini/settings.json`` (BeforeAgent and AfterTool,
  timeouts in milliseconds) and custom commands ``commands/ac/*.toml`` (``/ac:chat`` ...).
- tmux: a marked block in ``~/.tmux.conf`` appending the unread line to ``status-right``.
- hook: only the hook's credential files (``$AGENT_CHAT_HOME/hook/``), which the others write
  too.
"""

from __future__ import annotations

import json
import os
import shlex

from .. import hook_files
from ..errors import UsageError
from ..files import read_text
from .plan import (
    Plan,
    SetupError,
    add_hook,
    dump_json_settings,
    load_json_settings,
    matching_backup,
    our_hooks,
    remove_hooks,
)

TARGETS = ("claude", "codex", "gemini", "tmux", "hook")
MARK = "installed by `ac setup`"
HOOK_MARKER = "ac-hook.sh"
SKILLS = ("chat", "listen", "chat-conventions")
GEMINI_COMMANDS = ("chat", "listen", "conventions")
TMUX_BEGIN = "# >>> agent-chat: added by `ac setup tmux`; `ac setup tmux --uninstall` removes it"
TMUX_END = "# <<< agent-chat"
#: Seconds for Claude Code and Codex, milliseconds for Gemini CLI; the hook itself needs ~1 s.
HOOK_TIMEOUT_S = 5
HOOK_TIMEOUT_MS = 5000


def integrations_dir() -> str:
    return os.path.join(
        os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "integrations"
    )


def hook_script(name: str = "ac-hook.sh") -> str:
    return os.path.join(integrations_dir(), "hooks", name)


class Installer:
    def __init__(self, ctx, scope: str, uninstall: bool, out) -> None:
        self.ctx = ctx
        self.scope = scope
        self.uninstall = uninstall
        self.out = out
        self.plan = Plan()
        self.user_home = os.path.expanduser("~")
        self.cwd = os.getcwd()

    # -- helpers ------------------------------------------------------------------------------

    def hook_command(self, *args: str) -> str:
        words = ["sh", shlex.quote(hook_script()), *list(args)]
        home = self.ctx.settings.home
        if home != os.path.join(self.user_home, ".agent-chat"):
            words += ["--home", shlex.quote(home)]
        return " ".join(words)

    def merge_hooks(
        self, path: str, wanted: list[tuple[str, str | None, dict]], extra=None
    ) -> None:
        """Our hook handlers in the JSON settings file ``path`` become exactly ``wanted``."""
        settings = load_json_settings(path)
        before = json.dumps(settings, sort_keys=True)
        existed = os.path.exists(path)
        present = our_hooks(settings, HOOK_MARKER)
        if self.uninstall:
            remove_hooks(settings, HOOK_MARKER)
        elif _canon(present) != _canon(wanted):
            remove_hooks(settings, HOOK_MARKER)
            for event, matcher, handler in wanted:
                add_hook(settings, event, handler, matcher)
        if extra:
            extra(settings)
        if json.dumps(settings, sort_keys=True) == before:
            return
        if self.uninstall and not settings and existed:
            self.plan.remove(path)  # nothing but ours was in it
            return
        text = (self.uninstall and matching_backup(path, settings)) or dump_json_settings(
            settings, read_text(path)
        )
        self.plan.write(path, text, 0o644, backup=True, show_diff=True)

    def marked_file(self, src: str, dest: str) -> None:
        """Install (or remove) one of our files; files without our marker are left alone."""
        with open(src, encoding="utf-8") as f:
            text = f.read()
        try:
            with open(dest, encoding="utf-8") as f:
                current = f.read()
        except FileNotFoundError:
            current = None
        except (OSError, UnicodeDecodeError) as e:
            self.plan.note(f"cannot read {dest} ({e}); left alone")
            return
        if current is not None and MARK not in current:
            if not self.uninstall:
                self.plan.note(f"{dest} exists and was not installed by ac setup; left alone")
            return
        if self.uninstall:
            if current is not None:
                self.plan.remove(dest)
        else:
            self.plan.write(dest, text, 0o644)

    def skills(self, directory: str) -> None:
        for name in SKILLS:
            self.marked_file(
                os.path.join(integrations_dir(), "skills", name, "SKILL.md"),
                os.path.join(directory, name, "SKILL.md"),
            )

    def base(self, user_dir: str, project_dir: str) -> str:
        return user_dir if self.scope == "user" else os.path.join(self.cwd, project_dir)

    # -- targets ------------------------------------------------------------------------------

    def claude(self) -> None:
        user_dir = os.environ.get("CLAUDE_CONFIG_DIR") or os.path.join(self.user_home, ".claude")
        base = self.base(user_dir, ".claude")
        settings = os.path.join(
            base, "settings.json" if self.scope == "user" else "settings.local.json"
        )
        timeout = HOOK_TIMEOUT_S
        wanted = [
            (
                "UserPromptSubmit",
                None,
                {"type": "command", "command": self.hook_command(), "timeout": timeout},
            ),
            (
                "PostToolUse",
                "*",
                {
                    "type": "command",
                    "command": self.hook_command("--json", "PostToolUse"),
                    "timeout": timeout,
                },
            ),
        ]
        status = {"type": "command", "command": self.hook_command("--status")}

        def status_line(data: dict) -> None:
            current = data.get("statusLine")
            ours = isinstance(current, dict) and HOOK_MARKER in str(current.get("command"))
            if self.uninstall:
                if ours:
                    del data["statusLine"]
            elif current is None or (ours and current != status):
                data["statusLine"] = status
            elif not ours:
                self.plan.note(
                    "{} already has a statusLine; left alone (ours would be: {})".format(
                        settings, status["command"]
                    )
                )

        self.merge_hooks(settings, wanted, status_line)
        self.skills(os.path.join(base, "skills"))

    def codex(self) -> None:
        user_dir = os.environ.get("CODEX_HOME") or os.path.join(self.user_home, ".codex")
        base = self.base(user_dir, ".codex")
        wanted = [
            (
                # JSON: Codex reads plain stdout starting with "[" as JSON, fails, and drops it.
                "UserPromptSubmit",
                None,
                {
                    "type": "command",
                    "command": self.hook_command("--json", "UserPromptSubmit"),
                    "timeout": HOOK_TIMEOUT_S,
                },
            ),
            (
                "PostToolUse",
                "*",
                {
                    "type": "command",
                    "command": self.hook_command("--json", "PostToolUse"),
                    "timeout": HOOK_TIMEOUT_S,
                },
            ),
        ]
        self.merge_hooks(os.path.join(base, "hooks.json"), wanted)
        skills = os.path.join(
            self.user_home if self.scope == "user" else self.cwd, ".agents", "skills"
        )
        self.skills(skills)
        if not self.uninstall:
            self.plan.note(
                "Codex runs new hooks only after you trust them: open /hooks in Codex once"
            )

    def gemini(self) -> None:
        base = self.base(os.path.join(self.user_home, ".gemini"), ".gemini")
        wanted = [
            (
                "BeforeAgent",
                None,
                {
                    "name": "agent-chat",
                    "type": "command",
                    "command": self.hook_command("--json", "BeforeAgent"),
                    "timeout": HOOK_TIMEOUT_MS,
                },
            ),
            (
                "AfterTool",
                "*",
                {
                    "name": "agent-chat-after-tool",
                    "type": "command",
                    "command": self.hook_command("--json", "AfterTool"),
                    "timeout": HOOK_TIMEOUT_MS,
                },
            ),
        ]
        self.merge_hooks(os.path.join(base, "settings.json"), wanted)
        for name in GEMINI_COMMANDS:
            self.marked_file(
                os.path.join(integrations_dir(), "gemini", "commands", "ac", name + ".toml"),
                os.path.join(base, "commands", "ac", name + ".toml"),
            )

    def tmux(self) -> None:
        if self.scope == "project":
            raise UsageError("tmux has no project settings: use 'ac setup tmux' (--user)")
        path = os.path.join(self.user_home, ".tmux.conf")
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except FileNotFoundError:
            text = None
        stripped = _strip_block(text or "")
        if self.uninstall:
            new = stripped
        else:
            script = hook_script("ac-tmux.sh")
            words = [script]
            home = self.ctx.settings.home
            if home != os.path.join(self.user_home, ".agent-chat"):
                words += ["--home", home]
            if any(c in w for w in words for c in "'\"\\$`\n"):
                raise SetupError(f"cannot quote {words!r} for ~/.tmux.conf")
            command = "sh " + " ".join(f'"{w}"' if w != "--home" else w for w in words)
            block = f"{TMUX_BEGIN}\nset -ag status-right ' #({command})'\n{TMUX_END}\n"
            new = stripped + ("\n" if stripped and not stripped.endswith("\n") else "") + block
        if text is None and not new:
            return
        if self.uninstall and text is not None and not new.strip() and stripped != text:
            self.plan.remove(path)
        elif new != (text or ""):
            self.plan.write(path, new, 0o644, backup=True, show_diff=True)
            self.plan.note("reload a running tmux: tmux source-file ~/.tmux.conf")


def _canon(entries) -> list[str]:
    return sorted(json.dumps(e, sort_keys=True) for e in entries)


def _strip_block(text: str) -> str:
    """``text`` without our marked block(s)."""
    out = []
    inside = False
    for line in text.splitlines(keepends=True):
        if line.startswith(TMUX_BEGIN):
            inside = True
            continue
        if inside:
            if line.startswith(TMUX_END):
                inside = False
            continue
        out.append(line)
    return "".join(out)


def run(
    ctx, target: str, scope: str | None, dry_run: bool, uninstall: bool, quiet: bool = False
) -> int:
    """``ac setup TARGET``: return the exit code."""
    from ..commands import out as print_line

    out = (lambda text: None) if quiet else print_line
    if target not in TARGETS:
        raise UsageError(
            "unknown setup target {!r}: use one of {}".format(target, ", ".join(TARGETS))
        )
    installer = Installer(ctx, scope or "user", uninstall, out)
    if target != "hook":
        getattr(installer, target)()
    installer.plan.apply(dry_run, out)
    if target == "hook" and uninstall:
        if dry_run:
            out(f"would remove {hook_files.hook_dir(ctx.settings.home)}")
        else:
            for path in hook_files.remove(ctx.settings.home):
                out(f"removed {path}")
        return 0
    if uninstall:
        return 0
    if dry_run:
        out(f"would write the hook's credentials under {hook_files.hook_dir(ctx.settings.home)}")
        return 0
    try:
        written = hook_files.write(ctx)
    except Exception as e:  # server down: the hook creates them itself later
        if target == "hook":
            raise
        out(
            "note: hook credentials not written yet ({}); the hook writes them on first use".format(
                getattr(e, "message", e)
            )
        )
        return 0
    if written is None:
        out("hook: uses AGENT_CHAT_TOKEN and AGENT_CHAT_SERVER from the environment")
    else:
        out(f"hook credentials for {written[1]}: {written[0]}")
    return 0
