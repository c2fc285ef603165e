"""Delivery stages: sessions report what they showed (``POST /stages``), and senders see what
became of their messages (``GET /receipts``, optionally waiting for a stage). See
``db/stage.py`` for what each stage means."""

from __future__ import annotations

from typing import Any
import asyncio
import re

from aiohttp import web

from .. import metrics
from ..db import AgentSession, Identity, Member, Message, Recipient, Stage, transaction
from ..errors import ErrorAnswer
from ..ids import EVENT_ID_RE, ROOM_ID
from ..messaging import NO_SUCH_MESSAGE, resolve_target
from .base import Context, caller, ctx, json_body, ok, query_seconds, routes
from .presence import session_of

#: Rooms one report may cover.
MAX_COVERS = 100
MAX_WAIT = 300.0
#: How long a wait on a message not stored yet waits for it to arrive.
ARRIVAL_WAIT = 5.0
REPORTED = ("shown", "woken")
WAITABLE = ("shown", "woken", "read")
ORDER = ("counted", "shown", "woken", "read")


COVER_RE = re.compile(rf"^([0-9]{{1,18}}):({ROOM_ID})$")


def parse_covers(value: object) -> dict[str, int]:
    """``covers``: ``"SEQ:ROOM_ID SEQ:ROOM_ID"`` (as ``/notify?covers=true`` gives it); the
    highest position per room."""
    if not isinstance(value, str):
        raise ErrorAnswer(400, "M_BAD_JSON", "'covers' is a string: 'SEQ:ROOM_ID SEQ:ROOM_ID ...'")
    words = value.split(" ")
    found: dict[str, int] = {}
    for word in words[: MAX_COVERS + 1]:
        if not word:
            continue
        match = COVER_RE.match(word)
        if match is None:
            raise ErrorAnswer(400, "M_INVALID_PARAM", "'covers' holds a bad room id or position")
        found[match[2]] = max(int(match[1]), found.get(match[2], 0))
    if len(found) > MAX_COVERS or len(words) > 4 * MAX_COVERS:
        raise ErrorAnswer(400, "M_INVALID_PARAM", f"'covers' names at most {MAX_COVERS} rooms")
    return found


def _count(data: dict[str, Any], key: str, hi: int) -> int:
    value = data.get(key, 0)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= hi:
        raise ErrorAnswer(400, "M_INVALID_PARAM", f"'{key}' is a whole number from 0 to {hi}")
    return value


@routes.post("/stages")
async def record_stages(request: web.Request) -> web.Response:
    """The caller's own session showed (or woke on) lines covering these rooms' messages."""
    context, me = ctx(request), caller(request)
    data = await json_body(request)
    stage = data.get("stage")
    if stage not in REPORTED:
        raise ErrorAnswer(400, "M_INVALID_PARAM", "'stage' is shown or woken")
    session, cli = session_of(data)
    covers = parse_covers(data.get("covers", ""))
    chars = _count(data, "chars", 1_000_000)
    # Only the caller's rooms, and never past what exists there: a report cannot claim ahead.
    tops = await Stage.positions(me.user_id, sorted(covers))
    recorded = []
    async with transaction() as conn:
        for room_id, top in tops.items():
            pos = min(covers[room_id], top)
            if pos <= 0:
                continue
            moved = await Stage.record(conn, me.user_id, room_id, "shown", pos, session, cli)
            if stage == "woken":
                moved = (
                    await Stage.record(conn, me.user_id, room_id, "woken", pos, session, cli)
                    or moved
                )
            if moved:
                recorded.append({"room_id": room_id, "pos": pos})
        await AgentSession.heard(conn, me.user_id, session, cli, None, None, hook=True)
        await AgentSession.count(conn, me.user_id, session, 1, chars, 1 if stage == "woken" else 0)
    metrics.LINES_SHOWN.inc()
    metrics.CHARS_INJECTED.inc(amount=chars)
    if stage == "woken":
        metrics.WAKES.inc()
    if recorded:
        await context.waiters.wake_changed([], [me.user_id])  # committed: senders waiting
    return ok({"recorded": recorded})


