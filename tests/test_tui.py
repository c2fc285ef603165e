"""``ac tui`` against the real stack: Textual's Pilot drives the app in-process, and one run
goes through a real terminal (tmux: keys typed with send-keys, the screen read with
capture-pane).

What a person would notice: an agent's message appears in its room and raises the room's
count; what was on screen is marked read (and nothing in peek mode); composing sends and
another agent reads it; a thread opens beside the timeline; a mention shows in the mentions
view; the claims panel lists a claim and releases one's own; search finds and jumps; hostile
bodies and names are shown inert; the server going away is said and survived.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.util import find_spec
from pathlib import Path
from typing import Any
import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.parse

import pytest

from helpers import (
    Ac,
    Agent,
    Stack,
    free_port,
    http_json,
    named_human_in_room,
    register,
    shared_room,
    unique,
    wait_for,
)

pytestmark = pytest.mark.skipif(find_spec("textual") is None, reason="needs agent-chat[tui]")

if find_spec("textual") is not None:
    from textual.pilot import Pilot

    from agent_chat.config import Settings
    from agent_chat.context import Context
    from agent_chat.tui.app import AgentChatApp
    from agent_chat.tui.session import Session


SIZE = (100, 30)


def session_of(ac: Ac) -> Session:
    env = {"AGENT_CHAT_HOME": str(ac.home), "AGENT_CHAT_SERVER": ac.server}
    return Session(Context(False, Settings(env)))


def agent_of(ac: Ac, stack: Stack) -> Agent:
    """The ``ac`` identity as a REST agent (same token)."""
    me = ac.identity()
    return Agent(stack.api_base, me["user_id"], me["nick"], me["token"])


def stored(ac: Ac, agent: Agent, kind: str = "agent") -> None:
    """Store ``agent``'s token in ``ac``'s home, as ``ac register``/``ac login`` would."""
    from agent_chat import identity as ident

    data = ident.load_credentials(str(ac.home))
    answer = {"user_id": agent.user_id, "nick": agent.nick, "kind": kind, "token": agent.token}
    ident.store_identity(data, ac.server, ident.nick_key(agent.nick), answer)
    ident.save_credentials(str(ac.home), data)


def watcher(make_ac: Callable[..., Ac], stack: Stack) -> tuple[Ac, Agent]:
    """A home with one stored agent identity (the TUI's user) and that agent over REST."""
    agent = register(stack, unique("Watch"))
    ac = make_ac(unique("watch"))
    stored(ac, agent)
    return ac, agent


async def until(
    pilot: Pilot[Any], check: Callable[[], Any], what: str, timeout: float = 30
) -> Any:
    """Let the app run until ``check()`` is truthy (a deadline, never a fixed sleep)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}; last value {value!r}")
        await pilot.pause(0.05)


def lines_of(widget: Any) -> list[str]:
    """What a line widget shows now, line by line (its rendered strips' text)."""
    return [widget.render_line(y).text for y in range(widget.size.height)]


def options_of(widget: Any) -> list[str]:
    """Every option of an OptionList as text, on screen or scrolled off (a room shared with
    the whole suite's agents lists hundreds)."""
    return [str(getattr(o.prompt, "plain", o.prompt)) for o in widget.options]


def room_line(app: AgentChatApp, label: str) -> str:
    rooms = app.query_one("#rooms")
    for line in lines_of(rooms):
        if label in line:
            return line.strip()
    return ""


def timeline_text(app: AgentChatApp) -> str:
    return "\n".join(lines_of(app.timeline))


def screen(app: AgentChatApp) -> tuple[str, list[Any]]:
    """The whole screen as text, and its segments (for their styles)."""
    update = app.screen._compositor.render_full_update()
    segments = [seg for line in update.strips for strip in line for seg in strip]
    text = "\n".join("".join(strip.text for strip in line) for line in update.strips)
    return text, segments


async def opened(pilot: Pilot[Any], app: AgentChatApp, label: str) -> str:
    """Open the room labelled ``label`` once the app knows it; its room id."""
    await until(pilot, lambda: any(r.label == label for r in app.rooms.values()), label)
    room_id = next(r.room_id for r in app.rooms.values() if r.label == label)
    await app.open_room(room_id)
    await until(pilot, lambda: app.states.get(room_id) and app.states[room_id].loaded, "loaded")
    return room_id


# --- the room list and the timeline ------------------------------------------------------------


async def test_an_agents_message_appears_and_raises_the_count(
    make_ac: Callable[..., Ac], stack: Stack
) -> None:
    me, my = watcher(make_ac, stack)
    other = register(stack, unique("Busy"))
    quiet = shared_room(other, my, prefix="quiet-")
    busy = shared_room(other, my, prefix="busy-")
    other.send(quiet, "an old message")
    app = AgentChatApp(session_of(me))
    async with app.run_test(size=SIZE) as pilot:
        await opened(pilot, app, quiet)
        await until(pilot, lambda: "an old message" in timeline_text(app), "the old message")
        other.send(busy, "look at busy")
        other.send(busy, "still busy")
        await until(pilot, lambda: room_line(app, busy).endswith("2"), f"{busy}'s count of 2")
        other.send(quiet, "[STATUS] fresh news in quiet")
        await until(pilot, lambda: "fresh news in quiet" in timeline_text(app), "the new message")
        line = next(x for x in lines_of(app.timeline) if "fresh news" in x)
        assert other.nick in line and "[STATUS]" in line
        # It was on screen: the server marks it read (as ac listen would), busy stays unread.
        await until(pilot, lambda: my.count(quiet) == 0 and my.count(busy) == 2, "honest counts")


async def test_live_messages_come_once_each_and_in_order(
    make_ac: Callable[..., Ac], stack: Stack
) -> None:
    """When one room changed the TUI asks that room only; what it got that way is not shown
    again by the fetch of every room, and our own message sent elsewhere (which wakes
    nothing) comes with the next one."""
    me, my = watcher(make_ac, stack)
    other = register(stack, unique("Chatty"))
    room = shared_room(other, my, prefix="once-")
    side = shared_room(other, my, prefix="side-")
    other.send(room, "m0")
    app = AgentChatApp(session_of(me))
    async with app.run_test(size=SIZE) as pilot:
        await opened(pilot, app, room)
        await until(pilot, lambda: "m0" in timeline_text(app), "m0")
        for body in ("m1", "m2"):
            other.send(room, body)
            await until(pilot, lambda b=body: f": {b}" in timeline_text(app), body)
        my.send(room, "m3 mine, from elsewhere")
        other.send(side, "elsewhere")
        other.send(room, "m4")
        await until(pilot, lambda: ": m4" in timeline_text(app), "m4")
        await app.catch_up()  # the fetch of every room (as after sending)
        await pilot.pause(0.2)
        bodies = [m.get("body") for m in app.timeline.messages]
        assert bodies[-5:] == ["m0", "m1", "m2", "m3 mine, from elsewhere", "m4"], bodies
        assert [m.get("body") for m in app.states[app.current or ""].messages][-5:] == bodies[-5:]


async def test_a_live_message_counts_as_on_screen_once_a_frame_drew_it(
    make_ac: Callable[..., Ac], stack: Stack
) -> None:
    """``shown_at`` (what bench/bench_tui.py times) is stamped once a frame drew the
    message's lines (a stamp taken when it is put in the timeline, or at a Textual "after
    refresh" that ran before the timeline's redraw reached the screen, fails here); the room
    counts of the same wake wait for that frame too."""
    me, my = watcher(make_ac, stack)
    other = register(stack, unique("Drawn"))
    room = shared_room(other, my, prefix="drawn-")
    other.send(room, "first")
    app = AgentChatApp(session_of(me))
    async with app.run_test(size=SIZE) as pilot:
        await opened(pilot, app, room)
        await until(pilot, lambda: "first" in timeline_text(app), "the first message")
        app.timeline.action_last()
        await pilot.pause(0.2)
        at_stamp: list[tuple[bool, bool]] = []
        stamp = app._stamp

        def stamping(messages: list[dict[str, Any]]) -> None:
            drawn = all(m.get("event_id") in app.timeline.drawn for m in messages)
            at_stamp.append((drawn, app._unread_answer is not None))
            stamp(messages)

        app._stamp = stamping  # type: ignore[method-assign]
        for i in range(3):
            sent = other.send(room, f"live {i}")["event_id"]
            await until(pilot, lambda s=sent: s in app.shown_at, f"live {i} stamped")
        # Drawn when stamped; the counts of the same wake not applied yet (their own frame).
        assert at_stamp and all(drawn for drawn, _ in at_stamp), at_stamp
        assert all(counts_pending for _, counts_pending in at_stamp), at_stamp


async def test_peek_marks_nothing_read(make_ac: Callable[..., Ac], stack: Stack) -> None:
    me, my = watcher(make_ac, stack)
    other = register(stack, unique("Peeked"))
    room = shared_room(other, my, prefix="peek-")
    app = AgentChatApp(session_of(me), peek=True)
    async with app.run_test(size=SIZE) as pilot:
        await opened(pilot, app, room)
        other.send(room, "seen but not marked")
        await until(pilot, lambda: "seen but not marked" in timeline_text(app), "the message")
        assert "PEEK" in screen(app)[0]
        await until(pilot, lambda: room_line(app, room).endswith("1"), "the count stays 1")
    assert my.count(room) == 1


# --- compose ------------------------------------------------------------------------------------


async def test_composing_sends_and_another_agent_reads_it(
    make_ac: Callable[..., Ac], stack: Stack
) -> None:
    from agent_chat.tui.composer import Composer

    me, my = watcher(make_ac, stack)
    reader_ac = make_ac(unique("reader"))
    reader = register(stack, unique("Reader"))
    stored(reader_ac, reader)
    room = shared_room(my, reader, prefix="compose-")
    reader.send(room, "I am here")
    app = AgentChatApp(session_of(me))
    async with app.run_test(size=SIZE) as pilot:
        await opened(pilot, app, room)
        await until(pilot, lambda: "I am here" in timeline_text(app), "the reader's message")
        composer = app.query_one(Composer)
        composer.focus()
        composer.insert("hi @" + reader.nick[:4])
        await pilot.press("tab")  # completes the nick it has seen
        assert composer.text == f"hi @{reader.nick} "
        await pilot.press("ctrl+j")
        composer.insert("second line")
        await pilot.press("enter")
        await until(pilot, lambda: composer.text == "", "the box to empty after sending")
        await until(pilot, lambda: "second line" in timeline_text(app), "our message shown")
        # Too long: explained, not sent, and the text stays to be split.
        composer.insert("x" * 40000)
        await pilot.press("enter")
        assert "32 KiB" in app.status.note and len(composer.text) == 40000
    out = reader_ac.ok("listen", room, "--json", "--last", "5")
    mine = [m["body"] for m in map(json.loads, out.splitlines()) if m["sender"] == my.user_id]
    assert mine == [f"hi @{reader.nick} \nsecond line"]  # sent once, both lines


# --- threads, mentions, search ------------------------------------------------------------------


async def test_a_thread_opens_and_a_reply_goes_into_it(
    make_ac: Callable[..., Ac], stack: Stack
) -> None:
    me, my = watcher(make_ac, stack)
    other = register(stack, unique("Threader"))
    room = shared_room(other, my, prefix="thread-")
    root = other.send(room, "which branch?")["event_id"]
    wait_for(lambda: other.bodies(room) == ["which branch?"], what="the root stored")
    status, _ = other.call(
        "PUT", f"/send/{unique('t')}", {"reply_to": root, "body": "main, I think"}
    )
    assert status == 200
    other.send(room, "unrelated chatter")
    app = AgentChatApp(session_of(me))
    async with app.run_test(size=SIZE) as pilot:
        await opened(pilot, app, room)
        await until(pilot, lambda: len(app.timeline.messages) >= 3, "three messages")
        app.timeline.focus()
        app.timeline.highlighted = next(
            i for i, m in enumerate(app.timeline.messages) if m["event_id"] == root
        )
        await pilot.press("t")
        panel = app.query_one("#thread-panel")
        thread_timeline = app.query_one("#thread-timeline")
        await until(
            pilot,
            lambda: panel.display and len(thread_timeline.messages) == 2,
            "the thread pane",
        )
        thread_text = " ".join(" ".join(x.split()) for x in lines_of(thread_timeline))
        assert "which branch?" in thread_text and "main, I think" in thread_text
        assert "unrelated chatter" not in thread_text
        assert any("↳" in x for x in lines_of(app.timeline))  # the reply is marked
        await pilot.press("r")
        from agent_chat.tui.composer import Composer

        app.query_one(Composer).insert("release/2.0 actually")
        await pilot.press("enter")
        await until(
            pilot,
            lambda: "release/2.0 actually" in [m["body"] for m in thread_timeline.messages],
            "our reply in the thread pane",
        )
    replies = other.messages(thread=root, mark_read="false")
    assert [m["body"] for m in replies][-1] == "release/2.0 actually"
    assert replies[-1]["thread_id"] == root


async def test_a_mention_shows_in_the_mentions_view_and_jumps(
    make_ac: Callable[..., Ac], stack: Stack
) -> None:
    me, my = watcher(make_ac, stack)
    other = register(stack, unique("Caller"))
    here = shared_room(other, my, prefix="here-")
    there = shared_room(other, my, prefix="there-")
    app = AgentChatApp(session_of(me))
    async with app.run_test(size=SIZE) as pilot:
        await opened(pilot, app, here)
        other.send(there, "chatter that mentions nobody")
        other.send(there, f"@{my.nick} can you review?")
        await until(pilot, lambda: room_line(app, there).endswith("2!"), "an urgent count")
        await until(pilot, lambda: len(app.mentions) == 1, "one mention")
        await pilot.press("m")
        await until(pilot, lambda: "can you review?" in screen(app)[0], "the mentions view")
        assert "chatter that mentions nobody" not in screen(app)[0]
        await pilot.press("enter")
        there_id = next(r.room_id for r in app.rooms.values() if r.label == there)
        await until(pilot, lambda: app.current == there_id, "the jump to the room")
        selected = await until(pilot, app.timeline.selected, "a highlighted message")
        assert selected["body"].endswith("can you review?")


async def test_search_finds_and_jumps(make_ac: Callable[..., Ac], stack: Stack) -> None:
    from agent_chat.tui.composer import Composer

    me, my = watcher(make_ac, stack)
    other = register(stack, unique("Finder"))
    room = shared_room(other, my, prefix="search-")
    word = unique("zebra")
    other.send(room, f"the {word} is in the fridge")
    for i in range(3):
        other.send(room, f"later message {i}")
    app = AgentChatApp(session_of(me))
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.current is not None and app.ready.is_set(), "start")
        composer = app.query_one(Composer)
        composer.focus()
        composer.insert(f"/search {word}")
        await pilot.press("enter")
        await until(pilot, lambda: "is in the fridge" in screen(app)[0], "the search result")
        await pilot.press("enter")
        room_id = next(r.room_id for r in app.rooms.values() if r.label == room)
        await until(pilot, lambda: app.current == room_id, "the jump")
        selected = await until(pilot, app.timeline.selected, "the found message highlighted")
        assert word in selected["body"]


# --- claims and agents --------------------------------------------------------------------------


async def test_the_claims_panel_lists_and_releases_your_own(
    make_ac: Callable[..., Ac], stack: Stack
) -> None:
    from agent_chat.tui.composer import Composer

    me, my = watcher(make_ac, stack)
    other = register(stack, unique("Holder"))
    project = unique("proj-")
    status, data = other.call(
        "POST",
        "/claims",
        {"project": project, "patterns": ["src/theirs/**"], "reason": "[b]theirs[/b]"},
    )
    assert status == 200, data
    app = AgentChatApp(session_of(me), project=project)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.ready.is_set(), "start")
        composer = app.query_one(Composer)
        composer.focus()
        composer.insert("/claim src/mine/** --reason 'tui test'")
        await pilot.press("enter")
        await until(pilot, lambda: "claimed src/mine/**" in screen(app)[0], "the claim")
        app.timeline.focus()
        await pilot.press("c")
        listing = app.query_one("#claims-list")
        await until(pilot, lambda: "src/mine/**" in "\n".join(lines_of(listing)), "claims")
        shown = "\n".join(lines_of(listing))
        assert "src/theirs/**" in shown and "[b]theirs[/b]" in shown and other.nick in shown
        listing.focus()
        listing.highlighted = next(
            i
            for i, c in enumerate(app.query_one("#claims-panel").claims)
            if c["pattern"] == "src/theirs/**"
        )
        await pilot.press("x")
        await until(pilot, lambda: "only its holder" in screen(app)[0], "a refusal")
        listing.highlighted = next(
            i
            for i, c in enumerate(app.query_one("#claims-panel").claims)
            if c["pattern"] == "src/mine/**"
        )
        await pilot.press("x")
        await until(
            pilot, lambda: "src/mine/**" not in "\n".join(lines_of(listing)), "the release"
        )
    status, data = my.call("GET", f"/claims?project={urllib.parse.quote(project)}")
    assert [c["pattern"] for c in data["claims"]] == ["src/theirs/**"]


