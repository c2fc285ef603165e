"""Output formats: notify (json, oneline, words), listen lines and JSON lines.

Human output passes everything that came from someone else through :mod:`agent_chat.safe_text`;
JSON output keeps the raw text and escapes it (``ensure_ascii``: no raw control, C1 or bidi
character ever reaches a terminal, even from ``--json``).
"""

from __future__ import annotations

import json
import time

from .safe_text import one_line, record
from .untrusted import neutralise
from .wire import AGENT_LOCALPART_PREFIX, SERVICE_LOCALPART

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from .shapes import UnreadEntry

PREFIXES = ("STATUS", "DONE", "BLOCKED", "ALERT")

#: SGR colours for the recognised prefixes (only on a TTY, and only without NO_COLOR).
PREFIX_STYLE = {
    "STATUS": "\x1b[1;36m",
    "DONE": "\x1b[1;32m",
    "BLOCKED": "\x1b[1;33m",
    "ALERT": "\x1b[1;31m",
}
RESET = "\x1b[0m"
DIM = "\x1b[2m"
BOLD = "\x1b[1m"


def dumps(value: object) -> str:
    """Compact, ASCII-only JSON."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=True)


def seconds_text(value: float, places: int = 1) -> str:
    """``value`` seconds as the shortest decimal of at most ``places`` places, rounded up: a
    wait of 0.04 s is said (or asked for) as 0.1 s, never as a 0 that is not one."""
    scale = 10**places
    units = -int(-round(value * scale, 6) // 1)  # ceil; rounding first: 0.3 * 10 is not 3.0
    text = f"{units / scale:.{places}f}" if places else str(units)
    return text.rstrip("0").rstrip(".") if "." in text else text


def as_count(value: object) -> int:
    """A count from JSON: a number (or numeric string) of 0 or more, else 0."""
    if not isinstance(value, (int, float, str)):
        return 0
    try:
        return max(0, int(value))
    except (ValueError, OverflowError):  # "x", NaN, Infinity
        return 0


def unread_entries(answer: object) -> list[UnreadEntry]:
    """The ``unread`` list of a /notify answer as (room, count, urgent) with count > 0.

    Each room keeps a label of its own: rooms a server labels alike (one of an older version,
    or a proxy) are labelled by their room ids instead, so no output merges two rooms."""
    found: list[tuple[str, str | None, int, bool]] = []
    unread = answer.get("unread") if isinstance(answer, dict) else None
    if not isinstance(unread, list):
        return []
    for item in unread:
        if not isinstance(item, dict):
            continue
        room_id = item.get("room_id") if isinstance(item.get("room_id"), str) else None
        room = item.get("room") or room_id
        count = as_count(item.get("count"))
        if not isinstance(room, str) or count <= 0:
            continue
        found.append((room, room_id, count, item.get("urgent") is True))
    seen: dict[str, int] = {}
    for room, _, _, _ in found:
        key = label_text(room)
        seen[key] = seen.get(key, 0) + 1
    return [
        (room_id if seen[label_text(room)] > 1 and room_id else room, count, urgent)
        for room, room_id, count, urgent in found
    ]


#: What a room's label may hold where it is printed bare (``--oneline``: hooks, tmux): every
#: label the server makes fits (``#alias``, ``@nick``, ``@localpart``, ``!room:server``); any
#: other character becomes ``_``, so no tmux ``#()``, ``#{}`` or ``#[]`` can be formed.
_LABEL_SAFE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.:#@!+-")


def label_text(label: object) -> str:
    """A room label as ``--oneline`` prints it: the safe characters only (others as ``_``),
    at most 128 of them."""
    text = one_line(label) if isinstance(label, str) else ""
    return "".join(c if c in _LABEL_SAFE else "_" for c in text[:128])


def notify_json(entries: Iterable[UnreadEntry]) -> str:
    """``{"#general":{"count":2,"urgent":false},...}`` (``{}`` when nothing is unread)."""
    return dumps({room: {"count": count, "urgent": urgent} for room, count, urgent in entries})


def notify_oneline(entries: Iterable[UnreadEntry]) -> str:
    """``#general(2) #alerts(1!) @BlueLake(1)`` (empty when nothing is unread)."""
    return " ".join(
        f"{label_text(room)}({count}{'!' if urgent else ''})" for room, count, urgent in entries
    )


SERVICE_NAME = "Agent Chat"


def _localpart(user_id: str) -> str:
    return user_id[1:].split(":", 1)[0] if user_id.startswith("@") else ""


def _nick(user_id: str, name: object) -> str:
    """An agent's nick: the name the server gave, when it is one (letters, digits, ``_-``),
    else from its user id."""
    name = one_line(name) if isinstance(name, str) else None
    if (
        isinstance(name, str)
        and 2 <= len(name) <= 32
        and name.isascii()
        and name[0].isalpha()
        and all(c.isalnum() or c in "_-" for c in name)
    ):
        return name
    return _localpart(user_id)[len(AGENT_LOCALPART_PREFIX) :] or "?"