async def _find(context: Context, user_id: str, request: web.Request) -> tuple[str, str, int, int]:
    """(event id, room id, seq, ts) of the caller's own message that ``event`` (or ``last``:
    the newest in that room) names; a 404 alike for missing, not theirs, or not their room."""
    event_id = request.query.get("event")
    last = request.query.get("last")
    if (event_id is None) == (last is None):
        raise ErrorAnswer(400, "M_INVALID_PARAM", "give 'event' (an event id) or 'last' (a room)")
    if last is not None:  # empty: in any of the caller's rooms
        room_ids = (
            [await resolve_target(context, user_id, last, join=False)]
            if last
            else await Member.joined_rooms(user_id)
        )
        event_id = await Stage.last_sent(user_id, room_ids)
        if event_id is None:
            raise ErrorAnswer(404, "M_NOT_FOUND", f"you have sent nothing to {last or 'any room'}")
    assert event_id is not None
    found = await Stage.message(event_id) if EVENT_ID_RE.match(event_id) else None
    if (
        found is None
        or found[1] != user_id
        or await Member.membership(found[0], user_id) not in ("join", "invite")
    ):
        raise ErrorAnswer(404, "M_NOT_FOUND", NO_SUCH_MESSAGE)
    room_id, _, seq, ts = found
    return event_id, room_id, seq, ts