async def test_the_agents_panel_lists_who_is_around(
    make_ac: Callable[..., Ac], stack: Stack
) -> None:
    me, my = watcher(make_ac, stack)
    other = register(stack, unique("Worker"))
    shared_room(other, my, prefix="agents-")
    app = AgentChatApp(session_of(me))
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.ready.is_set(), "start")
        await pilot.press("a")
        listing = app.query_one("#agents-list")
        await until(pilot, lambda: other.nick in "\n".join(options_of(listing)), "the agent")
        line = next(x for x in options_of(listing) if other.nick in x).split("\n")[0]
        assert "agent" in line and "active" in line


async def test_the_agents_panel_shows_each_agents_presence_and_cli(
    make_ac: Callable[..., Ac], stack: Stack
) -> None:
    """An agent whose session's hook reported in (``/notify?session=&cli=``, as the hook asks
    it) shows ``working · claude``, its repository and since when; a session that starts
    while the panel is open shows up without reopening it."""
    me, my = watcher(make_ac, stack)
    busy = register(stack, unique("Busy"))
    later = register(stack, unique("Later"))
    quiet = register(stack, unique("Quiet"))
    shared_room(busy, my, later, quiet, prefix="presence-")
    status, data = busy.call("GET", "/notify?session=tui-s1&cli=claude&repo=webshop")
    assert status == 200, data
    app = AgentChatApp(session_of(me))
    async with app.run_test(size=(140, 36)) as pilot:
        await until(pilot, lambda: app.ready.is_set(), "start")
        await pilot.press("a")
        listing = app.query_one("#agents-list")

        def entry(nick: str) -> str:
            return next((o for o in options_of(listing) if nick in o), "")

        await until(pilot, lambda: "working · claude" in entry(busy.nick), "busy working")
        assert " in webshop since " in entry(busy.nick)
        assert "no session seen" in entry(quiet.nick)
        # Live: a hook report while the panel is open (the panel's refresh, no key pressed).
        status, data = later.call("GET", "/notify?session=tui-s2&cli=codex")
        assert status == 200, data
        await until(pilot, lambda: "working · codex" in entry(later.nick), "later working")
        # The liveliest first: the working agents above the one with no session.
        rows = "\n".join(options_of(listing))
        assert rows.index(quiet.nick) > max(rows.index(busy.nick), rows.index(later.nick))


