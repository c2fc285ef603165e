"""Messages: send, read (marking read), and the unread counts behind `ac notify`."""

from __future__ import annotations

from typing import Any
import asyncio
import logging
import re

from aiohttp import web

from .. import waiters
from ..db import (
    ClientSend,
    Identity,
    Ledger,
    Member,
    Message,
    Room,
    Unread,
    transaction,
)
from ..errors import ApiError, from_matrix
from ..formatting import to_html
from ..labels import oneline, room_label
from ..names import People
from ..text import could_ping_by_name, mxid_mentions, nick_mentions
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

log = logging.getLogger("agent_chat.api.messages")

#: A message's body, in bytes of UTF-8 (Synapse refuses events over 64 KiB, and the HTML
#: rendering rides along): 32,768 ASCII characters, fewer of others (CJK: 10,922).
MAX_BODY = 32768
#: A /send request: the body JSON-escaped (up to 12 bytes for a 4-byte character) and more.
MAX_SEND_JSON = 3 * MAX_BODY + 4096
TXN_RE = re.compile(r"^[\x21-\x7e]{1,128}$")
EVENT_RE = re.compile(r"^\$[\x21-\x7e]{1,254}$")
#: How long a send waits for the same send in flight on another replica (clustered).
IN_FLIGHT_WAIT = 10.0
#: The one answer for an event that does not exist and one in a room the caller is not in.
NO_SUCH_MESSAGE = "no such message in your rooms"


async def resolve_target(context: Context, me: str, target: str, join: bool) -> str:
    """The room id for ``#room``, ``!room_id``, ``@Nick`` or ``@user:server``."""
    if target.startswith("@"):
        other = await context.rooms.resolve_user(target)
        if join:
            return await context.rooms.direct_chat(me, other)
        room_id = await context.rooms.accept_direct(me, other)  # looking accepts an invite
        if room_id is None:
            raise ApiError(404, "M_NOT_FOUND", f"you have no direct chat with {target}")
        return room_id
    if target.startswith(("#", "!")):
        return await context.rooms.resolve_room(me, target, join=join)
    raise ApiError(400, "M_INVALID_PARAM", "name a room as #room or a person as @name")


async def mentions_in(body: str, me: str, people: People) -> dict[str, str]:
    """Mentions in the body, as written (``@name`` or ``@user:server``) → Matrix user id
    (``names.People.resolve``: a person here before an agent, never a display name)."""
    found = {mxid: mxid for mxid in mxid_mentions(body)}
    for nick in nick_mentions(body):
        user_id = await people.resolve(nick)
        if user_id:
            found["@" + nick] = user_id
    return {text: user_id for text, user_id in found.items() if user_id != me}


async def message_content(
    body: str, me: str, room_id: str, notice: bool, people: People
) -> dict[str, Any]:
    """The event content: plain body, HTML for Element, and explicit mentions."""
    mentions = await mentions_in(body, me, people)
    content: dict[str, Any] = {"msgtype": "m.notice" if notice else "m.text", "body": body}
    # m.mentions makes push rules use it instead of guessing from the body: a mentioned human's
    # phone buzzes, and one merely named does not. Synapse spends ~2 ms validating it on every
    # event (jsonschema re-checks the schema itself each time), so it is left out when nobody
    # is mentioned and the body-based rules could not fire for any person in the room anyway.
    user_ids = list(dict.fromkeys(mentions.values()))
    if user_ids or could_ping_by_name(body, await Member.people(room_id)):
        content["m.mentions"] = {"user_ids": user_ids}
    html = to_html(body, mentions)
    if html is not None:
        content["format"] = "org.matrix.custom.html"
        content["formatted_body"] = html
    return content


