"""Shared rooms and direct chats: creating them, joining them, resolving what callers name.

Callers name rooms as ``#general``, ``#general:server`` or ``!id:server``, and people as
``@Nick`` or ``@user:server``. Every resolution answers only about rooms the caller is in
(or public rooms they may join), so nothing leaks across rooms.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any
import asyncio
import logging
import time

from mautrix.errors import MatrixRequestError, MNotFound

from .db import DirectChat, Identity, Ledger, Member, Room, transaction
from .errors import HOMESERVER_ERRORS, ErrorAnswer, from_matrix
from .homeserver import Homeserver
from .labels import room_label
from .names import People

log = logging.getLogger("agent_chat.rooms")

ALIAS_CACHE_SECONDS = 10.0


class Rooms:
    def __init__(self, hs: Homeserver) -> None:
        self.hs = hs
        self.config = hs.config
        self.default_room_ids: list[str] = []
        self.people = People(hs)
        # Shared rooms' aliases change rarely, and members rarely leave: short-lived caches
        # save queries on every send. A stale "joined" only lets Synapse refuse the send, so
        # only sends use it: a read asks the ledger every time (a kicked, banned or departed
        # member reads nothing more once their leave is recorded, on every replica).
        self._alias_cache: dict[str, tuple[str, float]] = {}
        self._joined_cache: dict[tuple[str, str], float] = {}
        # Joins in flight, per (user, room): a second join of the same member (the sender's
        # direct chat, the invitation's auto-join, the recipient's first read all join a new
        # DM's recipient) waits for the first instead of queueing another membership change
        # on the homeserver, which runs ten of an appservice's at a time.
        self._joining: dict[tuple[str, str], asyncio.Future[None]] = {}

    async def _is_joined(self, room_id: str, user_id: str, cached: bool) -> bool:
        now = time.monotonic()
        seen = self._joined_cache.get((room_id, user_id), -1e9)
        if cached and now - seen < ALIAS_CACHE_SECONDS:
            return True
        if not await Member.is_joined(room_id, user_id):
            return False
        if len(self._joined_cache) > 100000:
            self._joined_cache.clear()
        self._joined_cache[(room_id, user_id)] = now
        return True

    async def _room_id_by_alias(self, alias: str) -> str | None:
        now = time.monotonic()
        cached = self._alias_cache.get(alias)
        if cached and now - cached[1] < ALIAS_CACHE_SECONDS:
            return cached[0]
        room = await Room.get_by_alias(alias)
        if room is None:
            return None
        self._alias_cache[alias] = (room.room_id, now)
        return room.room_id

    def full_alias(self, localpart: str) -> str:
        return f"#{localpart}:{self.config.server_name}"

    def alias_localpart(self, name: str) -> str:
        """``#general`` or ``#general:server`` → ``general``; 400 for anything else."""
        local = name[1:] if name.startswith("#") else name
        suffix = ":" + self.config.server_name
        if local.endswith(suffix):
            local = local[: -len(suffix)]
        elif ":" in local and local.split(":", 1)[0]:
            raise ErrorAnswer(
                404, "M_NOT_FOUND", f"no room {name} here: this server does not federate"
            )
        if (
            not local
            or ":" in local
            or len(local) > 64
            or not all(c.isascii() and (c.isalnum() or c in "._-") for c in local)
        ):
            raise ErrorAnswer(
                400, "M_INVALID_PARAM", "a room name is #name (letters, digits, '.', '_', '-')"
            )
        return local.lower()

    async def ensure_default_rooms(self) -> None:
        """Create #general, #status, #alerts (public, listed, the bot as admin) if missing."""
        self.default_room_ids = []
        for room in self.config.rooms:
            room_id = await self.ensure_public_room(room["alias"], room.get("topic"))
            self.default_room_ids.append(room_id)

    async def await_default_rooms(self, interval: float = 0.5) -> list[str]:
        """A replica's default rooms: the ledger writer creates them; this waits until their
        aliases resolve (a new deployment's replicas start together)."""
        room_ids: list[str] = []
        for room in self.config.rooms:
            alias = self.full_alias(room["alias"])
            while True:
                try:
                    room_ids.append(await self.hs.resolve_alias(alias))
                    break
                except MNotFound:
                    log.info("waiting for the ledger writer to create %s", alias)
                    await asyncio.sleep(interval)
        return room_ids

    async def ensure_public_room(self, alias: str, topic: str | None) -> str:
        try:
            room_id = await self.hs.resolve_alias(self.full_alias(alias))
            await self.hs.join(self.config.bot_mxid, room_id)
        except MNotFound:
            room_id = await self.hs.create_room(
                None, alias_localpart=alias, name=alias, topic=topic, public=True
            )
            log.info("created #%s as %s", alias, room_id)
        await self._remember_public(room_id, alias, topic)
        return room_id

    async def _remember_public(self, room_id: str, alias: str, topic: str | None) -> None:
        async with transaction() as conn:
            await Room.set_alias(conn, room_id, alias)
            if topic is not None:
                existing = await Room.get(room_id)
                if existing and existing.topic is None:
                    await Room.set_field(conn, room_id, "topic", topic)

    async def create_public_room(
        self, creator: str, name: str, topic: str | None
    ) -> tuple[str, str]:
        alias = self.alias_localpart(name)
        try:
            await self.hs.resolve_alias(self.full_alias(alias))
            raise ErrorAnswer(409, "M_ROOM_IN_USE", f"#{alias} exists already; join it instead")
        except MNotFound:
            pass
        except HOMESERVER_ERRORS as e:
            raise from_matrix(e, "looking up the alias") from None
        try:
            room_id = await self.hs.create_room(
                None, alias_localpart=alias, name=alias, topic=topic, public=True
            )
        except HOMESERVER_ERRORS as e:
            raise from_matrix(e, "creating the room") from None
        await self._remember_public(room_id, alias, topic)
        await self.join(creator, room_id)
        return room_id, "#" + alias

    async def join(self, user_id: str, room_id: str, via_alias: str | None = None) -> None:
        """Join as ``user_id`` and record it at once, so the caller's next request sees it
        (the join event that Synapse pushes a few ms later changes nothing more). Another
        server's room is joined by its alias (``via_alias``): Synapse finds the way there.
        A join of the same member already in flight is waited for, not repeated."""
        key = (user_id, room_id)
        running = self._joining.get(key)
        if running is None:
            running = asyncio.ensure_future(self._join(user_id, room_id, via_alias))
            self._joining[key] = running
            running.add_done_callback(lambda _: self._joining.pop(key, None))
        await asyncio.shield(running)  # one caller giving up does not cancel the others' join

    async def _join(self, user_id: str, room_id: str, via_alias: str | None) -> None:
        try:
            await self.hs.join(user_id, via_alias or room_id)
        except HOMESERVER_ERRORS as e:
            raise from_matrix(e, "joining the room") from None
        name = None
        identity = await Identity.get(user_id)
        if identity:
            name = identity.nick
        others: dict[str, str | None] = {}
        if via_alias is not None:  # who is there already: no event of theirs comes to us
            try:
                others = await self.hs.joined_members(user_id, room_id)
            except HOMESERVER_ERRORS as e:
                log.warning("members of %s unknown after joining: %s", via_alias, e)
        async with transaction() as conn:
            await Room.ensure(conn, room_id)
            if via_alias is not None:  # labelled #room:server, found here during a cut too
                await Room.set_alias(conn, room_id, via_alias[1:])
            for other, display in others.items():
                if other != user_id:
                    await Member.set(conn, room_id, other, "join", display)
            await Member.set(conn, room_id, user_id, "join", name)
            await Ledger.on_join(conn, room_id, user_id)

    async def leave(self, user_id: str, room_id: str) -> None:
        """Leave as ``user_id`` and record it at once, as ``join`` does."""
        try:
            await self.hs.leave(user_id, room_id)
        except HOMESERVER_ERRORS as e:
            raise from_matrix(e, "leaving the room") from None
        self._joined_cache.pop((room_id, user_id), None)
        name = await Member.name_of(user_id)
        async with transaction() as conn:
            await Member.set(conn, room_id, user_id, "leave", name)
            await Ledger.on_leave(conn, room_id, user_id)

    async def decline(self, user_id: str, room_id: str) -> None:
        """Refuse an invitation (``auto_join``): nothing of it was recorded, so only the
        homeserver hears of it (a failure leaves a pending invitation, nothing more)."""
        try:
            await self.hs.leave(user_id, room_id)
        except MatrixRequestError as e:
            log.warning("%s could not decline the invitation to %s: %s", user_id, room_id, e)

    async def resolve_room(self, caller: str, name: str, join: bool = False) -> str:
        """The room id of a room the caller is in (joining a public one when ``join``, which
        sends do: only they may answer from the short-lived cache)."""
        remote = self.remote_alias(name)
        if name.startswith("!"):
            room_id = name
            if await self._is_joined(room_id, caller, cached=join):
                return room_id
            if not join:
                if await self._accept_direct_invite(caller, room_id):
                    return room_id
                raise ErrorAnswer(404, "M_NOT_FOUND", "you are not in that room")
        elif remote is not None:  # federation: #room:another.server
            room_id = await self._resolve_remote(remote)
            if await self._is_joined(room_id, caller, cached=join):
                return room_id
            if not join:
                raise ErrorAnswer(404, "M_NOT_FOUND", f"you are not in {remote}")
        else:
            alias = self.alias_localpart(name)
            room_id = await self._resolve_alias(alias)
            if await self._is_joined(room_id, caller, cached=join):
                return room_id
            if not join:
                raise ErrorAnswer(404, "M_NOT_FOUND", f"you are not in #{alias}")
        try:
            await self.join(caller, room_id, via_alias=remote)
        except ErrorAnswer as e:
            if 400 <= e.status < 500 and e.status != 429:
                raise ErrorAnswer(
                    404, "M_NOT_FOUND", "no such room, or you may not join it"
                ) from None
            raise
        return room_id

    def remote_alias(self, name: str) -> str | None:
        """``#room:another.server`` in full when ``name`` names another server's room."""
        if name.startswith("!"):
            return None
        local = name[1:] if name.startswith("#") else name
        room, sep, server = local.partition(":")
        if not sep or not room or not server or server == self.config.server_name:
            return None
        return "#" + local

    async def _resolve_remote(self, alias: str) -> str:
        """Another server's alias: a room joined here already, else asked of the homeserver
        (over federation, if allowed)."""
        known = await self._room_id_by_alias(alias[1:])
        if known is not None:
            return known
        try:
            return await self.hs.resolve_alias(alias)
        except MNotFound:
            raise ErrorAnswer(404, "M_NOT_FOUND", f"no room {alias}") from None
        except MatrixRequestError:
            raise ErrorAnswer(
                404,
                "M_NOT_FOUND",
                f"no room {alias} reachable from here (is federation with its server on?)",
            ) from None

    async def _resolve_alias(self, alias: str) -> str:
        """The room id of ``#alias``: known here, else asked of the homeserver."""
        known = await self._room_id_by_alias(alias)
        if known is not None:
            return known
        try:
            return await self.hs.resolve_alias(self.full_alias(alias))
        except MNotFound:
            raise ErrorAnswer(404, "M_NOT_FOUND", f"no room #{alias}") from None
        except HOMESERVER_ERRORS as e:
            raise from_matrix(e, "looking up the room") from None

    async def resolve_user(self, name: str) -> str:
        """``@name`` (a person's localpart here, else an agent's nick: ``names.People``) or
        ``@user:server``. Never a display name: anyone can wear one."""
        target = name[1:] if name.startswith("@") else name
        if ":" in target:
            user_id = "@" + target
            if not user_id.isascii() or " " in user_id or len(user_id) > 255:
                raise ErrorAnswer(400, "M_INVALID_PARAM", "not a valid Matrix user id")
            return user_id
        found = await self.people.resolve(target)
        if found:
            return found
        raise ErrorAnswer(404, "M_NOT_FOUND", f"nobody called @{target} is known here")

    async def direct_chat(
        self,
        caller: str,
        other: str,
        spawn: Callable[[Coroutine[Any, Any, None]], object] | None = None,
    ) -> str:
        """The caller's direct chat with ``other``, created on first use as a real Matrix DM.
        With ``spawn``, an agent recipient joins in the background: the chat is usable once
        it exists (the recipient is invited, and counted from now on), and the join queues
        behind every other membership change the homeserver makes for us."""
        if other == caller:
            raise ErrorAnswer(400, "M_INVALID_PARAM", "you cannot message yourself")
        # One pair of people has one direct chat: the existing one is reused from either side
        # (an invitation to it accepted), whoever created it.
        existing = await self.accept_direct(caller, other)
        if existing is not None:
            return existing
        ours = self.config.is_ours(other)
        if ours and await Identity.get(other) is None:
            raise ErrorAnswer(404, "M_NOT_FOUND", "no such agent")
        local = other.endswith(":" + self.config.server_name)
        if local and not ours and not await self._user_exists(other):
            raise ErrorAnswer(404, "M_NOT_FOUND", f"nobody is called {other} on this server")
        # This server's users are invited by createRoom itself: one request, not two (a burst
        # of first contacts queues on the homeserver). Another server's user is invited after
        # the room exists: an invitation that fails (a server that cannot be reached or
        # refuses) then leaves no one-member room behind.
        try:
            room_id = await self.hs.create_room(
                caller, public=False, is_direct=True, invitees=[other] if local else None
            )
        except HOMESERVER_ERRORS as e:
            raise from_matrix(e, "creating the direct chat") from None
        if not local:
            try:
                await self.hs.invite_direct(caller, room_id, other)
            except HOMESERVER_ERRORS as e:
                await self._abandon(caller, room_id)
                raise from_matrix(e, f"inviting {other}") from None
        async with transaction() as conn:
            await Room.set_direct(conn, room_id)
            await DirectChat.set(conn, caller, other, room_id)
            await Member.set(conn, room_id, caller, "join", None)
            await Ledger.on_join(conn, room_id, caller)
            await Member.set(conn, room_id, other, "invite", None)
            await Ledger.on_join(conn, room_id, other)  # what is sent now counts for them
        await self.remember_direct(caller, other, room_id)
        if ours and spawn is not None:
            spawn(self._join_recipient(other, room_id))
        elif ours:
            await self.join(other, room_id)
        return room_id

    async def _join_recipient(self, user_id: str, room_id: str) -> None:
        """A new direct chat's agent recipient joins (in the background). A failure leaves
        the invitation, which its next read accepts."""
        try:
            await self.join(user_id, room_id)
        except ErrorAnswer as e:
            log.warning("%s did not join the direct chat %s yet: %s", user_id, room_id, e)

    async def _user_exists(self, user_id: str) -> bool:
        try:
            return await self.hs.user_exists(user_id)
        except HOMESERVER_ERRORS as e:
            raise from_matrix(e, f"looking up {user_id}") from None

    async def _abandon(self, user_id: str, room_id: str) -> None:
        """Leave and forget a direct chat whose invitation failed: it must not stay in the
        caller's channels with nobody to talk to."""
        try:
            await self.leave(user_id, room_id)
            await self.hs.forget(user_id, room_id)
        except Exception as e:  # the error that made us abandon it is the one to answer
            log.warning("%s could not leave the failed direct chat %s: %s", user_id, room_id, e)

    async def accept_direct(self, caller: str, other: str) -> str | None:
        """The caller's direct chat with ``other`` if they are in it or invited to it (an
        invitation is accepted here: the caller joins). None when there is none."""
        room_id = await DirectChat.get(caller, other)
        if room_id is None:
            return None
        membership = await Member.membership(room_id, caller)
        if membership == "join":
            return room_id
        if membership != "invite":
            return None
        await self.join(caller, room_id)
        await self.remember_direct(caller, other, room_id)
        return room_id

    async def _accept_direct_invite(self, caller: str, room_id: str) -> bool:
        """A new direct chat read by its room id before its recipient's background join has
        landed (the sender's answer names it at once): the invitation is accepted here, once
        (a join in flight is waited for). Whether the caller is in it now."""
        if await Member.membership(room_id, caller) != "invite":
            return False
        room = await Room.get(room_id)
        if room is None or not room.is_direct:
            return False
        await self.join(caller, room_id)
        return True

    async def accept_direct_invites(self, caller: str) -> None:
        """Accept every direct chat the caller is invited to (reading every room does)."""
        for room_id in await Member.invited_direct_rooms(caller):
            try:
                await self.join(caller, room_id)
            except ErrorAnswer as e:
                log.warning("%s could not accept the direct chat %s: %s", caller, room_id, e)
                continue
            other = await Member.anyone_but(room_id, caller)
            if other is not None:
                await self.remember_direct(caller, other, room_id)

    async def remember_direct(self, user_id: str, other: str, room_id: str) -> None:
        """List the room in a human's ``m.direct`` (for Element: their direct chat with
        ``other``). Agents need no account data; a failure only costs Element's grouping."""
        if user_id not in self.hs.user_tokens:
            return
        try:
            await self.hs.add_direct(user_id, other, room_id)
        except Exception as e:
            log.warning("could not add %s to %s's m.direct: %s", room_id, user_id, e)

    async def label(self, room_id: str, viewer: str) -> str:
        """How a room is shown to ``viewer``: ``#alias``, ``@person`` for their direct chat,
        else its room id (``labels.room_label``)."""
        room = await Room.get(room_id)
        if room is None:
            return room_id
        other = None
        if room.is_direct:
            others = [m for m in await Member.joined(room_id) if m.user_id != viewer]
            other = others[0].user_id if others else None
            if other is None:
                other = await Member.anyone_but(room_id, viewer)
        return await room_label(self.people, viewer, room_id, room.alias, room.is_direct, other)

    async def person_name(self, user_id: str) -> str:
        """A person's name (``names.People.name``: a nick, a localpart or a user id), never
        a display name."""
        return await self.people.name(user_id)