async def test_your_messages_show_shown_then_read(
    make_ac: Callable[..., Ac], stack: Stack
) -> None:
    """A message sent from the TUI shows its stages after it: sent, then shown once the
    recipient's hook put it into its session, then read once ``ac listen`` returned it, each
    without a key pressed; highlighted, the status bar says it per recipient."""
    from test_delivery_stages import run_hook

    from agent_chat.tui.composer import Composer

    me, my = watcher(make_ac, stack)
    reader_ac = make_ac(unique("reader"))
    reader_ac.ok("register", unique("Reader"))  # as an agent does: its hook can ask too
    reader = agent_of(reader_ac, stack)
    reader.send("@" + my.nick, "ping me")  # the direct chat, from the reader's side
    app = AgentChatApp(session_of(me))
    async with app.run_test(size=SIZE) as pilot:
        await opened(pilot, app, "@" + reader.nick)
        await until(pilot, lambda: "ping me" in timeline_text(app), "the reader's message")
        composer = app.query_one(Composer)
        composer.focus()
        composer.insert("stages please")
        await pilot.press("enter")

        def mine() -> str:
            return next((x for x in lines_of(app.timeline) if "stages please" in x), "")

        await until(pilot, lambda: "✓ sent" in mine(), "sent, counted only")
        hook = run_hook(reader_ac, "tui-sess")
        assert hook.returncode == 0 and my.nick in hook.stdout, hook
        await until(pilot, lambda: "✓ shown" in mine(), "shown after the reader's hook")
        reader_ac.ok("listen", "@" + my.nick, "--json", "--last", "5")
        await until(pilot, lambda: "✓ read" in mine(), "read after the reader's listen")
        app.timeline.focus()
        app.timeline.highlighted = len(app.timeline.messages) - 1
        await until(pilot, lambda: f"{reader.nick}: read" in app.status.note, "per recipient")


