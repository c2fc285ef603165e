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
  timeouts in milliseconds) and custom commands ``commands/ac/*.toml`` (``/ac:chat`` ...).
- tmux: a marked block in ``~/.tmux.conf`` appending the unread line to ``status-right``.
- hook: only the hook's credential files (``$AGENT_CHAT_HOME/hook/``), which the others write
  too.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shlex
import tomllib

from .. import hook_files
from ..errors import AcError, ConfigFileError, UsageError
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

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from ..commands import Context
    from ..shapes import JSONObject

    #: A hook handler to install: (event, matcher, handler).
    Hook = tuple[str, str | None, JSONObject]

TARGETS = ("claude", "codex", "gemini", "tmux", "hook")
MARK = "installed by `ac setup`"
HOOK_MARKER = "ac-hook.sh"
SKILLS = ("chat", "listen", "chat-conventions")
GEMINI_COMMANDS = ("chat", "listen", "conventions")
TMUX_BEGIN = "# >>> agent-chat: added by `ac setup tmux`; `ac setup tmux --uninstall` removes it"
TMUX_END = "# <<< agent-chat"
CODEX_MCP_BEGIN = (
    "# >>> agent-chat: added by `ac setup codex`; `ac setup codex --uninstall` removes it"
)
#: The MCP server entry's name in every CLI's settings.
MCP_NAME = "agent-chat"
#: Codex starts MCP servers with a bare environment: these names are passed through from the
#: environment Codex runs in (``env_vars``), so ``ac mcp`` is the same identity as ``ac``.
CODEX_ENV_VARS = ("AGENT_CHAT_HOME", "AGENT_CHAT_SERVER", "AGENT_CHAT_NICK", "AGENT_CHAT_TOKEN")
#: codex-cli 0.171.0 defers every MCP server's tools behind its ``tool_search`` tool, which it
#: offers only for models whose metadata says they support it (OpenAI's own); with a custom
#: provider or an unknown model the tools are listed but never offered to the model (seen in
#: tests/test_agent_clis.py; openai/codex#19871, #27580). This feature switch offers them.
CODEX_NO_DEFER = "tool_search_always_defer_mcp_tools"
#: Seconds for Claude Code and Codex, milliseconds for Gemini CLI; the hook itself needs ~1 s.
HOOK_TIMEOUT_S = 5
HOOK_TIMEOUT_MS = 5000
#: The wake hook (``ac-hook.sh --wake``, Claude Code ``asyncRewake``) waits in the background;
#: Claude Code kills a hook at its ``timeout`` (default 600 s), so it gets a day, and the hook's
#: own ``ac wait --timeout`` (86000 s) ends first, quietly.
WAKE_TIMEOUT_S = 86400


def integrations_dir() -> str:
    return os.path.join(
        os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "integrations"
    )


def hook_script(name: str = "ac-hook.sh") -> str:
    return os.path.join(integrations_dir(), "hooks", name)


class Installer:
    def __init__(
        self,
        ctx: Context,
        scope: str,
        uninstall: bool,
        out: Callable[[str], None],
        mcp: bool = True,
        wake: bool = True,
    ) -> None:
        self.ctx = ctx
        self.scope = scope
        self.uninstall = uninstall
        self.out = out
        self.mcp = mcp
        self.wake = wake
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
        self,
        path: str,
        wanted: list[Hook],
        extra: Callable[[JSONObject], None] | None = None,
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

    def mcp_entry(self, claude: bool = False) -> JSONObject | None:
        """Our MCP server entry (``ac mcp``), or None when it cannot run here."""
        if importlib.util.find_spec("mcp") is None:
            self.plan.note(
                "the MCP server entry was not installed: `ac mcp` needs the mcp extra "
                "(pip install 'agent-chat[mcp]'), then run this again (or pass --no-mcp)"
            )
            return None
        entry: JSONObject = {"command": hook_files.ac_executable(), "args": ["mcp"]}
        if claude:
            entry = {"type": "stdio", **entry}
        home = self.ctx.settings.home
        if home != os.path.join(self.user_home, ".agent-chat"):
            entry["env"] = {"AGENT_CHAT_HOME": home}
        return entry

    def merge_mcp_json(self, path: str, keys: tuple[str, ...], claude: bool = False) -> None:
        """Our entry ``MCP_NAME`` in the JSON object at ``keys`` of ``path`` (or not)."""
        if not self.mcp:
            return
        data = load_json_settings(path)
        before = json.dumps(data, sort_keys=True)
        self.set_mcp(data, path, keys, claude)
        if json.dumps(data, sort_keys=True) == before:
            return
        if self.uninstall and not data:
            self.plan.remove(path)
            return
        mode = 0o600 if os.path.basename(path) == ".claude.json" else 0o644
        self.plan.write(path, dump_json_settings(data, read_text(path)), mode, backup=True)

    def set_mcp(
        self, data: JSONObject, path: str, keys: tuple[str, ...], claude: bool = False
    ) -> None:
        """Put (or, uninstalling, drop) our entry in ``data`` at ``keys`` (read from ``path``)."""
        if not self.mcp:
            return
        parents = [data]
        for key in keys:
            child = parents[-1].get(key)
            if child is None:
                if self.uninstall:
                    return
                child = parents[-1][key] = {}
            if not isinstance(child, dict):
                raise SetupError(f'"{key}" in {path} is not an object; nothing was changed')
            parents.append(child)
        servers = parents[-1]
        current = servers.get(MCP_NAME)
        if current is not None and not _is_our_mcp(current):
            if not self.uninstall:
                self.plan.note(f"{path} already has an MCP server {MCP_NAME!r}; left alone")
            return
        if self.uninstall:
            servers.pop(MCP_NAME, None)
            for parent, key in reversed(list(zip(parents[:-1], keys, strict=True))):
                if not parent[key]:
                    del parent[key]
        else:
            entry = self.mcp_entry(claude)
            if entry is not None:
                servers[MCP_NAME] = entry
            elif not servers:
                for parent, key in reversed(list(zip(parents[:-1], keys, strict=True))):
                    if not parent[key]:
                        del parent[key]

    def codex_mcp(self, path: str) -> None:
        """A marked ``[mcp_servers.agent-chat]`` block at the end of Codex's config.toml."""
        if not self.mcp:
            return
        text = read_text(path)
        stripped = _strip_block(text or "", CODEX_MCP_BEGIN)
        if self.uninstall:
            new = stripped
        else:
            try:
                theirs = tomllib.loads(stripped)
            except tomllib.TOMLDecodeError as e:
                raise SetupError(f"{path} is not valid TOML ({e}); nothing was changed") from None
            if MCP_NAME in (theirs.get("mcp_servers") or {}):
                self.plan.note(f"{path} already has [mcp_servers.{MCP_NAME}]; left alone")
                new = text or ""
            else:
                entry = self.mcp_entry()
                if entry is None:
                    return
                lines = [CODEX_MCP_BEGIN, f"[mcp_servers.{MCP_NAME}]"]
                lines += [f"{k} = {_toml_value(v)}" for k, v in entry.items()]
                lines.append(f"env_vars = {_toml_value(list(CODEX_ENV_VARS))}")
                lines += self.codex_features(path, theirs)
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
        self.apply_block_edit(path, text, stripped, new)

    def codex_features(self, path: str, theirs: dict[str, object]) -> list[str]:
        """Our block's ``[features]`` table (MCP tools offered, not deferred), unless the file
        has its own ``features``: then their choice stands, or a note says what to add."""
        features = theirs.get("features")
        if features is None:
            return ["[features]", f"{CODEX_NO_DEFER} = false"]
        if not isinstance(features, dict) or CODEX_NO_DEFER not in features:
            self.plan.note(
                f"{path} has its own [features]: add `{CODEX_NO_DEFER} = false` there, or "
                "Codex offers the agent-chat tools only to models with its tool_search "
                "(not with a custom model provider)"
            )
        return []

    def apply_block_edit(self, path: str, text: str | None, stripped: str, new: str) -> bool:
        """Plan the edit of a file where we own one marked block: ``text`` is the file as it is
        (None if missing), ``stripped`` it without our block, ``new`` it with our block as it
        should be. On uninstall a file that held nothing but our block is removed. True if a
        write was planned."""
        if text is None and not new:
            return False
        if self.uninstall and text is not None and not new.strip() and stripped != text:
            self.plan.remove(path)
            return False
        if new != (text or ""):
            self.plan.write(path, new, 0o644, backup=True, show_diff=True)
            return True
        return False

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
        if self.wake:
            # Background hooks that wake an idle session when a DM / urgent message arrives
            # (exit 2 = wake, stderr the line); the Stop one re-arms after every turn.
            wake = {
                "type": "command",
                "command": self.hook_command("--wake"),
                "timeout": WAKE_TIMEOUT_S,
                "asyncRewake": True,
            }
            wanted += [("SessionStart", None, wake), ("Stop", None, dict(wake))]
        status = {"type": "command", "command": self.hook_command("--status")}

        def status_line(data: JSONObject) -> None:
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
        # MCP servers: user scope in ~/.claude.json ("mcpServers"); project scope is Claude's
        # "local" scope, the project's entry in ~/.claude.json (like settings.local.json: the
        # command is an absolute path on this machine, and .mcp.json servers need approval).
        claude_json = (
            os.path.join(os.environ["CLAUDE_CONFIG_DIR"], ".claude.json")
            if os.environ.get("CLAUDE_CONFIG_DIR")
            else os.path.join(self.user_home, ".claude.json")
        )
        keys = ("mcpServers",) if self.scope == "user" else ("projects", self.cwd, "mcpServers")
        self.merge_mcp_json(claude_json, keys, claude=True)

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
        self.codex_mcp(os.path.join(base, "config.toml"))
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
        path = os.path.join(base, "settings.json")
        self.merge_hooks(path, wanted, lambda data: self.set_mcp(data, path, ("mcpServers",)))
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
        if self.apply_block_edit(path, text, stripped, new):
            self.plan.note("reload a running tmux: tmux source-file ~/.tmux.conf")


def _is_our_mcp(entry: object) -> bool:
    """An ``agent-chat`` MCP entry that runs ``ac mcp`` (ours to update or remove)."""
    return (
        isinstance(entry, dict)
        and os.path.basename(str(entry.get("command"))) == "ac"
        and entry.get("args") == ["mcp"]
    )


def _toml_value(value: object) -> str:
    """A TOML value for a string, a list of strings or a table of strings."""
    if isinstance(value, dict):
        inner = ", ".join(f"{json.dumps(k)} = {json.dumps(v)}" for k, v in value.items())
        return "{ " + inner + " }"
    return json.dumps(value)  # a JSON string / array of strings is valid TOML


def _canon(entries: Iterable[tuple[str, object, JSONObject]]) -> list[str]:
    return sorted(json.dumps(e, sort_keys=True) for e in entries)


def _strip_block(text: str, begin: str = TMUX_BEGIN) -> str:
    """``text`` without our marked block(s)."""
    out = []
    inside = False
    for line in text.splitlines(keepends=True):
        if line.startswith(begin):
            inside = True
            continue
        if inside:
            if line.startswith(TMUX_END):
                inside = False
            continue
        out.append(line)
    return "".join(out)


def _write_hook_files(ctx: Context) -> tuple[str, str] | None:
    """Resolve (registering if needed) the identity and write its hook files.

    Returns (path of the curl config, the identity's label), or None with AGENT_CHAT_TOKEN
    (the hook then reads the token from the environment).
    """
    if not ctx.settings.writes_files:
        return None
    identity = ctx.identity()
    return hook_files.write_files(ctx.settings, identity), identity.label()


def run(
    ctx: Context,
    target: str,
    scope: str | None,
    dry_run: bool,
    uninstall: bool,
    quiet: bool = False,
    mcp: bool = True,
    wake: bool = True,
) -> int:
    """``ac setup TARGET``: return the exit code."""
    from ..commands import out as print_line

    out: Callable[[str], None] = (lambda text: None) if quiet else print_line
    if target not in TARGETS:
        raise UsageError(
            "unknown setup target {!r}: use one of {}".format(target, ", ".join(TARGETS))
        )
    installer = Installer(ctx, scope or "user", uninstall, out, mcp, wake)
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
        written = _write_hook_files(ctx)
    except (AcError, ConfigFileError, OSError) as e:  # server down...: the hook makes them later
        if target == "hook":
            raise
        why = e.message if isinstance(e, AcError) else e
        out(f"note: hook credentials not written yet ({why}); the hook writes them on first use")
        return 0
    if written is None:
        out("hook: uses AGENT_CHAT_TOKEN and AGENT_CHAT_SERVER from the environment")
    else:
        out(f"hook credentials for {written[1]}: {written[0]}")
    return 0
