"""How a room is labelled for one viewer, everywhere (notify, listen, who, channels, search,
the hook line): a label only the room itself can produce, never two rooms alike.

- ``#alias``: a shared room, by its alias here (aliases are unique, and only the room's
  canonical alias sets one; its name, which any member may set to ``#status``, never counts);
- ``@person``: the viewer's direct chat with that person (:meth:`names.People.label`: a nick, a
  localpart or a whole user id, never a display name), only for the one direct chat of the
  pair; another room flagged direct with the same person is labelled by its id;
- ``!room:server``: anything else, by its room id.

``oneline`` is the one-line form for shell hooks and status bars: only characters that mean
nothing to a shell or tmux (``#()``, ``#{}``, ``#[]`` cannot be formed), and still one label per
room.
"""

from __future__ import annotations

from typing import Any

from .db import DirectChat
from .names import People


async def room_label(
    people: People,
    viewer: str,
    room_id: str,
    alias: str | None,
    is_direct: bool,
    other: str | None,
) -> str:
    """The label of ``room_id`` for ``viewer`` (see the module's docstring). ``other``: the
    other party, for a direct chat."""
    if is_direct:
        if other is not None and await DirectChat.get(viewer, other) == room_id:
            return "@" + await people.label(other)
        return room_id
    if alias:
        return "#" + alias
    return room_id


#: The characters a label keeps in ``oneline`` (others become ``_``).
SAFE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.:#@!+-")
#: The longest label ``oneline`` prints; a longer one that would then equal another's falls
#: back to its room id.
ONELINE_LABEL = 64


def _safe(text: str, limit: int) -> str:
    return "".join(c if c in SAFE else "_" for c in text[:limit])


def oneline(entries: list[dict[str, Any]]) -> str:
    """``#general(2) #alerts(1!) @BlueLake(1)``: for shell hooks and tmux, which should not
    parse JSON. Each label is reduced to :data:`SAFE` and :data:`ONELINE_LABEL` characters;
    one that then equals an earlier one is printed as its room id."""
    parts, used = [], set()
    for e in entries:
        label = _safe(e["room"], ONELINE_LABEL)
        if label in used:
            label = _safe(e["room_id"], 255)
        used.add(label)
        parts.append(f"{label}({e['count']}{'!' if e['urgent'] else ''})")
    return " ".join(parts)
