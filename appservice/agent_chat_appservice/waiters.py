"""Long-poll waiters of ``GET /notify?wait=S&since=CURSOR``, and the cursors they wait on.

A waiting request registers a future under its caller's user id and sleeps on it; whatever
changes a caller's counts wakes them through :meth:`Waiters.wake` after its database
transaction has committed (a homeserver transaction applied, a read through the API). Nothing
polls: an idle appservice with a thousand waiters runs no code until something happens, and
the only timer per waiter is its request's own timeout. A waiter whose connection drops is
woken by :meth:`Waiters.connection_lost` and forgotten.

One identity holds at most ``Waiters.per_identity`` waiting requests: beyond that, the
oldest of its waits is answered at once, with the answer it would have had at its timeout
(nothing changed), so a client simply polls again; the newest request is never refused. An
identity opening thousands of waits thus holds a bounded share of the process.

``wake(user_ids)`` is the whole interface a change needs, so that a notifier across processes
(several appservice replicas, PostgreSQL LISTEN/NOTIFY) can call it with the user ids it hears.

Cursors: ``<latest>.<state>.<mac>``. ``state`` digests the caller's unread entries (room, count,
urgent flag, read marker) as the request's filter selects them, so any change of counts, a read
or a leave changes it; ``latest`` is the newest message counted for the caller among them (a
global, growing sequence number), so "something new arrived" is ``latest`` growing, which a read
never does; ``mac`` is an HMAC over both and the caller's user id with a key derived from the
hs_token (shared by replicas), so a cursor from another caller, another server or garbage is
refused rather than silently compared.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar
import asyncio
import hashlib
import hmac
import re

from .db import Ledger, Unread

K = TypeVar("K")
FILTERS = ("urgent", "dm")
MAX_WAIT = 300.0
#: Default cap of waiting requests per identity (``Config.max_waits_per_identity``).
WAITS_PER_IDENTITY = 8
#: What ends a wait: its caller's counts may have changed, its caller hung up, or a newer
#: wait of the same identity needs its place (answered as at the timeout).
CHANGED, HUNG_UP, MAKE_ROOM = "changed", "hung up", "make room"
CURSOR_RE = re.compile(r"^([0-9a-f]{1,16})\.([0-9a-f]{16})\.([0-9a-f]{16})$")


class BadCursor(ValueError):
    """A ``since`` this server did not give to this caller."""


@dataclass(frozen=True)
class Cursor:
    latest: int
    state: str

    def encode(self, key: bytes, user_id: str) -> str:
        head = f"{self.latest:x}.{self.state}"
        return f"{head}.{_mac(key, user_id, head)}"

    @classmethod
    def decode(cls, text: str, key: bytes, user_id: str) -> Cursor:
        found = CURSOR_RE.match(text)
        if found is None:
            raise BadCursor("'since' is not a cursor: pass the 'cursor' of a /notify answer")
        head = f"{found[1]}.{found[2]}"
        if not hmac.compare_digest(found[3], _mac(key, user_id, head)):
            raise BadCursor(
                "'since' is a cursor of another identity or another server: "
                "pass the 'cursor' of your own /notify answer"
            )
        return cls(int(found[1], 16), found[2])


def _mac(key: bytes, user_id: str, head: str) -> str:
    return hmac.new(key, f"{user_id}\n{head}".encode(), hashlib.sha256).hexdigest()[:16]


def cursor_key(hs_token: str) -> bytes:
    """The cursors' HMAC key: derived from the hs_token, so every replica shares it."""
    return hmac.new(hs_token.encode(), b"agent-chat notify cursor", hashlib.sha256).digest()


def parse_filter(value: str | None) -> frozenset[str]:
    """``urgent``, ``dm`` or ``urgent,dm`` (either order): the entries that count."""
    if value is None:
        return frozenset()
    parts = value.split(",")
    if not value or any(p not in FILTERS for p in parts):
        raise ValueError("'filter' is urgent, dm or urgent,dm")
    return frozenset(parts)


def selected(entries: Sequence[Unread], wanted: frozenset[str]) -> list[Unread]:
    """The entries a filter keeps: urgent ones, direct chats, or either (no filter: all)."""
    if not wanted:
        return list(entries)
    return [
        u for u in entries if ("urgent" in wanted and u.urgent) or ("dm" in wanted and u.is_direct)
    ]


def cursor_of(entries: Sequence[Unread]) -> Cursor:
    """The cursor of a state: what a caller waits to see change."""
    digest = hashlib.sha256()
    for u in sorted(entries, key=lambda u: u.room_id):
        digest.update(f"{u.room_id}\0{u.count}\0{int(u.urgent)}\0{u.last_read_seq}\n".encode())
    return Cursor(max((u.latest for u in entries), default=0), digest.hexdigest()[:16])


@dataclass
class Answer:
    entries: list[Unread]
    cursor: Cursor
    #: The state differs from ``since`` (None without ``since``).
    changed: bool | None
    #: A message arrived after ``since`` (None without ``since``).
    new: bool | None


def _drop(
    index: dict[K, dict[asyncio.Future[str], None]], key: K, future: asyncio.Future[str]
) -> None:
    found = index.get(key)
    if found is not None:
        found.pop(future, None)
        if not found:
            del index[key]


