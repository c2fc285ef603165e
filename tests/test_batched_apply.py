"""A homeserver transaction's messages are written in set-based statements (issue 27): what
each member has unread, who wrote last to them and who was mentioned come out as if counted one
by one, each event exactly once, and the statements a transaction costs do not grow with its
messages (each one is a trip to PostgreSQL). SQLite, then PostgreSQL (skipped without
AGENT_CHAT_TEST_POSTGRES)."""

from __future__ import annotations

from typing import Any
import asyncio

from mautrix.util.async_db import Connection
from test_appservice_db import _database

from agent_chat_appservice import db as tables
from agent_chat_appservice import ingest

ROOM, SIDE = "!room:x", "!side:x"
ALICE, BOB, CAROL, DAVE = (f"@_ac_{n}:x" for n in ("alice", "bob", "carol", "dave"))


class Counting:
    """A connection that counts the statements sent through it (each is a round trip on
    PostgreSQL; executemany is one pipelined trip)."""

    def __init__(self, conn: Connection) -> None:
        self.conn, self.statements = conn, 0
        self.scheme = conn.scheme

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.conn, name)
        if name not in ("execute", "executemany", "fetch", "fetchrow", "fetchval"):
            return method

        async def counted(*args: Any, **kwargs: Any) -> Any:
            self.statements += 1
            return await method(*args, **kwargs)

        return counted


def member(room: str, user: str) -> dict[str, Any]:
    return {
        "type": "m.room.member", "room_id": room, "sender": user, "state_key": user,
        "event_id": f"$join-{room[1:5]}-{user[5:9]}", "content": {"membership": "join"},
    }  # fmt: skip


def message(n: int, room: str, sender: str, mentions: list[str] | None = None) -> dict[str, Any]:
    content: dict[str, Any] = {"msgtype": "m.text", "body": f"m{n}"}
    if mentions:
        content["m.mentions"] = {"user_ids": mentions}
    return {
        "type": "m.room.message", "room_id": room, "sender": sender,
        "event_id": f"$m{n}-{room[1:5]}", "origin_server_ts": 1000 + n, "content": content,
    }  # fmt: skip


async def apply(events: list[dict[str, Any]]) -> tuple[ingest.Effects, int]:
    """Apply events as one homeserver transaction; (effects, statements it took)."""
    records = [r for r in (ingest.parse_event(e, "x") for e in events) if r is not None]

    async def work(conn: Connection) -> tuple[ingest.Effects, int]:
        counting = Counting(conn)
        ours = lambda u: u.startswith("@_ac_")  # noqa: E731
        effects = await ingest.apply(counting, records, ours)  # type: ignore[arg-type]
        return effects, counting.statements

    return await tables.run_transaction(work)


