"""The status bar: the server, the connection, who we are, peek mode, and the last note."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from ..safe_text import one_line


class StatusBar(Static):
    DEFAULT_CSS = """
    StatusBar { height: 1; background: $panel; color: $text; padding: 0 1; }
    """

    def __init__(self, server: str, who: str, id: str | None = None) -> None:
        super().__init__(id=id, markup=False)
        self.server = server
        self.who = who
        self.state = "connecting"
        self.detail = "connecting…"
        self.peek = False
        self.note = ""
        self.unread = 0
        self._shown: Text | None = None

    def set_state(self, state: str, detail: str) -> None:
        if (state, detail) != (self.state, self.detail):
            self.state, self.detail = state, detail
            self.redraw()

    def set_note(self, note: str) -> None:
        self.note = note
        self.redraw()

    def redraw(self) -> None:
        style = {"up": "bold green", "down": "bold red", "auth": "bold red"}.get(
            self.state, "bold yellow"
        )
        dot = "●" if self.state == "up" else "○"
        out = Text(f"{dot} ", style=style)
        out.append(one_line(self.detail), style=style)
        out.append(f"  {self.server}", style="dim")
        out.append("  as ", style="dim")
        out.append(one_line(self.who), style="bold")
        if self.peek:
            out.append("  PEEK (nothing marked read)", style="bold reverse yellow")
        if self.unread:
            out.append(f"  {self.unread} unread", style="bold")
        if self.note:
            out.append("  · ")
            out.append(one_line(self.note))
        if out != self._shown:
            self._shown = out
            # One line whatever it says: no layout of the whole screen for a new word here
            # (a layout costs a frame of several milliseconds, e.g. when a message arrives).
            self.update(out, layout=False)
