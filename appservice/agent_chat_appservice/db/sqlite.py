"""SQLite connections that answer a query, or run a whole transaction, in one trip to their
thread.

aiosqlite runs each connection in a thread of its own, and every call is a round trip to it:
a queue put, a thread wake-up, a ``call_soon_threadsafe`` back, 0.1-0.2 ms each on these
machines. mautrix's ``fetch``, ``fetchrow`` and ``fetchval`` take three (execute, fetch, close
the cursor), so applying one homeserver transaction cost sixteen trips and most of its time,
on the path of every message to a waiting agent. Here each query is one trip, and
:meth:`OneTripConnection.run_transaction` runs a whole transaction in one.

The pool that uses them, :class:`OneTripSQLiteDatabase`, is asked for by name (``db.create``):
importing this module changes nothing in mautrix for anyone else in the process.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any, TypeVar
import sqlite3

from mautrix.util.async_db import Database, Scheme
from mautrix.util.async_db import aiosqlite as mautrix_sqlite
from mautrix.util.async_db.aiosqlite import POSITIONAL_PARAM_PATTERN, SQLiteDatabase


def _sqlite(query: str) -> str:
    """``$1`` (the asyncpg style every table writes) → ``?1``."""
    return POSITIONAL_PARAM_PATTERN.sub(r"?\1", query)


def _all(conn: sqlite3.Connection, query: str, args: tuple[Any, ...]) -> list[sqlite3.Row]:
    cursor = conn.execute(query, args)
    try:
        return cursor.fetchall()
    finally:
        cursor.close()


def _one(conn: sqlite3.Connection, query: str, args: tuple[Any, ...]) -> sqlite3.Row | None:
    cursor = conn.execute(query, args)
    try:
        row: sqlite3.Row | None = cursor.fetchone()
        return row
    finally:
        cursor.close()


T = TypeVar("T")


class InThreadConnection:
    """What the tables' methods use of a connection, for code running in the connection's own
    thread: every method completes without suspending (see :func:`_finish`)."""

    scheme = Scheme.SQLITE

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    async def execute(self, query: str, *args: Any, timeout: float | None = None) -> Any:
        return self._conn.execute(_sqlite(query), args)

    async def executemany(
        self, query: str, args: list[tuple[Any, ...]], timeout: float | None = None
    ) -> Any:
        return self._conn.executemany(_sqlite(query), args)

    async def fetch(
        self, query: str, *args: Any, timeout: float | None = None
    ) -> list[sqlite3.Row]:
        return _all(self._conn, _sqlite(query), args)

    async def fetchrow(
        self, query: str, *args: Any, timeout: float | None = None
    ) -> sqlite3.Row | None:
        return _one(self._conn, _sqlite(query), args)

    async def fetchval(
        self, query: str, *args: Any, column: int = 0, timeout: float | None = None
    ) -> Any:
        row = _one(self._conn, _sqlite(query), args)
        return None if row is None else row[column]


def _finish(work: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine that never suspends to its end, here and now. One that does suspend
    (it awaited something other than an :class:`InThreadConnection`) is a bug: it is closed
    and raises, and the caller rolls back."""
    try:
        work.send(None)
    except StopIteration as done:
        result: T = done.value
        return result
    work.close()
    raise RuntimeError("a transaction run in the SQLite thread awaited something else")


class OneTripConnection(mautrix_sqlite.TxnConnection):
    async def _in_thread(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` in the connection's thread: one trip."""
        result: T = await self._execute(fn, *args)  # type: ignore[no-untyped-call]
        return result

    async def fetch(
        self, query: str, *args: Any, timeout: float | None = None
    ) -> list[sqlite3.Row]:
        rows: list[sqlite3.Row] = await self._in_thread(_all, self._conn, _sqlite(query), args)
        return rows

    async def fetchrow(
        self, query: str, *args: Any, timeout: float | None = None
    ) -> sqlite3.Row | None:
        row: sqlite3.Row | None = await self._in_thread(_one, self._conn, _sqlite(query), args)
        return row

    async def fetchval(
        self, query: str, *args: Any, column: int = 0, timeout: float | None = None
    ) -> Any:
        row = await self.fetchrow(query, *args)
        return None if row is None else row[column]

    async def run_transaction(
        self, work: Callable[[InThreadConnection], Coroutine[Any, Any, T]]
    ) -> T:
        """``work(conn)`` inside BEGIN … COMMIT (ROLLBACK if it raises), all of it in one
        trip to the thread. ``work`` may await only ``conn``'s methods."""

        def run(conn: sqlite3.Connection) -> T:
            conn.execute("BEGIN")
            try:
                result = _finish(work(InThreadConnection(conn)))
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:  # a failed COMMIT (busy) leaves it open too
                    conn.execute("ROLLBACK")
                raise
            return result

        result: T = await self._in_thread(run, self._conn)
        return result


class OneTripSQLiteDatabase(SQLiteDatabase):
    """mautrix's SQLite pool, its connections :class:`OneTripConnection`s."""

    async def start(self) -> None:
        if self._parent or self._conns or self._stopped:
            await super().start()  # shares a parent's pool, or refuses a second start
            return
        # SQLiteDatabase.start, with our connection class (it names its own, with no hook).
        for _ in range(self._pool.maxsize):
            conn = OneTripConnection(self._path, **self._db_args)
            await conn  # starts its thread and opens the file
            if self._init_commands:
                cursor = await conn.cursor()
                for command in self._init_commands:
                    await cursor.execute(command)
                await conn.commit()
            conn.row_factory = sqlite3.Row
            self._pool.put_nowait(conn)
            self._conns += 1
        await Database.start(self)
