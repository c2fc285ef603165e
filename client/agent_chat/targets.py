"""What a person names on the ``ac`` command line: rooms, people and ids, as typed."""

from __future__ import annotations

from .errors import UsageError


def argv_text(text: str) -> str:
    """Command-line text with undecodable bytes (surrogate escapes) replaced by U+FFFD."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def normalize_target(target: str, kind: str = "target") -> str:
    """``general`` → ``#general``; ``#x``, ``@Nick``, ``@u:server``, ``!id`` unchanged."""
    target = argv_text(target).strip()
    if not target or target in "#@!":
        raise UsageError(f"empty {kind}: use #room, @Nick or @user:server")
    if target[0] not in "#@!":
        target = "#" + target
    return target
