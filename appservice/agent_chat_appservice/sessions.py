"""A human's API token lives as long as the Matrix session it came from.

``ac login`` trades a human's password for a Matrix access token (kept sealed, used to act for
them) and an API token for ``ac``. When the homeserver ends that Matrix session (a password
change with ``logout_devices``, a logout from Element's session list, an admin deactivating
the account), the API token must die with it: at most every :data:`CHECK_SECONDS` per token,
a request asks the homeserver (``/account/whoami`` with the human's token), and an answer of
``M_UNKNOWN_TOKEN`` revokes the human's API tokens. A homeserver that cannot be asked does not
log anyone out: only its explicit rejection does. The same check notices a token revoked on
another replica (``ac logout``, ``agent-chat-server user revoke``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING
import logging

from mautrix.errors import MatrixRequestError

from .db import Identity, now_ms
from .recent import RecentMap

if TYPE_CHECKING:
    from .api.base import Context
    from .homeserver import Homeserver

log = logging.getLogger("agent_chat.sessions")

#: How long a human's session, once confirmed, is believed without asking again.
CHECK_SECONDS = 10.0
#: Tokens remembered at most (beyond, the least recently checked are asked again).
CHECKED_CAP = 100_000


class Sessions:
    """When each human's API token was last confirmed (by token; the value is the user id)."""

    def __init__(self, hs: Homeserver) -> None:
        self.hs = hs
        self._checked: RecentMap[str, str] = RecentMap(CHECK_SECONDS, CHECKED_CAP)

    def recheck(self, user_id: str) -> None:
        """Ask again on ``user_id``'s next request (a call as them was refused)."""
        self._checked.drop_where(lambda _, who: who == user_id)

    async def alive(self, context: Context, token: str, identity: Identity) -> bool:
        """Whether this human's API token still stands; a dead session revokes it."""
        if self._checked.get(token) is not None:
            return True
        started = now_ms()
        if await Identity.get_by_token(token) is None:  # revoked, maybe on another replica
            forget_caller(context, identity.user_id)
            return False
        matrix_token = self.hs.user_tokens.get(identity.user_id)
        if matrix_token is not None:
            try:
                await self.hs.whoami(matrix_token)
            except MatrixRequestError as e:
                if e.errcode == "M_UNKNOWN_TOKEN":
                    log.info(
                        "%s's Matrix session ended: revoking their API tokens", identity.user_id
                    )
                    await revoke(context, identity.user_id, before_ms=started)
                    return False
                log.warning("could not confirm %s's Matrix session: %s", identity.user_id, e)
            except Exception as e:  # unreachable: nobody is logged out for that
                log.warning("could not confirm %s's Matrix session: %s", identity.user_id, e)
        self._checked.set(token, identity.user_id)
        return True


def forget_caller(context: Context, user_id: str) -> None:
    """Drop what this process remembers of ``user_id``'s tokens: the next request with one
    reads the database."""
    context._tokens.drop_where(lambda _, cached: cached.user_id == user_id)
    context.hs.sessions.recheck(user_id)


async def revoke(
    context: Context, user_id: str, before_ms: int | None = None, matrix_logout: bool = False
) -> None:
    """Revoke ``user_id``'s API tokens (issued up to ``before_ms``, or all); when none is left,
    forget their Matrix token too (``matrix_logout``: ending it at the homeserver first)."""
    matrix_token = context.hs.user_tokens.get(user_id)
    left = await Identity.revoke_tokens(user_id, before_ms)
    if not left:
        context.hs.user_tokens.pop(user_id, None)
        if matrix_logout and matrix_token is not None:
            await context.hs.logout(matrix_token)
    forget_caller(context, user_id)


async def log_out(context: Context, token: str, identity: Identity) -> None:
    """``ac logout``: this API token dies; a human's Matrix session from ``ac login`` ends
    with their last one."""
    matrix_token = context.hs.user_tokens.get(identity.user_id)
    left = await Identity.revoke_token(token)
    if identity.kind == "human" and not left:
        context.hs.user_tokens.pop(identity.user_id, None)
        if matrix_token is not None:
            await context.hs.logout(matrix_token)
    forget_caller(context, identity.user_id)
