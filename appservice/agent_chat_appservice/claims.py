"""Claims on files: check-and-store in the database, the truth mirrored into Matrix.

Each (project, agent) has a state event ``org.agentchat.claim`` in ``#status`` (state key: a
hash of the project, ``|``, the agent's user id; content: the project, the agent and its
claims), sent by the bot, so the claims survive the loss of the appservice's database: a
project the database does not know is read back from that state on first use. Every claim,
release, takeover and expiry is also an ``m.notice`` in ``#status``, so Element shows it.

``#status`` rather than a room per project: it exists on every install, the humans who watch
agents already read it, and one room's state holds every project (keyed by the hash), so no
room is created per repository. Expiry needs no timer: a read that finds expired claims
removes them and says so.

The live claims of a project are kept in memory between reads (the pre-commit hook of every
commit asks for them, and a project may hold thousands), until the first of them expires, a
minute has passed, or this process changes the project's claims; the appservice is their only
writer.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar
import asyncio
import hashlib
import logging
import time
import uuid

from mautrix.api import Method, Path

from agent_chat.globs import MAX_STEPS, Budget, Glob, TooMuchWork, compile, overlap

from .db import Claim, now_ms, transaction
from .homeserver import Homeserver
from .rooms import Rooms

log = logging.getLogger("agent_chat.claims")

STATE_TYPE = "org.agentchat.claim"
STATUS_ALIAS = "status"
#: How long a project's live claims are kept in memory at most (ms), and for how many projects.
CACHE_MS, CACHE_PROJECTS = 60_000, 1000
#: Steps of glob work a request may do on the event loop (about 5 ms at most); past them
#: it is done again in a worker thread, with the request's whole budget (``MAX_STEPS``).
INLINE_STEPS = 20_000
#: Such jobs running at once; more wait their turn (without blocking the event loop).
WORKERS = 2
#: A worker lets the event loop run every this many steps (about a millisecond).
PAUSE_STEPS = 5000
T = TypeVar("T")
_pool: ThreadPoolExecutor | None = None


async def bounded(work: Callable[[Budget], T]) -> T:
    """``work(budget)``: on the event loop while it stays cheap, else in a worker thread.

    Raises :class:`TooMuchWork` past ``MAX_STEPS``. ``work`` is pure, so running it again
    after the inline attempt ran out is safe (and costs at most ``INLINE_STEPS``)."""
    global _pool
    try:
        return work(Budget(INLINE_STEPS))
    except TooMuchWork:
        pass
    if _pool is None:
        _pool = ThreadPoolExecutor(WORKERS, thread_name_prefix="agent-chat-globs")
    budget = Budget(MAX_STEPS, pause=_yield, every=PAUSE_STEPS)
    return await asyncio.get_running_loop().run_in_executor(_pool, work, budget)


def _yield() -> None:
    time.sleep(0)  # lets the event loop's thread take the interpreter now


def covering(claims: list[Claim], paths: list[str], budget: Budget) -> list[tuple[str, Claim]]:
    """(path, claim) for each claim matching each path, in the order of paths then claims.

    Claims are indexed by their first segment when it is plain text (``src/api/**`` under
    ``src``), else by the last character of the text they end with (``**/*.py`` under ``y``),
    so a path is tried only against the claims that could match it."""
    by_first: dict[str, list[tuple[int, Glob, Claim]]] = {}
    by_last: dict[str, list[tuple[int, Glob, Claim]]] = {}
    anywhere: list[tuple[int, Glob, Claim]] = []
    for n, c in enumerate(claims):
        glob = compile(c.pattern, budget)
        first = glob.items[0] if glob.items else None
        if first is not None and first.literal is not None:
            by_first.setdefault(first.literal, []).append((n, glob, c))
        elif glob.suffix:
            by_last.setdefault(glob.suffix[-1], []).append((n, glob, c))
        else:
            anywhere.append((n, glob, c))
    hits: list[tuple[int, int, str, Claim]] = []
    for m, path in enumerate(paths):
        budget.spend(1)
        for candidates in (
            by_first.get(path.partition("/")[0], ()),
            by_last.get(path[-1:], ()),
            anywhere,
        ):
            for n, glob, c in candidates:
                if glob.match(path, budget):
                    hits.append((m, n, path, c))
    hits.sort(key=lambda hit: hit[:2])
    return [(path, c) for _, _, path, c in hits]


def state_key(project: str, user_id: str) -> str:
    """Never starting with ``@``: Synapse keeps such keys for their owner's own events."""
    return hashlib.sha256(project.encode()).hexdigest()[:16] + "|" + user_id


def until(ts: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(ts / 1000))


@dataclass
class Outcome:
    """What a claim did: stored, or refused for ``conflicts``; ``taken`` by --force."""

    stored: list[Claim] = field(default_factory=list)
    conflicts: list[Claim] = field(default_factory=list)
    taken: list[Claim] = field(default_factory=list)
    expired: list[Claim] = field(default_factory=list)


