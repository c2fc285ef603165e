"""``ac tui``: rooms, the timeline, the compose box, and side panels, live over the API.

Every API call is blocking (the ``ac`` client's own HTTP) and runs on a daemon thread
(:meth:`AgentChatApp.call`); the long-poll has its own (:mod:`.live`). Everything shown that
came from someone else is a Rich ``Text`` built by :mod:`.text`: never markup.
"""

from __future__ import annotations

import asyncio
import threading
import time

from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widget import Widget
from textual.widgets import Footer, OptionList, Static, TextArea

from ..errors import AcError, ClaimConflict
from ..safe_text import one_line
from . import slash, text
from .composer import Composer
from .live import Poller
from .model import OPEN_LIMIT, Room, RoomState, mentions_me, unread_by_room
from .panels import AgentsPanel, ClaimsPanel, ThreadPanel
from .rooms import RoomList
from .screens import HelpScreen, MessagesScreen, SmallScreenNote
from .session import MAX_BODY, objects, sender_kind, text_of
from .statusbar import StatusBar
from .timeline import Timeline

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import TypeVar

    from textual import events
    from textual.timer import Timer

    from ..shapes import JSONObject
    from .session import Session

    T = TypeVar("T")

MIN_WIDTH, MIN_HEIGHT = 80, 24
#: Mentions kept for the mentions view.
MENTIONS_KEPT = 500
#: Rooms asked for their members when the agents panel opens.
WHO_ROOMS = 40
#: Seconds between presence refreshes while the agents panel is open (it is also refreshed
#: when the long-poll wakes); never more often than PRESENCE_MIN.
PRESENCE_EVERY, PRESENCE_MIN = 10.0, 1.0
#: Our own messages on screen whose stages are shown (the newest ones).
RECEIPTS_SHOWN = 5
#: Seconds one held ``GET /receipts?wait=`` lasts (for the newest of our messages on screen).
RECEIPTS_HOLD = 60.0


