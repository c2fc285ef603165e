"""What the TUI knows: rooms with their counts, each room's loaded messages, and what of them
has been on screen. Plain Python (no Textual): the rules live here, the widgets only show them.

The read rule is ``ac listen``'s: a message is marked read only once it was on screen, and the
marker never moves past one that was not (:meth:`RoomState.mark_plan`).
"""

from __future__ import annotations

import re

from .session import objects, text_of

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ..shapes import JSONObject

#: Messages kept per room (the oldest are dropped beyond it).
KEEP = 1000
#: Messages loaded when a room is opened (more when more are unread).
OPEN_LIMIT = 100


class Room:
    """A room or direct chat as the room list shows it."""

    __slots__ = ("count", "direct", "invited", "label", "room_id", "senders", "topic", "urgent")

    def __init__(self, room_id: str, label: str, direct: bool = False) -> None:
        self.room_id = room_id
        self.label = label
        self.direct = direct
        self.topic = ""
        self.invited = False
        self.count = 0
        self.urgent = False
        self.senders: list[str] = []

    @classmethod
    def from_channel(cls, entry: JSONObject) -> Room | None:
        room_id = entry.get("room_id")
        if not isinstance(room_id, str):
            return None
        label = text_of(entry.get("room")) or room_id
        room = cls(room_id, label, entry.get("direct") is True)
        room.topic = text_of(entry.get("topic"))
        room.invited = entry.get("invited") is True
        unread = entry.get("unread")
        if isinstance(unread, int) and not isinstance(unread, bool):
            room.count = max(0, unread)
        return room


def unread_by_room(answer: JSONObject) -> dict[str, JSONObject]:
    """A /notify (or /messages) answer's ``unread`` entries by room id."""
    found: dict[str, JSONObject] = {}
    for item in objects(answer.get("unread")):
        room_id = item.get("room_id")
        if isinstance(room_id, str):
            found[room_id] = item
    return found


class RoomState:
    """One room's loaded messages (contiguous, oldest first) and its read progress.

    ``unread``: ids of loaded messages from others the server still counts unread (as far as
    this client knows); ``seen``: the highest index such that every message from the first
    unread one to it has been on screen.
    """

    def __init__(self, room_id: str) -> None:
        self.room_id = room_id
        self.messages: list[JSONObject] = []
        self.ids: set[str] = set()
        self.unread: set[str] = set()
        self.loaded = False
        self.seen = -1
        #: Live messages that arrived before the room was loaded (merged on load).
        self.pending: list[JSONObject] = []

    def load(self, recent: list[JSONObject], unread: list[JSONObject]) -> None:
        """Set the loaded window: ``recent`` (which must contain every unread message that
        is loaded) plus what arrived live meanwhile."""
        self.messages, self.ids = [], set()
        for msg in [*recent, *self.pending]:
            self._add(msg)
        self.pending = []
        self.unread = {e for m in unread if isinstance(e := m.get("event_id"), str)} & self.ids
        self.loaded = True
        self.seen = self.first_unread() - 1

    def _add(self, msg: JSONObject) -> bool:
        event_id = msg.get("event_id")
        if not isinstance(event_id, str) or event_id in self.ids:
            return False
        self.ids.add(event_id)
        self.messages.append(msg)
        return True

    def append(self, msg: JSONObject, me: str) -> bool:
        """A live message; True when it was new here (a message from someone else is unread
        until it has been on screen)."""
        if not self.loaded:
            if len(self.pending) < KEEP:
                self.pending.append(msg)
            return False
        if not self._add(msg):
            return False
        if msg.get("sender") != me:
            self.unread.add(text_of(msg.get("event_id")))
        return True

    def trim(self) -> int:
        """Drop the oldest messages beyond :data:`KEEP` (never unread ones); how many."""
        extra = len(self.messages) - KEEP
        if extra <= 0 or self.first_unread() < extra:
            return 0
        for msg in self.messages[:extra]:
            self.ids.discard(text_of(msg.get("event_id")))
        del self.messages[:extra]
        self.seen -= extra
        return extra

    def first_unread(self) -> int:
        """The index of the first loaded message still unread (``len`` when none is)."""
        if not self.unread:
            return len(self.messages)
        for i, msg in enumerate(self.messages):
            if msg.get("event_id") in self.unread:
                return i
        return len(self.messages)

    def index_of(self, event_id: str) -> int | None:
        if event_id not in self.ids:
            return None
        for i, msg in enumerate(self.messages):
            if msg.get("event_id") == event_id:
                return i
        return None

    def saw(self, first: int, last: int) -> None:
        """Messages ``first``..``last`` (indexes) are on screen now."""
        start = self.first_unread()
        if first <= max(self.seen, start - 1) + 1:
            self.seen = max(self.seen, last)

    def mark_plan(self, me: str) -> tuple[str | None, int, int] | None:
        """What to mark read now: (anchor event or None, count, through index), or None.

        With an anchor (the message before the first unread one) the server is asked for
        exactly the messages after it up to the last one seen; without one (the unread begin
        at the first loaded message) for the first ``count`` unread messages from others.
        """
        start = self.first_unread()
        through = min(self.seen, len(self.messages) - 1)
        if start >= len(self.messages) or through < start:
            return None
        if start > 0:
            anchor = text_of(self.messages[start - 1].get("event_id")) or None
            if anchor is not None:
                return anchor, min(1000, through - start + 1), through
        count = sum(1 for m in self.messages[start : through + 1] if m.get("sender") != me)
        return (None, min(1000, count), through) if count else None

    def marked(self, through: int) -> None:
        """The server marked read everything up to ``through``."""
        for msg in self.messages[: through + 1]:
            self.unread.discard(text_of(msg.get("event_id")))


def mentions_me(msg: JSONObject, user_id: str, nick: str) -> bool:
    """Urgent (``[ALERT]``, ``!urgent``, ``#alerts``, an @room) or naming us (``@Nick`` or our
    user id). The API does not say whom a message mentioned, so the body is looked at."""
    if msg.get("sender") == user_id:
        return False
    if msg.get("urgent") is True:
        return True
    body = text_of(msg.get("body"))
    if user_id and user_id in body:
        return True
    if not nick:
        return False
    pattern = r"(?<![\w@])@" + re.escape(nick) + r"(?![\w-])"
    return re.search(pattern, body, re.IGNORECASE) is not None
