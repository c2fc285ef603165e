"""Invite tokens: a registration token per invited machine, which expires and can be revoked.

Only the SHA-256 of a token is stored: the database (or a backup of it) never holds one that
works. The server's own ``registration_token`` (appservice.yaml) keeps working beside them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
import hashlib
import secrets

from .base import Row, Table, now_ms

#: Tokens start with this, so a leaked one is recognisable in logs and scanners.
PREFIX = "aci_"


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclass
class InviteToken(Table):
    id: str
    note: str
    created_at: int
    expires_at: int
    revoked_at: int | None
    uses: int
    last_used: int | None

    _COLUMNS = "id, note, created_at, expires_at, revoked_at, uses, last_used"

    @classmethod
    def _from_row(cls, row: Row) -> InviteToken:
        return cls(
            row["id"],
            row["note"],
            row["created_at"],
            row["expires_at"],
            row["revoked_at"],
            row["uses"],
            row["last_used"],
        )

    def state(self, now: int) -> str:
        """``valid``, ``revoked`` or ``expired``."""
        if self.revoked_at is not None:
            return "revoked"
        return "expired" if now >= self.expires_at else "valid"

    def as_dict(self, now: int) -> dict[str, Any]:
        return {
            "id": self.id,
            "note": self.note,
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "revoked_at": self.revoked_at,
            "uses": self.uses,
            "last_used": self.last_used,
            "state": self.state(now),
        }

    @classmethod
    async def create(cls, seconds: int, note: str) -> tuple[InviteToken, str]:
        """A new invite valid for ``seconds``; the token itself is returned once, never kept."""
        token = PREFIX + secrets.token_urlsafe(24)
        now = now_ms()
        invite = cls(secrets.token_hex(4), note, now, now + seconds * 1000, None, 0, None)
        await cls.db.execute(
            "INSERT INTO invite_token (id, token_hash, note, created_at, expires_at) "
            "VALUES ($1, $2, $3, $4, $5)",
            invite.id,
            token_hash(token),
            note,
            invite.created_at,
            invite.expires_at,
        )
        return invite, token

    @classmethod
    async def find(cls, token: str) -> InviteToken | None:
        """The invite this token belongs to, whatever its state."""
        row = await cls.db.fetchrow(
            f"SELECT {cls._COLUMNS} FROM invite_token WHERE token_hash=$1", token_hash(token)
        )
        return None if row is None else cls._from_row(row)

    @classmethod
    async def used(cls, invite_id: str) -> None:
        await cls.db.execute(
            "UPDATE invite_token SET uses = uses + 1, last_used=$2 WHERE id=$1",
            invite_id,
            now_ms(),
        )

    @classmethod
    async def all(cls) -> list[InviteToken]:
        rows = await cls.read_db.fetch(
            f"SELECT {cls._COLUMNS} FROM invite_token ORDER BY created_at"
        )
        return [cls._from_row(r) for r in rows]

    @classmethod
    async def revoke(cls, invite_id: str) -> InviteToken | None:
        """Revoke one invite (again: no change); None when there is no such invite."""
        await cls.db.execute(
            "UPDATE invite_token SET revoked_at=$2 WHERE id=$1 AND revoked_at IS NULL",
            invite_id,
            now_ms(),
        )
        row = await cls.db.fetchrow(
            f"SELECT {cls._COLUMNS} FROM invite_token WHERE id=$1", invite_id
        )
        return None if row is None else cls._from_row(row)
