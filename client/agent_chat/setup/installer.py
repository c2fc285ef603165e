"""What every ``ac setup`` target shares: the :class:`Installer` (merging hook handlers and
MCP entries into JSON settings, marked files and blocks) and the names of our files."""

from __future__ import annotations

import json
import os
import shlex

from .. import hook_files
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

    from ..context import Context
    from ..shapes import JSONObject

    #: A hook handler to install: (event, matcher, handler).
    Hook = tuple[str, str | None, JSONObject]

MARK = "installed by `ac setup`"
HOOK_MARKER = "ac-hook.sh"
SKILLS = ("chat", "listen", "chat-conventions")
#: The last line of every marked block we add to a file (Codex config.toml, ~/.tmux.conf).
TMUX_END = "# <<< agent-chat"
#: The MCP server entry's name in every CLI's settings.
MCP_NAME = "agent-chat"
#: Seconds for Claude Code and Codex, milliseconds for Gemini CLI; the hook itself needs ~1 s.
HOOK_TIMEOUT_S = 5
HOOK_TIMEOUT_MS = 5000
#: The wake hook (``ac-hook.sh --wake``, Claude Code ``asyncRewake``) waits in the background;
#: Claude Code kills a hook at its ``timeout`` (default 600 s), so it gets a day, and the hook's
#: own ``ac wait --timeout`` (86000 s) ends first, quietly.
WAKE_TIMEOUT_S = 86400
#: In ``$AGENT_CHAT_HOME``: the folders ``ac setup`` created (removed on uninstall once empty).
CREATED_DIRS = "setup-dirs.json"


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
        #: The folders setup created, so that uninstalling removes them once they are empty.
        record = ctx.settings.path(CREATED_DIRS) if ctx.settings.writes_files else None
        self.plan = Plan(record)
        self.user_home = os.path.expanduser("~")
        self.cwd = os.getcwd()

    # -- helpers ------------------------------------------------------------------------------

    def hook_command(self, *args: str) -> str:
        words = ["sh", shlex.quote(hook_script()), *list(args)]
        home = self.ctx.settings.home
        if home != os.path.join(self.user_home, ".agent-chat"):
            words += ["--home", shlex.quote(home)]
        return " ".join(words)

    def end_hook(self, timeout: int, **extra: object) -> Hook:
        """The ``SessionEnd`` handler (``ac-hook.sh --end``): the server marks the session
        ``gone`` at once instead of after the presence silence timeout."""
        handler: JSONObject = {**extra, "type": "command", "command": self.hook_command("--end")}
        handler["timeout"] = timeout
        return ("SessionEnd", None, handler)

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

    def mcp_entry(self, claude: bool = False) -> JSONObject:
        """Our MCP server entry (``ac mcp``: no extra to install, it is stdlib only)."""
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
            servers[MCP_NAME] = self.mcp_entry(claude)

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

    def agents_skills(self, still_used_by: dict[str, str]) -> None:
        """The skills in ``.agents/skills``, which Codex and Gemini CLI both read. Uninstalling
        one of them keeps the skills while another's setup (``still_used_by``: its name → the
        settings file our hooks are in) is still installed."""
        directory = os.path.join(
            self.user_home if self.scope == "user" else self.cwd, ".agents", "skills"
        )
        if self.uninstall:
            users = [name for name, path in still_used_by.items() if self.has_our_hooks(path)]
            if users:
                self.plan.note(
                    f"the skills in {directory} stay: {' and '.join(users)} reads them too "
                    f"(ac setup {users[0]} --uninstall removes them)"
                )
                return
        self.skills(directory)

    def has_our_hooks(self, path: str) -> bool:
        """True when the settings file ``path`` holds one of our hook handlers."""
        return HOOK_MARKER in (read_text(path) or "")

    def base(self, user_dir: str, project_dir: str) -> str:
        return user_dir if self.scope == "user" else os.path.join(self.cwd, project_dir)

    def codex_dir(self) -> str:
        """Codex's settings folder for this scope (``$CODEX_HOME``, default ``~/.codex``)."""
        user_dir = os.environ.get("CODEX_HOME") or os.path.join(self.user_home, ".codex")
        return self.base(user_dir, ".codex")

    def gemini_dir(self) -> str:
        """Gemini CLI's settings folder for this scope (``~/.gemini``)."""
        return self.base(os.path.join(self.user_home, ".gemini"), ".gemini")


def _is_our_mcp(entry: object) -> bool:
    """An ``agent-chat`` MCP entry that runs ``ac mcp`` (ours to update or remove)."""
    return (
        isinstance(entry, dict)
        and os.path.basename(str(entry.get("command"))) == "ac"
        and entry.get("args") == ["mcp"]
    )


def toml_value(value: object) -> str:
    """A TOML value for a string, a list of strings or a table of strings."""
    if isinstance(value, dict):
        inner = ", ".join(f"{json.dumps(k)} = {json.dumps(v)}" for k, v in value.items())
        return "{ " + inner + " }"
    return json.dumps(value)  # a JSON string / array of strings is valid TOML


def _canon(entries: Iterable[tuple[str, object, JSONObject]]) -> list[str]:
    return sorted(json.dumps(e, sort_keys=True) for e in entries)


def strip_block(text: str, begin: str) -> str:
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
