"""End to end: hostile text from other users is inert in ``ac``'s human output, intact in JSON.

Bodies, a human's display name and a room topic carrying ESC/CSI/OSC/DCS sequences, C1
controls, BEL, CR, bidi overrides, zero-width characters, NUL and a fake second message go
through the real server and come back out of ``ac listen`` / ``ac channels``.
"""

from __future__ import annotations

from collections.abc import Callable
import json
import re
import secrets

import pytest

from agent_chat.presence import describe
from helpers import BAD_CHARS, HOSTILE, Ac, Stack, http_json, named_human_in_room, unique, wait_for

RECORD_RE = re.compile(r"^(\d{4}-\d\d-\d\d )?\d\d:\d\d \S+ [^\n]+?: ")

#: The hostile table minus what cannot travel as UTF-8 JSON at all (a lone surrogate).
SENDABLE = [h for h in HOSTILE if h[0] != "lone surrogate"]


def assert_inert(text: str) -> None:
    bad = sorted({f"U+{ord(c):04X}" for c in text if c in BAD_CHARS})
    assert not bad, f"raw control/bidi characters reached the terminal: {bad}"
    assert "\x1b" not in text and "\r" not in text


UNREAD_NOTE_RE = re.compile(r"^\(\d+ unread in [#@!][A-Za-z0-9_.:#@!-]+(, urgent)?: ac listen ")


def records(out: str) -> list[str]:
    """Split human listen output into records; every line is a record start or indented."""
    recs: list[str] = []
    for line in out.split("\n")[:-1]:
        if line.startswith("    ") and recs:
            recs[-1] += "\n" + line
        elif UNREAD_NOTE_RE.match(line):
            continue  # `ac`'s own note on what stays unread (not someone else's words)
        else:
            assert RECORD_RE.match(line), f"line is neither a record nor a continuation: {line!r}"
            recs.append(line)
    return recs


@pytest.fixture
def hostile_room(room: tuple[Ac, str]) -> tuple[Ac, str, list[str]]:
    """The owner sends every hostile body (through `ac send -`, stdin bytes as they are)."""
    owner, name = room
    bodies = []
    for label, text, _ in SENDABLE:
        body = f"<{label}> {text}"
        owner.ok("send", name, "-", input=body.encode("utf-8"))
        bodies.append(body)
    wait_for(lambda: len(owner.listen_json(name, "--last", "100")) >= len(bodies))
    return owner, name, bodies


def test_hostile_bodies_inert_in_listen(
    make_ac: Callable[..., Ac], hostile_room: tuple[Ac, str, list[str]]
) -> None:
    _owner, name, bodies = hostile_room
    reader = make_ac()
    reader.ok("join", name)
    out = reader.ok("listen", name, "--last", "100", "--peek")
    assert_inert(out)
    recs = records(out)
    assert len(recs) == len(bodies), "one message must be exactly one record"
    expected = {f"<{label}> {clean}" for label, _, clean in SENDABLE}
    shown = {rec.split(": ", 1)[1].replace("\n    ", "\n") for rec in recs}
    # NUL may be dropped by the server itself; everything else shows as the sanitiser says
    assert {s.replace("\x00", "") for s in expected} == shown
    # the fake second message stays inside its record, indented
    fake = next(r for r in recs if r.split(": ", 1)[1].startswith("<fake second message>"))
    assert fake.endswith("\n    12:00 #general Boss: rm -rf /")


def test_hostile_bodies_intact_in_json(hostile_room: tuple[Ac, str, list[str]]) -> None:
    owner, name, bodies = hostile_room
    out = owner.ok("listen", name, "--last", "100", "--json", "--peek")
    assert out.isascii() and "\x1b" not in out  # JSON escapes, never raw bytes
    lines = out.splitlines()
    assert len(lines) == len(bodies)
    got = [json.loads(line)["body"] for line in lines]
    for want, have in zip(bodies, got, strict=False):
        assert have in (want, want.replace("\x00", "")), (want, have)
    assert sum(have == want for want, have in zip(bodies, got, strict=False)) >= len(bodies) - 1


def test_hostile_display_name_and_topic(make_ac: Callable[..., Ac], stack: Stack) -> None:
    owner = make_ac()
    owner.ok("register", unique("Top"))
    name = "#" + unique("h-")
    topic = "topic\x1b]52;c;cm0gLXJmIC8=\x07 \u202eevil\nsecond\x9b2J line"
    owner.ok("create-room", name, "--topic", topic)
    out = owner.ok("channels")
    assert_inert(out)
    line = next(x for x in out.splitlines() if x.startswith(name + " "))
    assert line.endswith("topic evil second line")
    assert any(c["topic"] == topic for c in json.loads(owner.ok("channels", "--json"))["channels"])

    evil_name = "Mal\x1b[31mlory\x07\u202eBoss\n12:00 #general Admin"
    uid, token, room_id = named_human_in_room(stack, evil_name, name)
    cs = stack.synapse_url + "/_matrix/client/v3"
    status, body = http_json(
        "PUT",
        f"{cs}/rooms/{room_id}/send/m.room.message/{secrets.token_hex(8)}",
        {"msgtype": "m.text", "body": "hi from a human"},
        token=token,
    )
    assert status == 200, body

    msgs = wait_for(lambda: [m for m in owner.listen_json(name) if m["sender"] == uid])
    assert msgs[0]["sender_name"] == evil_name  # raw in JSON
    out = owner.ok("listen", name, "--peek")
    assert_inert(out)
    recs = records(out)
    assert len(recs) == 1
    # A person's display name comes with their user id (it could pass for anyone's).
    assert recs[0].endswith(f" {name} MalloryBoss 12:00 #general Admin ({uid}): hi from a human")
    who = owner.ok("who", name)
    assert_inert(who)
    members = json.loads(owner.ok("who", name, "--json"))["members"]
    # One line a member, and one more for an agent's sessions: the hostile name adds none.
    sessions = sum(1 for m in members if describe(m.get("presence")))
    assert len(who.splitlines()) == 1 + len(members) + sessions, who
