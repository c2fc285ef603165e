"""The timeline: one room's messages, one option per message (a virtual list: only the
lines on screen are drawn), and which of them are on screen, for the read rule."""

from __future__ import annotations

from contextlib import contextmanager

from rich.text import Text
from textual.message import Message
from textual.widgets import OptionList
from textual.widgets.option_list import Option

from . import text

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator
    from typing import Self

    from textual.geometry import Region
    from textual.strip import Strip

    from ..shapes import JSONObject


class Timeline(OptionList):
    """Messages of the open room. Enter opens the highlighted message's thread."""

    DEFAULT_CSS = """
    Timeline, Timeline:focus { border: none; height: 1fr; }
    Timeline:focus { background-tint: $foreground 4%; }
    Timeline > .option-list--option { padding: 0 1; }
    """

    #: True while new lines are measured (see :meth:`_update_lines`).
    _lines_only = False

    BINDINGS = [  # noqa: RUF012 (Textual's declaration style)
        ("t", "thread", "Thread"),
        ("r", "reply", "Reply"),
    ]

    class Seen(Message):
        """Messages ``first``..``last`` (indexes) are on screen."""

        def __init__(self, timeline: Timeline, first: int, last: int) -> None:
            super().__init__()
            self.timeline = timeline
            self.first = first
            self.last = last

        @property
        def control(self) -> Timeline:
            return self.timeline

    class Thread(Message):
        def __init__(self, msg: JSONObject) -> None:
            super().__init__()
            self.msg = msg

    class Reply(Message):
        def __init__(self, msg: JSONObject) -> None:
            super().__init__()
            self.msg = msg

    def __init__(self, id: str | None = None, room_labels: bool = False) -> None:
        super().__init__(id=id, markup=False)
        self.messages: list[JSONObject] = []
        self.me = ""
        self.nick = ""
        self.room_labels = room_labels
        self._report_pending = False
        self._last_report: tuple[int, int] | None = None
        #: Our own messages' stages as shown after them (event id → ``✓ shown 2 · read 1``).
        self.stages: dict[str, Text] = {}
        #: Messages whose lines were drawn in a frame lately (event ids, the newest last), and
        #: how many times lines were drawn: what was put on screen, not only asked to be.
        self.drawn: dict[str, None] = {}
        self.draws = 0

    # --- redrawing without a layout ---------------------------------------------------------

    def _update_lines(self) -> None:
        """New lines make the list longer, which Textual answers with a layout of the whole
        screen (every widget re-rendered: the most of a frame when a message arrives). The
        timeline's size on screen never depends on its content (``height: 1fr``), so only
        its scrollbar is redrawn, and a layout is asked only when the scrollbar appears or
        goes."""
        bar = self.show_vertical_scrollbar
        self._lines_only = True
        try:
            super()._update_lines()
        finally:
            self._lines_only = False
        if self.show_vertical_scrollbar != bar:
            self.refresh(layout=True)

    def refresh(
        self,
        *regions: Region,
        repaint: bool = True,
        layout: bool = False,
        recompose: bool = False,
    ) -> Self:
        if self._lines_only:
            layout = False
        return super().refresh(*regions, repaint=repaint, layout=layout, recompose=recompose)

    # --- content ---------------------------------------------------------------------------

    def _option(self, msg: JSONObject) -> Option:
        line = text.message(msg, self.me, self.nick, room=self.room_labels)
        event_id = msg.get("event_id")
        mine = msg.get("sender") == self.me and isinstance(event_id, str)
        got = self.stages.get(event_id) if mine and isinstance(event_id, str) else None
        if got is not None:
            line.append("  ")
            line.append_text(got)
        return Option(line)

    def set_stages(self, event_id: str, stages: Text) -> None:
        """Show ``stages`` after our message ``event_id`` (redrawn only if it changed)."""
        if self.stages.get(event_id) == stages:
            return
        self.stages[event_id] = stages
        if len(self.stages) > 500:
            for key in list(self.stages)[:250]:
                del self.stages[key]
        for i in range(len(self.messages) - 1, -1, -1):
            if self.messages[i].get("event_id") == event_id:
                self.replace_option_prompt_at_index(i, self._option(self.messages[i]).prompt)
                return

    def own_in_view(self, limit: int) -> list[str]:
        """Our own messages on screen now (the newest ``limit``; without a layout yet, among
        the last screenful)."""
        span = self.on_screen()
        first, last = span if span else (max(0, len(self.messages) - 30), len(self.messages) - 1)
        found: list[str] = []
        for msg in reversed(self.messages[first : last + 1]):
            event_id = msg.get("event_id")
            if msg.get("sender") == self.me and isinstance(event_id, str):
                found.append(event_id)
                if len(found) >= limit:
                    break
        return found

    def show(self, messages: list[JSONObject], me: str, nick: str, start: int | None) -> None:
        """Show ``messages``; scroll so that index ``start`` (the first unread) is on top,
        or to the end."""
        self.me, self.nick = me, nick
        self.messages = list(messages)
        self.clear_options()
        self.add_options([self._option(m) for m in self.messages])
        self._last_report = None
        if not self.messages:
            return
        if start is not None and start < len(self.messages):
            self.highlighted = start
            self.call_after_refresh(self._scroll_top, start)
        else:
            self.highlighted = len(self.messages) - 1
            self.call_after_refresh(self._to_end)

    def _scroll_top(self, index: int) -> None:
        if self.highlighted == index:
            self.scroll_to_highlight(top=True)
        self.report()

    def _to_end(self) -> None:
        self.scroll_end(animate=False, immediate=True)
        self.report()

    def add(self, messages: list[JSONObject]) -> None:
        """Append live messages; follow them when the view was at the end."""
        if not messages:
            return
        following = self.is_vertical_scroll_end or self.highlighted in (
            None,
            len(self.messages) - 1,
        )
        with self._scrollbar_next_frame():
            self.messages.extend(messages)
            self.add_options([self._option(m) for m in messages])
            if following:  # the highlight's move scrolls to it at once
                self.highlighted = len(self.messages) - 1
        self.after_drawn(self.report)
        self._draw_soon()

    def _draw_soon(self) -> None:
        """Tell the screen now that this list needs drawing: what Textual does when this
        widget's queue next runs empty, a hop later (the screen may go idle meanwhile and draw
        a frame later)."""
        if self.is_mounted and self.display:
            self._check_refresh()

    @contextmanager
    def _scrollbar_next_frame(self) -> Iterator[None]:
        """The scrollbar's redraws asked meanwhile wait for the frame after the one that draws
        the new lines: a new message moves its thumb, and Textual renders the bar whole (a line
        per row: 1-3 ms of the frame that shows the message); a thumb a frame late is not seen."""
        bar = self._vertical_scrollbar
        if bar is None:
            yield
            return
        asked: list[bool] = []

        def hold(*regions: Region, **kwargs: bool) -> object:
            asked.append(True)
            return bar

        setattr(bar, "refresh", hold)  # noqa: B010 (an instance's method, for a moment)
        try:
            yield
        finally:
            delattr(bar, "refresh")
            if asked:
                self.after_drawn(bar.refresh)

    def after_drawn(
        self, callback: Callable[[], object], ids: Iterable[str] = (), tries: int = 8
    ) -> None:
        """``callback`` after the next frame that draws lines of this list (and the messages
        ``ids``). Textual's "after refresh" alone can come before it: a widget's redraw
        reaches the screen as a message of its own, which may arrive after the screen ran its
        callbacks. After ``tries`` frames without, ``callback`` runs anyway."""
        draws, wanted = self.draws, list(ids)

        def check(left: int) -> None:
            drawn = self.draws != draws and all(i in self.drawn for i in wanted)
            if not drawn and left > 0:
                self.call_after_refresh(check, left - 1)
            else:
                callback()

        self.call_after_refresh(check, tries)

    def render_line(self, y: int) -> Strip:
        """A line of a frame being drawn; remembers whose line it is (:meth:`after_drawn`)."""
        strip = super().render_line(y)
        self.draws += 1
        lines = self._line_cache.lines  # (brought up to date by the line's render)
        line = self.scroll_offset.y + y
        if 0 <= line < len(lines) and lines[line][0] < len(self.messages):
            event_id = self.messages[lines[line][0]].get("event_id")
            if isinstance(event_id, str) and event_id not in self.drawn:
                self.drawn[event_id] = None
                if len(self.drawn) > 400:
                    for key in list(self.drawn)[:200]:
                        del self.drawn[key]
        return strip

    def drop_oldest(self, n: int) -> None:
        """The model dropped ``n`` old messages: show the rest (keeps the highlight's message)."""
        if n <= 0:
            return
        keep = self.highlighted
        self.messages = self.messages[n:]
        self.clear_options()
        self.add_options([self._option(m) for m in self.messages])
        if keep is not None:
            self.highlighted = max(0, keep - n)

    def jump(self, index: int) -> None:
        if 0 <= index < len(self.messages):
            self.highlighted = index
            self.scroll_to_highlight(top=True)

    def selected(self) -> JSONObject | None:
        i = self.highlighted
        return self.messages[i] if i is not None and 0 <= i < len(self.messages) else None

    # --- what is on screen -----------------------------------------------------------------

    def on_screen(self) -> tuple[int, int] | None:
        """(first, last): the messages whose last line is on screen now (a message is on
        screen once all of it has been)."""
        if not self.messages or not self.is_mounted or not self.display:
            return None
        height = self.scrollable_content_region.height
        if height <= 0:
            return None
        lines = self._lines  # (option index, line within it) per line of the list
        top = self.scroll_offset.y
        shown = lines[top : top + height]
        if not shown:
            return None
        first = shown[0][0]
        if shown[0][1] != 0:  # its first line is above the top: seen before, or not at all
            first += 1
        last = shown[-1][0]
        ends_here = top + height >= len(lines) or lines[top + height][0] != last
        if not ends_here:
            last -= 1
        return (first, last) if first <= last else None

    def watch_scroll_y(self, old_value: float, new_value: float) -> None:
        super().watch_scroll_y(old_value, new_value)
        if not self._report_pending:
            self._report_pending = True
            self.set_timer(0.15, self.report)

    def on_resize(self) -> None:
        self.call_after_refresh(self.report)

    def report(self) -> None:
        """Post :class:`Seen` for what is on screen (once per change)."""
        self._report_pending = False
        span = self.on_screen()
        if span is not None and span != self._last_report:
            self._last_report = span
            self.post_message(self.Seen(self, *span))

    # --- keys ------------------------------------------------------------------------------

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        msg = self.selected()
        if msg is not None:
            self.post_message(self.Thread(msg))

    def action_thread(self) -> None:
        msg = self.selected()
        if msg is not None:
            self.post_message(self.Thread(msg))

    def action_reply(self) -> None:
        msg = self.selected()
        if msg is not None:
            self.post_message(self.Reply(msg))
