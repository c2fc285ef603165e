"""Screens over the main view: help (``?``), and message lists (mentions, search results)
from which Enter jumps to the message in its room."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Static

from .timeline import Timeline

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ..shapes import JSONObject

HELP = [
    ("Keys anywhere", ""),
    ("Tab / Shift+Tab", "move between rooms, timeline and the compose box"),
    ("Ctrl+N", "jump to the next room with unread messages (urgent ones first)"),
    ("F1 or ?", "this help (? outside the compose box)"),
    ("Ctrl+R", "server down: try again now (instead of at the back-off's end)"),
    ("Ctrl+Q", "quit"),
    ("Outside the compose box", ""),
    ("n", "next unread room"),
    ("m", "mentions and urgent messages; Enter jumps to one"),
    ("a / c", "agents panel / claims panel (x releases your highlighted claim)"),
    ("p", "peek mode: read without marking anything read"),
    ("i or /", "write (/ starts a command)"),
    ("q", "quit"),
    ("In the timeline", ""),
    ("↑ ↓ PgUp PgDn", "move through messages"),
    ("Enter or t", "open the message's thread beside the timeline"),
    ("r", "reply in the message's thread"),
    ("In the compose box", ""),
    ("Enter", "send   (Ctrl+J or Alt+Enter: new line; at most 32 KiB of UTF-8)"),
    ("Tab", "complete @nick or #room"),
    ("Esc", "leave the box; cancel a reply"),
    ("Commands", ""),
    ("/ask QUESTION", "ask here and wait: the answer is shown when it comes"),
    ("/claim PATTERN... [--reason TEXT] [--ttl 2h] [--shared]", "claim files of the project"),
    ("/release PATTERN... | --all", "release your claims"),
    ("/search WORDS", "search your rooms; Enter jumps to the message"),
    ("/join #room", "join a room"),
    ("/peek", "toggle peek mode"),
    ("Room list", ""),
    ("#room 3!", "3 unread, ! something urgent (a mention, [ALERT], #alerts)"),
    ("@Nick ✉", "an invitation to a direct chat: opening it accepts"),
    ("Reading", ""),
    (
        "",
        "A message is marked read once it has been on screen, never before (like ac listen):\n"
        "opening a room shows its first unread message at the top. Element and the agents\n"
        "see the receipts. Peek mode (p) marks nothing.",
    ),
]


def help_text() -> Text:
    out = Text()
    for key, what in HELP:
        if not what:
            out.append(f"\n{key}\n", style="bold underline")
            continue
        if key:
            out.append(f"  {key:<22}", style="bold cyan")
            if len(key) > 22:  # a long command: its words under it
                out.append("\n" + " " * 24)
            out.append(f" {what}\n")
        else:
            out.append(f"{what}\n", style="italic")
    return out


class HelpScreen(ModalScreen[None]):
    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > Vertical { width: 90%; max-width: 100; height: 90%; border: thick $accent;
                            background: $surface; padding: 0 1; overflow-y: auto; }
    """
    BINDINGS = [("escape,q,question_mark,f1", "dismiss_help", "Close")]  # noqa: RUF012

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(Text("Agent Chat — keys (Esc closes)", style="bold"), markup=False)
            yield Static(help_text(), markup=False)

    def action_dismiss_help(self) -> None:
        self.dismiss(None)


class MessagesScreen(ModalScreen["JSONObject | None"]):
    """A list of messages from any room (mentions, search results); Enter picks one."""

    DEFAULT_CSS = """
    MessagesScreen { align: center middle; }
    MessagesScreen > Vertical { width: 95%; height: 90%; border: thick $accent;
                                background: $surface; }
    MessagesScreen .title { height: auto; padding: 0 1; background: $boost; }
    """
    BINDINGS = [("escape,q", "close", "Close")]  # noqa: RUF012

    def __init__(self, title: Text, messages: list[JSONObject], me: str, nick: str) -> None:
        super().__init__()
        self.title_text = title
        self.messages = messages
        self.me = me
        self.nick = nick

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(self.title_text, classes="title", markup=False)
            yield Timeline(id="found", room_labels=True)

    def on_mount(self) -> None:
        timeline = self.query_one(Timeline)
        timeline.show(self.messages, self.me, self.nick, 0 if self.messages else None)
        timeline.focus()

    def on_timeline_thread(self, event: Timeline.Thread) -> None:
        event.stop()
        self.dismiss(event.msg)

    def on_timeline_seen(self, event: Timeline.Seen) -> None:
        event.stop()  # a list of found messages marks nothing read

    def on_timeline_reply(self, event: Timeline.Reply) -> None:
        event.stop()

    def action_close(self) -> None:
        self.dismiss(None)


class SmallScreenNote(Static):
    """Shown instead of everything when the terminal is smaller than 80×24."""

    DEFAULT_CSS = """
    SmallScreenNote { width: 1fr; height: 1fr; content-align: center middle;
                      text-align: center; display: none; }
    """
