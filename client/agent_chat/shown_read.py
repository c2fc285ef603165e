"""Bodies shown to the reader outside ``ac listen`` (an ``ac ask`` answer, ``ac search`` hits)
move its read marker, and with it the ``read`` stage their senders see.

The marker is a high-water position per room: it moves over the oldest unread messages that
were shown, and stops at the first unread one that was not (the server never moves it past a
message it did not return). A hit deep in a room's unread history therefore marks nothing.
"""

from __future__ import annotations

from .errors import ApiError, NetworkError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable

    from .api import Client
    from .shapes import JSONObject


def mark_shown_read(client: Client, shown: Iterable[JSONObject]) -> None:
    """Per room, mark read the leading unread messages that are among ``shown``."""
    by_room: dict[str, set[str]] = {}
    for msg in shown:
        room_id, event_id = msg.get("room_id"), msg.get("event_id")
        if isinstance(room_id, str) and isinstance(event_id, str):
            by_room.setdefault(room_id, set()).add(event_id)
    for room_id, ids in by_room.items():
        query: dict[str, object] = {"room": room_id, "unread": True, "limit": len(ids)}
        try:
            first = client.call("GET", "/messages", query={**query, "mark_read": False})
            unread = first.get("messages")
            leading = 0
            for msg in unread if isinstance(unread, list) else []:
                if not isinstance(msg, dict) or msg.get("event_id") not in ids:
                    break
                leading += 1
            if leading:
                client.call("GET", "/messages", query={**query, "limit": leading})
        except (ApiError, NetworkError):
            continue  # the bodies were shown; their read mark is a courtesy to the sender
