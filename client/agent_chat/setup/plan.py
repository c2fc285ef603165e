"""File changes an installer wants, shown as a diff, applied with backups (or only shown).

Installers compute the wanted content of every file they touch; :class:`Plan` compares it
with what is on disk, so running an installer twice changes nothing the second time.
"""

from __future__ import annotations

import difflib
import json
import os
import time

from ..errors import AcError
from ..files import atomic_write, read_text

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from ..shapes import JSONObject


class SetupError(AcError):
    """A settings file cannot be read or merged; nothing was written."""


class Change:
    """One file: its text before (None: absent) and after (None: remove it)."""

    def __init__(
        self,
        path: str,
        before: str | None,
        after: str | None,
        mode: int,
        backup: bool,
        show_diff: bool,
    ) -> None:
        self.path = path
        self.before = before
        self.after = after
        self.mode = mode
        self.backup = backup
        self.show_diff = show_diff


class Plan:
    """The changes of one ``ac setup`` run, plus notes for the user."""

    def __init__(self, record: str | None = None) -> None:
        self.changes: list[Change] = []
        self.notes: list[str] = []
        #: A JSON file listing the folders ``ac setup`` created (None: not kept).
        self.record = record

    def write(
        self,
        path: str,
        text: str,
        mode: int = 0o644,
        backup: bool = False,
        show_diff: bool = False,
    ) -> None:
        """Make ``path`` hold ``text`` (no change if it already does)."""
        before = read_text(path)
        if before != text:
            self.changes.append(Change(path, before, text, mode, backup, show_diff))

    def remove(self, path: str) -> None:
        before = read_text(path)
        if before is not None:
            self.changes.append(Change(path, before, None, 0, False, False))

    def note(self, text: str) -> None:
        self.notes.append(text)

    def apply(self, dry_run: bool, out: Callable[[str], None]) -> int:
        """Write (unless ``dry_run``) and describe every change; return how many there were."""
        stamp = time.strftime("%Y%m%d-%H%M%S")
        created: list[str] = []
        for change in self.changes:
            verb = (
                ("would create" if dry_run else "created")
                if change.before is None
                else ("would remove" if dry_run else "removed")
                if change.after is None
                else ("would update" if dry_run else "updated")
            )
            line = f"{verb} {change.path}"
            if not dry_run:
                if change.backup and change.before is not None:
                    line += f" (backup: {write_backup(change.path, change.before, stamp)})"
                if change.after is None:
                    os.unlink(change.path)
                    _remove_empty_parents(os.path.dirname(change.path))
                else:
                    created += _missing_dirs(os.path.dirname(change.path))
                    mode = _mode_of(change.path, change.mode)
                    atomic_write(change.path, change.after.encode("utf-8"), mode)
            out(line)
            if change.show_diff:
                diff = difflib.unified_diff(
                    (change.before or "").splitlines(),
                    (change.after or "").splitlines(),
                    change.path if change.before is not None else "/dev/null",
                    change.path if change.after is not None else "/dev/null",
                    lineterm="",
                    n=2,
                )
                for d in list(diff)[2:]:
                    out("    " + d)
        if not dry_run:
            self._keep_record(created, any(c.after is None for c in self.changes))
        for note in self.notes:
            out("note: " + note)
        if not self.changes:
            out(
                "nothing to change: already %s"
                % ("removed" if self.notes == ["uninstall"] else "up to date")
            )
        return len(self.changes)

    def _keep_record(self, created: list[str], removed: bool) -> None:
        """Add the folders this run created to the record; after a removal, remove the
        recorded folders that are empty now (deepest first) and forget those that are gone."""
        if self.record is None or not (created or removed):
            return
        try:
            known = json.loads(read_text(self.record) or "[]")
        except ValueError:
            known = []
        folders = {d for d in known if isinstance(d, str)} if isinstance(known, list) else set()
        folders.update(created)
        if removed:
            for folder in sorted(folders, key=lambda d: d.count(os.sep), reverse=True):
                try:
                    os.rmdir(folder)
                except OSError:
                    pass  # not empty (theirs or ours still), or gone
            folders = {d for d in folders if os.path.isdir(d)}
        try:
            if folders:
                atomic_write(self.record, json.dumps(sorted(folders)).encode(), 0o600)
            elif os.path.exists(self.record):
                os.unlink(self.record)
        except OSError:
            pass  # the record is a convenience: the files themselves were handled


def _missing_dirs(directory: str) -> list[str]:
    """``directory`` and its ancestors that do not exist yet (what writing into it creates)."""
    missing = []
    while directory and not os.path.isdir(directory):
        missing.append(os.path.abspath(directory))
        parent = os.path.dirname(directory)
        if parent == directory:
            break
        directory = parent
    return missing


def _mode_of(path: str, default: int) -> int:
    try:
        return os.stat(path).st_mode & 0o7777
    except OSError:
        return default