def burst(first: int, count: int) -> list[dict[str, Any]]:
    """``count`` messages in two rooms from several senders; bob mentions carol once."""
    events = []
    for n in range(first, first + count):
        if n % 4 == 3:
            events.append(message(n, SIDE, (ALICE, BOB)[n // 4 % 2]))
        else:
            sender = (ALICE, BOB, CAROL)[n % 3]
            events.append(message(n, ROOM, sender, [CAROL] if n == first + 4 else None))
    return events


def expected(events: list[dict[str, Any]], user: str, room: str, since: int = 0) -> int:
    return sum(
        1
        for e in events[since:]
        if e["type"] == "m.room.message" and e["room_id"] == room and e["sender"] != user
    )


def test_a_burst_is_counted_once_in_order_in_statements_that_do_not_grow_with_it(
    database_url: str,
) -> None:
    async def scenario() -> None:
        async with _database(database_url):
            setup = [member(ROOM, u) for u in (ALICE, BOB, CAROL)]
            await apply(setup + [member(SIDE, u) for u in (ALICE, BOB)])
            # A small transaction, then a big one of the same shape with dave joining midway,
            # an event delivered twice inside it, and alice writing last in the room.
            small = burst(0, 8)
            _, small_cost = await apply(small)
            big = burst(100, 60)
            big.insert(30, member(ROOM, DAVE))
            big.insert(50, big[12])  # the same event again
            big.append(message(999, ROOM, ALICE))
            effects, big_cost = await apply(big)
            if database_url.startswith("postgres"):  # SQLite: one trip to its thread anyway
                assert big_cost <= small_cost + 6, (small_cost, big_cost)  # + the join's writes
            assert effects.messages_counted == 61  # 60 + alice's, the repeat not again
            # Each event once, in the order first delivered.
            firsts = {e["event_id"]: e for e in small + big if e["type"] == "m.room.message"}
            everything = list(firsts.values())

            unread = {}
            for user in (ALICE, BOB, CAROL, DAVE):
                unread[user] = {x.room_id: x for x in await tables.Ledger.unread(user)}
            for user in (ALICE, BOB, CAROL):
                assert unread[user][ROOM].count == expected(everything, user, ROOM), user
            for user in (ALICE, BOB):
                assert unread[user][SIDE].count == expected(everything, user, SIDE), user
            # dave counts from his join on; the repeated event was counted before it.
            after_join = [e for e in big[31:] if e is not big[12]]
            assert unread[DAVE][ROOM].count == expected(after_join, DAVE, ROOM)
            # The mention makes the room urgent for carol alone.
            assert unread[CAROL][ROOM].urgent and not unread[BOB][ROOM].urgent
            # Alice wrote last: who last wrote to her is who wrote just before her.
            in_room = [e for e in everything if e["room_id"] == ROOM]
            assert unread[BOB][ROOM].last_sender == "_ac_alice"
            assert unread[ALICE][ROOM].last_sender == in_room[-2]["sender"][1:].split(":")[0]
            # Stored once each, in delivery order (seq rises with it).
            stored = await tables.Message.read([ROOM], {}, 1000, oldest_first=True)
            assert [m.body for m in stored] == [e["content"]["body"] for e in in_room]

            # Synapse retrying it (or a later transaction carrying the same events) counts
            # nothing again.
            effects, _ = await apply(big)
            assert effects.messages_counted == 0
            again = {x.room_id: x.count for x in await tables.Ledger.unread(ALICE)}
            assert again[ROOM] == unread[ALICE][ROOM].count

    asyncio.run(scenario())


def receipt(room: str, event_id: str, user: str) -> ingest.ReceiptRecord:
    raw = {"type": "m.receipt", "room_id": room, "content": {event_id: {"m.read": {user: {}}}}}
    return ingest.parse_receipts(raw)[0]


async def apply_records(records: list[ingest.Record]) -> tuple[ingest.Effects, int]:
    async def work(conn: Connection) -> tuple[ingest.Effects, int]:
        counting = Counting(conn)
        effects = await ingest.apply(counting, records, lambda u: True)  # type: ignore[arg-type]
        return effects, counting.statements

    return await tables.run_transaction(work)


def test_receipts_move_read_markers_and_their_echoes_cost_two_lookups(database_url: str) -> None:
    """The API sends a receipt for every read, and Synapse echoes each back: an echo moves
    nothing and costs two lookups for the whole transaction; a human's read still counts."""

    async def scenario() -> None:
        async with _database(database_url):
            events = [member(ROOM, ALICE), member(ROOM, BOB)]
            events += [message(n, ROOM, BOB) for n in range(10)]
            await apply(events)
            ids = [e["event_id"] for e in events[2:]]
            effects, _ = await apply_records([receipt(ROOM, ids[4], ALICE)])
            assert effects.users == {ALICE}
            assert {u.room_id: u.count for u in await tables.Ledger.unread(ALICE)}[ROOM] == 5
            # Echoes (at or before the marker), an unknown event, another room: no change.
            echoes = [receipt(ROOM, ids[n], ALICE) for n in (4, 2, 0)]
            echoes += [receipt(ROOM, "$unknown", ALICE), receipt(SIDE, ids[7], ALICE)]
            effects, cost = await apply_records(echoes * 10)
            assert not effects.users
            if database_url.startswith("postgres"):
                assert cost <= 2, cost
            assert {u.room_id: u.count for u in await tables.Ledger.unread(ALICE)}[ROOM] == 5
            # Several reads in one transaction: the marker ends at the furthest.
            effects, _ = await apply_records([receipt(ROOM, ids[n], ALICE) for n in (6, 9, 8)])
            assert effects.users == {ALICE}
            assert ROOM not in {u.room_id for u in await tables.Ledger.unread(ALICE)}

    asyncio.run(scenario())
