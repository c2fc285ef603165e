"""Presence per agent session: working, idle · wakeable, idle · deaf, or gone.

Signs of life come from the session's hook calls (``/notify`` and ``/stages`` with a
``session``), its wake waiter (``ac wait --session``, a held ``/notify`` long-poll) and its
CLI's session-end hook (``POST /sessions/end``):

- ``working``: a hook ran within :data:`WORKING_SECONDS`;
- ``idle · wakeable``: a wake waiter for the session is connected (or reconnecting: the
  waiter renews its long-poll at once, :data:`WAITER_GRACE` covers the gap);
- ``idle · deaf``: alive, no waiter: it sees new lines at its next prompt or tool call;
- ``gone``: ended, or no sign of life for ``gone_after`` seconds (appservice.yaml's
  ``presence_gone_after_seconds``, default 1800).

Which waiters are connected is known first to the process holding them; it also writes it to
the session's row (``waiter_since_ms``, and a lease ``waiter_until_ms`` it renews every
refresh while the waiter stays), so the other API replicas of a cluster show the session
``idle · wakeable`` too. Writes happen when a session starts or stops having a waiter and at
each renewal, not per long-poll: a waiter renews its poll after every wake. A replica that dies
leaves a lease that runs out within :data:`WAITER_LEASE` seconds. Everything else is in the
``agent_session`` table.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
import asyncio
import logging
import re
import time

from .db import AgentSession, now_ms
from .recent import RecentMap

if TYPE_CHECKING:
    from .homeserver import Homeserver

log = logging.getLogger("agent_chat.presence")

WORKING_SECONDS = 60.0
WAITER_GRACE = 5.0
#: How long a replica's word that a waiter is connected holds without renewal.
WAITER_LEASE = 60.0
#: A sign of life is written at most this often per session (hooks run every few seconds).
HEARD_SECONDS = 15.0
SESSION_RE = re.compile(r"^[\x21-\x7e]{1,128}$")
CLI_RE = re.compile(r"^[A-Za-z0-9._-]{1,32}$")
LABEL_UNSAFE = re.compile(r"[^A-Za-z0-9._@+-]")

WORKING, WAKEABLE, DEAF, GONE = "working", "idle · wakeable", "idle · deaf", "gone"
#: Matrix presence for each state, so Element shows the dots humans know.
MATRIX_PRESENCE = {
    WORKING: "online",
    WAKEABLE: "unavailable",
    DEAF: "unavailable",
    GONE: "offline",
}


def label(value: str | None, max_len: int = 64) -> str | None:
    """A host or repository name as reported: reduced to a safe set (it reaches terminals)."""
    if not value:
        return None
    return LABEL_UNSAFE.sub("_", value)[:max_len] or None


@dataclass
class SessionView:
    session: AgentSession
    state: str
    since_ms: int

    def json(self) -> dict[str, object]:
        s = self.session
        return {
            "session": s.session,
            "state": self.state,
            "since": self.since_ms,
            "cli": s.cli,
            "host": s.host,
            "repo": s.repo,
            "last_seen": s.seen_ms,
            "lines_shown": s.lines_shown,
            "chars_injected": s.chars_injected,
            "wakes": s.wakes,
        }


class Presence:
    def __init__(self, gone_after: float = 1800.0) -> None:
        #: Wake waiters connected now, per (user id, session); and when the last one left.
        self._waiting: dict[tuple[str, str], int] = {}
        self._left: dict[tuple[str, str], float] = {}
        self._connected_at: dict[tuple[str, str], int] = {}
        #: The lease this process wrote to the row of each session whose waiter it holds.
        self._leases: dict[tuple[str, str], int] = {}
        self._heard: RecentMap[tuple[str, str, bool], None] = RecentMap(HEARD_SECONDS, 100_000)
        self.gone_after = gone_after
        #: Sets an identity's Matrix presence (``online``..., status message); from service.
        self.publish: Callable[[str, str, str], Awaitable[None]] | None = None
        self._published: RecentMap[str, str] = RecentMap(86_400.0, 100_000)
        self._tasks: set[asyncio.Task[None]] = set()
        #: Sessions of the last day by state, as of the last :meth:`refresh`.
        self.counts: dict[str, int] = {}

    @property
    def gone_after(self) -> float:
        """Seconds of silence after which a session is ``gone`` (appservice.yaml's
        ``presence_gone_after_seconds``)."""
        return self._gone_after

    @gone_after.setter
    def gone_after(self, seconds: float) -> None:
        self._gone_after = seconds
        # Signs of life are written often enough that a live session never looks silent.
        self._heard.max_age = min(HEARD_SECONDS, seconds / 4)

    async def changed(self, user_id: str) -> None:
        """Tell Matrix the identity's state if it differs from what it was last told."""
        if self.publish is None:
            return
        views = (await self.of_users([user_id]))[user_id]
        state = views[0].state if views else GONE
        status = summary(views) or GONE
        before = self._published.get(user_id)
        if before is not None and before[0] == status:
            return
        self._published.set(user_id, status)
        # In the background: a request never waits for the homeserver's presence.
        task = asyncio.create_task(self._publish(user_id, MATRIX_PRESENCE[state], status))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _publish(self, user_id: str, state: str, status: str) -> None:
        if self.publish is None:
            return
        try:
            await self.publish(user_id, state, status)
        except Exception as e:  # presence is a courtesy to Element: never fail anything
            log.warning("setting presence of %s failed: %s", user_id, e)

    async def refresh(self) -> None:
        """Publish the states that changed with time alone (working → idle, idle → gone),
        and count the sessions of the last day by state (``/metrics``)."""
        now = now_ms()
        counts = dict.fromkeys((WORKING, WAKEABLE, DEAF, GONE), 0)
        for s in await AgentSession.recent(now - 86_400_000):
            counts[self.view(s, now).state] += 1
        self.counts = counts
        await self.renew_leases()
        since = now - int((self.gone_after + 3600) * 1000)
        for user_id in sorted({s.user_id for s in await AgentSession.recent(since)}):
            await self.changed(user_id)

    async def heard(
        self,
        user_id: str,
        session: str,
        cli: str | None = None,
        host: str | None = None,
        repo: str | None = None,
        hook: bool = True,
    ) -> None:
        """A hook call or waiter from the session; written at most every HEARD_SECONDS."""
        key = (user_id, session, hook)
        if self._heard.get(key) is not None:
            return
        self._heard.set(key, None)
        await AgentSession.heard(
            AgentSession.db, user_id, session, cli, label(host), label(repo), hook
        )
        await self.changed(user_id)

    def forget(self, user_id: str, session: str) -> None:
        """The session ended: its next sign of life (a resumed session) is written at once."""
        self._heard.drop_where(lambda k, _: k[:2] == (user_id, session))

    async def waiter_connected(self, user_id: str, session: str) -> None:
        key = (user_id, session)
        if not self.wakeable(user_id, session):  # since when it has been waiting
            self._connected_at[key] = now_ms()
            if len(self._connected_at) > 100_000:
                self._connected_at.pop(next(iter(self._connected_at)))
        self._waiting[key] = self._waiting.get(key, 0) + 1
        self._left.pop(key, None)
        if key not in self._leases:  # the other replicas learn it from the session's row
            since = self._connected_at.get(key, now_ms())
            lease = now_ms() + int(WAITER_LEASE * 1000)
            await AgentSession.waiting(user_id, session, since, lease)
            self._leases[key] = lease

    def waiter_left(self, user_id: str, session: str) -> None:
        key = (user_id, session)
        left = self._waiting.get(key, 0) - 1
        if left > 0:
            self._waiting[key] = left
        else:
            self._waiting.pop(key, None)
            self._left[key] = time.monotonic()
            if len(self._left) > 100_000:
                self._left.pop(next(iter(self._left)))
            # Gone for good unless it reconnects within the grace: then the row says so.
            loop = asyncio.get_running_loop()
            loop.call_later(WAITER_GRACE + 0.05, self._spawn, self._settle(key))

    def _spawn(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _settle(self, key: tuple[str, str]) -> None:
        """The grace after a waiter left is over: if it did not come back, the session has no
        waiter here any more (its row's lease ends; Matrix is told)."""
        if self.wakeable(*key) or key not in self._leases:
            return
        lease = self._leases.pop(key)
        try:
            await AgentSession.stopped_waiting(key[0], key[1], lease)
            await self.changed(key[0])
        except Exception as e:  # the lease runs out by itself
            log.warning("ending the waiter lease of %s failed: %s", key[0], e)

    async def renew_leases(self) -> None:
        """Every waiter still held here is believed for another :data:`WAITER_LEASE`."""
        renewed = now_ms() + int(WAITER_LEASE * 1000)
        held = [(k, lease) for k, lease in self._leases.items() if self.wakeable(*k)]
        if not held:
            return
        await AgentSession.renew_waiting([(u, s, lease, renewed) for (u, s), lease in held])
        for key, _ in held:
            self._leases[key] = renewed

    def wakeable(self, user_id: str, session: str) -> bool:
        key = (user_id, session)
        if key in self._waiting:
            return True
        left = self._left.get(key)
        return left is not None and time.monotonic() - left < WAITER_GRACE

    def view(self, s: AgentSession, now: int | None = None) -> SessionView:
        """The session's state and since when it holds (as far as known)."""
        now = now_ms() if now is None else now
        if s.ended_ms is not None:
            return SessionView(s, GONE, s.ended_ms)
        here = self.wakeable(s.user_id, s.session)
        # Held by another replica: its lease in the session's row.
        elsewhere = s.waiter_until_ms is not None and s.waiter_until_ms > now
        wakeable = here or elsewhere
        if here:
            waiting_since = self._connected_at.get((s.user_id, s.session), s.seen_ms)
        else:
            waiting_since = s.waiter_since_ms if elsewhere and s.waiter_since_ms else s.seen_ms
        # A waiter armed after the last hook call is a session that went idle (Claude Code
        # arms it when a turn stops); hook calls while it waits are a session at work.
        if wakeable and (s.hook_ms is None or waiting_since >= s.hook_ms):
            return SessionView(s, WAKEABLE, waiting_since)
        # Silence first: a gone_after shorter than WORKING_SECONDS still means gone.
        if not wakeable and now - s.seen_ms >= self.gone_after * 1000:
            return SessionView(s, GONE, s.seen_ms + int(self.gone_after * 1000))
        if s.hook_ms is not None and now - s.hook_ms < WORKING_SECONDS * 1000:
            return SessionView(s, WORKING, s.hook_ms)
        if wakeable:  # hooks ran while it waited, and then stopped: idle again
            return SessionView(s, WAKEABLE, (s.hook_ms or now) + int(WORKING_SECONDS * 1000))
        idle_since = (s.hook_ms or s.seen_ms) + int(WORKING_SECONDS * 1000)
        return SessionView(s, DEAF, min(idle_since, now))

    async def of_users(self, user_ids: list[str]) -> dict[str, list[SessionView]]:
        """Each identity's sessions of the last day (live ones first)."""
        found: dict[str, list[SessionView]] = {u: [] for u in user_ids}
        now = now_ms()
        for s in await AgentSession.of_users(user_ids, now - 86_400_000):
            found[s.user_id].append(self.view(s, now))
        for views in found.values():
            views.sort(key=lambda v: (v.state == GONE, -v.session.seen_ms))
        return found


def summary(views: list[SessionView]) -> str | None:
    """The identity's state in a few words (its liveliest session), or None without any."""
    if not views:
        return None
    best = views[0]
    cli = f" · {best.session.cli}" if best.session.cli else ""
    return best.state + cli


def matrix_publisher(hs: Homeserver) -> Callable[[str, str, str], Awaitable[None]]:
    """Sets an agent's Matrix presence as the agent, so Element shows its dot and status."""

    async def publish(user_id: str, state: str, status: str) -> None:
        from mautrix.types import PresenceState

        await hs.client(user_id).set_presence(PresenceState(state), status)

    return publish


async def refresh_loop(presence: Presence, interval: float = 20.0) -> Any:
    """States that change with time alone reach Matrix (and /metrics) within ``interval``
    seconds."""
    while True:
        try:
            await presence.refresh()
        except Exception as e:
            log.warning("presence refresh failed: %s", e)
        # A short silence setting (presence_gone_after_seconds) reaches Matrix as soon.
        await asyncio.sleep(min(interval, max(1.0, presence.gone_after / 2)))
