"""Who a name means, and the name a person is shown by: one place for both.

A name (``@alice``, ``alice``) means, in this order: the person on this server whose user id
has that localpart (``@alice:server``), else the agent or bot with that nick. So an agent can
never take a person's mentions or direct messages, not even one registered before the person
existed. Display names never resolve: anyone can wear any of them.

A person is shown (``@label`` in room labels, ``senders``, service notices) by their agent nick,
or their localpart when they are a person here and no agent answers to it, else by their whole
user id. Every one of these is unique, and none is a display name.
"""

from __future__ import annotations

import logging
import re
import time

from mautrix.api import Method, Path
from mautrix.errors import MatrixRequestError

from .db import Identity
from .db.identity import RETIRED
from .errors import HOMESERVER_ERRORS, from_matrix
from .homeserver import Homeserver

log = logging.getLogger("agent_chat.names")

#: How long "there is a person called X here" is remembered: people are never deleted on a
#: homeserver, so a yes stays true. A no is never remembered: an operator may add that person
#: any moment, and from then on the name is theirs (one profile lookup per ``@nick`` of an
#: agent resolved, about a millisecond on the same host).
KNOWN_SECONDS = 600.0
CACHE_LIMIT = 50000
#: What a Matrix localpart may hold (upper case folds to lower case).
LOCALPART_RE = re.compile(r"[A-Za-z0-9._=/+-]{1,255}\Z")


class People:
    """People's names on this server (see the module's docstring)."""

    def __init__(self, hs: Homeserver) -> None:
        self.hs = hs
        self.config = hs.config
        self._exists: dict[str, float] = {}  # user id -> when it was found

    def local_user_id(self, localpart: str) -> str:
        return f"@{localpart.lower()}:{self.config.server_name}"

    def is_ours(self, user_id: str) -> bool:
        """In the appservice's namespace: an agent, a bot, the service itself."""
        return self.config.is_ours(user_id)

    def is_local(self, user_id: str) -> bool:
        return user_id.endswith(":" + self.config.server_name)

    async def person_exists(self, localpart: str) -> bool:
        """Whether a person (a Matrix account outside our namespace) has this localpart here.
        Asked of the homeserver (a profile lookup; a yes is remembered, see
        :data:`KNOWN_SECONDS`)."""
        user_id = self.local_user_id(localpart)
        if self.is_ours(user_id) or not localpart:
            return False
        now = time.monotonic()
        known = self._exists.get(user_id)
        if known is not None and now - known < KNOWN_SECONDS:
            return True
        try:
            await self.hs.client().api.request(Method.GET, Path.v3.profile[user_id])
            exists = True
        except MatrixRequestError as e:  # Synapse: M_NOT_FOUND, or M_UNKNOWN "No row found"
            if e.http_status != 404:
                raise from_matrix(e, "looking the name up") from None
            exists = False
        except HOMESERVER_ERRORS as e:
            raise from_matrix(e, "looking the name up") from None
        if exists:
            if len(self._exists) > CACHE_LIMIT:
                self._exists.clear()
            self._exists[user_id] = now
        return exists

    async def resolve(self, name: str) -> str | None:
        """The user id ``name`` (``alice``, ``BlueLake``; no ``@``, no server) means, if any:
        a person here first, then an agent or bot (retired ones answer to no name)."""
        if not LOCALPART_RE.match(name):
            return None
        if await self.person_exists(name):
            return self.local_user_id(name)
        identity = await Identity.get_by_nick(name)
        return identity.user_id if identity is not None else None

    async def name(self, user_id: str) -> str:
        """How a person is named in what they wrote and did (a message's sender, a claim's
        holder, a service notice): :meth:`label`, but a retired agent keeps its nick (its old
        messages keep their sender's name)."""
        if self.is_ours(user_id):
            identity = await Identity.get(user_id)
            if identity is not None:
                return identity.nick
        return await self.label(user_id)

    async def label(self, user_id: str) -> str:
        """How a person is shown, without the ``@``: ``BlueLake``, ``alice`` or
        ``alice:other.server`` (see the module's docstring)."""
        if self.is_ours(user_id):
            identity = await Identity.get(user_id)
            if identity is not None and identity.kind != RETIRED:
                return identity.nick
            return user_id[1:]  # the service, or a retired agent (its nick may be reused)
        if self.is_local(user_id):
            localpart = user_id[1:].split(":", 1)[0]
            holder = await Identity.get_by_nick(localpart)
            if holder is None or holder.user_id == user_id:
                return localpart
        return user_id[1:]
