"""Messages: send, read (marking read), and the unread counts behind `ac notify`."""

from __future__ import annotations

from typing import Any
import logging
import re

from aiohttp import web

from .. import messaging, waiters
from ..db import Ledger, Member, Message, Unread, transaction
from ..errors import HOMESERVER_ERRORS, ErrorAnswer
from ..ids import EVENT_ID_RE
from ..labels import oneline, room_label
from ..messaging import MAX_BODY, MAX_SEND_JSON, Outgoing, find_reply, resolve_target
from .base import (
    Context,
    caller,
    ctx,
    json_body,
    ok,
    optional_string_field,
    query_bool,
    query_int,
    query_seconds,
    routes,
    string_field,
)
from .bots import check_bot_target
from .presence import dm_presence, session_signs
from .receipts import own_receipts

log = logging.getLogger("agent_chat.api.messages")

TXN_RE = re.compile(r"^[\x21-\x7e]{1,128}$")


@routes.put("/send/{txn_id}")
async def send(request: web.Request) -> web.Response:
    """Parse a send and answer it; the sending itself is ``messaging.send``."""
    context, me = ctx(request), caller(request)
    txn_id = request.match_info["txn_id"]
    if not TXN_RE.match(txn_id):
        raise ErrorAnswer(400, "M_INVALID_PARAM", "txn_id is 1-128 printable ASCII characters")
    data = await json_body(request, MAX_SEND_JSON, nul_ok=("body",))
    reply_to = optional_string_field(data, "reply_to")
    if reply_to is not None and not EVENT_ID_RE.match(reply_to):
        raise ErrorAnswer(400, "M_INVALID_PARAM", "'reply_to' is the event id of a message ($...)")
    target = string_field(data, "to") if reply_to is None or "to" in data else ""
    if me.kind == "bot":
        check_bot_target(target)
    body = string_field(data, "body", max_len=MAX_BODY * 4, text=True)
    size = len(body.encode("utf-8"))
    if size > MAX_BODY:
        raise ErrorAnswer(
            413,
            "M_TOO_LARGE",
            f"the message is {size:,} bytes of UTF-8 ({len(body):,} characters); the limit is "
            f"{MAX_BODY // 1024} KiB ({MAX_BODY:,} bytes) of UTF-8: send it in parts",
        )
    if not body.strip():
        raise ErrorAnswer(400, "M_BAD_JSON", "'body' is only whitespace: there is nothing to send")
    notice = data.get("notice", False)
    if not isinstance(notice, bool):
        raise ErrorAnswer(400, "M_BAD_JSON", "'notice' must be true or false")
    sent = await messaging.send(context, me, Outgoing(txn_id, target, body, notice, reply_to))
    answer = sent.answer()
    if sent.posted and target.startswith("@"):  # is an agent there to see it? (api/presence.py)
        seen_by = await dm_presence(context, me.user_id, sent.room_id, target)
        if seen_by is not None:
            answer["recipient_presence"] = seen_by
    return ok(answer)


