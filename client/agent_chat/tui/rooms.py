"""The room list: rooms, then direct chats, each with its unread count (``!`` when
something urgent is unread). Enter (or a click) opens one."""

from __future__ import annotations

from rich.text import Text
from textual.message import Message
from textual.widgets import OptionList
from textual.widgets.option_list import Option, OptionDoesNotExist

from . import text

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .model import Room


class RoomList(OptionList):
    DEFAULT_CSS = """
    RoomList, RoomList:focus { width: 24; height: 1fr; border: none;
                               border-right: vkey $primary 50%; }
    RoomList:focus { background-tint: $foreground 4%; }
    """

    class Chosen(Message):
        def __init__(self, room_id: str) -> None:
            super().__init__()
            self.room_id = room_id

    def __init__(self, id: str | None = None) -> None:
        super().__init__(id=id, markup=False)
        self.order: list[str] = []

    def set_rooms(self, rooms: list[Room], current: str | None) -> None:
        """Rooms first, then direct chats, each alphabetically."""
        chats = sorted((r for r in rooms if not r.direct), key=lambda r: r.label.lower())
        dms = sorted((r for r in rooms if r.direct), key=lambda r: r.label.lower())
        options: list[Option] = []
        self.order = []
        for title, group in (("Rooms", chats), ("Direct", dms)):
            if not group:
                continue
            options.append(Option(Text(title, style="dim italic"), disabled=True))
            for r in group:
                options.append(Option(self.prompt(r), id=r.room_id))
                self.order.append(r.room_id)
        self.clear_options()
        self.add_options(options)
        if current is not None:
            self.point_at(current)

    @staticmethod
    def prompt(room: Room) -> Text:
        return text.room_entry(room.label, room.count, room.urgent, room.invited)

    def update_room(self, room: Room) -> None:
        try:
            self.replace_option_prompt(room.room_id, self.prompt(room))
        except OptionDoesNotExist:
            pass

    def point_at(self, room_id: str) -> None:
        try:
            self.highlighted = self.get_option_index(room_id)
        except OptionDoesNotExist:
            pass

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        if event.option.id is not None:
            self.post_message(self.Chosen(event.option.id))
