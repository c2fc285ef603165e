"""PostgreSQL databases for Synapse and the appservice: check them, create them when missing.

Synapse needs PostgreSQL 14 or newer and a database whose collation and ctype are both ``C``
(created from ``template0``); it refuses to start otherwise. ``init`` checks this up front, creates
a missing database correctly (connecting to the server's ``postgres`` database), and refuses a
wrong one with the exact command that fixes it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote, urlsplit
import shlex

from .errors import ServerError

#: Synapse's minimum PostgreSQL major version.
MIN_SYNAPSE_VERSION = 14
#: Where to connect to create databases.
MAINTENANCE_DB = "postgres"


def is_postgres_url(url: str | None) -> bool:
    return bool(url) and str(url).startswith(("postgres://", "postgresql://"))


@dataclass(frozen=True)
class PgTarget:
    """The parts of a ``postgres://user:password@host:port/dbname`` URL."""

    dbname: str
    user: str | None = None
    password: str | None = None
    host: str | None = None
    port: int | None = None

    @classmethod
    def parse(cls, url: str) -> PgTarget:
        parts = urlsplit(url)
        if parts.scheme not in ("postgres", "postgresql"):
            raise ValueError(f"not a PostgreSQL URL: {url!r}")
        name = unquote(parts.path.lstrip("/"))
        if not name or "/" in name:
            raise ValueError(f"no database name in {redact(url)!r} (want postgres://.../dbname)")
        try:
            port = parts.port
        except ValueError:
            raise ValueError(f"bad port in {redact(url)!r}") from None
        return cls(
            dbname=name,
            user=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            host=parts.hostname,
            port=port,
        )

    def connect_args(self, dbname: str | None = None) -> dict[str, Any]:
        """Keyword arguments for ``psycopg2.connect``."""
        args: dict[str, Any] = {"dbname": dbname or self.dbname, "connect_timeout": 10}
        for key in ("user", "password", "host", "port"):
            if getattr(self, key) is not None:
                args[key] = getattr(self, key)
        return args

    def synapse_args(self) -> dict[str, Any]:
        """The ``args`` of Synapse's psycopg2 database section (without the pool sizes)."""
        args: dict[str, Any] = {}
        if self.user is not None:
            args["user"] = self.user
        if self.password is not None:
            args["password"] = self.password
        args["database"] = self.dbname
        if self.host is not None:
            args["host"] = self.host
        if self.port is not None:
            args["port"] = self.port
        return args

    def libpq_env(self) -> dict[str, str]:
        """PG* environment variables for psql/pg_dump/pg_restore (the password stays off argv)."""
        env = {"PGDATABASE": self.dbname}
        if self.user:
            env["PGUSER"] = self.user
        if self.password:
            env["PGPASSWORD"] = self.password
        if self.host:
            env["PGHOST"] = self.host
        if self.port:
            env["PGPORT"] = str(self.port)
        return env

    def where(self) -> str:
        """``host:port`` for messages (no credentials)."""
        return f"{self.host or 'localhost'}:{self.port or 5432}"

    def url(self, dbname: str | None = None, with_password: bool = False) -> str:
        """A URL to this server (and ``dbname``), password shown only when asked."""
        auth = ""
        if self.user:
            auth = quote(self.user, safe="")
            if self.password:
                auth += ":" + (quote(self.password, safe="") if with_password else "PASSWORD")
            auth += "@"
        host = self.host or "localhost"
        if ":" in host:
            host = f"[{host}]"
        port = f":{self.port}" if self.port else ""
        return f"postgres://{auth}{host}{port}/{quote(dbname or self.dbname, safe='')}"

    @classmethod
    def from_synapse(cls, args: dict[str, Any]) -> PgTarget:
        """From the ``args`` of a homeserver.yaml psycopg2 section."""
        name = args.get("database") or args.get("dbname")
        if not isinstance(name, str) or not name:
            raise ValueError("no database name in homeserver.yaml's database args")
        port = args.get("port")
        return cls(
            dbname=name,
            user=args.get("user"),
            password=args.get("password"),
            host=args.get("host"),
            port=int(port) if port is not None else None,
        )


def redact(url: str) -> str:
    """``url`` with any password replaced by ``PASSWORD``."""
    parts = urlsplit(url)
    if not parts.password:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    user = netloc[0].split(":", 1)[0]
    return parts._replace(netloc=f"{user}:PASSWORD@{netloc[1]}").geturl()


def _q(name: str) -> str:
    """A quoted SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


def create_database_sql(dbname: str, for_synapse: bool) -> str:
    if for_synapse:
        return (
            f"CREATE DATABASE {_q(dbname)} TEMPLATE template0 "
            "LC_COLLATE 'C' LC_CTYPE 'C' ENCODING 'UTF8'"
        )
    return f"CREATE DATABASE {_q(dbname)} ENCODING 'UTF8'"


def fix_command(target: PgTarget, sql: str) -> str:
    """A psql command line running ``sql`` on the server's maintenance database."""
    return f"psql {shlex.quote(target.url(MAINTENANCE_DB))} -c {shlex.quote(sql)}"


