"""Turns the events Synapse pushes into ledger changes.

Two steps, so that one bad record never blocks the rest: ``parse_*`` validates a raw event
into a small typed record (or None, logged, skipped), and ``apply`` writes records inside the
caller's database transaction. A database error is therefore never about one event's shape:
it fails the whole homeserver transaction, which Synapse then retries.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
import logging

from mautrix.util.async_db import Connection

from .db import DirectChat, Ledger, Member, Message, Room
from .db.ledger import Counted
from .db.message import Delivered, NewMessage
from .db.room import sender_name
from .ids import EVENT_ID_RE, ROOM_ID_RE, USER_ID_RE
from .text import db_text, detect_prefix, is_urgent

if TYPE_CHECKING:  # annotations only: no runtime dependency on typing_extensions
    from typing_extensions import TypeIs

log = logging.getLogger("agent_chat.ingest")

_ID_RE = {"room": ROOM_ID_RE, "event": EVENT_ID_RE, "user": USER_ID_RE}
MEMBERSHIPS = frozenset({"join", "leave", "ban", "invite", "knock"})
#: A stored body is cut to this many characters: Synapse takes events up to 64 KiB, from
#: any client, while the API posts at most ``messaging.MAX_BODY`` bytes.
MAX_STORED_BODY = 65536


def _valid_id(value: object, kind: str) -> TypeIs[str]:
    return isinstance(value, str) and bool(_ID_RE[kind].match(value))


@dataclass
class MessageRecord(Delivered):
    """A message event, parsed: as delivered, with whom it mentions (``m.mentions``)."""

    mentioned: list[str] = field(default_factory=list)
    room_mention: bool = False


@dataclass
class MemberRecord:
    room_id: str
    user_id: str
    sender: str
    membership: str
    displayname: str | None
    is_direct: bool


@dataclass
class RoomStateRecord:
    room_id: str
    field: str  # name | topic | alias
    value: str | None


@dataclass
class ReceiptRecord:
    room_id: str
    event_id: str
    user_id: str


#: What ``parse_*`` makes of an event and ``apply`` writes.
Record = MessageRecord | MemberRecord | RoomStateRecord | ReceiptRecord


@dataclass
class Effects:
    """What a transaction asks of the appservice after it is committed."""

    invites: list[MemberRecord] = field(default_factory=list)
    #: Invitations of ours that ``auto_join`` refuses: never recorded; the agent declines.
    declined: list[MemberRecord] = field(default_factory=list)
    messages_counted: int = 0
    #: Whose counts may have changed: every member of ``rooms``, and ``users`` (readers,
    #: joiners, leavers). Long-poll waiters are woken with them once committed.
    rooms: set[str] = field(default_factory=set)
    users: set[str] = field(default_factory=set)


def parse_event(
    raw: Any, server_name: str
) -> MessageRecord | MemberRecord | RoomStateRecord | None:
    """Validate a room event. None for anything the ledger ignores or cannot trust."""
    if not isinstance(raw, dict):
        return None
    room_id, sender, etype = raw.get("room_id"), raw.get("sender"), raw.get("type")
    content = raw.get("content")
    if not (_valid_id(room_id, "room") and _valid_id(sender, "user")):
        return None
    if not isinstance(etype, str) or not isinstance(content, dict):
        return None
    state_key = raw.get("state_key")
    if etype == "m.room.message":
        if state_key is not None:
            return None
        return _parse_message(raw, room_id, sender, content)
    # Room configuration changes only through real state events (state_key present).
    if not isinstance(state_key, str):
        return None
    if etype == "m.room.member":
        membership = content.get("membership")
        if membership not in MEMBERSHIPS or not _valid_id(state_key, "user"):
            return None
        name = content.get("displayname")
        return MemberRecord(
            room_id=room_id,
            user_id=state_key,
            sender=sender,
            membership=membership,
            displayname=db_text(name, 256) if isinstance(name, str) else None,
            is_direct=content.get("is_direct") is True,
        )
    if state_key != "":
        return None
    if etype in ("m.room.topic", "m.room.name"):
        key = "topic" if etype == "m.room.topic" else "name"
        value = content.get(key)
        return RoomStateRecord(room_id, key, db_text(value) if isinstance(value, str) else None)
    if etype == "m.room.canonical_alias":
        alias = content.get("alias")
        suffix = ":" + server_name
        if isinstance(alias, str) and alias.startswith("#") and alias.endswith(suffix):
            return RoomStateRecord(room_id, "alias", db_text(alias[1 : -len(suffix)], 255))
        return RoomStateRecord(room_id, "alias", None)
    return None


def _parse_message(
    raw: dict[str, Any], room_id: str, sender: str, content: dict[str, Any]
) -> MessageRecord | None:
    event_id, ts = raw.get("event_id"), raw.get("origin_server_ts")
    body, msgtype = content.get("body"), content.get("msgtype")
    if not _valid_id(event_id, "event") or not isinstance(ts, int) or isinstance(ts, bool):
        return None
    if not isinstance(body, str) or not isinstance(msgtype, str):
        return None
    relates = content.get("m.relates_to")
    if isinstance(relates, dict) and relates.get("rel_type") == "m.replace":
        return None  # an edit is not a new message
    thread_id, in_reply_to = _relations(relates)
    mentions = content.get("m.mentions")
    mentioned: list[str] = []
    room_mention = False
    if isinstance(mentions, dict):
        user_ids = mentions.get("user_ids")
        if isinstance(user_ids, list):
            mentioned = [u for u in user_ids[:50] if _valid_id(u, "user") and u != sender]
        room_mention = mentions.get("room") is True
    return MessageRecord(
        event_id=event_id,
        room_id=room_id,
        sender=sender,
        ts=ts,
        msgtype=db_text(msgtype, 64) or "m.text",
        body=body[:MAX_STORED_BODY],
        mentioned=list(dict.fromkeys(mentioned)),
        room_mention=room_mention,
        thread_id=thread_id,
        in_reply_to=in_reply_to,
    )


def _relations(relates: object) -> tuple[str | None, str | None]:
    """(thread root, replied-to event) of ``m.relates_to``; None for what is absent or not an
    event id (a malformed relation only loses its thread, never the message)."""
    if not isinstance(relates, dict):
        return None, None
    thread_id = relates.get("event_id") if relates.get("rel_type") == "m.thread" else None
    reply = relates.get("m.in_reply_to")
    in_reply_to = reply.get("event_id") if isinstance(reply, dict) else None
    return (
        thread_id if _valid_id(thread_id, "event") else None,
        in_reply_to if _valid_id(in_reply_to, "event") else None,
    )


def parse_receipts(raw: Any) -> list[ReceiptRecord]:
    """Public read receipts (m.read) from an ephemeral m.receipt event."""
    if not isinstance(raw, dict) or raw.get("type") != "m.receipt":
        return []
    room_id, content = raw.get("room_id"), raw.get("content")
    if not _valid_id(room_id, "room") or not isinstance(content, dict):
        return []
    records = []
    for event_id, by_type in content.items():
        if not _valid_id(event_id, "event") or not isinstance(by_type, dict):
            continue
        readers = by_type.get("m.read")
        if not isinstance(readers, dict):
            continue
        for user_id in readers:
            if _valid_id(user_id, "user"):
                records.append(ReceiptRecord(room_id, event_id, user_id))
    return records


async def apply(
    conn: Connection,
    records: Sequence[Record],
    is_ours: Callable[[str], bool],
    accepts: Callable[[str], bool] = lambda _: True,
) -> Effects:
    """Write parsed records in order, inside the caller's transaction. ``accepts``: whether
    an invitation of one of ours from this inviter is taken (``invites.InvitePolicy``)."""
    effects = Effects()
    run: list[MessageRecord] = []  # messages in a row: counted together
    receipts: list[ReceiptRecord] = []  # receipts in a row: looked up together
    for record in records:
        if isinstance(record, MessageRecord):
            run.append(record)
            continue
        if run:  # what comes next (a join, a receipt) sees them counted
            await _apply_messages(conn, run, effects)
            run = []
        if isinstance(record, ReceiptRecord):
            receipts.append(record)
            continue
        if receipts:
            await _apply_receipts(conn, receipts, effects)
            receipts = []
        if isinstance(record, MemberRecord):
            if _declined(record, is_ours, accepts):
                effects.declined.append(record)
                continue
            await _apply_member(conn, record, is_ours, effects)
        elif isinstance(record, RoomStateRecord):
            if record.field == "alias":
                await Room.set_alias(conn, record.room_id, record.value)
            else:
                await Room.set_field(conn, record.room_id, record.field, record.value)
    if run:
        await _apply_messages(conn, run, effects)
    if receipts:
        await _apply_receipts(conn, receipts, effects)
    return effects


async def _apply_receipts(
    conn: Connection, records: list[ReceiptRecord], effects: Effects
) -> None:
    """Move read markers to public receipts. Most are echoes of reads the API recorded
    already (it sends a receipt for each): two lookups for the whole run find those, and
    only a receipt that moves a marker pays ``mark_read``'s lock and write."""
    found = await Message.seqs_of(conn, list({r.event_id for r in records}))
    ours = [
        (r, found[r.event_id][1]) for r in records if found.get(r.event_id, ("",))[0] == r.room_id
    ]
    if not ours:
        return
    markers = await Ledger.read_positions(conn, [(r.user_id, r.room_id) for r, _ in ours])
    for r, seq in ours:
        marker = markers.get((r.user_id, r.room_id))
        if marker is None or marker >= seq:
            continue  # not a member here, or read that far already
        if await Ledger.mark_read(conn, r.user_id, r.room_id, seq, r.event_id):
            markers[(r.user_id, r.room_id)] = seq
            effects.users.add(r.user_id)