def sender_label(user_id: object, name: object) -> str:
    """Who wrote a message, for people to read (listen, search, who, notify, MCP tools, the
    TUI): the one function that decides it. The service (by its user id) is ``Agent Chat``; an
    agent or bot is its nick; a human is their display name followed by their user id
    (``Alice (@alice:example.org)``), so no display name can pass as an agent or the service.
    """
    uid = one_line(user_id)[:256] if isinstance(user_id, str) else ""
    localpart = _localpart(uid)
    if localpart == SERVICE_LOCALPART:
        return SERVICE_NAME
    if localpart.startswith(AGENT_LOCALPART_PREFIX):
        return _nick(uid, name)
    shown = neutralise(" ".join(one_line(name).split()))[:64] if isinstance(name, str) else ""
    if not uid:
        return f"{shown} (unknown sender)" if shown else "?"
    if not shown or shown == localpart:
        return uid
    return f"{shown} ({uid})"


def sender_handle(user_id: object, name: object) -> str:
    """Who wrote a message, where an agent reads it outside the untrusted block (channel
    notifications): a nick for an agent, ``localpart (human)`` for a person; never a display
    name, which is others' free text."""
    uid = user_id if isinstance(user_id, str) else ""
    localpart = _localpart(uid)
    if localpart == SERVICE_LOCALPART:
        return SERVICE_NAME
    if localpart.startswith(AGENT_LOCALPART_PREFIX):
        return _nick(uid, name)
    return label_text(localpart)[:64] + " (human)" if localpart else "? (unknown sender)"


def still_unread(entries: Iterable[UnreadEntry], room: str | None = None) -> str:
    """``(4 unread in #status, urgent: ac listen '#status' --unread)``: what a read left
    unread (``--last N`` never marks read what it did not show)."""
    parts = [
        f"{count} unread in {one_line(name)}{', urgent' if urgent else ''}"
        for name, count, urgent in entries
    ]
    target = f" '{one_line(room)}'" if room else ""
    return f"({'; '.join(parts)}: ac listen{target} --unread)"


def notify_lines(entries: Iterable[UnreadEntry]) -> list[str]:
    """``#general: 2 new messages``, ``#alerts: 1 new message (URGENT)``,
    ``@BlueLake: 1 direct message``."""
    lines = []
    for room, count, urgent in entries:
        if room.startswith("@"):
            what = "direct message" if count == 1 else "direct messages"
        else:
            what = "new message" if count == 1 else "new messages"
        lines.append(f"{one_line(room)}: {count} {what}{' (URGENT)' if urgent else ''}")
    return lines


def clock(ts_ms: object, now: float | None = None) -> str:
    """``14:32`` for today, ``2024-01-15 14:32`` otherwise (local time); ``--:--`` when
    ``ts_ms`` (milliseconds since the epoch) is not a usable time."""
    if not isinstance(ts_ms, (int, float, str)):
        return "--:--"
    try:
        t = time.localtime(int(ts_ms) / 1000.0)
    except (ValueError, OverflowError, OSError):
        return "--:--"
    today = time.localtime(now)
    if (t.tm_year, t.tm_yday) == (today.tm_year, today.tm_yday):
        return time.strftime("%H:%M", t)
    return time.strftime("%Y-%m-%d %H:%M", t)


def message_line(msg: Mapping[str, object], color: bool = False) -> str:
    """One record for a message: ``14:32 #general BlueLake: [STATUS] body``.

    Continuation lines of the body are indented by four spaces.
    """
    room = neutralise(one_line(msg.get("room") or msg.get("room_id") or "?"))
    name = sender_label(msg.get("sender"), msg.get("sender_name"))
    body = neutralise(record(msg.get("body") or ""))
    prefix = msg.get("prefix")
    if isinstance(prefix, str) and prefix in PREFIX_STYLE:
        tag = f"[{prefix}]"
        stripped = body.lstrip()
        if stripped[: len(tag)].upper() == tag:
            body = stripped[len(tag) :]
        elif body:
            body = " " + body
        body = PREFIX_STYLE[prefix] + tag + RESET + body if color else tag + body
    if msg.get("thread_id"):  # a reply in a thread (the root itself has no thread_id)
        room += " ↳"
    if color:
        return "{}{}{} {} {}{}{}: {}".format(
            DIM, clock(msg.get("ts")), RESET, room, BOLD, name, RESET, body
        )
    return "{} {} {}: {}".format(clock(msg.get("ts")), room, name, body)


MESSAGE_FIELDS = (
    "event_id",
    "room_id",
    "room",
    "sender",
    "sender_name",
    "ts",
    "body",
    "msgtype",
    "prefix",
    "urgent",
    "thread_id",
    "in_reply_to",
)


def message_json(msg: Mapping[str, object]) -> str:
    """One JSON line: the server's fields, raw text, ``prefix`` always present."""
    out: dict[str, object] = {key: msg.get(key) for key in MESSAGE_FIELDS}
    if out["urgent"] is None:
        out["urgent"] = False
    for key, value in msg.items():
        if key not in out:
            out[key] = value
    return dumps(out)


def ago(ts_ms: object, now: float | None = None) -> str:
    """``just now``, ``5m ago``, ``3h ago``, ``2d ago`` (or ``never``)."""
    if not isinstance(ts_ms, (int, float)) or isinstance(ts_ms, bool):
        return "never"
    seconds = max(0, (time.time() if now is None else now) - ts_ms / 1000.0)
    if seconds < 60:
        return "just now"
    if seconds < 3600:
        return f"{int(seconds // 60)}m ago"
    if seconds < 86400:
        return f"{int(seconds // 3600)}h ago"
    return f"{int(seconds // 86400)}d ago"