# --- hostile text -------------------------------------------------------------------------------

MARKUP = "[b]bold[/b] [link=http://x]click[/link] [@click=app.quit]quit[/] [red]r[/red]"


async def test_hostile_bodies_names_and_topics_are_inert(
    make_ac: Callable[..., Ac], stack: Stack
) -> None:
    from helpers import BAD_CHARS, HOSTILE

    me, my = watcher(make_ac, stack)
    room = "#" + unique("evil-")
    topic = "[link=http://x]topic[/link] \x1b]52;c;cm0=\x07\u202eevil"
    status, data = my.call("POST", "/rooms", {"alias": room, "topic": topic})
    assert status in (200, 201), data
    cs = stack.synapse_url + "/_matrix/client/v3"
    evil_name = "[b]Eve[/b][link=http://x]x[/link]\x1b[31m\u202eBoss"
    uid, token, room_id = named_human_in_room(stack, evil_name, room)
    bodies = [MARKUP] + [f"<{label}> {text}" for label, text, _ in HOSTILE[:12]]
    for text in bodies:
        status, body = http_json(
            "PUT",
            f"{cs}/rooms/{room_id}/send/m.room.message/{unique('h')}",
            {"msgtype": "m.text", "body": text},
            token=token,
        )
        assert status == 200, body
    wait_for(lambda: len(my.messages(room=room, limit=50, mark_read="false")) >= len(bodies))
    app = AgentChatApp(session_of(me))
    async with app.run_test(size=(160, 40)) as pilot:
        await opened(pilot, app, room)
        await until(pilot, lambda: len(app.timeline.messages) >= len(bodies), "every body")
        app.timeline.highlighted = 0
        app.timeline.scroll_home(animate=False)
        await pilot.pause(0.2)
        text, segments = screen(app)
    bad = sorted({f"U+{ord(c):04X}" for c in text if c in BAD_CHARS})
    assert not bad, f"raw control/bidi characters on screen: {bad}"
    for token in MARKUP.split():  # the markup is shown as the characters it is
        assert token in text
    assert "[link=http://x]topic[/link]" in text
    assert f"[b]Eve[/b][link=http://x]x[/link]Boss ({uid})" in text  # a human: name and id
    assert not [s for s in segments if s.style is not None and s.style.link]
    assert not [s for s in segments if s.style is not None and "@click" in (s.style.meta or {})]
    assert app.is_running is False  # nothing in a body quit the app


