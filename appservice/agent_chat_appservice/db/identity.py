"""Identities (agents, humans, bots) and their hashed API tokens."""

from __future__ import annotations

from dataclasses import dataclass
import hashlib
import logging
import secrets

from mautrix.util.async_db import Connection

from .base import Row, Table, now_ms, rows_changed, sealer, transaction

log = logging.getLogger("agent_chat.db.identity")

TOKEN_PREFIX = "ac_"
#: The kind of an identity that was retired (``agent-chat-server agents retire``).
RETIRED = "retired"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


@dataclass
class Identity(Table):
    user_id: str
    nick: str
    kind: str  # agent | human | bot | retired
    created_at: int
    last_active: int | None = None

    _columns = "user_id, nick, kind, created_at, last_active"

    @classmethod
    def _from_row(cls, row: Row | None) -> Identity | None:
        if row is None:
            return None
        return cls(
            user_id=row["user_id"],
            nick=row["nick"],
            kind=row["kind"],
            created_at=row["created_at"],
            last_active=row["last_active"],
        )

    @classmethod
    async def get(cls, user_id: str) -> Identity | None:
        q = f"SELECT {cls._columns} FROM identity WHERE user_id=$1"
        return cls._from_row(await cls.read_db.fetchrow(q, user_id))

    @classmethod
    async def get_by_nick(cls, nick: str) -> Identity | None:
        q = f"SELECT {cls._columns} FROM identity WHERE nick_key=$1"
        return cls._from_row(await cls.read_db.fetchrow(q, nick.lower()))

    @classmethod
    async def get_by_token(cls, token: str) -> Identity | None:
        q = (
            "SELECT i.user_id, i.nick, i.kind, i.created_at, i.last_active FROM api_token t "
            "JOIN identity i ON i.user_id = t.user_id WHERE t.token_hash=$1"
        )
        return cls._from_row(await cls.read_db.fetchrow(q, hash_token(token)))

    @classmethod
    async def nick_keys_taken(cls, keys: list[str]) -> set[str]:
        """Which of these names (lower-cased) an identity answers to."""
        return await cls._taken("nick_key", keys)

    @classmethod
    async def _taken(cls, column: str, values: list[str]) -> set[str]:
        """Which of ``values`` stand in ``column`` (a column name of this module's, never
        input) of some identity."""
        if not values:
            return set()
        placeholders = ", ".join(f"${i + 1}" for i in range(len(values)))
        q = f"SELECT {column} FROM identity WHERE {column} IN ({placeholders})"
        return {row[column] for row in await cls.read_db.fetch(q, *values)}

    async def insert(self) -> bool:
        """Add the identity; False when its user id or name is taken already (the unique
        indexes decide, so two processes registering at once never both get a name)."""
        q = (
            "INSERT INTO identity (user_id, nick, nick_key, kind, created_at, last_active) "
            "VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING"
        )
        result = await self.db.execute(
            q,
            self.user_id,
            self.nick,
            self.nick.lower(),
            self.kind,
            self.created_at,
            self.last_active,
        )
        return rows_changed(result) > 0

    async def issue_token(self) -> str:
        """Create an API token for this identity. Only its hash is kept."""
        token = new_token()
        q = "INSERT INTO api_token (token_hash, user_id, created_at) VALUES ($1, $2, $3)"
        await self.db.execute(q, hash_token(token), self.user_id, now_ms())
        return token

    @classmethod
    async def matrix_tokens(cls, user_id: str | None = None) -> dict[str, str]:
        """Humans' Matrix access tokens, by user id (stored sealed, see ``sealed.py``): all
        of them, or ``user_id``'s.

        A token that does not open (the as_token changed since it was sealed) is left out
        and logged: that human acts again after their next ``ac login``.
        """
        q = (
            "SELECT user_id, matrix_token FROM identity "
            "WHERE matrix_token IS NOT NULL AND kind='human'"
        )
        args: tuple[str, ...] = ()
        if user_id is not None:
            q, args = q + " AND user_id=$1", (user_id,)
        box, tokens = sealer(), {}
        for r in await cls.read_db.fetch(q, *args):
            try:
                tokens[r["user_id"]] = box.open(r["matrix_token"], r["user_id"])
            except ValueError as e:
                log.warning(
                    "%s: Matrix token unusable (%s); they must log in again", r["user_id"], e
                )
        return tokens

    @classmethod
    async def own_matrix_token(cls, user_id: str) -> str | None:
        """An agent's or bot's own Matrix access token (``agent_tokens.py``), sealed at rest
        like humans'. None when none is stored or it does not open (another as_token)."""
        q = (
            "SELECT matrix_token FROM identity WHERE user_id=$1 AND kind IN ('agent', 'bot') "
            "AND matrix_token IS NOT NULL"
        )
        stored = await cls.read_db.fetchval(q, user_id)
        if stored is None:
            return None
        try:
            return sealer().open(str(stored), user_id)
        except ValueError as e:
            log.warning("%s: own Matrix token unusable (%s); a new one is made", user_id, e)
            return None

    @classmethod
    async def set_own_matrix_token(cls, user_id: str, matrix_token: str | None) -> None:
        """Store (sealed) or, with None, forget an agent's or bot's own Matrix token."""
        sealed = None if matrix_token is None else sealer().seal(matrix_token, user_id)
        q = "UPDATE identity SET matrix_token=$2 WHERE user_id=$1 AND kind IN ('agent', 'bot')"
        await cls.db.execute(q, user_id, sealed)

    @classmethod
    async def upsert_human(cls, user_id: str, nick: str, matrix_token: str) -> Identity:
        """Create or refresh a human who logged in with their Matrix account.

        A human answers to their localpart unless someone (an agent) already does; then only
        to their user id, which no nick can equal. Two statements, each atomic on its own, so
        concurrent logins (or a login racing an agent's registration of the same name) never
        trip over a unique index: the first claims the localpart and does nothing when any
        row is in the way; the second creates the human under their user id, or, when they
        exist already, stores their new Matrix token.
        """
        q = (
            "INSERT INTO identity (user_id, nick, nick_key, kind, created_at, matrix_token) "
            "VALUES ($1, $2, $3, 'human', $4, $5) ON CONFLICT DO NOTHING "
            f"RETURNING {cls._columns}"
        )
        sealed = sealer().seal(matrix_token, user_id)
        row = await cls.db.fetchrow(q, user_id, nick, nick.lower(), now_ms(), sealed)
        if row is None:
            q = (
                "INSERT INTO identity (user_id, nick, nick_key, kind, created_at, matrix_token) "
                "VALUES ($1, $2, $1, 'human', $3, $4) "
                "ON CONFLICT (user_id) DO UPDATE SET matrix_token=excluded.matrix_token "
                f"RETURNING {cls._columns}"
            )
            row = await cls.db.fetchrow(q, user_id, nick, now_ms(), sealed)
        identity = cls._from_row(row)
        if identity is None:  # RETURNING answers a row for an insert and for an update
            raise RuntimeError(f"storing the human {user_id} returned no row")
        return identity

    @classmethod
    async def active(cls) -> list[Identity]:
        """Every identity not retired, agents first, then by name."""
        q = f"SELECT {cls._columns} FROM identity WHERE kind<>'{RETIRED}' ORDER BY kind, nick_key"
        return [i for r in await cls.read_db.fetch(q) if (i := cls._from_row(r)) is not None]

    @classmethod
    async def idle_agents(cls, before_ms: int) -> list[Identity]:
        """Agents last active (or, never active, created) before ``before_ms``."""
        q = (
            f"SELECT {cls._columns} FROM identity WHERE kind='agent' "
            "AND COALESCE(last_active, created_at) < $1 ORDER BY nick_key"
        )
        rows = await cls.read_db.fetch(q, before_ms)
        return [i for r in rows if (i := cls._from_row(r)) is not None]

    @classmethod
    async def user_ids_taken(cls, user_ids: list[str]) -> set[str]:
        """Which of these Matrix user ids have an identity (active or retired)."""
        return await cls._taken("user_id", user_ids)

    @classmethod
    async def revoke_tokens(cls, user_id: str, before_ms: int | None = None) -> int:
        """Delete ``user_id``'s API tokens (those issued up to ``before_ms``, or all: a login
        racing the revocation keeps its new one). How many are left (see ``_left``)."""
        async with transaction(cls.db) as conn:
            if before_ms is None:
                await conn.execute("DELETE FROM api_token WHERE user_id=$1", user_id)
            else:
                q = "DELETE FROM api_token WHERE user_id=$1 AND created_at<=$2"
                await conn.execute(q, user_id, before_ms)
            return await cls._left(conn, user_id)

    @classmethod
    async def revoke_token(cls, token: str) -> int:
        """Delete one API token. How many its identity has left (see ``_left``)."""
        async with transaction(cls.db) as conn:
            q = "SELECT user_id FROM api_token WHERE token_hash=$1"
            user_id = await conn.fetchval(q, hash_token(token))
            if user_id is None:
                return 0
            await conn.execute("DELETE FROM api_token WHERE token_hash=$1", hash_token(token))
            return await cls._left(conn, str(user_id))

    @staticmethod
    async def _left(conn: Connection, user_id: str) -> int:
        """How many API tokens ``user_id`` has; with none, a human's Matrix token is forgotten
        too (nothing may act for them until they log in again)."""
        q = "SELECT COUNT(*) FROM api_token WHERE user_id=$1"
        left = int(await conn.fetchval(q, user_id) or 0)
        if not left:
            q = "UPDATE identity SET matrix_token=NULL WHERE user_id=$1 AND kind='human'"
            await conn.execute(q, user_id)
        return left

    async def retire(self) -> None:
        """Revoke every API token and free the name: the row stays (its messages keep their
        sender's name) as kind ``retired`` under its user id, which no name can equal."""
        async with transaction(self.db) as conn:
            await conn.execute("DELETE FROM api_token WHERE user_id=$1", self.user_id)
            q = f"UPDATE identity SET kind='{RETIRED}', nick_key=user_id WHERE user_id=$1"
            await conn.execute(q, self.user_id)
        self.kind = RETIRED

    async def delete(self) -> None:
        """Remove the identity (and, by cascade, its API tokens)."""
        await self.db.execute("DELETE FROM identity WHERE user_id=$1", self.user_id)

    async def touch(self) -> None:
        self.last_active = now_ms()
        q = "UPDATE identity SET last_active=$2 WHERE user_id=$1"
        await self.db.execute(q, self.user_id, self.last_active)