@routes.get("/messages")
async def messages(request: web.Request) -> web.Response:
    context, me = ctx(request), caller(request)
    limit = query_int(request, "limit", 20, 1, 1000)
    unread = query_bool(request, "unread", False)
    mark_read = query_bool(request, "mark_read", True)
    room = request.query.get("room")
    if room is not None and not room:
        raise ErrorAnswer(400, "M_INVALID_PARAM", "'room' is empty: leave it out for every room")
    thread = request.query.get("thread")
    if thread is not None:
        if not EVENT_ID_RE.match(thread):
            raise ErrorAnswer(
                400, "M_INVALID_PARAM", "'thread' is the event id of a message ($...)"
            )
        # A thread is read whole (its root and replies), and reading it marks nothing read:
        # the room's other messages in between were not shown.
        root = await find_reply(me.user_id, thread)
        thread, mark_read = root.root, False
        room_ids = [root.room_id]
        if room and await resolve_target(context, me.user_id, room, join=False) != root.room_id:
            raise ErrorAnswer(404, "M_NOT_FOUND", f"that message is not in {room}")
    elif room:
        room_ids = [await resolve_target(context, me.user_id, room, join=False)]
    else:
        await context.rooms.accept_direct_invites(me.user_id)  # reading everything accepts
        room_ids = await Member.joined_rooms(me.user_id)
    after: dict[str, int] = {}
    if unread:
        after = await Ledger.read_markers(me.user_id, room_ids)
    since = request.query.get("since")
    if since is not None and not since.startswith("$"):
        raise ErrorAnswer(400, "M_INVALID_PARAM", "'since' is the event id of a message ($...)")
    if since:
        found = await Message.seq_of(Message.read_db, since)
        if found is None or found[0] not in room_ids:
            raise ErrorAnswer(404, "M_NOT_FOUND", "'since' is not a message in these rooms")
        after = {r: max(after.get(r, 0), found[1]) for r in room_ids}
    found_messages = await Message.read(
        room_ids,
        after,
        limit,
        oldest_first=unread or bool(since),
        exclude_sender=me.user_id if unread else None,
        thread=thread,
    )
    labels: dict[str, str] = {}
    result = []
    for m in found_messages:
        if m.room_id not in labels:
            labels[m.room_id] = await context.rooms.label(m.room_id, me.user_id)
        result.append(
            {
                "event_id": m.event_id,
                "room_id": m.room_id,
                "room": labels[m.room_id],
                "sender": m.sender,
                "sender_name": m.sender_name or await context.rooms.person_name(m.sender),
                "ts": m.ts,
                "body": m.body,
                "msgtype": m.msgtype,
                "prefix": m.prefix,
                "urgent": m.urgent,
                "thread_id": m.thread_id,
                "in_reply_to": m.in_reply_to,
            }
        )
    if query_bool(request, "stages", False):  # your own messages: what became of them
        await own_receipts(context, me.user_id, found_messages, result)
    marked_read = False
    if mark_read and found_messages:
        # Per room, the marker moves over what was returned and never past a message that was
        # not: with --last N, an older unread message (a mention) keeps the room unread.
        oldest: dict[str, Message] = {}
        newest: dict[str, Message] = {}
        for m in found_messages:
            oldest.setdefault(m.room_id, m)
            newest[m.room_id] = m
        for room_id, m in newest.items():
            async with transaction() as conn:
                moved = await Ledger.mark_read(
                    conn, me.user_id, room_id, m.seq, m.event_id, oldest[room_id].seq
                )
            if moved:
                await context.waiters.wake_changed([], [me.user_id])  # committed
                _queue_receipt(context, me.user_id, room_id, m.event_id)
        markers = await Ledger.read_markers(me.user_id, list(newest))
        marked_read = all(markers.get(r, 0) >= m.seq for r, m in newest.items())
    # What is still unread in the rooms read, so a reader of the last N knows what it missed.
    remaining = await unread_entries(context, me.user_id, set(room_ids))
    return ok({"messages": result, "marked_read": marked_read, "unread": remaining})


def _queue_receipt(context: Context, user_id: str, room_id: str, event_id: str) -> None:
    """A read receipt for Matrix. A reader going through a burst sends one receipt at a time
    per room, the newest next (``context.receipts_in_flight``): Matrix needs only the latest
    (it covers everything before it), and each costs the homeserver several database writes.
    A room with nobody but agents gets none: only a person's client (Element) shows them; what
    an agent read is the ledger's (read markers and stages), never Matrix's."""
    key = (user_id, room_id)
    in_flight = context.receipts_in_flight
    if key in in_flight:
        in_flight[key] = event_id  # the one in flight sends this after it
        return
    in_flight[key] = None
    context.background.spawn(_send_receipts(context, key, event_id))


