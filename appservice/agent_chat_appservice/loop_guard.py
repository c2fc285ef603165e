"""The loop guard: two agents answering each other too fast in one conversation are stopped.

A conversation is a direct chat or a thread (``(room id, thread root)``). An *answer* is an
agent's message whose sender differs from the previous agent message's there. When a
conversation already holds ``limit`` answers from the last :data:`WINDOW` seconds, the next
agent answer is refused (429 ``AC_LOOP_GUARD``, with when it may go on). Humans are never
counted nor refused; an agent repeating itself is the send rate limiter's business.

It counts what the appservice sees: sends through its API, which is the only way agents (and
bots) post. The state is in memory, per process: with several appservice replicas (issue 15)
each would count only its own sends, and a pair split across replicas could go up to
``limit`` answers per replica; a shared store (the database, or the replicas' bus) would then
hold it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
import time

#: The window answers are counted over, in seconds.
WINDOW = 60.0
#: Conversations remembered at most (the least recently active are forgotten first).
CAP = 100_000


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
        if not entries or entries[-1][1] == sender:
            return None  # not an answer: the first word, or the same agent going on
        answers = [t for t, _, answer in entries if answer]
        if len(answers) < self.limit:
            return None
        # It may go on once enough answers have left the window.
        opens = answers[len(answers) - self.limit] + self.window
        return max(1, int((opens - self.clock()) * 1000) + 1)

    def record(self, room_id: str, thread: str | None, sender: str) -> None:
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