def write_backup(path: str, text: str, stamp: str | None = None) -> str:
    """Keep ``text`` (what ``path`` held) beside it with ``path``'s mode; the backup's path."""
    backup = _backup_path(path, stamp or time.strftime("%Y%m%d-%H%M%S"))
    atomic_write(backup, text.encode("utf-8"), _mode_of(path, 0o600))
    return backup


def _backup_path(path: str, stamp: str) -> str:
    candidate = f"{path}.bak-agent-chat-{stamp}"
    n = 1
    while os.path.exists(candidate):
        n += 1
        candidate = f"{path}.bak-agent-chat-{stamp}-{n}"
    return candidate


def _remove_empty_parents(directory: str) -> None:
    """Remove ``directory`` and its parents while they are empty (our skill folders)."""
    for _ in range(2):
        try:
            os.rmdir(directory)
        except OSError:
            return
        directory = os.path.dirname(directory)


# --- JSON settings ---------------------------------------------------------------------------


def load_json_settings(path: str) -> JSONObject:
    """A settings file as a dict ({} when missing); SetupError when it is not a JSON object."""
    text = read_text(path)
    if text is None or not text.strip():
        return {}
    try:
        data = json.loads(text)
    except ValueError as e:
        raise SetupError(
            f"{path} is not valid JSON ({e}); fix it first, nothing was changed"
        ) from None
    if not isinstance(data, dict):
        raise SetupError(f"{path} is not a JSON object; nothing was changed")
    return data


def dump_json_settings(data: JSONObject, like: str | None = None) -> str:
    """JSON text, indented like the file's current text ``like`` (else 2 spaces)."""
    indent: int | str = 2
    for line in (like or "").splitlines()[1:]:
        stripped = line.lstrip(" \t")
        if stripped and stripped != line:
            lead = line[: len(line) - len(stripped)]
            indent = lead if "\t" in lead else len(lead)
            break
    return json.dumps(data, indent=indent, ensure_ascii=False) + "\n"


def matching_backup(path: str, data: JSONObject) -> str | None:
    """The text of the newest backup of ``path`` that parses to ``data`` (to restore bytes)."""
    directory, name = os.path.split(path)
    try:
        names = sorted(
            (n for n in os.listdir(directory or ".") if n.startswith(name + ".bak-agent-chat-")),
            reverse=True,
        )
    except OSError:
        return None
    for backup in names:
        text = read_text(os.path.join(directory, backup))
        try:
            if text is not None and json.loads(text) == data:
                return text
        except ValueError:
            continue
    return None


def is_ours(handler: object, marker: str) -> bool:
    return (
        isinstance(handler, dict)
        and isinstance(handler.get("command"), str)
        and marker in handler["command"]
    )


def our_hooks(settings: JSONObject, marker: str) -> list[tuple[str, object, JSONObject]]:
    """Our hook handlers (command contains ``marker``) as (event, matcher, handler)."""
    found: list[tuple[str, object, JSONObject]] = []
    hooks = settings.get("hooks")
    if not isinstance(hooks, dict):
        return found
    for event, groups in hooks.items():
        if not isinstance(groups, list):
            continue
        for group in groups:
            handlers = group.get("hooks") if isinstance(group, dict) else None
            if isinstance(handlers, list):
                found += [
                    (event, group.get("matcher"), h)
                    for h in handlers
                    if isinstance(h, dict) and is_ours(h, marker)
                ]
    return found


def remove_hooks(settings: JSONObject, marker: str) -> bool:
    """Drop our hook handlers (command contains ``marker``).

    Matcher groups, events and the ``hooks`` object that become empty because of this are
    dropped too. Returns True when something was removed.
    """
    hooks = settings.get("hooks")
    if not isinstance(hooks, dict):
        return False
    removed = False
    for event in list(hooks):
        groups = hooks[event]
        if not isinstance(groups, list):
            continue
        emptied = False
        for group in list(groups):
            handlers = group.get("hooks") if isinstance(group, dict) else None
            if not isinstance(handlers, list):
                continue
            kept = [h for h in handlers if not is_ours(h, marker)]
            if len(kept) != len(handlers):
                removed = emptied = True
                if kept:
                    group["hooks"] = kept
                else:
                    groups.remove(group)
        if emptied and not groups:
            del hooks[event]
    if removed and not hooks:
        del settings["hooks"]
    return removed


def add_hook(settings: JSONObject, event: str, handler: JSONObject, matcher: str | None) -> None:
    """Append one matcher group with ``handler`` unless an identical one is there."""
    hooks = settings.setdefault("hooks", {})
    if not isinstance(hooks, dict):
        raise SetupError('"hooks" in the settings is not an object; nothing was changed')
    groups = hooks.setdefault(event, [])
    if not isinstance(groups, list):
        raise SetupError(f'"hooks.{event}" in the settings is not a list; nothing was changed')
    for group in groups:
        if (
            isinstance(group, dict)
            and group.get("matcher") == matcher
            and isinstance(group.get("hooks"), list)
            and handler in group["hooks"]
        ):
            return
    new: JSONObject = {"matcher": matcher} if matcher is not None else {}
    new["hooks"] = [handler]
    groups.append(new)
