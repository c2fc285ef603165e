"""The client's caches: ``state.json`` and the unread line. Deleting them loses nothing.

- ``state.json``: per identity (``<server URL>|<nick key>``) the last unread counts
  (``unread``, ``notify_at``), the last event shown by ``ac listen`` (``last_event``) and
  ``updated_at``.
- ``unread.line`` (``unread.<nick>.line`` for an ``AGENT_CHAT_NICK`` identity): the last
  ``ac notify --oneline`` line, for status bars that read a file.

Writing them is best effort (:func:`write_caches`): the command's real work is done by then.
"""

from __future__ import annotations

import json
import time

from .files import STATE_FILE, UNREAD_LINE_FILE, atomic_write, read_text

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

    from .config import Settings
    from .shapes import UnreadCount


def unread_line_path(settings: Settings) -> str:
    """``unread.line``, or ``unread.<nick>.line`` for an ``AGENT_CHAT_NICK`` identity (``<nick>``:
    :func:`agent_chat.files.file_part`)."""
    if settings.env_nick:
        return settings.path(f"unread.{settings.file_part}.line")
    return settings.path(UNREAD_LINE_FILE)


def write_caches(
    settings: Settings,
    identity_key: str,
    unread_line: str | None = None,
    unread: Mapping[str, UnreadCount] | None = None,
    last_event: str | None = None,
) -> None:
    """Update state.json and the unread line; never with ``AGENT_CHAT_TOKEN`` (no files).

    Best effort: a read-only or full home directory, or a state.json that is not ours to parse,
    must not fail a command whose request already succeeded; those errors (OSError, and
    ValueError for bad JSON or text) are dropped. Anything else is a bug and propagates.
    """
    if not settings.writes_files:
        return
    try:
        _update_state(settings.path(STATE_FILE), identity_key, unread, last_event)
        if unread_line is not None:
            atomic_write(unread_line_path(settings), (unread_line + "\n").encode("utf-8"), 0o600)
    except (OSError, ValueError):
        pass


def _update_state(
    path: str, identity_key: str, unread: Mapping[str, UnreadCount] | None, last_event: str | None
) -> None:
    try:
        loaded = json.loads(read_text(path) or "{}")
    except ValueError:  # not JSON (or not UTF-8): start again, it is only a cache
        loaded = None
    state: dict[str, object] = loaded if isinstance(loaded, dict) else {}
    identities = state.get("identities")
    if not isinstance(identities, dict):
        identities = state["identities"] = {}
    entry = identities.get(identity_key)
    if not isinstance(entry, dict):
        entry = identities[identity_key] = {}
    now = int(time.time())
    if unread is not None:
        entry["unread"] = unread
        entry["notify_at"] = now
    if last_event is not None:
        entry["last_event"] = last_event
    entry["updated_at"] = now
    state["version"] = 1
    atomic_write(path, json.dumps(state, indent=1, sort_keys=True).encode(), 0o600)


def read_last_event(settings: Settings, identity_key: str) -> str | None:
    """The last event ``ac listen`` showed this identity (``ac reply --last``), if known."""
    try:
        state = json.loads(read_text(settings.path(STATE_FILE)) or "{}")
    except (OSError, ValueError):
        return None
    identities = state.get("identities") if isinstance(state, dict) else None
    entry = identities.get(identity_key) if isinstance(identities, dict) else None
    event = entry.get("last_event") if isinstance(entry, dict) else None
    return event if isinstance(event, str) else None
