"""The truth for people in Element: a person who writes to an agent with no running session
gets one ``m.notice`` from the agent saying so ("BlueLake has no running session (gone since
14:02 UTC); it sees this when it next starts"), at most once per hour per person and agent.

Called with a homeserver transaction's applied records once they are committed; the notice is
sent in the background, so the transaction never waits for it. ``gone_notice: false`` in
appservice.yaml turns it off. Agents and bots (our own namespace) never get one: a notice
between two programs would only be noise, and ``ac send`` already prints the same line.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any
import hashlib
import logging
import time

from .db import Identity, Member, Room
from .ingest import MessageRecord
from .presence import GONE
from .recent import RecentMap

if TYPE_CHECKING:
    from .homeserver import Homeserver
    from .ingest import Record
    from .presence import Presence

log = logging.getLogger("agent_chat.gone_notice")

#: One notice per (person, agent) within this many seconds.
NOTICE_EVERY = 3600.0


def notice_text(name: str, since_ms: int | None, now: float | None = None) -> str:
    """``BlueLake has no running session (gone since 14:02 UTC); it sees this when it next
    starts`` (the date too when that was not today)."""
    gone = ""
    if since_ms is not None:
        t = time.gmtime(since_ms / 1000)
        today = time.gmtime(time.time() if now is None else now)[:3] == t[:3]
        gone = time.strftime(f" (gone since {'' if today else '%Y-%m-%d '}%H:%M UTC)", t)
    return f"{name} has no running session{gone}; it sees this when it next starts"


class GoneNotice:
    def __init__(
        self,
        hs: Homeserver,
        presence: Presence,
        is_ours: Callable[[str], bool],
        spawn: Callable[[Coroutine[Any, Any, Any]], object],
        enabled: bool = True,
    ) -> None:
        self.hs = hs
        self.presence = presence
        self.is_ours = is_ours
        self.spawn = spawn
        self.enabled = enabled
        self._told: RecentMap[tuple[str, str], None] = RecentMap(NOTICE_EVERY, 100_000)

    def applied(self, records: list[Record]) -> None:
        """A committed transaction's records: people's messages may each earn a notice."""
        if not self.enabled:
            return
        seen: set[tuple[str, str]] = set()
        for rec in records:
            if not isinstance(rec, MessageRecord) or rec.msgtype == "m.notice":
                continue  # notices (bots, ours) never answer notices
            if self.is_ours(rec.sender) or (rec.room_id, rec.sender) in seen:
                continue
            seen.add((rec.room_id, rec.sender))
            self.spawn(self._check(rec))

    async def _check(self, rec: MessageRecord) -> None:
        try:
            room = await Room.get(rec.room_id)
            if room is None or not room.is_direct:
                return
            agent = await Member.anyone_but(rec.room_id, rec.sender)
            if agent is None or not self.is_ours(agent):
                return
            key = (rec.sender, agent)
            if self._told.get(key) is not None:
                return
            identity = await Identity.get(agent)
            if identity is None or identity.kind != "agent":
                return
            views = (await self.presence.of_users([agent]))[agent]
            if views and views[0].state != GONE:
                return
            self._told.set(key, None)  # before sending: two messages at once earn one notice
            text = notice_text(identity.nick, views[0].since_ms if views else None)
            txn = "gone-notice-" + hashlib.sha256(rec.event_id.encode()).hexdigest()[:32]
            await self.hs.send(agent, rec.room_id, {"msgtype": "m.notice", "body": text}, txn)
        except Exception as e:  # a courtesy to people: never fails anything else
            log.warning("gone notice for %s in %s failed: %s", rec.sender, rec.room_id, e)