def check_server_version(target: PgTarget, server_version: int, for_synapse: bool) -> None:
    """Refuse a server too old for Synapse (``server_version`` as libpq reports it: 150020)."""
    major = server_version // 10000
    if for_synapse and major < MIN_SYNAPSE_VERSION:
        raise ServerError(
            f"PostgreSQL {major} at {target.where()} is too old: Synapse needs "
            f"{MIN_SYNAPSE_VERSION} or newer. Upgrade the server (Debian/Ubuntu: "
            f"`pg_upgradecluster {major} main`), or point --synapse-database at a newer one"
        )


def check_synapse_locale(target: PgTarget, collate: str, ctype: str) -> None:
    """Refuse a database Synapse would refuse: collation and ctype must be ``C``."""
    if collate == "C" and ctype == "C":
        return
    drop = f"DROP DATABASE {_q(target.dbname)}"
    create = create_database_sql(target.dbname, for_synapse=True)
    raise ServerError(
        f"database {target.dbname!r} at {target.where()} has LC_COLLATE {collate!r} and "
        f"LC_CTYPE {ctype!r}; Synapse needs 'C' for both. If it holds nothing you need, "
        f"recreate it: psql {shlex.quote(target.url(MAINTENANCE_DB))} -c {shlex.quote(drop)} "
        f"-c {shlex.quote(create)}  (or name a new database in --synapse-database)"
    )


@dataclass
class DatabaseState:
    """What ``ensure_database`` found or did."""

    created: bool
    server_version: int
    message: str


def _connect(target: PgTarget, dbname: str | None = None) -> Any:
    import psycopg2

    return psycopg2.connect(**target.connect_args(dbname))


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def ensure_database(url: str, for_synapse: bool) -> DatabaseState:
    """Make sure the database in ``url`` exists and suits its user; create it when missing.

    For Synapse (``for_synapse``) the server must be PostgreSQL 14+ and the database C-collated.
    Raises a one-line ServerError (with the command that fixes it) otherwise.
    """
    import psycopg2

    target = PgTarget.parse(url)
    who = "Synapse" if for_synapse else "the appservice"
    try:
        conn = _connect(target)
    except psycopg2.OperationalError as e:
        first = _describe(e)
        if "does not exist" not in first or f'"{target.dbname}"' not in first:
            raise ServerError(
                f"cannot connect to PostgreSQL at {target.where()} for {who}: {first}"
            ) from None
        return _create(target, for_synapse)
    try:
        version = conn.server_version
        check_server_version(target, version, for_synapse)
        if for_synapse:
            with conn.cursor() as cur:
                cur.execute(
                    "SELECT datcollate, datctype FROM pg_database "
                    "WHERE datname = current_database()"
                )
                collate, ctype = cur.fetchone()
            check_synapse_locale(target, collate, ctype)
    finally:
        conn.close()
    return DatabaseState(
        False, version, f"database {target.dbname} at {target.where()} is ready for {who}"
    )


def _create(target: PgTarget, for_synapse: bool) -> DatabaseState:
    import psycopg2

    sql = create_database_sql(target.dbname, for_synapse)
    try:
        conn = _connect(target, MAINTENANCE_DB)
    except psycopg2.Error as e:
        raise ServerError(
            f"database {target.dbname!r} does not exist at {target.where()} and cannot connect "
            f"to the {MAINTENANCE_DB!r} database to create it ({_describe(e)}); create it: "
            f"{fix_command(target, sql)}"
        ) from None
    try:
        version = conn.server_version
        check_server_version(target, version, for_synapse)
        conn.autocommit = True  # CREATE DATABASE cannot run in a transaction
        with conn.cursor() as cur:
            try:
                cur.execute(sql)
            except psycopg2.errors.DuplicateDatabase:
                pass  # created meanwhile by someone else: check it as an existing one
            except psycopg2.Error as e:
                raise ServerError(
                    f"cannot create database {target.dbname!r} at {target.where()} "
                    f"({_describe(e)}); ask an administrator to run: {fix_command(target, sql)}"
                ) from None
            else:
                return DatabaseState(
                    True,
                    version,
                    f"created database {target.dbname} at "
                    f"{target.where()}" + (" (collation C)" if for_synapse else ""),
                )
    finally:
        conn.close()
    return ensure_database(target.url(with_password=True), for_synapse)


def is_empty(url: str) -> bool:
    """True if the database has no tables in any user schema (False if it cannot be reached)."""
    target = PgTarget.parse(url)
    conn = _connect(target)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT count(*) FROM pg_tables "
                "WHERE schemaname NOT IN ('pg_catalog', 'information_schema')"
            )
            (n,) = cur.fetchone()
    finally:
        conn.close()
    return int(n) == 0
