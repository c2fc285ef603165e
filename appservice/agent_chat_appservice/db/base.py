"""What every table module shares: the databases the tables are bound to, and the clock.

Two rules keep the SQL of the appservice in ``db/``, one module per table:

* A method that must run inside the caller's transaction (it writes several statements that
  belong together, or reads what that transaction wrote) takes the connection as its first
  parameter, ``conn``, never defaulted. Callers open one with :func:`transaction`.
* A method without ``conn`` runs on its own: a plain read on ``read_db`` (on SQLite a separate
  pool, so reads never queue behind writes), a single-statement write on ``db``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, ClassVar
import time

from mautrix.util.async_db import Connection, Database

from .sealed import Sealer


class Table:
    """Base of every table class: the databases it runs on (bound once, by :func:`bind`)."""

    #: Writes, and reads that must see a write in progress.
    db: ClassVar[Database]
    #: Plain reads: a separate pool on SQLite, so they never queue behind writes.
    read_db: ClassVar[Database]
    #: Seals the secrets kept in the database (humans' Matrix tokens); see :func:`use_key`.
    sealer: ClassVar[Sealer | None] = None


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


@asynccontextmanager
async def transaction() -> AsyncIterator[Connection]:
    """A connection of the write database, inside a transaction committed on exit."""
    async with Table.db.acquire() as conn, conn.transaction():
        yield conn


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