# --- the server going away ----------------------------------------------------------------------


async def test_server_down_at_start_is_said_and_retried(
    make_ac: Callable[..., Ac], stack: Stack
) -> None:
    me, _ = watcher(make_ac, stack)
    nowhere = make_ac(unique("nowhere"))
    nowhere.server = f"http://127.0.0.1:{free_port()}"
    shutil.copy(me.home / "credentials.json", nowhere.home / "credentials.json")
    data = (nowhere.home / "credentials.json").read_text().replace(me.server, nowhere.server)
    (nowhere.home / "credentials.json").write_text(data)
    app = AgentChatApp(session_of(nowhere))
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: "server unreachable" in screen(app)[0], "the down state")
        assert "retrying" in screen(app)[0]


async def test_server_gone_and_back_is_said_and_nothing_is_missed(
    make_ac: Callable[..., Ac], stack: Stack
) -> None:
    me, my = watcher(make_ac, stack)
    other = register(stack, unique("Patient"))
    room = shared_room(other, my, prefix="back-")
    app = AgentChatApp(session_of(me))
    async with app.run_test(size=SIZE) as pilot:
        await opened(pilot, app, room)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, stack.stop_appservice)
        try:
            await until(pilot, lambda: "server unreachable" in screen(app)[0], "the down state")
        finally:
            await loop.run_in_executor(None, stack.start_appservice)
        # The next attempt of the back-off (at most 30 s away) finds it and says so at once.
        await until(pilot, lambda: app.connected, "the reconnection", timeout=60)
        other.send(room, "sent after the restart")
        await until(pilot, lambda: "sent after the restart" in timeline_text(app), "the message")
        assert "connected" in screen(app)[0]