class AgentChatApp(App[int]):
    """The terminal client. ``peek``: never mark anything read; ``project``: the claims
    panel's project (default: the git repository of the working directory)."""

    TITLE = "Agent Chat"
    CSS = """
    #main { height: 1fr; }
    #body { height: 1fr; }
    #center { width: 1fr; height: 1fr; }
    #topic { height: 1; padding: 0 1; background: $boost; }
    #reply-note { height: auto; padding: 0 1; color: $warning; display: none; }
    .hidden { display: none; }
    """
    BINDINGS = [  # noqa: RUF012 (Textual's declaration style)
        Binding("ctrl+q", "quit", "Quit", priority=True),
        Binding("ctrl+n", "next_unread", "Next unread", priority=True),
        Binding("f1", "help", "Help"),
        Binding("ctrl+r", "retry", "Retry", show=False),
        # Letters are priority bindings (handled before the next key is passed on, so keys
        # typed fast after `i` land in the compose box), off while typing (check_action).
        Binding("question_mark", "key('help')", "Help", show=False, priority=True),
        Binding("n", "key('next_unread')", "Next unread", show=False, priority=True),
        Binding("m", "key('mentions')", "Mentions", priority=True),
        Binding("a", "key('agents')", "Agents", priority=True),
        Binding("c", "key('claims')", "Claims", priority=True),
        Binding("p", "key('peek')", "Peek", priority=True),
        Binding("i", "key('write')", "Write", priority=True),
        Binding("slash", "key('command')", "Command", show=False, priority=True),
        Binding("q", "key('quit')", "Quit", show=False, priority=True),
        Binding("escape", "close_side", "Close", show=False),
    ]

    def __init__(self, session: Session, peek: bool = False, project: str | None = None) -> None:
        super().__init__()
        self.session = session
        self.peek = peek
        self.project = project
        self.rooms: dict[str, Room] = {}
        self.states: dict[str, RoomState] = {}
        self.current: str | None = None
        self.mentions: list[JSONObject] = []
        self.names: set[str] = set()
        self.reply_to: JSONObject | None = None
        self.side: str | None = None
        self.connected = False
        self.ready = asyncio.Event()
        self._marking: set[str] = set()
        self._remark: set[str] = set()
        self.poller: Poller | None = None
        self._rooms_task: asyncio.Future[None] | None = None
        self._presence_timer: Timer | None = None
        self._unread_answer: JSONObject | None = None
        self._presence_at = 0.0
        self._presence_busy = False
        #: Receipts of our own messages on screen (event id → the ``/receipts`` answer).
        self.receipts: dict[str, JSONObject] = {}
        self._receipts_busy = False
        self._receipts_again = False
        self._receipts_failed: set[str] = set()
        self._watching: str | None = None
        self._watch_task: asyncio.Task[None] | None = None
        #: Seconds (monotonic) when each message id was first put on screen (the bench).
        self.shown_at: dict[str, float] = {}
        #: When the last live messages were put in the timeline (monotonic; the bench).
        self.added_at = 0.0
        #: When start-up steps ended (monotonic seconds; the bench reports them).
        self.marks: dict[str, float] = {}

    # --- layout ----------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        who = f"{self.session.nick or '?'} ({self.session.kind or 'identity'})"
        with Vertical(id="main"):
            with Horizontal(id="body"):
                yield RoomList(id="rooms")
                with Vertical(id="center"):
                    yield Static(Text("connecting…", style="dim"), id="topic", markup=False)
                    yield Timeline(id="timeline")
                    yield Static(id="reply-note", markup=False)
                    yield Composer(self.candidates, id="composer")
                yield AgentsPanel("Agents", id="agents-panel")
                yield ClaimsPanel("Claims", id="claims-panel")
                yield ThreadPanel("Thread", id="thread-panel")
            yield StatusBar(self.session.server_url, who, id="status")
            yield Footer()
        yield SmallScreenNote(id="small", markup=False)

    def on_unmount(self) -> None:
        if self.poller is not None:
            self.poller.stop()

    def mark_time(self, step: str) -> None:
        self.marks.setdefault(step, time.monotonic())

    def on_mount(self) -> None:
        self.mark_time("mounted")
        for panel in ("#agents-panel", "#claims-panel", "#thread-panel"):
            self.query_one(panel).display = False
        self.status.peek = self.peek
        self.status.redraw()
        self._fit(self.size.width, self.size.height)
        self.focus_now(self.query_one(RoomList))
        self.poller = Poller(self.session, self._from_poller)
        self.poller.start()
        self._rooms_task = asyncio.ensure_future(self.reload_rooms())

    @property
    def status(self) -> StatusBar:
        return self.query_one(StatusBar)

    @property
    def timeline(self) -> Timeline:
        return self.query_one("#timeline", Timeline)

    def on_resize(self, event: events.Resize) -> None:
        self._fit(event.size.width, event.size.height)

    def _fit(self, width: int, height: int) -> None:
        """Below 80×24 one message asks for more room instead of a squashed layout."""
        small = width < MIN_WIDTH or height < MIN_HEIGHT
        self.query_one("#main").display = not small
        note = self.query_one(SmallScreenNote)
        note.display = small
        if small:
            note.update(
                Text(
                    f"The terminal is {width}×{height}: Agent Chat needs at least "
                    f"{MIN_WIDTH}×{MIN_HEIGHT}.\nMake the window bigger (or the font smaller).",
                    style="bold",
                )
            )

    def focus_now(self, widget: Widget) -> None:
        """Focus ``widget`` before the next key is handled (``Widget.focus`` defers it, and
        keys typed fast, or pasted, would land in the widget focused before)."""
        if widget.screen is self.screen:
            self.screen.set_focus(widget)
        else:
            widget.focus()

    def note(self, message: str) -> None:
        self.status.set_note(message)

    # --- blocking calls on daemon threads ----------------------------------------------------

    async def call(self, fn: Callable[..., T], *args: object) -> T:
        """``fn(*args)`` on a daemon thread (a held request never blocks the UI or the exit)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()

        def settle(ok: bool, value: object) -> None:
            if future.done():
                return
            if ok:
                future.set_result(value)  # type: ignore[arg-type]
            else:
                assert isinstance(value, BaseException)
                future.set_exception(value)

        def run() -> None:
            try:
                result: object = fn(*args)
                ok = True
            except BaseException as e:
                result, ok = e, False
            try:
                loop.call_soon_threadsafe(settle, ok, result)
            except RuntimeError:  # the loop is gone: the app has exited
                pass

        threading.Thread(target=run, daemon=True, name="ac-tui-call").start()
        return await future

    async def attempt(self, what: str, fn: Callable[..., T], *args: object) -> T | None:
        """:meth:`call`, with an error said in the status bar instead of raised."""
        try:
            return await self.call(fn, *args)
        except AcError as e:
            self.note(f"{what}: {e.message}")
        except OSError as e:
            self.note(f"{what}: {e}")
        return None

    # --- live updates ------------------------------------------------------------------------

    def _from_poller(self, kind: str, a: object, b: object) -> None:
        """On the poll thread: hand the event to the event loop (and wait for it to be
        taken in: the poll goes on from what the UI has shown)."""

        async def deliver() -> bool:
            await self.on_live(kind, a, b)
            return True

        if not self.is_running:
            return
        try:
            # Textual's annotation infers Never for a coroutine function: it is accepted.
            self.call_from_thread(deliver)  # type: ignore[arg-type]
        except RuntimeError:  # the app has exited
            pass

    async def on_live(self, kind: str, a: object, b: object) -> None:
        if kind == "down":
            self.connected = False
            retry = b if isinstance(b, (int, float)) else 0
            self.status.set_state("down", f"server unreachable ({a}); retrying in {retry:g} s")
            if not self.rooms:
                self.query_one("#topic", Static).update(
                    Text("server unreachable: retrying…", style="bold red")
                )
            return
        if kind == "auth":
            self.connected = False
            self.status.set_state("auth", str(a))
            self.notify(str(a), title="authentication failed", severity="error", markup=False)
            return
        answer = a if isinstance(a, dict) else {}
        news = objects(b)
        first = not self.connected
        self.mark_time("long-poll answered")
        self.connected = True
        self.status.set_state("up", "connected")
        if self._rooms_task is not None:  # asked for at start, beside the first long-poll
            await self._rooms_task
            self._rooms_task = None
            if not self.rooms:
                await self.reload_rooms()
        elif first:  # back after the server was down: rooms may have changed
            await self.reload_rooms()
        # The messages first: they are what someone is waiting for. The counts follow once
        # they are on screen (drawn in a frame of their own, the message's frame is smaller).
        # After the frame that *drew* them: Textual's "after refresh" can come before it.
        self._unread_answer = answer
        shown = self.distribute(news)
        later = self.timeline.after_drawn if shown else self.call_after_refresh
        if shown:
            later(self._apply_unread_answer)
        else:
            self._apply_unread_answer()
        if self.side == "agents":
            self.run_worker(self.refresh_presence(), group="presence", exclusive=False)
        if not first:  # after the frame that shows what came (it is not what is waited for)
            self._receipts_failed.clear()  # (asked again at a wake, not at every scroll)
            later(self._receipts_soon)
        if first and self.current is None:
            await self.open_first()
            self.mark_time("first room shown")
            self.run_worker(self.load_mentions(), exclusive=False)
        self.ready.set()

    def _apply_unread_answer(self) -> None:
        """The newest /notify answer's counts, if not applied yet."""
        answer, self._unread_answer = self._unread_answer, None
        if answer is not None:
            self.apply_unread(answer)

    def apply_unread(self, answer: JSONObject) -> None:
        """Counts from a /notify answer: rooms absent from it have nothing unread."""
        by_id = unread_by_room(answer)
        total = 0
        listing = self.query_one(RoomList)
        for room in self.rooms.values():
            entry = by_id.get(room.room_id)
            count = entry.get("count") if entry else 0
            before = (room.count, room.urgent)
            room.count = count if isinstance(count, int) and count > 0 else 0
            room.urgent = bool(entry and entry.get("urgent") is True)
            total += room.count
            if (room.count, room.urgent) != before:
                listing.update_room(room)
        if total != self.status.unread:
            self.status.unread = total
            self.status.redraw()
        if any(room_id not in self.rooms for room_id in by_id):
            self.run_worker(self.reload_rooms(), group="rooms", exclusive=True)

    def distribute(self, messages: list[JSONObject]) -> bool:
        """New messages from anywhere: into their rooms, the timeline, mentions, a thread.
        True when some went into the timeline on screen."""
        me, nick = self.session.user_id, self.session.nick
        shown: list[JSONObject] = []
        unknown = False
        thread = self.query_one(ThreadPanel)
        for msg in messages:
            room_id = text_of(msg.get("room_id"))
            if room_id not in self.rooms:
                unknown = True
            self._learn(msg)
            state = self.states.get(room_id)
            if state is not None and state.append(msg, me) and room_id == self.current:
                shown.append(msg)
            if mentions_me(msg, me, nick):
                self.mentions.append(msg)
                del self.mentions[:-MENTIONS_KEPT]
            root = thread.root
            if (
                self.side == "thread"
                and root is not None
                and (msg.get("thread_id") == root or msg.get("event_id") == root)
            ):
                thread.add(msg)
        if shown:
            # (asked first, the stamp runs first among what waits for the frame)
            ids = [text_of(m.get("event_id")) for m in shown]
            self.timeline.after_drawn(lambda: self._stamp(shown), ids)
            self.timeline.add(shown)
            self.added_at = time.monotonic()
            state = self.states[self.current] if self.current else None
            if state is not None:
                self.timeline.drop_oldest(state.trim())
        if unknown:
            self.run_worker(self.reload_rooms(), group="rooms", exclusive=True)
        return bool(shown)

    def _stamp(self, messages: list[JSONObject]) -> None:
        """When each of ``messages`` was first drawn on screen (a frame drew its lines)."""
        now = time.monotonic()
        drawn = self.timeline.drawn
        for m in messages:
            event_id = m.get("event_id")
            if isinstance(event_id, str) and event_id in drawn:
                self.shown_at.setdefault(event_id, now)
        if len(self.shown_at) > 5000:
            self.shown_at.clear()

    def _learn(self, msg: JSONObject) -> None:
        """Names for ``@`` completion: agents' nicks and people's names as they write."""
        name = one_line(msg.get("sender_name") or "")
        if name and " " not in name and sender_kind(msg.get("sender")) != "service":
            self.names.add(name)

    async def reload_rooms(self) -> None:
        found = await self.attempt("rooms", self.session.channels)
        if found is None:
            return
        rooms: dict[str, Room] = {}
        for entry in found:
            room = Room.from_channel(entry)
            if room is not None:
                old = self.rooms.get(room.room_id)
                if old is not None:
                    room.count, room.urgent = old.count, old.urgent
                rooms[room.room_id] = room
                if room.direct and room.label.startswith("@"):
                    self.names.add(room.label[1:])
        self.rooms = rooms
        self.query_one(RoomList).set_rooms(list(rooms.values()), self.current)
        self.mark_time("rooms listed")

    async def open_first(self) -> None:
        """The first room: something urgent, else something unread, else #general."""
        rooms = list(self.rooms.values())
        if not rooms:
            self.query_one("#topic", Static).update(Text("(no rooms yet: /join #general)"))
            return
        pick = (
            next((r for r in rooms if r.urgent and r.count), None)
            or next((r for r in rooms if r.count), None)
            or next((r for r in rooms if r.label == "#general"), None)
            or rooms[0]
        )
        await self.open_room(pick.room_id)

    # --- rooms and the timeline --------------------------------------------------------------

    async def on_room_list_chosen(self, event: RoomList.Chosen) -> None:
        await self.open_room(event.room_id)
        self.focus_now(self.timeline)

    async def open_room(self, room_id: str, at: str | None = None) -> None:
        """Show a room (loading it the first time), its first unread message on top."""
        room = self.rooms.get(room_id)
        if room is None:
            return
        self.current = room_id
        self.query_one(RoomList).point_at(room_id)
        self.query_one("#topic", Static).update(text.topic_line(room.label, room.topic))
        state = self.states.get(room_id)
        if state is None or not state.loaded:
            state = self.states.setdefault(room_id, RoomState(room_id))
            self.timeline.show([], self.session.user_id, self.session.nick, None)
            if room.invited:
                joined = await self.attempt("join", self.session.join, room_id)
                if joined is not None:
                    room.invited = False
                    self.query_one(RoomList).update_room(room)
            if not await self._load(state, room):
                return
        if self.current != room_id:
            return
        start = state.first_unread()
        index = state.index_of(at) if at else None
        self.timeline.show(
            state.messages,
            self.session.user_id,
            self.session.nick,
            index if index is not None else (start if start < len(state.messages) else None),
        )
        self.call_after_refresh(self._receipts_soon)

    async def _load(self, state: RoomState, room: Room) -> bool:
        """The room's unread messages and its newest ones (enough to hold every unread one),
        both asked at once."""
        what = f"reading {room.label}"
        limit = min(1000, max(OPEN_LIMIT, room.count + OPEN_LIMIT // 2))
        recent_call = self.attempt(what, self.session.recent, room.room_id, limit)
        if room.count:
            unread, recent = await asyncio.gather(
                self.attempt(what, self.session.unread, room.room_id), recent_call
            )
        else:
            unread, recent = [], await recent_call
        if unread is None or recent is None:
            return False
        ids = {m.get("event_id") for m in recent}
        if unread and unread[0].get("event_id") not in ids and limit < 1000:
            # More arrived than the count said: read enough to hold them all.
            limit = min(1000, len(unread) + OPEN_LIMIT // 2)
            recent = await self.attempt(what, self.session.recent, room.room_id, limit)
            if recent is None:
                return False
        for msg in recent:
            self._learn(msg)
        state.load(recent, unread)
        return True

    def on_timeline_seen(self, event: Timeline.Seen) -> None:
        if event.control is not self.timeline:
            return
        unknown = self.receipts.keys() | self._receipts_failed
        if any(e not in unknown for e in self.timeline.own_in_view(RECEIPTS_SHOWN)):
            self._receipts_soon()  # scrolled to messages of ours whose stages are not known
        if self.peek or self.current is None:
            return
        state = self.states.get(self.current)
        if state is None or not state.loaded:
            return
        state.saw(event.first, event.last)
        self.run_worker(self.mark(self.current), group="mark-" + self.current)

    async def mark(self, room_id: str) -> None:
        """Mark read what has been on screen in ``room_id`` (one request at a time per room)."""
        if room_id in self._marking:
            self._remark.add(room_id)
            return
        self._marking.add(room_id)
        try:
            while True:
                self._remark.discard(room_id)
                state = self.states.get(room_id)
                plan = state.mark_plan(self.session.user_id) if state else None
                if state is None or plan is None or self.peek:
                    return
                anchor, count, through = plan
                answer = await self.attempt(
                    "marking read", self.session.mark_read, room_id, anchor, count
                )
                if answer is None:
                    return
                if answer.get("marked_read") is True:
                    state.marked(through)
                room = self.rooms.get(room_id)
                if room is not None:
                    entry = unread_by_room(answer).get(room_id)
                    count_left = entry.get("count") if entry else 0
                    room.count = count_left if isinstance(count_left, int) else 0
                    room.urgent = bool(entry and entry.get("urgent") is True)
                    self.query_one(RoomList).update_room(room)
                    self.status.unread = sum(r.count for r in self.rooms.values())
                    self.status.redraw()
                if answer.get("marked_read") is not True or room_id not in self._remark:
                    return
        finally:
            self._marking.discard(room_id)

    # --- our own messages' stages (shown, read) ---------------------------------------------

    def _receipts_soon(self) -> None:
        self.run_worker(self.refresh_receipts(), group="receipts", exclusive=False)

    async def refresh_receipts(self) -> None:
        """``GET /receipts?event=`` for our own newest messages on screen (none final yet),
        shown after each; then hold one ``GET /receipts?wait=`` on the newest of them, so its
        stages move on screen as the recipients' sessions show and read it. Asked when the
        long-poll wakes, a room opens, we send or scroll: never polled."""
        if self._receipts_busy:
            self._receipts_again = True
            return
        self._receipts_busy = True
        try:
            while True:
                self._receipts_again = False
                own = self.timeline.own_in_view(RECEIPTS_SHOWN)
                for event_id in own:
                    if text.all_reached(self.receipts.get(event_id), "read") and (
                        event_id in self.receipts
                    ):
                        continue  # read by everyone: nothing more to come
                    try:
                        answer = await self.call(self.session.receipts, event_id)
                    except (AcError, OSError):
                        self._receipts_failed.add(event_id)
                        continue  # not stored yet, or the server is away: the next wake
                    self.show_receipts(event_id, answer)
                if own:
                    self.watch_receipts(own[0])
                if not self._receipts_again:
                    return
        finally:
            self._receipts_busy = False

    def show_receipts(self, event_id: str, answer: JSONObject) -> None:
        self.receipts[event_id] = answer
        if len(self.receipts) > 500:
            for key in list(self.receipts)[:250]:
                del self.receipts[key]
        stages = text.stages(answer)
        if stages is not None:
            self.timeline.set_stages(event_id, stages)
        if self.focused is self.timeline:
            self._detail(self.timeline.selected())

    def watch_receipts(self, event_id: str) -> None:
        """One held request at a time, on our newest message on screen until all read it."""
        if text.all_reached(self.receipts.get(event_id), "read"):
            return
        if self._watching == event_id and self._watch_task and not self._watch_task.done():
            return
        if self._watch_task is not None:
            self._watch_task.cancel()  # its request ends at its hold; its answer is dropped
        self._watching = event_id
        self._watch_task = asyncio.ensure_future(self._watch(event_id))

    async def _watch(self, event_id: str) -> None:
        client = self.session.poll_client()
        pause = 1.0
        while self._watching == event_id:
            stage = "read" if text.all_reached(self.receipts.get(event_id), "shown") else "shown"
            try:
                answer = await self.call(
                    self.session.receipts_wait, client, event_id, stage, RECEIPTS_HOLD
                )
            except (AcError, OSError):
                await asyncio.sleep(pause)  # the long-poll's own back-off says the rest
                pause = min(30.0, pause * 2)
                continue
            pause = 1.0
            if self._watching != event_id:
                return
            self.show_receipts(event_id, answer)
            if text.all_reached(answer, "read"):
                self._watching = None
                return

    def on_option_list_option_highlighted(self, event: OptionList.OptionHighlighted) -> None:
        if event.option_list is self.timeline and self.focused is self.timeline:
            self._detail(self.timeline.selected())

    def on_descendant_focus(self, event: events.DescendantFocus) -> None:
        if event.widget is self.timeline:
            self._detail(self.timeline.selected())

    def _detail(self, msg: JSONObject | None) -> None:
        """Our highlighted message's stages per recipient, in the status bar."""
        if msg is None or msg.get("sender") != self.session.user_id:
            return
        answer = self.receipts.get(text_of(msg.get("event_id")))
        if answer is not None and text.recipients_of(answer):
            self.note(text.stages_detail(answer))

    def action_next_unread(self) -> None:
        """The next room with something unread after the current one (urgent ones first)."""
        order = self.query_one(RoomList).order
        if not order:
            return
        start = order.index(self.current) + 1 if self.current in order else 0
        ring = order[start:] + order[:start]
        unread = [r for r in ring if self.rooms.get(r) and self.rooms[r].count]
        urgent = [r for r in unread if self.rooms[r].urgent]
        if not unread:
            self.note("nothing unread")
            return
        pick = (urgent or unread)[0]
        self.run_worker(self.open_room(pick), group="open", exclusive=True)
        self.focus_now(self.timeline)

    def action_peek(self) -> None:
        self.peek = not self.peek
        self.status.peek = self.peek
        self.status.redraw()
        if not self.peek:
            self.timeline._last_report = None
            self.timeline.report()

    # --- compose -----------------------------------------------------------------------------

    def candidates(self, sigil: str) -> list[str]:
        if sigil == "#":
            return [r.label for r in self.rooms.values() if r.label.startswith("#")]
        return ["@" + n for n in self.names]

    def on_composer_completions(self, event: Composer.Completions) -> None:
        if len(event.matches) > 1:
            self.note("  ".join(one_line(m) for m in event.matches[:12]))

    def action_write(self) -> None:
        self.focus_now(self.query_one(Composer))

    def action_command(self) -> None:
        composer = self.query_one(Composer)
        if not composer.text:
            composer.insert("/")
        self.focus_now(composer)

    def on_composer_cancelled(self, event: Composer.Cancelled) -> None:
        if self.reply_to is not None:
            self.set_reply(None)
        else:
            self.focus_now(self.timeline)

    def on_timeline_reply(self, event: Timeline.Reply) -> None:
        self.set_reply(event.msg)
        self.focus_now(self.query_one(Composer))

    def set_reply(self, msg: JSONObject | None) -> None:
        self.reply_to = msg
        note = self.query_one("#reply-note", Static)
        note.display = msg is not None
        if msg is not None:
            line = Text("↳ replying in the thread of ", style="bold")
            line.append_text(text.sender(msg, self.session.user_id))
            line.append(": ")
            line.append(one_line(msg.get("body") or "")[:60])
            line.append("  (Esc cancels)", style="dim")
            note.update(line)

    async def on_composer_submitted(self, event: Composer.Submitted) -> None:
        body = event.body
        composer = self.query_one(Composer)
        if slash.is_command(body):
            try:
                cmd = slash.parse(body)
            except AcError as e:
                self.note(e.message)
                return
            composer.clear()
            await self.run_command(cmd)
            return
        if body.startswith("//"):
            body = body[1:]
        size = len(body.encode("utf-8", "replace"))
        if size > MAX_BODY:
            self.note(
                f"not sent: over 32 KiB ({size:,} bytes of UTF-8; at most {MAX_BODY:,}): "
                "split it, or put it in a file and send its path"
            )
            self.bell()
            return
        reply = self.reply_to
        if reply is None and self.current is None:
            self.note("no room open: pick one first")
            return
        if reply is not None:
            sent = await self.attempt(
                "not sent", self.session.send, body, None, text_of(reply.get("event_id"))
            )
        else:
            sent = await self.attempt("not sent", self.session.send, body, self.current)
        if sent is None:
            return  # the text stays in the box
        composer.clear()
        self.set_reply(None)
        self.note(f"sent to {one_line(sent.get('room') or '')}")
        await self.catch_up(text_of(sent.get("event_id")))
        self.call_after_refresh(self._receipts_soon)

    async def catch_up(self, sent: str = "", patience: float = 10.0) -> None:
        """Fetch what is new until the message we ``sent`` is in (our own messages do not wake
        the long-poll, and the service stores a message a moment after the homeserver took it).
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + patience
        pause = 0.02
        while True:
            news = await self.attempt("reading", self.session.fetch_new)
            if news:
                self.distribute(news)
            if news is None or not sent or any(m.get("event_id") == sent for m in news):
                return
            state = self.states.get(self.current or "")
            if (state and sent in state.ids) or loop.time() + pause > deadline:
                return
            await asyncio.sleep(pause)
            pause = min(0.5, pause * 2)

    async def run_command(self, cmd: slash.Slash) -> None:
        if cmd.name == "help":
            self.action_help()
        elif cmd.name == "peek":
            self.action_peek()
        elif cmd.name == "search":
            await self.search(cmd.rest)
        elif cmd.name == "join":
            joined = await self.attempt("join", self.session.join, cmd.words[0])
            if joined is not None:
                await self.reload_rooms()
                room_id = text_of(joined.get("room_id"))
                if room_id in self.rooms:
                    await self.open_room(room_id)
        elif cmd.name == "claim":
            await self.claim(cmd)
        elif cmd.name == "release":
            await self.release(cmd.words, cmd.everything)
        elif cmd.name == "ask":
            self.run_worker(self.ask(cmd.rest), group="ask")

    async def ask(self, question: str) -> None:
        """``/ask``: post in this room, wait (in the background) for the first reply in its
        thread, then show it as someone else's words."""
        from .. import ask

        room = self.rooms.get(self.current or "")
        if room is None:
            self.note("/ask: open a room first")
            return
        target = room.label if room.label[:1] in "#@" else room.room_id
        asked = await self.attempt(
            "/ask", ask.ask_question, self.session.ctx, self.session.client, target, question
        )
        if asked is None:
            return
        q, _ = asked
        self.note(f"asked in {one_line(room.label)}; waiting for the answer…")
        await self.catch_up(q.event_id)
        found = await self.attempt(
            "/ask", ask.await_answer, self.session.poll_client(), q, ask.ASK_TIMEOUT
        )
        if found is None:
            self.note(f"/ask: no reply in {one_line(room.label)} within {ask.ASK_TIMEOUT:g} s")
            return
        self.notify(
            one_line(found.get("body") or "")[:500],
            title=ask.header(found),
            timeout=30,
            markup=False,
        )
        self.note(ask.header(found))

    async def search(self, words: str) -> None:
        found = await self.attempt("search", self.session.search, words)
        if found is None:
            return
        title = Text(f"{len(found)} found for ", style="bold")
        title.append(one_line(words))
        title.append("  (Enter jumps to it, Esc closes)", style="dim")
        self.push_screen(
            MessagesScreen(title, found, self.session.user_id, self.session.nick), self.jump_to
        )

    def action_mentions(self) -> None:
        title = Text(f"Mentions and urgent: {len(self.mentions)}", style="bold")
        title.append("  (Enter jumps to it, Esc closes)", style="dim")
        self.push_screen(
            MessagesScreen(title, list(self.mentions), self.session.user_id, self.session.nick),
            self.jump_to,
        )

    def jump_to(self, msg: JSONObject | None) -> None:
        if msg is not None:
            self.run_worker(self._jump(msg), group="open", exclusive=True)

    async def _jump(self, msg: JSONObject) -> None:
        room_id, event_id = text_of(msg.get("room_id")), text_of(msg.get("event_id"))
        if room_id not in self.rooms:
            await self.reload_rooms()
        await self.open_room(room_id)
        state = self.states.get(room_id)
        if state is None or self.current != room_id:
            return
        index = state.index_of(event_id)
        if index is None:  # older than the loaded window: load from it to now
            after = await self.attempt("reading", self.session.after, room_id, event_id)
            unread = await self.attempt("reading", self.session.unread, room_id)
            if after is None or unread is None:
                return
            if len(after) >= 1000:
                self.note("that message is older than the last 1,000 of its room: see the list")
                return
            state.load([msg, *after], unread)
            index = 0
            self.timeline.show(state.messages, self.session.user_id, self.session.nick, 0)
        self.timeline.jump(index)
        self.focus_now(self.timeline)

    async def load_mentions(self) -> None:
        """At start: unread mentions and urgent messages of the rooms flagged urgent."""
        me, nick = self.session.user_id, self.session.nick
        for room in [r for r in self.rooms.values() if r.urgent]:
            found = await self.attempt("mentions", self.session.unread, room.room_id)
            known = {m.get("event_id") for m in self.mentions}
            for msg in found or []:
                if mentions_me(msg, me, nick) and msg.get("event_id") not in known:
                    self.mentions.append(msg)

    # --- threads -----------------------------------------------------------------------------

    async def on_timeline_thread(self, event: Timeline.Thread) -> None:
        msg = event.msg
        root = text_of(msg.get("thread_id")) or text_of(msg.get("event_id"))
        if not root:
            return
        found = await self.attempt("thread", self.session.thread, root)
        if found is None:
            return
        panel = self.query_one(ThreadPanel)
        self.show_side("thread")
        panel.show(
            root, text_of(msg.get("room_id")), found, self.session.user_id, self.session.nick
        )

    # --- side panels -------------------------------------------------------------------------

    def show_side(self, name: str | None) -> None:
        self.side = name
        for panel, key in (
            ("#agents-panel", "agents"),
            ("#claims-panel", "claims"),
            ("#thread-panel", "thread"),
        ):
            self.query_one(panel).display = key == name
        # Narrow terminals: the panel takes the room list's place while it is open.
        self.query_one(RoomList).display = name is None or self.size.width >= 120
        if name != "thread":
            self.query_one(ThreadPanel).root = None
        if name != "agents" and self._presence_timer is not None:
            self._presence_timer.stop()
            self._presence_timer = None

    def action_close_side(self) -> None:
        if self.side is not None:
            self.show_side(None)
            self.focus_now(self.timeline)

    async def action_agents(self) -> None:
        if self.side == "agents":
            self.show_side(None)
            return
        self.show_side("agents")
        await self.load_agents()
        if self.side == "agents" and self._presence_timer is None:
            # Presence also changes with time alone (working → idle → gone), which wakes no
            # long-poll: a modest timer, only while the panel is open.
            self._presence_timer = self.set_interval(PRESENCE_EVERY, self.refresh_presence)

    async def load_agents(self) -> None:
        """Everyone in our rooms (``/who``, presence included), into the agents panel."""
        seen: dict[str, tuple[JSONObject, int]] = {}
        rooms = [r for r in self.rooms.values() if not r.direct][:WHO_ROOMS]
        for room in rooms:
            members = await self.attempt("who", self.session.who, room.room_id)
            for m in members or []:
                user_id = text_of(m.get("user_id"))
                if not user_id:
                    continue
                old = seen.get(user_id)
                seen[user_id] = (m, (old[1] if old else 0) + 1)
                name = one_line(m.get("display_name") or "")
                if name and " " not in name and m.get("kind") == "agent":
                    self.names.add(name)
        self.query_one(AgentsPanel).show(list(seen.values()), self.session.user_id)
        self._presence_at = asyncio.get_running_loop().time()

    async def refresh_presence(self) -> None:
        """One ``GET /presence`` for the agents listed (while the panel is open; at most
        once per :data:`PRESENCE_MIN` seconds)."""
        panel = self.query_one(AgentsPanel)
        loop = asyncio.get_running_loop()
        if self.side != "agents" or self._presence_busy:
            return
        if loop.time() - self._presence_at < PRESENCE_MIN:
            return
        agents = panel.agents()
        if not agents:
            return
        self._presence_busy = True
        try:
            found = await self.attempt("presence", self.session.presence, agents)
        finally:
            self._presence_busy = False
        self._presence_at = loop.time()
        if found is not None and self.side == "agents":
            panel.update_presence(found)

    async def action_claims(self) -> None:
        if self.side == "claims":
            self.show_side(None)
            return
        self.show_side("claims")
        await self.refresh_claims()

    async def refresh_claims(self) -> None:
        found = await self.attempt("claims", self.session.claims, self.project)
        if found is not None:
            project, claims = found
            self.project = project
            self.query_one(ClaimsPanel).show(project, claims, self.session.user_id)

    async def on_claims_panel_release(self, event: ClaimsPanel.Release) -> None:
        claim = event.claim
        if claim.get("holder") != self.session.user_id:
            name = one_line(claim.get("holder_name") or claim.get("holder") or "?")
            self.note(f"only its holder can release it ({name} holds it)")
            return
        await self.release([text_of(claim.get("pattern"))], False)

    async def claim(self, cmd: slash.Slash) -> None:
        try:
            project, answer = await self.call(
                self.session.claim, cmd.words, cmd.ttl, cmd.reason, cmd.shared, self.project
            )
        except ClaimConflict as e:
            self.note(f"not claimed: {e.message}")
            self.bell()
            return
        except AcError as e:
            self.note(f"/claim: {e.message}")
            return
        from ..claims import claimed_line

        self.project = project
        self.note(claimed_line(project, answer, cmd.shared))
        if self.side == "claims":
            await self.refresh_claims()

    async def release(self, patterns: list[str], everything: bool) -> None:
        found = await self.attempt(
            "release", self.session.release, patterns, everything, self.project
        )
        if found is None:
            return
        from ..claims import released_line

        project, gone = found
        self.project = project
        self.note(released_line(project, gone))
        if self.side == "claims":
            await self.refresh_claims()

    # --- the rest ----------------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Letter keys are commands only outside the compose box and the lists over it."""
        if action == "key":
            typing = isinstance(self.focused, TextArea)
            return not typing and len(self.screen_stack) == 1
        return True

    async def action_key(self, name: str) -> None:
        """A letter key's command (see :data:`BINDINGS`)."""
        await self.run_action(name)

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())

    async def action_quit(self) -> None:
        if self.poller is not None:
            self.poller.stop()
        self.exit(0)

    def action_retry(self) -> None:
        """Ctrl+R: while the server is down, try again now instead of at the back-off's end."""
        if self.poller is not None and not self.connected:
            self.poller.retry_now()
            self.note("retrying now")
