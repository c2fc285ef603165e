"""Agents' own Matrix access tokens, for the membership changes that must not queue.

Synapse runs ten membership changes of one appservice at a time (``member_as_limiter`` in
``synapse/handlers/room_member.py``, keyed on the requester's appservice), and every
createRoom makes one: the creator's join. Masqueraded (the as_token and ``?user_id=``), a burst
of first-contact direct chats finishes in waves of ten. A request with the agent's own access
token has no appservice on its requester, so its join queues behind nobody else's.

The token comes with the agent's registration, or else from an ``m.login.application_service``
login (both with the as_token; one device per agent, :data:`DEVICE_ID`). It is stored sealed
in the agent's identity row as humans' Matrix tokens are (``db/sealed.py``), kept in memory, and
never logged. It grants nothing the as_token does not: the appservice may act as the agent
anyway. A token the homeserver no longer knows is forgotten, and the request is made the
old way (masqueraded), as it is when no token can be had.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
import asyncio
import logging

from .db import Identity

if TYPE_CHECKING:
    from .homeserver import Homeserver

log = logging.getLogger("agent_chat.agent_tokens")

#: The device every agent's own token belongs to (a new login replaces nothing, but reuses it).
DEVICE_ID = "AGENTCHAT"
#: How the device is shown in the user's session list.
DEVICE_NAME = "Agent Chat appservice"


class AgentTokens:
    """Own Matrix tokens of this server's agents and bots, by user id."""

    def __init__(self, hs: Homeserver) -> None:
        self.hs = hs
        self._tokens: dict[str, str] = {}
        #: Tokens from registration not yet stored: the identity row comes after the account.
        self._unsaved: set[str] = set()
        #: One lookup or login per user in flight; the others wait for it.
        self._pending: dict[str, asyncio.Future[str | None]] = {}

    def owns(self, user_id: str) -> bool:
        """Whether ``user_id`` is one of ours that may have its own token (an agent or a bot
        of this server: in the appservice's namespace, not the appservice's own bot)."""
        config = self.hs.config
        return config.is_ours(user_id) and user_id != config.bot_mxid

    def registered(self, user_id: str, token: str) -> None:
        """The token a registration returned: stored on its first use (``token``)."""
        self._tokens[user_id] = token
        self._unsaved.add(user_id)

    async def token(self, user_id: str) -> str | None:
        """``user_id``'s own token: remembered, stored, or from a new login. None when none
        can be had (the caller masquerades instead)."""
        if not self.owns(user_id):
            return None
        token = self._tokens.get(user_id)
        if token is not None and user_id not in self._unsaved:
            return token
        running = self._pending.get(user_id)
        if running is None:
            running = asyncio.ensure_future(self._fetch(user_id))
            self._pending[user_id] = running
            running.add_done_callback(lambda _: self._pending.pop(user_id, None))
        return await asyncio.shield(running)  # one caller giving up stops no one else's

    async def _fetch(self, user_id: str) -> str | None:
        try:
            token = self._tokens.get(user_id)
            if token is None:
                token = await Identity.own_matrix_token(user_id)
            if token is None:
                token = await self.hs.appservice_login(user_id, DEVICE_ID, DEVICE_NAME)
                self._unsaved.add(user_id)
            if user_id in self._unsaved:
                await Identity.set_own_matrix_token(user_id, token)
                self._unsaved.discard(user_id)
        except Exception as e:  # the masqueraded way still works: only slower in a burst
            log.warning("%s: no own Matrix token (%s); acting through the appservice", user_id, e)
            return None
        self._tokens[user_id] = token
        return token

    async def forget(self, user_id: str, token: str) -> None:
        """The homeserver refused ``token``: forget it (here and stored), so the next use logs
        in again. A newer token stored meanwhile is kept."""
        if self._tokens.get(user_id) != token:
            return
        del self._tokens[user_id]
        self._unsaved.discard(user_id)
        log.info("%s: own Matrix token refused by the homeserver; a new one will be made", user_id)
        try:
            if await Identity.own_matrix_token(user_id) == token:
                await Identity.set_own_matrix_token(user_id, None)
        except Exception as e:
            log.warning("%s: the refused Matrix token stays stored: %s", user_id, e)
