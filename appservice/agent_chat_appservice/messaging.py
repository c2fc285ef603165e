"""Sending a message, apart from the HTTP route that asks for it (``api/messages.py``).

The route parses and answers; this module resolves the target (a room, a person's direct
chat, the thread of a reply), checks the send and loop-guard limits, sends with the client's
transaction id so that a retry never posts twice (reserved in ``client_send``; clustered
replicas reserve before sending), and records the event the send produced. Other routes that
post or resolve a target (webhooks, rooms, search, receipts) use it too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
import asyncio

from agent_chat.wire import MAX_MESSAGE_BYTES

from .db import ClientSend, Identity, Member, Message, Room
from .errors import HOMESERVER_ERRORS, ErrorAnswer, from_matrix, seconds_up
from .formatting import to_html
from .ids import EVENT_ID_RE
from .names import People
from .text import could_ping_by_name, mxid_mentions, nick_mentions

if TYPE_CHECKING:
    from .api.base import Context

#: A message's body, in bytes of UTF-8 (Synapse refuses events over 64 KiB, and the HTML
#: rendering rides along): 32,768 ASCII characters, fewer of others (CJK: 10,922). The client
#: knows the same limit from the same place.
MAX_BODY = MAX_MESSAGE_BYTES
#: A /send request: the body JSON-escaped (up to 12 bytes for a 4-byte character) and more.
MAX_SEND_JSON = 3 * MAX_BODY + 4096
#: How long a send waits for the same send in flight on another replica (clustered).
IN_FLIGHT_WAIT = 10.0
#: The one answer for an event that does not exist and one in a room the caller is not in.
NO_SUCH_MESSAGE = "no such message in your rooms"


async def resolve_target(context: Context, me: str, target: str, join: bool) -> str:
    """The room id for ``#room``, ``!room_id``, ``@Nick`` or ``@user:server``."""
    if target.startswith("@"):
        other = await context.rooms.resolve_user(target)
        if join:
            return await context.rooms.direct_chat(me, other, context.background.spawn)
        room_id = await context.rooms.accept_direct(me, other)  # looking accepts an invite
        if room_id is None:
            raise ErrorAnswer(404, "M_NOT_FOUND", f"you have no direct chat with {target}")
        return room_id
    if target.startswith(("#", "!")):
        return await context.rooms.resolve_room(me, target, join=join)
    raise ErrorAnswer(400, "M_INVALID_PARAM", "name a room as #room or a person as @name")


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
    found = await Message.thread_of(event_id) if EVENT_ID_RE.match(event_id) else None
    if found is None or not await Member.is_joined(found[0], user_id):
        raise ErrorAnswer(404, "M_NOT_FOUND", NO_SUCH_MESSAGE)
    room_id, _, thread = found
    return Reply(room_id, event_id, thread or event_id)


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
    """Send as ``sender``; the event id. The homeserver's failures become API errors; any
    other exception is a bug and goes on to the error middleware (logged, 500)."""
    content = await message_content(body, sender, room_id, notice, context.rooms.people)
    if reply is not None:
        content["m.relates_to"] = reply.relates_to()
    if html is not None:
        content["format"] = "org.matrix.custom.html"
        content["formatted_body"] = html
    try:
        return await context.hs.send(sender, room_id, content, txn_id)
    except HOMESERVER_ERRORS as e:
        if getattr(e, "errcode", None) == "M_UNKNOWN_TOKEN":  # a human's session ended
            context.hs.sessions.recheck(sender)  # their next request asks the homeserver
        raise from_matrix(e, "sending the message") from None


async def loop_guarded(context: Context, me: Identity, room_id: str, thread: str | None) -> bool:
    """Whether the loop guard watches this caller's message there: an agent's (or bot's)
    message in a thread or a direct chat. Humans are never limited by it."""
    if me.kind == "human":
        return False
    if thread is not None:
        return True
    room = await Room.get(room_id)
    return room is not None and room.is_direct


def loop_guard_error(wait_ms: int, thread: str | None, limit: int) -> ErrorAnswer:
    """The 429 of the loop guard: why, and when this conversation may go on."""
    where = "this thread" if thread else "this direct chat"
    return ErrorAnswer(
        429,
        "AC_LOOP_GUARD",
        f"loop guard: agents answered each other {limit} times within a minute in {where}, "
        f"which looks like a loop; you may answer again in {seconds_up(wait_ms)} s "
        "(a human there is never limited)",
        wait_ms,
    )


@dataclass(frozen=True)
class Outgoing:
    """A send as the route parsed it: nothing resolved or checked against the ledger yet."""

    txn_id: str
    #: ``#room``, ``!room_id``, ``@person``; empty for a reply that names no room.
    target: str
    body: str
    notice: bool
    #: The event id this message replies to (in its thread), if any.
    reply_to: str | None


@dataclass(frozen=True)
class Sent:
    """What became of a send: its event, where, and whether this request posted it (False:
    an earlier attempt with the same txn id did, and this is its answer)."""

    event_id: str
    room_id: str
    room: str
    thread_id: str | None
    posted: bool

    def answer(self) -> dict[str, Any]:
        """The answer of ``PUT /send`` (``thread_id`` only for a thread reply)."""
        answer: dict[str, Any] = {
            "event_id": self.event_id,
            "room_id": self.room_id,
            "room": self.room,
        }
        if self.thread_id is not None:
            answer["thread_id"] = self.thread_id
        return answer