class Waiters:
    """Who is waiting for their counts to change: one future per waiting request, in the order
    they started (a dict as an ordered set), per identity and per connection.

    A future's result says why the wait ended: :data:`CHANGED`, :data:`HUNG_UP` or
    :data:`MAKE_ROOM`.
    """

    def __init__(self, per_identity: int = WAITS_PER_IDENTITY) -> None:
        self._by_user: dict[str, dict[asyncio.Future[str], None]] = {}
        self._by_connection: dict[object, dict[asyncio.Future[str], None]] = {}
        #: Waiting requests one identity may hold; a newer one ends the oldest.
        self.per_identity = per_identity
        #: ``GET /receipts?wait=``: one future per waiting sender, under every recipient it
        #: waits for (a recipient's stage moves where its counts change: a read, a report).
        self._watching: dict[str, dict[asyncio.Future[str], None]] = {}
        #: Waiters answered because of a change (for /metrics and the benchmark).
        self.woken = 0
        #: Waiters answered early to stay within ``per_identity`` (for /metrics).
        self.evicted = 0
        #: Tells the other appservice replicas of a change (``cluster.WakeBus.publish``).
        self.publish: Callable[[list[str], list[str]], Awaitable[None]] | None = None

    def __len__(self) -> int:
        return sum(len(s) for s in self._by_user.values())

    @property
    def users(self) -> int:
        return len(self._by_user)

    def add(self, user_id: str, connection: object) -> asyncio.Future[str]:
        """A future that is done when ``user_id``'s counts may have changed (or the caller's
        connection dropped, or a newer wait needs its place). Always :meth:`discard` it
        afterwards."""
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        mine = self._by_user.setdefault(user_id, {})
        while len(mine) >= max(1, self.per_identity):  # the oldest make room
            oldest = next(iter(mine))
            del mine[oldest]
            if not oldest.done():
                oldest.set_result(MAKE_ROOM)
                self.evicted += 1
        mine[future] = None
        self._by_connection.setdefault(connection, {})[future] = None
        return future

    def discard(self, user_id: str, connection: object, future: asyncio.Future[str]) -> None:
        _drop(self._by_user, user_id, future)
        _drop(self._by_connection, connection, future)

    def watch(self, user_ids: Iterable[str], connection: object) -> asyncio.Future[str]:
        """One future, done when any of ``user_ids`` may have moved a delivery stage (or the
        caller's connection dropped). Always :meth:`unwatch` it afterwards."""
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        for user_id in user_ids:
            self._watching.setdefault(user_id, {})[future] = None
        self._by_connection.setdefault(connection, {})[future] = None
        return future

    def unwatch(
        self, user_ids: Iterable[str], connection: object, future: asyncio.Future[str]
    ) -> None:
        for user_id in user_ids:
            _drop(self._watching, user_id, future)
        _drop(self._by_connection, connection, future)

    def wake(self, user_ids: Iterable[str]) -> int:
        """Wake every request waiting for one of these users; how many were woken."""
        count = 0
        for user_id in user_ids:
            for future in self._by_user.pop(user_id, ()):
                if not future.done():
                    future.set_result(CHANGED)
                    count += 1
            for future in self._watching.pop(user_id, ()):
                if not future.done():
                    future.set_result(CHANGED)
        self.woken += count
        return count

    async def wake_changed(self, rooms: Iterable[str], users: Iterable[str]) -> int:
        """After a commit: wake whoever waits among ``users`` and the members of ``rooms``,
        here and (through :attr:`publish`) on the other replicas; how many here."""
        room_ids, user_ids = sorted(rooms), sorted(users)
        count = await self.wake_here(room_ids, user_ids)
        if self.publish is not None:
            await self.publish(room_ids, user_ids)
        return count

    async def wake_here(self, rooms: Iterable[str], users: Iterable[str]) -> int:
        """Wake this process's waiters among ``users`` and the members of ``rooms``. Reads
        nothing when nobody waits."""
        if not self._by_user and not self._watching:
            return 0
        targets = set(users)
        room_ids = sorted(rooms)
        if room_ids:
            targets |= await Ledger.members(room_ids)
        return self.wake(u for u in targets if u in self._by_user or u in self._watching)

    def connection_lost(self, connection: object) -> None:
        """The caller hung up: its waiter ends now instead of at its timeout."""
        for future in self._by_connection.pop(connection, ()):
            if not future.done():
                future.set_result(HUNG_UP)

    async def until_changed(
        self,
        user_id: str,
        connection: object,
        read: Callable[[], Awaitable[list[Unread]]],
        since: Cursor | None,
        timeout: float,
        hung_up: Callable[[], bool] = lambda: False,
    ) -> Answer | None:
        """The caller's entries (``read``) once their state differs from ``since``, or as they
        are at the timeout; at once without ``since``. None when the caller hung up.

        The future is registered before each read, so a change committed between the read and
        the sleep is never missed: it finds the future already done. A wait ended to make room
        for a newer one of the same caller answers like a timeout. ``hung_up`` is asked
        before each registration: a caller who hung up while the previous round was being
        answered (woken, then nothing to report) has had its :meth:`connection_lost` already,
        and a future added after it would wait out the whole timeout.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            if since is not None and hung_up():
                return None
            future = self.add(user_id, connection) if since is not None and timeout > 0 else None
            why = CHANGED
            try:
                entries = await read()
                cursor = cursor_of(entries)
                if since is None:
                    return Answer(entries, cursor, None, None)
                changed = cursor.state != since.state
                remaining = deadline - loop.time()
                if changed or future is None or remaining <= 0:
                    return Answer(entries, cursor, changed, cursor.latest > since.latest)
                try:
                    why = await asyncio.wait_for(future, remaining)
                except TimeoutError:
                    why = MAKE_ROOM  # one more read answers with the state at the timeout
                if why == HUNG_UP:
                    return None
            finally:
                if future is not None:
                    self.discard(user_id, connection, future)
            if why == MAKE_ROOM or loop.time() >= deadline:
                timeout = 0  # read once more, then answer whatever it says
