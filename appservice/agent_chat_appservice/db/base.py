"""What every table module shares: the databases the tables are bound to, and the clock.

Two rules keep the SQL of the appservice in ``db/``, one module per table:

* A method that must run inside the caller's transaction (it writes several statements that
  belong together, or reads what that transaction wrote) takes the connection as its first
  parameter, ``conn``, never defaulted. Callers open one with :func:`transaction`.
* A method without ``conn`` runs on its own: a plain read on ``read_db`` (on SQLite a separate
  pool, so reads never queue behind writes), a single-statement write on ``db``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, ClassVar, Protocol, TypeVar, cast
import time

from mautrix.util.async_db import Connection, Database, UpgradeTable
from yarl import URL

from .sealed import Sealer
from .sqlite import OneTripConnection, OneTripSQLiteDatabase

T = TypeVar("T")


class Row(Protocol):
    """A result row: asyncpg's Record or sqlite3's Row, both indexed by column name."""

    def __getitem__(self, key: str, /) -> Any: ...


class Table:
    """Base of every table class: the databases it runs on (bound once, by :func:`bind`)."""

    #: Writes, and reads that must see a write in progress.
    db: ClassVar[Database]
    #: Plain reads: a separate pool on SQLite, so they never queue behind writes.
    read_db: ClassVar[Database]
    #: Seals the secrets kept in the database (humans' Matrix tokens); see :func:`use_key`.
    sealer: ClassVar[Sealer | None] = None


def create(
    url: str, *, upgrade_table: UpgradeTable | None = None, db_args: dict[str, Any] | None = None
) -> Database:
    """``Database.create``, with the one-trip SQLite pool (``sqlite.py``) for SQLite URLs."""
    if URL(url).scheme in ("sqlite", "sqlite3"):
        return OneTripSQLiteDatabase(
            URL(url), upgrade_table=upgrade_table or UpgradeTable(), db_args=db_args
        )
    return Database.create(url, upgrade_table=upgrade_table, db_args=db_args)


def bind(db: Database, read: Database | None = None) -> None:
    """Bind every table to ``db`` for writes and ``read`` for plain reads (default ``db``)."""
    Table.db = db
    Table.read_db = read or db


def use_key(key: bytes) -> None:
    """The key sealing secrets in the database (``Config.token_key``). Set it before the
    database starts: a migration seals what older versions stored in plain text."""
    Table.sealer = Sealer(key)


def sealer() -> Sealer:
    if Table.sealer is None:
        raise RuntimeError(
            "no key to seal or open humans' Matrix tokens: call db.use_key(config.token_key) "
            "before the database starts"
        )
    return Table.sealer


# mautrix mis-annotates two context managers: Database.acquire as returning the connection
# itself, Connection.transaction (in its stub) as a coroutine returning the manager. Both are
# asynccontextmanagers; these two give them their real types.


def acquire(db: Database) -> AbstractAsyncContextManager[Connection]:
    return cast("AbstractAsyncContextManager[Connection]", db.acquire())


def in_transaction(conn: Connection) -> AbstractAsyncContextManager[None]:
    return cast("AbstractAsyncContextManager[None]", conn.transaction())


@asynccontextmanager
async def transaction(db: Database | None = None) -> AsyncIterator[Connection]:
    """A connection of ``db`` (default: the tables' write database), inside a transaction
    committed on exit."""
    async with acquire(db or Table.db) as conn, in_transaction(conn):
        yield conn


async def run_transaction(
    work: Callable[[Connection], Coroutine[Any, Any, T]], db: Database | None = None
) -> T:
    """``work(conn)`` inside one transaction of ``db`` (default: the tables' write database),
    committed when it returns. On SQLite all of it runs in one trip to the connection's thread
    (see ``sqlite.py``), so ``work`` may await only ``conn``'s methods: the tables' methods
    that take ``conn``, nothing else."""
    async with acquire(db or Table.db) as conn:
        wrapped = getattr(conn, "wrapped", None)
        if isinstance(wrapped, OneTripConnection):
            return await wrapped.run_transaction(
                cast("Callable[[Any], Coroutine[Any, Any, T]]", work)
            )
        async with in_transaction(conn):
            return await work(conn)


async def text_value(conn: Connection | Database, query: str, *args: Any) -> str | None:
    """The first column of the first row, a text: None for no row or NULL."""
    value = await conn.fetchval(query, *args)
    if value is None or isinstance(value, str):
        return value
    raise TypeError(f"{query!r} answered {type(value).__name__}, not text")


async def int_value(conn: Connection | Database, query: str, *args: Any) -> int | None:
    """The first column of the first row, an integer: None for no row or NULL."""
    value = await conn.fetchval(query, *args)
    if value is None or isinstance(value, int):
        return value
    raise TypeError(f"{query!r} answered {type(value).__name__}, not an integer")


def now_ms() -> int:
    return int(time.time() * 1000)


def rows_changed(result: Any) -> int:
    """Rows a statement touched: asyncpg answers 'UPDATE n', aiosqlite a cursor."""
    if isinstance(result, str):
        try:
            return int(result.rsplit(" ", 1)[-1])
        except ValueError:
            return 0
    return int(getattr(result, "rowcount", 0) or 0)