async def _apply_messages(
    conn: Connection, records: list[MessageRecord], effects: Effects
) -> None:
    """Store and count messages in their order, in set-based statements: a few trips to the
    database for a whole transaction's worth, not a few per message (PostgreSQL pays a trip
    for each statement, and Synapse queues its next transaction behind this one)."""
    first: dict[str, MessageRecord] = {}  # an event twice in one transaction counts once
    for rec in records:
        first.setdefault(rec.event_id, rec)
    unique = list(first.values())
    rooms, nicks = await Room.message_contexts(
        conn, list(dict.fromkeys(r.room_id for r in unique)), list({r.sender for r in unique})
    )
    # Synapse pushes every room with an alias in our namespace, humans' own rooms too: only
    # rooms with an agent or bot in them are ours to keep (one that joins later counts from
    # its join).
    ours = [r for r in unique if rooms[r.room_id].agents]
    urgent = [r.room_mention or is_urgent(r.body, rooms[r.room_id].alias) for r in ours]
    rows = [
        NewMessage(
            r.event_id,
            r.room_id,
            r.sender,
            r.ts,
            r.msgtype,
            r.body,
            r.thread_id,
            r.in_reply_to,
            detect_prefix(r.body),
            flag,
        )
        for r, flag in zip(ours, urgent, strict=True)
    ]
    seqs = await Message.insert_many(conn, rows)
    counted: list[Counted] = []
    for r, flag in zip(ours, urgent, strict=True):
        seq = seqs.get(r.event_id)
        if seq is None:
            continue  # delivered before: counted before
        room = rooms[r.room_id]
        name = sender_name(r.sender, nicks) or r.sender
        previous = room.previous(r.sender)
        counted.append(Counted(r.room_id, seq, r.sender, name, flag, r.mentioned, previous))
        room.last = (r.sender, name)  # who wrote last, for the next message here
        effects.rooms.add(r.room_id)
    if counted:
        await Ledger.on_messages(conn, counted)
    effects.messages_counted += len(counted)