async def post_message(
    context: Context,
    sender: str,
    room_id: str,
    body: str,
    txn_id: str,
    notice: bool = False,
    html: str | None = None,
    reply: Reply | None = None,
) -> str:
    """Send as ``sender``; the event id. Homeserver failures become API errors."""
    content = await message_content(body, sender, room_id, notice, context.rooms.people)
    if reply is not None:
        content["m.relates_to"] = reply.relates_to()
    if html is not None:
        content["format"] = "org.matrix.custom.html"
        content["formatted_body"] = html
    try:
        return await context.hs.send(sender, room_id, content, txn_id)
    except Exception as e:
        if getattr(e, "errcode", None) == "M_UNKNOWN_TOKEN":  # a human's session ended
            context.hs.sessions.recheck(sender)  # their next request asks the homeserver
        raise from_matrix(e, "sending the message") from None


class Reply:
    """A thread reply: to ``parent``, in the thread rooted at ``root`` in ``room_id``."""

    def __init__(self, room_id: str, parent: str, root: str) -> None:
        self.room_id = room_id
        self.parent = parent
        self.root = root

    def relates_to(self) -> dict[str, Any]:
        """``m.relates_to``: an ``m.thread`` relation (Element shows a thread) with the
        ``m.in_reply_to`` fallback for clients without threads."""
        return {
            "rel_type": "m.thread",
            "event_id": self.root,
            "is_falling_back": True,
            "m.in_reply_to": {"event_id": self.parent},
        }


async def find_reply(user_id: str, event_id: str) -> Reply:
    """The thread a reply to ``event_id`` goes into. An event that does not exist and one in
    a room the caller has not joined get the same 404: neither reveals anything."""
    found = await Message.thread_of(event_id) if EVENT_RE.match(event_id) else None
    if found is None or not await Member.is_joined(found[0], user_id):
        raise ApiError(404, "M_NOT_FOUND", NO_SUCH_MESSAGE)
    room_id, _, thread = found
    return Reply(room_id, event_id, thread or event_id)


async def loop_guarded(context: Context, me: Identity, room_id: str, thread: str | None) -> bool:
    """Whether the loop guard watches this caller's message there: an agent's (or bot's)
    message in a thread or a direct chat. Humans are never limited by it."""
    if me.kind == "human":
        return False
    if thread is not None:
        return True
    room = await Room.get(room_id)
    return room is not None and room.is_direct


def loop_guard_error(wait_ms: int, thread: str | None, limit: int) -> ApiError:
    """The 429 of the loop guard: why, and when this conversation may go on."""
    where = "this thread" if thread else "this direct chat"
    return ApiError(
        429,
        "AC_LOOP_GUARD",
        f"loop guard: agents answered each other {limit} times within a minute in {where}, "
        f"which looks like a loop; you may answer again in {-(-wait_ms // 1000)} s "
        "(a human there is never limited)",
        wait_ms,
    )


