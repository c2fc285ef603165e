"""Several appservice processes on one PostgreSQL ledger: who writes it, and the wake-up bus.

With ``transactions_port`` set, every process serves the REST API on its own ``port`` (the
API replicas, behind a router), and exactly one of them, the *ledger writer*, applies the
homeserver's transactions and runs catch-up. PostgreSQL elects it: the writer holds a session
advisory lock on a connection of its own for its whole life. When that process dies, its
session ends, PostgreSQL releases the lock, and a waiting replica takes it at once; the
newcomer then binds ``transactions_port`` (where Synapse's registration points) and pings
Synapse, which retries what it queued. Migrations run under a second advisory lock, so
replicas starting together migrate once.

The long-poll waiters of each process are woken through ``LISTEN``/``NOTIFY`` on
:data:`WAKE_CHANNEL`: whoever commits a change of someone's counts (the writer applying a
transaction, any replica marking a read) wakes its own waiters directly and tells the others
which rooms and users changed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from typing import Any
import asyncio
import json
import logging
import secrets

import asyncpg

log = logging.getLogger("agent_chat.cluster")

#: Advisory lock keys (one 64-bit key space per database): "agentcha" + a tag.
WRITER_LOCK = 0x6167656E74636861
MIGRATION_LOCK = 0x6167656E7463686D
WAKE_CHANNEL = "agent_chat_wake"
#: NOTIFY payloads are limited to 8000 bytes; a change naming more is sent in parts.
MAX_PAYLOAD = 7000


def is_postgres(database: str) -> bool:
    return database.startswith(("postgres:", "postgresql:"))


async def _connect(database: str) -> asyncpg.Connection:
    return await asyncpg.connect(database)


@asynccontextmanager
async def migration_lock(database: str) -> AsyncIterator[None]:
    """Held while this process migrates: a replica starting beside it waits, then finds the
    schema current and migrates nothing."""
    conn = await _connect(database)
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK)
        yield
    finally:
        await conn.close()  # ends the session: the lock goes with it


class Leadership:
    """Waits to become the ledger writer, then stays it until the process ends.

    ``lost`` is set when the lock's connection breaks (PostgreSQL restarted, the network
    dropped): another replica may be the writer by then, so this one must stop writing;
    the service exits and its supervisor starts it again as a replica.
    """

    def __init__(self, database: str) -> None:
        self.database = database
        self.is_leader = False
        self.lost = asyncio.Event()
        self._conn: asyncpg.Connection | None = None

    async def acquire(self, block: bool, retry: float = 1.0) -> bool:
        """Take the writer lock: wait for it (``block``), or only if it is free now. Whether
        this process holds it."""
        while True:
            try:
                conn = await _connect(self.database)
            except (OSError, asyncpg.PostgresError) as e:
                if not block:
                    raise
                log.warning("cannot reach PostgreSQL for the writer lock (%s); retrying", e)
                await asyncio.sleep(retry)
                continue
            try:
                if block:
                    await conn.execute("SELECT pg_advisory_lock($1)", WRITER_LOCK)
                elif not await conn.fetchval("SELECT pg_try_advisory_lock($1)", WRITER_LOCK):
                    await conn.close()
                    return False
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as e:
                conn.terminate()
                if not block:
                    raise
                log.warning("waiting for the writer lock failed (%s); retrying", e)
                await asyncio.sleep(retry)
                continue
            except BaseException:
                conn.terminate()
                raise
            conn.add_termination_listener(self._terminated)
            self._conn, self.is_leader = conn, True
            return True

    def _terminated(self, _conn: asyncpg.Connection) -> None:
        if self.is_leader:
            log.error("lost the ledger-writer lock's connection: stopping as writer")
            self.is_leader = False
            self.lost.set()

    async def release(self) -> None:
        conn, self._conn, self.is_leader = self._conn, None, False
        if conn is not None and not conn.is_closed():
            await conn.close()


def _payloads(origin: str, rooms: list[str], users: list[str]) -> Iterable[str]:
    """The change as NOTIFY payloads, each under :data:`MAX_PAYLOAD` bytes."""
    part: dict[str, Any] = {"o": origin, "r": [], "u": []}
    size = 64
    for key, values in (("r", rooms), ("u", users)):
        for value in values:
            if size + len(value) + 4 > MAX_PAYLOAD and (part["r"] or part["u"]):
                yield json.dumps(part)
                part, size = {"o": origin, "r": [], "u": []}, 64
            part[key].append(value)
            size += len(value) + 4
    if part["r"] or part["u"]:
        yield json.dumps(part)


class WakeBus:
    """Tells the other replicas whose counts changed, and hears what they tell."""

    def __init__(
        self, database: str, wake_local: Callable[[list[str], list[str]], Awaitable[int]]
    ) -> None:
        self.database = database
        self.wake_local = wake_local
        #: Set when the listening connection breaks: this process hears no other replica's
        #: changes any more, so the service ends and its supervisor starts it afresh.
        self.deaf = asyncio.Event()
        #: This process's mark on its own messages (it hears them too, and skips them).
        self.origin = secrets.token_hex(8)
        self._listener: asyncpg.Connection | None = None
        self._sender: asyncpg.Connection | None = None
        self._send_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._listener = await _connect(self.database)
        await self._listener.add_listener(WAKE_CHANNEL, self._heard)
        self._listener.add_termination_listener(self._listener_lost)
        self._sender = await _connect(self.database)

    def _listener_lost(self, conn: asyncpg.Connection) -> None:
        if conn is self._listener:
            log.error("lost the connection that hears other replicas' changes")
            self.deaf.set()

    async def stop(self) -> None:
        listener, sender, self._listener, self._sender = self._listener, self._sender, None, None
        for conn in (listener, sender):
            if conn is not None and not conn.is_closed():
                await conn.close()

    async def publish(self, rooms: Iterable[str], users: Iterable[str]) -> None:
        """After a commit: tell the other replicas (this one wakes its own waiters itself)."""
        room_list, user_list = sorted(set(rooms)), sorted(set(users))
        if not (room_list or user_list) or self._sender is None:
            return
        async with self._send_lock:  # one connection: one statement at a time
            for payload in _payloads(self.origin, room_list, user_list):
                try:
                    await self._notify(payload)
                except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                    # PostgreSQL restarted, say: one new connection, one more try
                    self._sender = await _connect(self.database)
                    await self._notify(payload)

    async def _notify(self, payload: str) -> None:
        assert self._sender is not None
        await self._sender.execute("SELECT pg_notify($1, $2)", WAKE_CHANNEL, payload)

    def _heard(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        try:
            data = json.loads(payload)
        except ValueError:
            log.warning("ignored a malformed wake notification")
            return
        if not isinstance(data, dict) or data.get("o") == self.origin:
            return
        rooms = [r for r in data.get("r", []) if isinstance(r, str)]
        users = [u for u in data.get("u", []) if isinstance(u, str)]
        task = asyncio.get_running_loop().create_task(self._wake(rooms, users))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _wake(self, rooms: list[str], users: list[str]) -> None:
        try:
            await self.wake_local(rooms, users)
        except Exception:
            log.exception("waking long-poll waiters for another replica's change failed")