def conflicts_with(pattern: str, exclusive: bool, other: Claim, budget: Budget) -> bool:
    return (exclusive or other.exclusive) and overlap(pattern, other.pattern, budget)


def conflicting(
    patterns: list[str], exclusive: bool, others: list[Claim]
) -> Callable[[Budget], list[Claim]]:
    """The work of finding which of ``others`` the patterns conflict with, for :func:`bounded`."""

    def work(budget: Budget) -> list[Claim]:
        return [
            c for c in others if any(conflicts_with(p, exclusive, c, budget) for p in patterns)
        ]

    return work


class Claims:
    def __init__(self, hs: Homeserver, rooms: Rooms) -> None:
        self.hs = hs
        self.rooms = rooms
        self._locks: dict[str, asyncio.Lock] = {}
        self._restored = False
        self._restore_lock = asyncio.Lock()
        self._room_id: str | None = None
        #: project → (its live claims, when that list stops being true); ``_writes`` counts
        #: changes, so a read that raced with one does not store what it read
        self._cache: dict[str, tuple[list[Claim], int]] = {}
        self._writes = 0

    def _changed(self, project: str | None) -> None:
        self._writes += 1
        if project is None:
            self._cache.clear()
        else:
            self._cache.pop(project, None)

    def _lock(self, project: str) -> asyncio.Lock:
        if len(self._locks) > 10000:
            self._locks = {p: lk for p, lk in self._locks.items() if lk.locked()}
        return self._locks.setdefault(project, asyncio.Lock())

    async def room_id(self) -> str:
        if self._room_id is None:
            self._room_id = await self.hs.resolve_alias(self.rooms.full_alias(STATUS_ALIAS))
        return self._room_id

    # --- reading, with expiry noticed ----------------------------------------------------

    async def active(self, project: str) -> list[Claim]:
        """The project's live claims; expired ones are removed (and announced) on the way.
        The list is shared: callers do not change it."""
        await self.restore()
        now = now_ms()
        cached = self._cache.get(project)
        if cached is not None and now < cached[1]:
            return cached[0]
        writes = self._writes
        if await Claim.any_expired(project, now):
            async with self._lock(project), transaction() as conn:
                await Claim.lock_project(conn, project)
                gone = await Claim.remove_expired(conn, project, now)
            self._changed(project)
            writes = self._writes
            await self._after(project, Outcome(expired=gone), None)
        claims = await Claim.active(project, now)
        if writes == self._writes:
            if len(self._cache) >= CACHE_PROJECTS:
                self._cache.clear()
            valid = min([now + CACHE_MS, *(c.expires_at for c in claims)])
            self._cache[project] = (claims, valid)
        return claims

    # --- claiming and releasing ----------------------------------------------------------

    async def claim(
        self,
        project: str,
        user_id: str,
        patterns: list[str],
        exclusive: bool,
        reason: str | None,
        ttl_ms: int,
        force: bool,
    ) -> Outcome:
        await self.restore()
        result = Outcome()
        async with self._lock(project):
            now = now_ms()
            # compared before the transaction (the work may take a worker thread a while, and
            # on SQLite the transaction holds the one writer connection); checked inside it
            held = await Claim.active(project, now)
            others = [c for c in held if c.user_id != user_id]
            conflicts = await bounded(conflicting(patterns, exclusive, others))
            async with transaction() as conn:
                await Claim.lock_project(conn, project)
                result.expired = await Claim.remove_expired(conn, project, now)
                current = await Claim.active(project, now, conn)
                if current != held:  # another replica changed them meanwhile: again
                    others = [c for c in current if c.user_id != user_id]
                    conflicts = await bounded(conflicting(patterns, exclusive, others))
                result.conflicts = conflicts
                if force or not result.conflicts:  # else refused: the expiries still commit
                    for c in result.conflicts:
                        await c.delete(conn)
                    result.taken, result.conflicts = result.conflicts, []
                    for p in patterns:
                        c = Claim(project, user_id, p, exclusive, reason, now, now + ttl_ms)
                        await c.upsert(conn)
                        result.stored.append(c)
            self._changed(project)
            await self._after(project, result, user_id)
        return result

    async def release(self, project: str, user_id: str, patterns: list[str] | None) -> list[Claim]:
        await self.restore()
        async with self._lock(project):
            async with transaction() as conn:
                await Claim.lock_project(conn, project)
                mine = await Claim.of_agent(conn, project, user_id)
                gone = [c for c in mine if patterns is None or c.pattern in patterns]
                for c in gone:
                    await c.delete(conn)
            self._changed(project)
            if gone:
                await self._publish(project, user_id)
                names = ", ".join(c.pattern for c in gone)
                who = await self.rooms.person_name(user_id)
                self._notice(f"{who} released {names} in {project}")
        return gone

    # --- Matrix: state, notices, takeover DMs --------------------------------------------

    async def _after(self, project: str, result: Outcome, user_id: str | None) -> None:
        """Mirror a committed change into Matrix: state first (awaited), then the notices."""
        agents = {c.user_id for c in result.expired + result.taken}
        if result.stored and user_id:
            agents.add(user_id)
        for agent in sorted(agents):
            await self._publish(project, agent)
        for agent in sorted({c.user_id for c in result.expired}):
            names = ", ".join(c.pattern for c in result.expired if c.user_id == agent)
            who = await self.rooms.person_name(agent)
            self._notice(f"{who}'s claim on {names} in {project} expired")
        if result.stored and user_id:
            who = await self.rooms.person_name(user_id)
            first = result.stored[0]
            mode = "exclusive" if first.exclusive else "shared"
            names = ", ".join(c.pattern for c in result.stored)
            why = f": {first.reason}" if first.reason else ""
            self._notice(
                f"{who} claimed {names} in {project} ({mode}, until {until(first.expires_at)})"
                f"{why}"
            )
            for holder in sorted({c.user_id for c in result.taken}):
                names = ", ".join(c.pattern for c in result.taken if c.user_id == holder)
                name = await self.rooms.person_name(holder)
                self._notice(f"{who} took over {name}'s claim on {names} in {project}")
                await self._tell_holder(user_id, holder, names, project, first.reason)

    async def _publish(self, project: str, user_id: str) -> None:
        claims = await Claim.of_agent(Claim.db, project, user_id)
        content: dict[str, Any] = {
            "project": project,
            "user_id": user_id,
            "claims": [
                {
                    "pattern": c.pattern,
                    "mode": "exclusive" if c.exclusive else "shared",
                    "reason": c.reason,
                    "created_ts": c.created_at,
                    "expires_ts": c.expires_at,
                }
                for c in claims
            ],
        }
        try:
            room_id = await self.room_id()
            path = Path.v3.rooms[room_id].state[STATE_TYPE][state_key(project, user_id)]
            await self.hs.client(None).api.request(Method.PUT, path, content)
        except Exception as e:  # the database holds the truth meanwhile
            log.warning("could not store %s's claims on %s in Matrix: %s", user_id, project, e)

    def _notice(self, body: str) -> None:
        async def send() -> None:
            try:
                room_id = await self.room_id()
                content = {"msgtype": "m.notice", "body": body}
                txn = "claim-" + uuid.uuid4().hex
                await self.hs.send(self.hs.config.bot_mxid, room_id, content, txn)
            except Exception as e:
                log.warning("could not post the claim notice %r: %s", body, e)

        asyncio.get_running_loop().create_task(send())

    async def _tell_holder(
        self, taker: str, holder: str, names: str, project: str, reason: str | None
    ) -> None:
        why = f" ({reason})" if reason else ""
        body = f"I took over your claim on {names} in {project} with ac claim --force{why}."
        try:
            room_id = await self.rooms.direct_chat(taker, holder)
            content = {"msgtype": "m.text", "body": body}
            await self.hs.send(taker, room_id, content, "takeover-" + uuid.uuid4().hex)
        except Exception as e:
            log.warning("could not tell %s about the takeover: %s", holder, e)

    # --- restoring from Matrix -------------------------------------------------------------

    async def restore(self) -> None:
        """Once per process: projects the database has never seen are read back from the
        room's state (the database was lost or rebuilt). Only the bot's events count."""
        if self._restored:
            return
        async with self._restore_lock:
            if self._restored:
                return
            try:
                room_id = await self.room_id()
                path = Path.v3.rooms[room_id].state
                events = await self.hs.client(None).api.request(Method.GET, path)
            except Exception as e:
                log.warning("could not read the claims' state from Matrix: %s", e)
                return
            known = await Claim.known_projects()
            now = now_ms()
            restored = 0
            for event in events if isinstance(events, list) else []:
                for c in _claims_in(event, self.hs.config.bot_mxid):
                    if c.project in known or c.expires_at <= now:
                        continue
                    async with transaction() as conn:
                        await Claim.lock_project(conn, c.project)
                        await c.upsert(conn)
                    restored += 1
            self._changed(None)
            if restored:
                log.info("restored %d claims from the state of #%s", restored, STATUS_ALIAS)
            self._restored = True


def _claims_in(event: object, bot: str) -> list[Claim]:
    if not isinstance(event, dict) or event.get("type") != STATE_TYPE:
        return []
    content = event.get("content")
    if event.get("sender") != bot or not isinstance(content, dict):
        return []
    project, user_id = content.get("project"), content.get("user_id")
    entries = content.get("claims")
    if not isinstance(project, str) or not isinstance(user_id, str):
        return []
    if event.get("state_key") != state_key(project, user_id) or not isinstance(entries, list):
        return []
    out = []
    for e in entries:
        if not isinstance(e, dict):
            continue
        pattern, expires, created = e.get("pattern"), e.get("expires_ts"), e.get("created_ts")
        reason = e.get("reason")
        if (
            isinstance(pattern, str)
            and isinstance(expires, int)
            and isinstance(created, int)
            and (reason is None or isinstance(reason, str))
        ):
            exclusive = e.get("mode") != "shared"
            out.append(Claim(project, user_id, pattern, exclusive, reason, created, expires))
    return out
