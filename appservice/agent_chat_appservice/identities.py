"""Agent identities: names from the bundled word lists, Matrix accounts, API tokens."""

from __future__ import annotations

from importlib import resources
import asyncio
import logging
import random
import re

from agent_chat.untrusted import MARKER, skeleton

from . import metrics
from .db import Identity, Member, now_ms
from .errors import ErrorAnswer
from .rooms import Rooms

log = logging.getLogger("agent_chat.identities")

NICK_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{1,31}$")
RESERVED = frozenset({"bot", "admin", "room", "here", "all", "everyone"})
#: Names no agent may pass for, compared by skeleton (``Agent-Chat``, ``agent_chat``): the
#: service's own, and the untrusted-content tag's (``agent_chat.untrusted``).
RESERVED_SKELETONS = (skeleton("Agent Chat"), MARKER)
#: A retired name can be registered again this many times less two (``@_ac_name.99``).
RETIRED_SUFFIXES = 100


def _words(name: str) -> list[str]:
    text = resources.files("agent_chat_appservice").joinpath("words", name).read_text()
    return [w.strip() for w in text.splitlines() if w.strip()]


ADJECTIVES = _words("adjectives.txt")
NOUNS = _words("nouns.txt")


def check_nick(nick: str) -> None:
    if not NICK_RE.match(nick):
        raise ErrorAnswer(
            400,
            "M_INVALID_USERNAME",
            "a name is 2-32 characters: a letter, then letters, digits, '_' or '-'",
        )
    folded = skeleton(nick)
    if nick.lower() in RESERVED or any(r in folded for r in RESERVED_SKELETONS):
        raise ErrorAnswer(400, "M_INVALID_USERNAME", f"the name {nick!r} is reserved")


class Identities:
    def __init__(self, rooms: Rooms) -> None:
        self.rooms = rooms
        self.hs = rooms.hs
        self.config = rooms.hs.config

    def user_id(self, nick: str) -> str:
        return f"@{self.config.user_prefix}{nick.lower()}:{self.config.server_name}"

    def is_ours(self, user_id: str) -> bool:
        """True for users in the appservice's exclusive namespace (agents, bots, our bot)."""
        return self.config.is_ours(user_id)

    def _candidates(self, nick: str | None, exact: bool) -> list[str]:
        if nick is not None:
            if exact:
                return [nick]
            return [nick] + [f"{nick}{n}" for n in range(2, 100) if len(nick) + len(str(n)) <= 32]
        pairs = [(a, n) for a in ADJECTIVES for n in NOUNS]
        picks = [a + n for a, n in random.sample(pairs, 40)]
        # Nearly exhausted word lists: numbered names stay available.
        return picks + [f"{picks[0]}{n}" for n in range(2, 100)]

    async def register(
        self, nick: str | None, exact: bool, kind: str = "agent"
    ) -> tuple[Identity, str]:
        """Create an identity: claim the name, register the Matrix user, join the default rooms.

        Returns the identity and its API token (shown once; only its hash is stored).
        """
        if nick is not None:
            check_nick(nick)
            await self._not_a_person(nick)
        identity = await self._claim(nick, exact, kind)
        try:
            await self._provision(identity)
        except Exception:
            await identity.delete()
            raise
        token = await identity.issue_token()
        metrics.REGISTRATIONS.inc(kind)
        log.info("registered %s %s", kind, identity.user_id)
        return identity, token

    async def _not_a_person(self, nick: str) -> None:
        """409 when ``nick`` is the localpart of a person on this server: ``@alice`` means
        them (``names.People``), so no agent may be called that (nor ``alice2``: ask for
        another name, rather than be renamed next to a person)."""
        if await self.rooms.people.person_exists(nick):
            raise ErrorAnswer(
                409,
                "AC_NAME_OF_PERSON",
                f"{nick} is the name of a person on this server "
                f"({self.rooms.people.local_user_id(nick)}); agents cannot take it: "
                "pick another name",
            )

    async def _claim(self, nick: str | None, exact: bool, kind: str) -> Identity:
        candidates = self._candidates(nick, exact)
        taken = await Identity.nick_keys_taken([c.lower() for c in candidates])
        for candidate in candidates:
            if candidate.lower() in taken or candidate.lower() in RESERVED:
                continue
            if candidate != nick and await self.rooms.people.person_exists(candidate):
                continue  # a person's name (the name asked for was checked in register)
            user_id = await self._free_user_id(candidate)
            if user_id is None:
                continue
            identity = Identity(user_id, candidate, kind, now_ms())
            # A Matrix account that exists without an identity row is someone's lost
            # identity: never hand it to a new caller. Two registrations of one name (in
            # this process or another replica's) are told apart here, by Synapse, or by the
            # identity table's unique indexes: the loser tries its next candidate.
            if not await self.hs.register(user_id[1:].split(":", 1)[0]):
                continue
            if await identity.insert():
                return identity
        if exact:
            raise ErrorAnswer(
                409,
                "M_USER_IN_USE",
                f"the name {nick} is taken; use its stored credentials or pick another name",
            )
        raise ErrorAnswer(409, "M_USER_IN_USE", "no free name found; pick a name")

    async def _free_user_id(self, nick: str) -> str | None:
        """The Matrix user id for a new identity called ``nick``: ``@_ac_bluelake``, or, when
        a retired identity keeps that one (Matrix user ids are forever, and its messages keep
        their sender), ``@_ac_bluelake.2``, ``.3``, ... ('.' is in no name, so these never
        collide with another name's id). None when all are used."""
        ids = [self.user_id(nick)] + [
            self.user_id(f"{nick}.{n}") for n in range(2, RETIRED_SUFFIXES)
        ]
        taken = await Identity.user_ids_taken(ids)
        return next((i for i in ids if i not in taken), None)

    async def retire(self, identity: Identity) -> list[str]:
        """Retire an agent or bot: it leaves every room, its tokens stop working and its name
        is free for a new registration. Returns the room ids it left."""
        left, kind = [], identity.kind
        for room_id in await Member.joined_rooms(identity.user_id):
            try:
                await self.rooms.leave(identity.user_id, room_id)
            except ErrorAnswer as e:
                log.warning("%s could not leave %s: %s", identity.user_id, room_id, e)
                continue
            left.append(room_id)
        await identity.retire()
        metrics.RETIREMENTS.inc(kind)
        log.info("retired %s (left %d rooms)", identity.user_id, len(left))
        return left

    async def _provision(self, identity: Identity) -> None:
        await self.hs.set_displayname(identity.user_id, identity.nick)
        await asyncio.gather(
            *(
                self.rooms.join(identity.user_id, room_id)
                for room_id in self.rooms.default_room_ids
            )
        )