@routes.put("/send/{txn_id}")
async def send(request: web.Request) -> web.Response:
    context, me = ctx(request), caller(request)
    txn_id = request.match_info["txn_id"]
    if not TXN_RE.match(txn_id):
        raise ApiError(400, "M_INVALID_PARAM", "txn_id is 1-128 printable ASCII characters")
    data = await json_body(request, MAX_SEND_JSON, nul_ok=("body",))
    reply_to = optional_string_field(data, "reply_to")
    if reply_to is not None and not EVENT_RE.match(reply_to):
        raise ApiError(400, "M_INVALID_PARAM", "'reply_to' is the event id of a message ($...)")
    target = string_field(data, "to") if reply_to is None or "to" in data else ""
    if me.kind == "bot":
        check_bot_target(target)
    body = string_field(data, "body", max_len=MAX_BODY * 4, text=True)
    size = len(body.encode("utf-8"))
    if size > MAX_BODY:
        raise ApiError(
            413,
            "M_TOO_LARGE",
            f"the message is {size:,} bytes of UTF-8 ({len(body):,} characters); the limit is "
            f"{MAX_BODY // 1024} KiB ({MAX_BODY:,} bytes) of UTF-8: send it in parts",
        )
    if not body.strip():
        raise ApiError(400, "M_BAD_JSON", "'body' is only whitespace: there is nothing to send")
    notice = data.get("notice", False)
    if not isinstance(notice, bool):
        raise ApiError(400, "M_BAD_JSON", "'notice' must be true or false")
    reply = await find_reply(me.user_id, reply_to) if reply_to is not None else None
    previous = await ClientSend.get(me.user_id, txn_id)  # a read: never queues behind writes
    guarded = False
    if previous is None:  # a new send
        wait_ms = await context.send_limiter.take(me.user_id)
        if wait_ms is not None:
            raise ApiError(429, "M_LIMIT_EXCEEDED", "too many messages; slow down", wait_ms)
        if reply is None:
            room_id = await resolve_target(context, me.user_id, target, join=True)
        else:
            room_id = reply.room_id
            if target and await resolve_target(context, me.user_id, target, join=False) != room_id:
                raise ApiError(404, "M_NOT_FOUND", f"that message is not in {target}")
        thread = reply.root if reply else None
        guarded = await loop_guarded(context, me, room_id, thread)
        if guarded:
            wait_ms = await context.loop_guard.admit(room_id, thread, me.user_id)
            if wait_ms is not None:
                raise loop_guard_error(wait_ms, thread, context.loop_guard.limit)
        attempt = ClientSend(me.user_id, txn_id, room_id, None)
        if context.config.clustered:
            # A concurrent duplicate may be on another replica, and Synapse deduplicates
            # txnIds per process only: reserve first; the one that loses answers what the
            # winner sent.
            earlier = await attempt.reserve()
            if earlier is not None:
                return await _answer_in_flight(context, me.user_id, earlier, reply)
            event_id = await post_message(
                context, me.user_id, room_id, body, txn_id, notice=notice, reply=reply
            )
        else:
            # The reservation is written while Synapse is asked, not before: the write may
            # queue behind a homeserver transaction, and a concurrent duplicate of this request
            # is answered by Synapse's own deduplication of the derived txnId anyway.
            reserving = asyncio.create_task(attempt.reserve())
            try:
                event_id = await post_message(
                    context, me.user_id, room_id, body, txn_id, notice=notice, reply=reply
                )
            finally:
                await reserving
        if guarded:
            context.loop_guard.record(room_id, reply.root if reply else None, me.user_id, event_id)
    else:  # a retry
        attempt, room_id = previous, previous.room_id
        if previous.event_id is None:
            # The earlier attempt's outcome is unknown (e.g. Synapse restarted mid-request
            # and forgot its own deduplication): look for it before sending again.
            try:
                found = await context.hs.find_sent(me.user_id, room_id, txn_id)
            except Exception as e:
                raise from_matrix(e, "checking an earlier attempt of this send") from None
            if found:
                await previous.complete(found)
        if previous.event_id is not None:  # answer what the first attempt did
            label = await context.rooms.label(room_id, me.user_id)
            return ok(_sent(previous.event_id, room_id, label, reply.root if reply else None))
        event_id = await post_message(
            context, me.user_id, room_id, body, txn_id, notice=notice, reply=reply
        )
    # Recorded after answering: a retry before this lands finds the event in the timeline.
    context.background.spawn(attempt.complete(event_id))
    if target.startswith("#"):
        label = "#" + context.rooms.alias_localpart(target)
    else:
        label = await context.rooms.label(room_id, me.user_id)
    answer = _sent(event_id, room_id, label, reply.root if reply else None)
    if target.startswith("@"):  # is an agent there to see it? (api/presence.py)
        seen_by = await dm_presence(context, me.user_id, room_id)
        if seen_by is not None:
            answer["recipient_presence"] = seen_by
    return ok(answer)