async def _find_arriving(
    context: Context, user_id: str, request: web.Request, wait: float
) -> tuple[str, str, int, int]:
    """:func:`_find`; with ``wait``, a message just sent that the homeserver has not pushed
    yet (``ac send --wait`` asks at once) is waited for, up to :data:`ARRIVAL_WAIT`: storing
    it raises the sender's own ledger row, which wakes the sender's waiters. The 404 after
    that is the same as at once: nothing is revealed by waiting."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + min(wait, ARRIVAL_WAIT)
    while True:
        future = context.waiters.watch([user_id], request.protocol)
        try:
            try:
                return await _find(context, user_id, request)
            except ErrorAnswer as e:
                remaining = deadline - loop.time()
                event = request.query.get("event") or ""
                if e.status != 404 or remaining <= 0 or not EVENT_ID_RE.match(event):
                    raise
                if request.transport is None:
                    raise
            try:
                await asyncio.wait_for(future, remaining)
            except TimeoutError:
                pass
        finally:
            context.waiters.unwatch([user_id], request.protocol, future)


async def _wanted(context: Context, request: web.Request) -> set[str] | None:
    """``for``: comma-separated ``@Nick``s or user ids, resolved (None: every recipient)."""
    value = request.query.get("for")
    if value is None:
        return None
    names = [n for n in value.split(",") if n]
    if not names or len(names) > 100:
        raise ErrorAnswer(400, "M_INVALID_PARAM", "'for' names 1-100 recipients, comma-separated")
    return {await context.rooms.resolve_user(n if n.startswith("@") else "@" + n) for n in names}


async def _kind(user_id: str) -> str:
    """agent, bot or human: a client shows an agent by its nick, a person with their id."""
    identity = await Identity.get(user_id)
    return identity.kind if identity is not None and identity.kind != "human" else "human"


def _stage_json(r: Recipient, name: str, kind: str) -> dict[str, Any]:
    stages = {
        stage: {
            k: v
            for k, v in (("at", got.at), ("session", got.session), ("cli", got.cli))
            if v is not None or k == "at"
        }
        for stage, got in sorted(r.stages.items(), key=lambda kv: ORDER.index(kv[0]))
    }
    return {
        "user_id": r.user_id,
        "name": name,
        "kind": kind,
        "stage": r.stage,
        "at": r.stages[r.stage].at,
        "stages": stages,
    }


async def _recipients(
    context: Context, room_id: str, seq: int, ts: int, sender: str, wanted: set[str] | None = None
) -> list[Recipient]:
    """:meth:`Stage.recipients` without the service's own user: it is in every room it made
    and counted there like anyone, but it never reads, so a wait for "everyone" would never
    end, and ``ac receipts`` would list it as a person."""
    found = await Stage.recipients(room_id, seq, ts, sender, wanted)
    return [r for r in found if r.user_id != context.config.bot_mxid]


def _reached(r: Recipient, stage: str) -> bool:
    return ORDER.index(r.stage) >= ORDER.index(stage)


@routes.get("/receipts")
async def receipts(request: web.Request) -> web.Response:
    """Per recipient, the furthest stage your message reached; with ``wait=S``, held until
    every recipient (or every one in ``for``) reached ``stage`` (default read), or S passed."""
    context, me = ctx(request), caller(request)
    wait = query_seconds(request, "wait", MAX_WAIT)
    stage = request.query.get("stage", "read")
    if stage not in WAITABLE:
        raise ErrorAnswer(400, "M_INVALID_PARAM", "'stage' is shown, woken or read")
    event_id, room_id, seq, ts = await _find_arriving(context, me.user_id, request, wait or 0)
    wanted = await _wanted(context, request)
    recipients = await _recipients(context, room_id, seq, ts, me.user_id, wanted)
    if wanted is not None:
        missing = wanted - {r.user_id for r in recipients}
        if missing:
            name = await context.rooms.person_name(sorted(missing)[0])
            raise ErrorAnswer(
                400, "M_INVALID_PARAM", f"@{name} is not a recipient of that message"
            )
    if wait:
        waited = await _until_reached(
            context, request, room_id, seq, ts, me.user_id, wanted, stage, wait, recipients
        )
        if waited is None:
            return web.Response(status=204)  # the caller hung up
        recipients = waited
    names = {r.user_id: await context.rooms.person_name(r.user_id) for r in recipients}
    kinds = {r.user_id: await _kind(r.user_id) for r in recipients}
    answer: dict[str, Any] = {
        "event_id": event_id,
        "room_id": room_id,
        "room": await context.rooms.label(room_id, me.user_id),
        "sent_at": ts,
        "recipients": [_stage_json(r, names[r.user_id], kinds[r.user_id]) for r in recipients],
        "stage": stage,
        "reached": all(_reached(r, stage) for r in recipients),
    }
    return ok(answer)


async def _until_reached(
    context: Context,
    request: web.Request,
    room_id: str,
    seq: int,
    ts: int,
    sender: str,
    wanted: set[str] | None,
    stage: str,
    wait: float,
    recipients: list[Recipient],
) -> list[Recipient] | None:
    """The recipients once all reached ``stage``, or as they are after ``wait`` seconds; None
    when the caller hung up. Woken by whatever moves a recipient's stage (no polling): the
    future is registered before each read, so a move between read and sleep is not missed."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    watched = [r.user_id for r in recipients]
    connection = request.protocol
    while not all(_reached(r, stage) for r in recipients):
        remaining = deadline - loop.time()
        if remaining <= 0:
            break
        if request.transport is None:
            return None
        future = context.waiters.watch(watched, connection)
        try:
            recipients = await _recipients(context, room_id, seq, ts, sender, wanted)
            if all(_reached(r, stage) for r in recipients):
                break
            try:
                await asyncio.wait_for(future, remaining)
            except TimeoutError:
                pass
            if request.transport is None:
                return None  # hung up (aiohttp drops the transport on connection_lost)
        finally:
            context.waiters.unwatch(watched, connection, future)
        recipients = await _recipients(context, room_id, seq, ts, sender, wanted)
    return recipients


async def own_receipts(
    context: Context, user_id: str, found: list[Message], result: list[dict[str, Any]]
) -> None:
    """``GET /messages?stages=true``: on each of the caller's own messages, its recipients'
    stages (``receipts``: user id, name, stage and its time), as ``/receipts`` has them."""
    for m, out in zip(found, result, strict=True):
        if m.sender != user_id:
            continue
        recipients = await _recipients(context, m.room_id, m.seq, m.ts, user_id)
        out["receipts"] = [
            {
                "user_id": r.user_id,
                "name": await context.rooms.person_name(r.user_id),
                "stage": r.stage,
                "at": r.stages[r.stage].at,
            }
            for r in recipients
        ]
