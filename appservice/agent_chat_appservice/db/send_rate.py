"""Rate buckets in the database: the limiters of appservice replicas (one row a key: a caller's
sends, or ``room:``, ``hook:``, ``login:`` ... keys of the other limits)."""

from __future__ import annotations

from .base import Table, now_ms

# A token bucket in one statement, so two replicas never both spend the last token: the row
# is locked from the conflict to the end of the statement. ``allowed`` says whether this
# request got a token (the refilled amount was at least one); ``tokens`` is what is left.
_TAKE = """
INSERT INTO send_rate (user_id, tokens, updated_ms, allowed) VALUES ($1, $2 - 1, $4, TRUE)
ON CONFLICT (user_id) DO UPDATE SET
    allowed = LEAST($2, send_rate.tokens + ($4 - send_rate.updated_ms) * $3 / 1000.0) >= 1,
    tokens = LEAST($2, send_rate.tokens + ($4 - send_rate.updated_ms) * $3 / 1000.0)
        - CASE WHEN LEAST($2, send_rate.tokens + ($4 - send_rate.updated_ms) * $3 / 1000.0)
            >= 1 THEN 1 ELSE 0 END,
    updated_ms = $4
RETURNING allowed, tokens
"""


class SendRate(Table):
    @classmethod
    async def take(cls, user_id: str, burst: int, per_second: float) -> int | None:
        """Spend one of ``user_id``'s tokens: None when there was one, else milliseconds
        until there will be."""
        row = await cls.db.fetchrow(_TAKE, user_id, float(burst), float(per_second), now_ms())
        if row is None or row["allowed"]:
            return None
        return int((1 - float(row["tokens"])) / per_second * 1000) + 1

    @classmethod
    async def refund(cls, key: str, burst: int) -> None:
        """Give back one token (see ``RateLimiter.refund``)."""
        q = "UPDATE send_rate SET tokens = LEAST($2, tokens + 1) WHERE user_id=$1"
        await cls.db.execute(q, key, float(burst))