async def send(context: Context, me: Identity, out: Outgoing) -> Sent:
    """Send ``out`` as ``me``, once per txn id: a retry answers what the first attempt did."""
    reply = await find_reply(me.user_id, out.reply_to) if out.reply_to is not None else None
    thread = reply.root if reply else None
    previous = await ClientSend.get(me.user_id, out.txn_id)  # a read: never queues behind writes
    if previous is not None:
        return await _retry(context, me, out, previous, reply)
    wait_ms = await context.send_limiter.take(me.user_id)
    if wait_ms is not None:
        raise ErrorAnswer(429, "M_LIMIT_EXCEEDED", "too many messages; slow down", wait_ms)
    if reply is None:
        room_id = await resolve_target(context, me.user_id, out.target, join=True)
    else:
        room_id = reply.room_id
        if (
            out.target
            and await resolve_target(context, me.user_id, out.target, join=False) != room_id
        ):
            raise ErrorAnswer(404, "M_NOT_FOUND", f"that message is not in {out.target}")
    guarded = await loop_guarded(context, me, room_id, thread)
    if guarded:
        wait_ms = await context.loop_guard.admit(room_id, thread, me.user_id)
        if wait_ms is not None:
            raise loop_guard_error(wait_ms, thread, context.loop_guard.limit)
    attempt = ClientSend(me.user_id, out.txn_id, room_id, None)
    if context.config.clustered:
        # A concurrent duplicate may be on another replica, and Synapse deduplicates txnIds
        # per process only: reserve first; the one that loses answers what the winner sent.
        earlier = await attempt.reserve()
        if earlier is not None:
            return await _in_flight(context, me.user_id, earlier, thread)
        event_id = await _post(context, me, room_id, out, reply)
    else:
        # The reservation is written while Synapse is asked, not before: the write may queue
        # behind a homeserver transaction, and a concurrent duplicate of this request is
        # answered by Synapse's own deduplication of the derived txnId anyway.
        reserving = asyncio.create_task(attempt.reserve())
        try:
            event_id = await _post(context, me, room_id, out, reply)
        finally:
            await reserving
    if guarded:
        context.loop_guard.record(room_id, thread, me.user_id, event_id)
    return await _posted(context, me, out, attempt, event_id, thread)


async def _retry(
    context: Context, me: Identity, out: Outgoing, previous: ClientSend, reply: Reply | None
) -> Sent:
    """A txn id seen before: answer what its first attempt sent, or send it now if that
    attempt never reached the homeserver."""
    room_id, thread = previous.room_id, reply.root if reply else None
    if previous.event_id is None:
        # The earlier attempt's outcome is unknown (e.g. Synapse restarted mid-request and
        # forgot its own deduplication): look for it before sending again.
        try:
            found = await context.hs.find_sent(me.user_id, room_id, out.txn_id)
        except HOMESERVER_ERRORS as e:
            raise from_matrix(e, "checking an earlier attempt of this send") from None
        if found:
            await previous.complete(found)
    if previous.event_id is not None:  # answer what the first attempt did
        label = await context.rooms.label(room_id, me.user_id)
        return Sent(previous.event_id, room_id, label, thread, posted=False)
    event_id = await _post(context, me, room_id, out, reply)
    return await _posted(context, me, out, previous, event_id, thread)


async def _post(
    context: Context, me: Identity, room_id: str, out: Outgoing, reply: Reply | None
) -> str:
    return await post_message(
        context, me.user_id, room_id, out.body, out.txn_id, notice=out.notice, reply=reply
    )


async def _posted(
    context: Context,
    me: Identity,
    out: Outgoing,
    attempt: ClientSend,
    event_id: str,
    thread: str | None,
) -> Sent:
    """Record the event a send produced, and say where it went."""
    # Recorded after answering: a retry before this lands finds the event in the timeline.
    context.background.spawn(attempt.complete(event_id))
    room_id = attempt.room_id
    if out.target.startswith("#"):
        remote = context.rooms.remote_alias(out.target)  # another server's room, as named
        label = remote or "#" + context.rooms.alias_localpart(out.target)
    else:
        label = await context.rooms.label(room_id, me.user_id)
    return Sent(event_id, room_id, label, thread, posted=True)


async def _in_flight(
    context: Context, user_id: str, earlier: ClientSend, thread: str | None
) -> Sent:
    """The same send is in flight on another replica: answer with its event once it is
    recorded; if it takes too long, ask the client to retry (it will find the event then)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + IN_FLIGHT_WAIT
    found: ClientSend | None = earlier
    while found is not None and found.event_id is None and loop.time() < deadline:
        await asyncio.sleep(0.05)
        found = await ClientSend.get(user_id, earlier.txn_id)
    if found is None or found.event_id is None:
        raise ErrorAnswer(
            503,
            "AC_SEND_IN_FLIGHT",
            "a send with this txn id is still in flight; retry it with the same txn id",
            1000,
        )
    label = await context.rooms.label(found.room_id, user_id)
    return Sent(found.event_id, found.room_id, label, thread, posted=False)
