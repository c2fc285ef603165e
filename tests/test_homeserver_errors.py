"""What the API answers when the homeserver fails, and when something else does.

The homeserver's own refusals keep their mapped statuses (a 403 stays a 403); anything else is
a bug of ours and must not pass for one: it is a 500, logged in the appservice's log with its
traceback (it used to be a silent 502 "the homeserver failed").
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
import sqlite3

import pytest

from agent_chat_server import control
from helpers import START_TIMEOUT, Stack, http_json, register, shared_room, unique, wait_for


@contextmanager
def _log_after(path: Path) -> Iterator[Callable[[], str]]:
    """What the log gains from here on (the stack's log is shared by the whole session)."""
    start = path.stat().st_size if path.exists() else 0

    def read() -> str:
        with path.open("rb") as f:
            f.seek(start)
            return f.read().decode(errors="replace")

    yield read


def test_a_homeserver_refusal_keeps_its_status(stack: Stack) -> None:
    """Synapse refuses a send (the room lets only moderators speak): 403, not a 500 or 502,
    and nothing is logged as an unhandled error."""
    human = stack.create_human(unique("pl"))
    status, data = http_json(
        "POST",
        stack.synapse_url + "/_matrix/client/v3/createRoom",
        {"preset": "public_chat", "power_level_content_override": {"events_default": 50}},
        human["access_token"],
    )
    assert status == 200, data
    room_id = data["room_id"]
    agent = register(stack)
    status, data = agent.call("POST", "/join", {"room": room_id})
    assert status == 200, data
    with _log_after(stack.dd.appservice_log) as logged:
        status, data = agent.call("PUT", "/send/" + unique("t"), {"to": room_id, "body": "hi"})
        assert status == 403, data
        assert data["errcode"] == "M_FORBIDDEN"
        assert "the homeserver refused sending the message" in data["error"], data
        assert "unhandled error" not in logged()


def test_an_unexpected_error_is_a_logged_500(stack: Stack) -> None:
    """A corrupt identity row (its user id stored as bytes, which the code never expects)
    breaks a search from that agent's messages inside the homeserver call: the caller gets a
    500 that blames nobody, and the log has the route and the traceback."""
    if not stack.database.startswith("sqlite:"):
        pytest.skip("corrupts the SQLite file directly")
    agent = register(stack)
    nick = unique("Ghost")
    user_id = f"@_ac_{nick.lower()}:{stack.server_name}"
    db = sqlite3.connect(stack.database.split(":", 1)[1], timeout=10)
    try:
        with db:
            db.execute(
                "INSERT INTO identity (user_id, nick, nick_key, kind, created_at) "
                "VALUES (?, ?, ?, 'agent', 0)",
                (user_id.encode(), nick, nick.lower()),
            )
        with _log_after(stack.dd.appservice_log) as logged:
            status, data = agent.call("GET", f"/search?q=hello&from=@{nick}")
            assert status == 500, data
            assert data == {
                "errcode": "M_UNKNOWN",
                "error": "internal error; see the appservice log",
            }
            text = wait_for(
                lambda: logged() if "TypeError" in logged() else None, what="the traceback"
            )
        assert "unhandled error in GET /_agent_chat/v1/search" in text, text
        assert "Traceback (most recent call last)" in text, text
    finally:
        with db:
            db.execute("DELETE FROM identity WHERE nick_key = ?", (nick.lower(),))
        db.close()


def test_an_unreachable_homeserver_is_a_503(stack: Stack) -> None:
    """Synapse is down while an agent joins a room: 503 "unreachable" (retry later), as a send
    says it, not a 500 that blames the appservice."""
    owner, joiner = register(stack), register(stack)
    room = shared_room(owner)
    control.pause_service(stack.dd, "synapse")
    try:
        status, data = joiner.call("POST", "/join", {"room": room})
    finally:
        control.resume_service(stack.dd, "synapse", START_TIMEOUT)
        stack.wait_healthy()
    assert status == 503, data
    assert data["errcode"] == "AC_HOMESERVER_UNREACHABLE", data