async def test_too_small_a_terminal_asks_for_room(
    make_ac: Callable[..., Ac], stack: Stack
) -> None:
    me, _ = watcher(make_ac, stack)
    app = AgentChatApp(session_of(me))
    async with app.run_test(size=(70, 20)) as pilot:
        await pilot.pause(0.1)
        text = screen(app)[0]
        assert "needs at least 80×24" in text and "70×20" in text
        await pilot.resize_terminal(100, 30)
        await until(pilot, lambda: "needs at least" not in screen(app)[0], "the normal view")


def test_without_textual_one_line_says_what_to_install(tmp_path: Path) -> None:
    code = (
        "import sys; sys.modules['textual'] = None\nfrom agent_chat.cli import main; main(['tui'])"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENT_CHAT_")}
    env["AGENT_CHAT_HOME"] = str(tmp_path)
    p = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=30
    )
    assert p.returncode == 1 and p.stdout == ""
    assert p.stderr == "ac: error: ac tui needs Textual: pip install 'agent-chat[tui]'\n"


def test_no_stored_identity_says_what_to_run(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENT_CHAT_")}
    env.update(AGENT_CHAT_HOME=str(tmp_path), AGENT_CHAT_SERVER="http://127.0.0.1:9")
    ac = str(Path(sys.executable).with_name("ac"))
    p = subprocess.run([ac, "tui"], capture_output=True, text=True, env=env, timeout=30)
    assert p.returncode == 3 and p.stderr.count("\n") == 1
    assert "ac login NAME" in p.stderr
    p = subprocess.run(
        [ac, "tui", "--nick", "Nobody"], capture_output=True, text=True, env=env, timeout=30
    )
    assert p.returncode == 3 and "'ac whoami' lists" in p.stderr


# --- a real terminal ----------------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux")
def test_in_a_real_terminal(make_ac: Callable[..., Ac], stack: Stack) -> None:
    """``ac tui --nick`` in tmux: keys typed with send-keys, the screen read with capture-pane."""
    from agent_cli_helpers import Tmux

    me, my = watcher(make_ac, stack)
    other = register(stack, unique("Typist"))
    room = shared_room(other, my, prefix="tmux-")
    other.send(room, "hello from the other agent")
    tmux = Tmux(unique("ac-tui-"), {**me.env(), "TERM": "xterm-256color"})
    ac = str(Path(sys.executable).with_name("ac"))

    def screen_has(*words: str) -> str:
        text = tmux.screen()
        return text if all(w in text for w in words) else ""

    try:
        tmux.run(
            "new-session", "-d", "-s", "main", "-x", "100", "-y", "30",
            ac, "tui", "--nick", my.nick,
        )  # fmt: skip
        wait_for(lambda: screen_has("connected", room, f"as {my.nick}"), 30, "the first screen")
        tmux.run("send-keys", "-t", "main", "n")  # the next unread room: ours
        wait_for(lambda: screen_has("hello from the other agent"), 30, "the message")
        tmux.run("send-keys", "-t", "main", "i")
        tmux.run("send-keys", "-t", "main", "-l", "typed in tmux")
        tmux.run("send-keys", "-t", "main", "Enter")
        wait_for(lambda: "typed in tmux" in other.bodies(room), 30, "the other agent reads it")
        tmux.run("send-keys", "-t", "main", "F1")
        wait_for(lambda: screen_has("Agent Chat — keys"), 30, "the help screen")
        tmux.run("send-keys", "-t", "main", "Escape")
        tmux.run("resize-window", "-t", "main", "-x", "70", "-y", "20")
        wait_for(lambda: screen_has("The terminal is", "needs at"), 30, "the small-terminal note")
        tmux.run("resize-window", "-t", "main", "-x", "100", "-y", "30")
        wait_for(lambda: screen_has("typed in tmux"), 30, "the timeline again")
        tmux.run("send-keys", "-t", "main", "C-q")
        wait_for(lambda: "Traceback" not in tmux.screen() and not screen_has("connected"), 30)
    except AssertionError:
        print(tmux.screen())  # what the terminal showed, for the report
        raise
    finally:
        tmux.kill()
