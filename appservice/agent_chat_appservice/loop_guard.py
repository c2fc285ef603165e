"""The loop guard: two agents answering each other too fast in one conversation are stopped.

A conversation is a direct chat or a thread (``(room id, thread root)``). An *answer* is an
agent's message whose sender differs from the previous agent message's there. When a
conversation already holds ``limit`` answers from the last :data:`WINDOW` seconds, the next
agent answer is refused (429 ``AC_LOOP_GUARD``, with when it may go on). Humans are never
counted nor refused; an agent repeating itself is the send rate limiter's business.

It counts what the appservice sees: sends through its API, which is the only way agents (and
bots) post. One process keeps them in memory (:class:`LoopGuard`). Several appservice
replicas (``cluster.py``) cannot: a pair split across them would get ``limit`` answers per
replica. :class:`SharedLoopGuard` reads the conversation's recent agent messages from the
ledger instead, which the ledger writer fills from Synapse's transactions within milliseconds
of each send, far inside a minute's window.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
import time

from .db import Message

#: The window answers are counted over, in seconds.
WINDOW = 60.0
#: Conversations remembered at most (the least recently active are forgotten first).
CAP = 100_000
#: How long the shared guard keeps its own sends in memory: the ledger has them by then.
LEDGER_LAG = 5.0


def hold_ms(
    entries: Sequence[tuple[float, str, bool]], sender: str, limit: int, window: float, now: float
) -> int | None:
    """The guard's rule over a conversation's recent agent messages, oldest first, as (time,
    sender, is an answer): None when ``sender`` may post now, else milliseconds until it may."""
    if not entries or entries[-1][1] == sender:
        return None  # not an answer: the first word, or the same agent going on
    answers = [t for t, _, answer in entries if answer]
    if len(answers) < limit:
        return None
    # It may go on once enough answers have left the window.
    opens = answers[len(answers) - limit] + window
    return max(1, int((opens - now) * 1000) + 1)


class SharedLoopGuard:
    """The loop guard of appservice replicas, read from the ledger: every replica sees every
    agent message, whichever replica sent it. The ledger has a message a few milliseconds (on
    Synapse workers, tens) after its send was answered, so this process's own sends of the
    last :data:`LEDGER_LAG` seconds are added from memory until the ledger has them."""

    def __init__(self, limit: int, window: float = WINDOW) -> None:
        self.limit = limit
        self.window = window
        #: conversation → (time, sender, event id) of this process's latest agent sends.
        self._sent: dict[tuple[str, str | None], deque[tuple[float, str, str]]] = {}

    async def admit(self, room_id: str, thread: str | None, sender: str) -> int | None:
        """None when ``sender`` may post there now, else milliseconds until it may."""
        if self.limit <= 0:
            return None
        now = time.time()
        recent = await Message.recent_agent_messages(
            room_id, thread, int((now - self.window) * 1000)
        )
        known = {event_id for _, _, event_id in recent}
        messages = sorted(
            [(ts / 1000, who) for ts, who, _ in recent]
            + [
                (t, who)
                for t, who, e in self._recent_sends((room_id, thread), now)
                if e not in known
            ]
        )
        entries = [
            (t, who, i > 0 and who != messages[i - 1][1]) for i, (t, who) in enumerate(messages)
        ]
        return hold_ms(entries, sender, self.limit, self.window, now)

    def _recent_sends(
        self, key: tuple[str, str | None], now: float
    ) -> deque[tuple[float, str, str]]:
        sent = self._sent.get(key, deque())
        while sent and sent[0][0] < now - LEDGER_LAG:
            sent.popleft()
        if not sent:
            self._sent.pop(key, None)
        return sent

    def record(self, room_id: str, thread: str | None, sender: str, event_id: str = "") -> None:
        """An agent's message was posted there (through this process)."""
        if self.limit <= 0:
            return
        key = (room_id, thread)
        if key not in self._sent and len(self._sent) >= CAP:
            self._sent.clear()  # only the last seconds matter: forgetting them is cheap
        self._sent.setdefault(key, deque(maxlen=max(64, 4 * self.limit))).append(
            (time.time(), sender, event_id)
        )


class LoopGuard:
    """Recent agent messages per conversation: ``check`` before a send, ``record`` after."""

    def __init__(
        self, limit: int, window: float = WINDOW, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.limit = limit
        self.window = window
        self.clock = clock
        #: conversation → (time, sender, is an answer) of its recent agent messages.
        self._recent: dict[tuple[str, str | None], deque[tuple[float, str, bool]]] = {}

    def _entries(self, key: tuple[str, str | None]) -> deque[tuple[float, str, bool]] | None:
        entries = self._recent.get(key)
        if entries is None:
            return None
        cutoff = self.clock() - self.window
        while entries and entries[0][0] <= cutoff:
            entries.popleft()
        return entries

    def check(self, room_id: str, thread: str | None, sender: str) -> int | None:
        """None when ``sender`` may post there now, else milliseconds until it may."""
        if self.limit <= 0:
            return None
        entries = self._entries((room_id, thread))
        return hold_ms(entries or (), sender, self.limit, self.window, self.clock())

    async def admit(self, room_id: str, thread: str | None, sender: str) -> int | None:
        """:meth:`check`, as the shared guard answers it."""
        return self.check(room_id, thread, sender)

    def record(self, room_id: str, thread: str | None, sender: str, event_id: str = "") -> None:
        """An agent's message was posted there."""
        if self.limit <= 0:
            return
        key = (room_id, thread)
        entries = self._entries(key)
        if entries is None:
            if len(self._recent) >= CAP:
                self._forget_idle()
            entries = self._recent[key] = deque(maxlen=max(64, 4 * self.limit))
        answer = bool(entries) and entries[-1][1] != sender
        entries.append((self.clock(), sender, answer))

    def _forget_idle(self) -> None:
        """Drop conversations with nothing in the window, else the oldest half."""
        for key in list(self._recent):
            if not self._entries(key):
                del self._recent[key]
        if len(self._recent) >= CAP:
            by_age = sorted(self._recent, key=lambda k: self._recent[k][-1][0])
            for key in by_age[: len(by_age) // 2]:
                del self._recent[key]
