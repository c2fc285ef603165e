"""The loop guard's memory for one wake session: a small file per identity, filter and session
(``$AGENT_CHAT_HOME/wait/<digest>.json``, 0600) with the cursor of the last wake, its time, the
rooms urgent then, and the waiter that owns the session now.

Shared by ``ac wait --session`` (:mod:`agent_chat.wait`) and the wake hook's light waiter
(:mod:`agent_chat.wake_waiter`). They read and write JSON with different tools (``json``, or
``_json`` alone, which the light waiter keeps to so that it loads no ``re``), so the codec is
given; this module imports nothing that either would not.
"""

from __future__ import annotations

import os
import sys

from .files import atomic_write, read_text

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable


class SessionState:
    """The last wake's cursor, time and urgent rooms, and the session's owner (``waiter``).

    ``path`` None keeps it in memory only (``ac run`` holds it in its own process). A file
    that cannot be read or parsed is an empty state; ``warn``: a failed save says so on
    stderr (the light waiter's stderr is the wake line, so it stays silent)."""

    def __init__(
        self,
        path: str | None,
        loads: Callable[[str], object],
        dumps: Callable[[object], str],
        warn: bool = True,
    ) -> None:
        self.path = path
        self._loads = loads
        self._dumps = dumps
        self._warn = warn
        self.cursor: str | None = None
        self.last_wake = 0.0
        self.urgent: set[str] = set()
        #: The waiter that owns this session now (the newest one to start).
        self.waiter: str | None = None
        data = self._load()
        cursor, last_wake, urgent, waiter = (
            data.get("cursor"),
            data.get("last_wake"),
            data.get("urgent"),
            data.get("waiter"),
        )
        self.cursor = cursor if isinstance(cursor, str) else None
        if isinstance(last_wake, (int, float)) and not isinstance(last_wake, bool):
            self.last_wake = float(last_wake)
        if isinstance(urgent, list):
            self.urgent = {u for u in urgent if isinstance(u, str)}
        self.waiter = waiter if isinstance(waiter, str) else None

    def _load(self) -> dict[str, object]:
        if self.path is None:
            return {}
        try:
            data = self._loads(read_text(self.path) or "{}")
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def superseded(self) -> bool:
        """True when a newer waiter took this session over (its token is in the file)."""
        if self.path is None or self.waiter is None:
            return False
        return self._load().get("waiter") not in (self.waiter, None)

    def save(self) -> None:
        if self.path is None:
            return
        data = {
            "cursor": self.cursor,
            "last_wake": self.last_wake,
            "urgent": sorted(self.urgent),
            "waiter": self.waiter,
        }
        try:
            atomic_write(self.path, self._dumps(data).encode(), 0o600)
        except OSError as e:
            if self._warn:
                sys.stderr.write(f"ac: cannot keep the wait state in {self.path}: {e.strerror}\n")


def watched_pid(text: str) -> int | None:
    """``AGENT_CHAT_WAIT_WHILE_PID``'s process, if it names one (not init)."""
    return int(text) if text.isdigit() and int(text) > 1 else None


def process_alive(pid: int) -> bool:
    """Whether the process a waiter watches (``AGENT_CHAT_WAIT_WHILE_PID``: the session's CLI)
    still runs: a waiter never outlives its session."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # someone else's process: it exists
    return True