async def _send_receipts(context: Context, key: tuple[str, str], event_id: str) -> None:
    in_flight = context.receipts_in_flight
    try:
        if not await Member.people(key[1], cached=False):  # one who joined just now too
            return
        while True:
            await _send_receipt(context, key[0], key[1], event_id)
            newer = in_flight.get(key)
            if newer is None:
                return
            in_flight[key] = None
            event_id = newer
    finally:
        in_flight.pop(key, None)


async def _send_receipt(context: Context, user_id: str, room_id: str, event_id: str) -> None:
    """Tell Matrix what the agent read, so Element shows it; the ledger does not wait for it."""
    try:
        await context.hs.read_receipt(user_id, room_id, event_id)
    except HOMESERVER_ERRORS as e:  # anything else is logged with its traceback (background)
        log.warning("read receipt for %s in %s failed: %s", user_id, room_id, e)


async def unread_entries(
    context: Context,
    user_id: str,
    room_ids: set[str] | None = None,
    found: list[Unread] | None = None,
) -> list[dict[str, Any]]:
    """What ``notify`` answers: the caller's rooms with something unread (only ``room_ids``
    when given; ``found`` instead of reading the ledger), labelled as the caller knows them."""
    entries = []
    for u in found if found is not None else await Ledger.unread(user_id):
        if room_ids is not None and u.room_id not in room_ids:
            continue
        label = await room_label(
            context.rooms.people, user_id, u.room_id, u.alias, u.is_direct, u.other_user
        )
        entries.append(
            {
                "room": label,
                "room_id": u.room_id,
                "count": u.count,
                "urgent": u.urgent,
                "senders": [u.last_sender] if u.last_sender else [],
                "latest": u.latest,  # the stream position the count covers (POST /stages)
            }
        )
    return entries


@routes.get("/notify")
async def notify(request: web.Request) -> web.Response:
    context, me = ctx(request), caller(request)
    fmt = request.query.get("format", "json")
    if fmt not in ("json", "oneline"):
        raise ErrorAnswer(400, "M_INVALID_PARAM", "'format' is json or oneline")
    try:
        wanted = waiters.parse_filter(request.query.get("filter"))
    except ValueError as e:
        raise ErrorAnswer(400, "M_INVALID_PARAM", str(e)) from None
    wait = query_seconds(request, "wait", waiters.MAX_WAIT)
    key = waiters.cursor_key(context.config.hs_token)
    since = None
    if "since" in request.query:
        try:
            since = waiters.Cursor.decode(request.query["since"], key, me.user_id)
        except waiters.BadCursor as e:
            raise ErrorAnswer(400, "M_INVALID_PARAM", str(e)) from None

    async def read() -> list[Unread]:
        return waiters.selected(await Ledger.unread(me.user_id), wanted)

    # Hooks and wake waiters name their session: its presence (api/presence.py).
    signs_done = await session_signs(context, me.user_id, request, bool(since and wait))
    try:
        answer = await context.waiters.until_changed(
            me.user_id,
            request.protocol,
            read,
            since,
            wait or 0.0,
            hung_up=lambda: request.transport is None,  # aiohttp drops it on connection_lost
        )
    finally:
        signs_done()
    if answer is None:  # the caller hung up while waiting: nobody reads this
        return web.Response(status=204)
    entries = await unread_entries(context, me.user_id, found=answer.entries)
    cursor = answer.cursor.encode(key, me.user_id)
    if fmt == "oneline":
        line = oneline(entries)
        if query_bool(request, "covers", False) and line:  # for POST /stages (the hook)
            line += "\ncovers " + " ".join(f"{u.latest}:{u.room_id}" for u in answer.entries)
        response = web.Response(text=line + "\n" if line else "", content_type="text/plain")
        response.headers["Agent-Chat-Cursor"] = cursor
        if answer.changed is not None:
            response.headers["Agent-Chat-Changed"] = "true" if answer.changed else "false"
            response.headers["Agent-Chat-New"] = "true" if answer.new else "false"
        return response
    data: dict[str, Any] = {"unread": entries, "cursor": cursor}
    if answer.changed is not None:
        data["changed"] = answer.changed
        data["new"] = answer.new
    return ok(data)
