"""The side panels: agents (who, kind, last active), claims (release your own), a thread."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import OptionList, Static
from textual.widgets.option_list import Option

from . import text
from .session import text_of
from .timeline import Timeline

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ..shapes import JSONObject


class Panel(Vertical):
    DEFAULT_CSS = """
    Panel { width: 40%; max-width: 60; border-left: vkey $primary 50%; height: 1fr; }
    Panel > .title { height: auto; background: $boost; padding: 0 1; }
    Panel OptionList { height: 1fr; border: none; }
    """

    def __init__(self, title: str, id: str | None = None) -> None:
        super().__init__(id=id)
        self.title_text = title

    def compose(self) -> ComposeResult:
        yield Static(Text(self.title_text, style="bold"), classes="title", markup=False)

    def set_title(self, title: Text) -> None:
        self.query_one(".title", Static).update(title)


#: Presence states, liveliest first (the panel's order within agents).
STATE_ORDER = {"working": 0, "idle · wakeable": 1, "idle · deaf": 2, "gone": 3}


class AgentsPanel(Panel):
    """Everyone in the rooms we are in: agents first, liveliest first (their presence: each
    session's state, CLI and since when), then by last activity."""

    def __init__(self, title: str, id: str | None = None) -> None:
        super().__init__(title, id=id)
        self.members: list[tuple[JSONObject, int]] = []
        self.me = ""

    def compose(self) -> ComposeResult:
        yield from super().compose()
        yield OptionList(id="agents-list", markup=False)

    def agents(self) -> list[str]:
        """The user ids of the agents (and bots) listed: whose presence to refresh."""
        return [
            text_of(m.get("user_id"))
            for m, _ in self.members
            if m.get("kind") in ("agent", "bot") and text_of(m.get("user_id"))
        ]

    def show(self, members: list[tuple[JSONObject, int]], me: str) -> None:
        def order(item: tuple[JSONObject, int]) -> tuple[int, int, int]:
            m = item[0]
            active = m.get("last_active")
            when = active if isinstance(active, int) and not isinstance(active, bool) else 0
            agent = m.get("kind") in ("agent", "bot")
            state = STATE_ORDER.get(text.presence_state(m), 4) if agent else 4
            return (0 if agent else 1, state, -when)

        self.members, self.me = sorted(members, key=order), me
        options = [Option(text.member_line(m, me, rooms)) for m, rooms in self.members]
        listing = self.query_one(OptionList)
        keep = listing.highlighted
        listing.clear_options()
        listing.add_options(options or [Option(Text("(nobody)", style="dim"), disabled=True)])
        if keep is not None and options:
            listing.highlighted = min(keep, len(options) - 1)
        agents = sum(1 for m, _ in members if m.get("kind") == "agent")
        working = sum(1 for m, _ in members if text.presence_state(m) == "working")
        title = Text(f"Agents: {agents} ({working} working), people: {len(members) - agents}")
        title.append("  (a: close)", style="dim")
        self.set_title(title)

    def update_presence(self, identities: list[JSONObject]) -> bool:
        """New presence from ``GET /presence``; redrawn (True) only if something changed."""
        found = {text_of(i.get("user_id")): i for i in identities}
        changed = False
        for m, _ in self.members:
            got = found.get(text_of(m.get("user_id")))
            if got is None:
                continue
            presence = {k: got.get(k) for k in ("state", "status", "sessions")}
            if m.get("presence") != presence:
                m["presence"] = presence
                changed = True
        if changed:
            self.show(self.members, self.me)
        return changed


class ClaimsPanel(Panel):
    """The project's active claims; ``x`` releases the highlighted one if it is yours."""

    BINDINGS = [("x,delete", "release", "Release")]  # noqa: RUF012

    class Release(Message):
        def __init__(self, claim: JSONObject) -> None:
            super().__init__()
            self.claim = claim

    def __init__(self, title: str, id: str | None = None) -> None:
        super().__init__(title, id=id)
        self.claims: list[JSONObject] = []
        self.me = ""

    def compose(self) -> ComposeResult:
        yield from super().compose()
        yield OptionList(id="claims-list", markup=False)

    def show(self, project: str, claims: list[JSONObject], me: str) -> None:
        self.claims, self.me = claims, me
        listing = self.query_one(OptionList)
        listing.clear_options()
        if claims:
            listing.add_options([Option(text.claim_line(c, me)) for c in claims])
        else:
            listing.add_option(Option(Text("(no active claims)", style="dim"), disabled=True))
        title = Text("Claims in ", style="bold")
        title.append(text.plain(project))
        title.append("  (x: release yours, c: close)", style="dim")
        self.set_title(title)

    def action_release(self) -> None:
        i = self.query_one(OptionList).highlighted
        if i is not None and 0 <= i < len(self.claims):
            self.post_message(self.Release(self.claims[i]))


class ThreadPanel(Panel):
    """A thread beside the timeline: its root and replies; replies go into it."""

    def __init__(self, title: str, id: str | None = None) -> None:
        super().__init__(title, id=id)
        self.root: str | None = None
        self.room_id: str | None = None

    def compose(self) -> ComposeResult:
        yield from super().compose()
        yield Timeline(id="thread-timeline")

    def show(
        self, root: str, room_id: str, messages: list[JSONObject], me: str, nick: str
    ) -> None:
        self.root, self.room_id = root, room_id
        title = Text("Thread", style="bold")
        title.append(f"  {len(messages) - 1 if messages else 0} replies (r: reply, Esc: close)")
        self.set_title(title)
        self.query_one(Timeline).show(messages, me, nick, None)

    def add(self, msg: JSONObject) -> None:
        self.query_one(Timeline).add([msg])