async def _answer_in_flight(
    context: Context, user_id: str, earlier: ClientSend, reply: Reply | None
) -> web.Response:
    """The same send is in flight on another replica: answer with its event once it is
    recorded; if it takes too long, ask the client to retry (it will find the event then)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + IN_FLIGHT_WAIT
    found: ClientSend | None = earlier
    while found is not None and found.event_id is None and loop.time() < deadline:
        await asyncio.sleep(0.05)
        found = await ClientSend.get(user_id, earlier.txn_id)
    if found is None or found.event_id is None:
        raise ApiError(
            503,
            "AC_SEND_IN_FLIGHT",
            "a send with this txn id is still in flight; retry it with the same txn id",
            1000,
        )
    label = await context.rooms.label(found.room_id, user_id)
    return ok(_sent(found.event_id, found.room_id, label, reply.root if reply else None))


def _sent(event_id: str, room_id: str, label: str, thread: str | None) -> dict[str, Any]:
    """A send's answer (``thread_id`` only for a thread reply)."""
    answer: dict[str, Any] = {"event_id": event_id, "room_id": room_id, "room": label}
    if thread is not None:
        answer["thread_id"] = thread
    return answer


@routes.get("/messages")
async def messages(request: web.Request) -> web.Response:
    context, me = ctx(request), caller(request)
    limit = query_int(request, "limit", 20, 1, 1000)
    unread = query_bool(request, "unread", False)
    mark_read = query_bool(request, "mark_read", True)
    room = request.query.get("room")
    if room is not None and not room:
        raise ApiError(400, "M_INVALID_PARAM", "'room' is empty: leave it out for every room")
    thread = request.query.get("thread")
    if thread is not None:
        if not EVENT_RE.match(thread):
            raise ApiError(400, "M_INVALID_PARAM", "'thread' is the event id of a message ($...)")
        # A thread is read whole (its root and replies), and reading it marks nothing read:
        # the room's other messages in between were not shown.
        root = await find_reply(me.user_id, thread)
        thread, mark_read = root.root, False
        room_ids = [root.room_id]
        if room and await resolve_target(context, me.user_id, room, join=False) != root.room_id:
            raise ApiError(404, "M_NOT_FOUND", f"that message is not in {room}")
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
        raise ApiError(400, "M_INVALID_PARAM", "'since' is the event id of a message ($...)")
    if since:
        found = await Message.seq_of(Message.read_db, since)
        if found is None or found[0] not in room_ids:
            raise ApiError(404, "M_NOT_FOUND", "'since' is not a message in these rooms")
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
        from .receipts import own_receipts  # (receipts imports this module)

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
                context.background.spawn(_send_receipt(context, me.user_id, room_id, m.event_id))
        markers = await Ledger.read_markers(me.user_id, list(newest))
        marked_read = all(markers.get(r, 0) >= m.seq for r, m in newest.items())
    # What is still unread in the rooms read, so a reader of the last N knows what it missed.
    remaining = await unread_entries(context, me.user_id, set(room_ids))
    return ok({"messages": result, "marked_read": marked_read, "unread": remaining})


async def _send_receipt(context: Context, user_id: str, room_id: str, event_id: str) -> None:
    """Tell Matrix what the agent read, so Element shows it; the ledger does not wait for it."""
    try:
        await context.hs.read_receipt(user_id, room_id, event_id)
    except Exception as e:
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
        raise ApiError(400, "M_INVALID_PARAM", "'format' is json or oneline")
    try:
        wanted = waiters.parse_filter(request.query.get("filter"))
    except ValueError as e:
        raise ApiError(400, "M_INVALID_PARAM", str(e)) from None
    wait = query_seconds(request, "wait", waiters.MAX_WAIT)
    key = waiters.cursor_key(context.config.hs_token)
    since = None
    if "since" in request.query:
        try:
            since = waiters.Cursor.decode(request.query["since"], key, me.user_id)
        except waiters.BadCursor as e:
            raise ApiError(400, "M_INVALID_PARAM", str(e)) from None

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