def _declined(
    rec: MemberRecord, is_ours: Callable[[str], bool], accepts: Callable[[str], bool]
) -> bool:
    """An invitation of one of ours from someone the policy does not accept: recorded, it
    would count what is said there for the invitee (and wake it)."""
    return (
        rec.membership == "invite"
        and rec.sender != rec.user_id
        and is_ours(rec.user_id)
        and not accepts(rec.sender)
    )


async def _apply_member(
    conn: Connection, rec: MemberRecord, is_ours: Callable[[str], bool], effects: Effects
) -> None:
    await Room.ensure(conn, rec.room_id)
    await Member.set(conn, rec.room_id, rec.user_id, rec.membership, rec.displayname)
    if rec.membership == "join":
        await Ledger.on_join(conn, rec.room_id, rec.user_id)
        effects.users.add(rec.user_id)
    elif rec.membership in ("leave", "ban"):
        await Ledger.on_leave(conn, rec.room_id, rec.user_id)
        effects.users.add(rec.user_id)
    elif rec.membership == "invite" and rec.sender != rec.user_id:
        # Messages after an invitation count for the invitee, so a direct chat from an agent
        # reaches a human who uses only `ac` (notify shows it; reading there accepts it).
        await Ledger.on_join(conn, rec.room_id, rec.user_id)
        effects.users.add(rec.user_id)
    if rec.membership == "invite" and is_ours(rec.user_id) and rec.sender != rec.user_id:
        if rec.is_direct:
            await Room.set_direct(conn, rec.room_id)
            await DirectChat.set(conn, rec.sender, rec.user_id, rec.room_id)
            effects.rooms.add(rec.room_id)  # its members' DM filter sees it now
        effects.invites.append(rec)
