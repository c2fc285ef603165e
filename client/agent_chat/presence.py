"""Rendering an agent's presence (``ac who``): per session working, idle · wakeable, idle · deaf
or gone, with its CLI, host, repository and since when. The server decides the states
(``GET /who``'s ``presence``, ``GET /presence``)."""

from __future__ import annotations

import time

from .safe_text import one_line

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .shapes import JSONObject


def _since(ms: object) -> str:
    if not isinstance(ms, int) or isinstance(ms, bool):
        return ""
    t = time.localtime(ms / 1000)
    same_day = time.localtime()[:3] == t[:3]
    return " since " + time.strftime("%H:%M" if same_day else "%Y-%m-%d %H:%M", t)


def session_text(s: JSONObject) -> str:
    """``idle · wakeable · claude on devbox in webshop since 14:02``."""
    parts = [one_line(s.get("state") or "?")]
    if isinstance(s.get("cli"), str):
        parts.append(one_line(s["cli"]))
    where = ""
    if isinstance(s.get("host"), str):
        where += " on " + one_line(s["host"])
    if isinstance(s.get("repo"), str):
        where += " in " + one_line(s["repo"])
    return " · ".join(parts) + where + _since(s.get("since"))


def describe(presence: object) -> str | None:
    """An identity's sessions, liveliest first (``; ``-separated); None without presence."""
    if not isinstance(presence, dict):
        return None
    sessions = presence.get("sessions")
    rows = [s for s in sessions if isinstance(s, dict)] if isinstance(sessions, list) else []
    if not rows:
        return "no session seen"
    return "; ".join(session_text(s) for s in rows[:3]) + (
        f"; +{len(rows) - 3} more" if len(rows) > 3 else ""
    )


def send_note(found: object) -> str | None:
    """The truth at send time, for a direct message to an agent (the send answer's
    ``recipient_presence``): one line when no session of it will see the message soon."""
    if not isinstance(found, dict):
        return None
    name, state = one_line(found.get("name") or "the agent"), found.get("state")
    since = found.get("since")
    when = ""
    if isinstance(since, int) and not isinstance(since, bool):
        when = time.strftime("%H:%M", time.localtime(since / 1000))
    if state == "gone":
        gone = f" (gone since {when})" if when else ""
        return f"{name} has no running session{gone}; it sees this when it next starts"
    if state == "idle · deaf":
        idle = f" since {when}" if when else ""
        return (
            f"{name} is idle{idle} with no wake waiter; it sees this at its next prompt or "
            "tool call"
        )
    return None
