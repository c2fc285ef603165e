"""The deduplication tables are pruned after their retention window (``retention.py``), on both
databases: rows past the window go, recent rows stay, and what the recent rows guarantee still
holds afterwards (a retried send, a redelivered homeserver transaction and a redelivered
webhook are each still applied once)."""

from __future__ import annotations

from typing import Any
import asyncio
import json
import urllib.request

from mautrix.util.async_db import Database
from test_appservice_transactions import fake_message, put_transaction

from helpers import (
    Stack,
    agent_chat_server,
    http_json,
    register,
    room_id_of,
    sentinel,
    shared_room,
    unique,
)

DAY_MS = 24 * 3600 * 1000


def sql(stack: Stack, query: str, *args: Any) -> Any:
    """One statement on the stack's own database (beside the running appservice)."""

    async def run() -> Any:
        db = Database.create(stack.database, db_args={"min_size": 1, "max_size": 1})
        await db.start()
        try:
            if query.lstrip().upper().startswith("SELECT"):
                return await db.fetchval(query, *args)
            return await db.execute(query, *args)
        finally:
            await db.stop()

    return asyncio.run(run())


def age(stack: Stack, table: str, column: str, where: str, key: str, days: int) -> None:
    sql(
        stack,
        f"UPDATE {table} SET {column} = {column} - $1 WHERE {where} = $2",
        days * DAY_MS,
        key,
    )


def exists(stack: Stack, table: str, where: str, key: str) -> bool:
    return bool(sql(stack, f"SELECT COUNT(*) FROM {table} WHERE {where} = $1", key))


def hook_post(url: str, text: str, delivery: str) -> dict[str, Any]:
    req = urllib.request.Request(url, data=json.dumps({"text": text}).encode(), method="POST")
    req.add_header("Content-Type", "application/json")
    req.add_header("X-Delivery-Id", delivery)
    with urllib.request.urlopen(req, timeout=30) as resp:
        return dict(json.loads(resp.read()))


def test_old_rows_are_pruned_and_recent_repeats_still_deduplicated(any_stack: Stack) -> None:
    stack = any_stack
    sender, reader = register(stack), register(stack)
    room = shared_room(sender, reader, prefix="retention-")
    room_id = room_id_of(stack, f"{room}:{stack.server_name}")
    old_send, new_send = unique("old-send-"), unique("new-send-")
    sent = {
        txn: sender.send(room, f"send {txn}", txn=txn)["event_id"] for txn in (old_send, new_send)
    }
    old_txn, new_txn = unique("old-txn-"), unique("new-txn-")
    events = {
        txn: fake_message(room_id, sender.user_id, f"txn {txn}") for txn in (old_txn, new_txn)
    }
    for txn, event in events.items():
        assert put_transaction(stack, txn, [event])[0] == 200
    made = agent_chat_server(stack, "webhook", "add", unique("keeper-"), "--room", room)
    assert made.returncode == 0, made.stderr
    lines = made.stdout.splitlines()
    url = lines[lines.index(next(x for x in lines if x.startswith("URL"))) + 1].strip()
    old_hook, new_hook = unique("old-delivery-"), unique("new-delivery-")
    posted = {d: hook_post(url, f"hook {d}", d)["event_id"] for d in (old_hook, new_hook)}

    # The "old" rows are made older than their windows: 7, 7 and 30 days.
    age(stack, "client_send", "created_at", "txn_id", old_send, 8)
    age(stack, "hs_transaction", "received_at", "txn_id", old_txn, 8)
    age(stack, "webhook_delivery", "created_at", "delivery_id", old_hook, 31)
    admin = stack.config.admin_token
    status, data = http_json("POST", stack.api_base + "/admin/prune", {}, admin)
    assert status == 200, data
    assert all(
        data["pruned"][t] >= 1 for t in ("client_send", "hs_transaction", "webhook_delivery")
    )

    assert not exists(stack, "client_send", "txn_id", old_send)
    assert not exists(stack, "hs_transaction", "txn_id", old_txn)
    assert not exists(stack, "webhook_delivery", "delivery_id", old_hook)
    assert exists(stack, "client_send", "txn_id", new_send)
    assert exists(stack, "hs_transaction", "txn_id", new_txn)
    assert exists(stack, "webhook_delivery", "delivery_id", new_hook)

    # What the recent rows promise still holds: each repeat is applied once.
    assert sender.send(room, f"send {new_send}", txn=new_send)["event_id"] == sent[new_send]
    assert put_transaction(stack, new_txn, [events[new_txn]])[0] == 200
    again = hook_post(url, f"hook {new_hook}", new_hook)
    assert again["posted"] is False and again["event_id"] == posted[new_hook]
    sentinel(sender, room, reader)
    bodies = reader.bodies(room)
    for body in (f"send {new_send}", f"txn {new_txn}", f"hook {new_hook}"):
        assert bodies.count(body) == 1, (body, bodies)
    status, data = reader.call("GET", "/notify")
    assert status == 200
    unread = {u["room"]: u["count"] for u in data["unread"]}
    # six messages (two sends, two transactions, two webhook posts) and the sentinel
    assert unread.get(room) == 7, unread
