"""Threads: each message records the thread it belongs to and the message it answers.

``thread_id`` is the root event of an ``m.thread`` relation (NULL outside threads), and
``in_reply_to`` the event of its ``m.in_reply_to`` (a thread reply's fallback, or a plain
reply). ``ac listen --thread`` reads a thread by ``(room_id, thread_id)``; ``ac ask`` waits for
the first message whose thread is its question. Messages stored before this version have
neither (they were never read as threads).
"""

from __future__ import annotations

from mautrix.util.async_db import Connection

from .table import register


@register("Thread root and reply target of each message")
async def upgrade_v6(conn: Connection) -> None:
    await conn.execute("ALTER TABLE message ADD COLUMN thread_id TEXT")
    await conn.execute("ALTER TABLE message ADD COLUMN in_reply_to TEXT")
    await conn.execute("CREATE INDEX message_thread_idx ON message(room_id, thread_id, seq)")
