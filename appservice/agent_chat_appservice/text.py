"""What a message body means to the ledger: structured prefixes, urgency, mentions."""

from __future__ import annotations

import re

_PREFIX_RE = re.compile(r"^\s*\[(STATUS|DONE|BLOCKED|ALERT)\]", re.IGNORECASE)
_URGENT_RE = re.compile(r"\[ALERT\]|!urgent\b", re.IGNORECASE)
#: ``@Nick`` in a body; full Matrix ids (``@user:server``) are matched separately.
_NICK_MENTION_RE = re.compile(r"(?<![\w@])@([A-Za-z][A-Za-z0-9_-]{1,31})\b(?!:)")
_MXID_MENTION_RE = re.compile(r"(?<![\w@])(@[a-z0-9._=/+-]+:[A-Za-z0-9.-]+(?::\d+)?)")
URGENT_ROOMS = frozenset({"alerts"})


def detect_prefix(body: str) -> str | None:
    """The conventional prefix a message starts with (``[STATUS] ...`` → ``STATUS``)."""
    match = _PREFIX_RE.match(body)
    return match.group(1).upper() if match else None


def is_urgent(body: str, room_alias: str | None) -> bool:
    """Urgent for every reader: anything in #alerts, ``[ALERT]`` or ``!urgent`` anywhere."""
    return room_alias in URGENT_ROOMS or bool(_URGENT_RE.search(body))


def nick_mentions(body: str) -> list[str]:
    """``@Nick`` words in a body, in order, without duplicates."""
    return list(dict.fromkeys(_NICK_MENTION_RE.findall(body)))


def mxid_mentions(body: str) -> list[str]:
    return list(dict.fromkeys(_MXID_MENTION_RE.findall(body)))


def db_text(value: str | None, limit: int = 1024) -> str | None:
    """A string safe to store in any text column: no NUL, no lone surrogates, bounded."""
    if value is None:
        return None
    value = value.replace("\x00", "")[:limit]
    return value.encode("utf-8", "replace").decode("utf-8")


def could_ping_by_name(body: str, people: list[tuple[str, str | None]]) -> bool:
    """Whether Matrix's legacy body-based mention rules might fire for any of ``people`` (user
    id, display name) on an event without ``m.mentions``: a name or user localpart in the body
    (those rules match whole words, case-insensitively; a substring test is a safe superset),
    or ``@room``."""
    folded = body.casefold()
    if "@room" in folded:
        return True
    for user_id, name in people:
        localpart = user_id[1:].split(":", 1)[0].casefold()
        if (localpart and localpart in folded) or (name and name.casefold() in folded):
            return True
    return False
