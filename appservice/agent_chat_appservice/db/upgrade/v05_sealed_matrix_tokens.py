"""Humans' Matrix access tokens sealed at rest (see ``db/sealed.py``).

Versions 2-4 stored them in plain text beside the hashed API tokens. Every stored one is sealed
here, with the key the service sets before the database starts (``db.use_key``); a database
without any needs no key.
"""

from __future__ import annotations

from mautrix.util.async_db import Connection

from ..base import sealer
from ..sealed import is_sealed
from .table import register


@register("Humans' Matrix tokens sealed at rest")
async def upgrade_v5(conn: Connection) -> None:
    rows = await conn.fetch(
        "SELECT user_id, matrix_token FROM identity WHERE matrix_token IS NOT NULL"
    )
    plain = [(r["user_id"], r["matrix_token"]) for r in rows if not is_sealed(r["matrix_token"])]
    if not plain:
        return
    box = sealer()
    for user_id, token in plain:
        await conn.execute(
            "UPDATE identity SET matrix_token=$2 WHERE user_id=$1",
            user_id,
            box.seal(token, user_id),
        )
