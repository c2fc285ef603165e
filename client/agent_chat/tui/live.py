"""Live updates without /sync: the API's long-poll (``/notify?wait=&since=``, as ``ac wait``)
and, after each change, one fetch of everything new (``/messages?since=``).

One daemon thread (a held request must never keep the process alive at exit). It reports to
the UI through ``emit`` (called on this thread: the app hands it to its event loop):

- ``("up", answer, messages)``: connected; the /notify answer and the new messages;
- ``("down", message, retry_in)``: the server cannot be reached; retrying with back-off;
- ``("auth", message, None)``: the token was rejected: nothing to retry, said once.
"""

from __future__ import annotations

import threading
import time

from ..errors import AuthError, NetworkError, RateLimited
from .model import unread_by_room

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from ..shapes import JSONObject
    from .session import Session

#: Seconds one long-poll is held (the server's limit is 300; shorter notices a dead link).
HOLD = 60.0
#: Back-off between attempts while the server is down: 1, 2, 4... up to this.
MAX_BACKOFF = 30.0


class Poller:
    """The long-poll loop; :meth:`stop` ends it at the next answer (or at once if down)."""

    def __init__(self, session: Session, emit: Callable[[str, object, object], None]) -> None:
        self.session = session
        self.emit = emit
        self.client = session.poll_client()
        self._stop = threading.Event()
        self._wake = threading.Event()
        #: When the last long-poll with news answered and they were fetched (the bench).
        self.answered_at = 0.0
        self.fetched_at = 0.0
        self.thread = threading.Thread(target=self._run, name="ac-tui-poll", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def retry_now(self) -> None:
        """Cut a back-off wait short (the user asked to reconnect)."""
        self._wake.set()

    def _run(self) -> None:
        from .. import wait as longpoll

        cursor: str | None = None
        latest: dict[str, int] = {}
        backoff = 1.0
        started = False
        recovering = False
        while not self._stop.is_set():
            try:
                if not started:
                    # The newest message first, then the counts' cursor: whatever arrives
                    # after the cursor is after that message, so the feed misses nothing.
                    if not self.session.user_id:  # AGENT_CHAT_TOKEN: whose is it?
                        self.session.whoami()
                    self.session.start_feed()
                    started = True
                    answer = longpoll.poll(self.client, None, 0)
                    news = []
                else:
                    # Back after a failure: answer at once, so the UI says so now.
                    answer = longpoll.poll(self.client, cursor, 0 if recovering else HOLD)
                    answered = time.monotonic()
                    news = self._news(answer, latest)
                    if news:  # (a wake with nothing new, e.g. our own marking read, is not)
                        self.answered_at, self.fetched_at = answered, time.monotonic()
            except AuthError as e:
                self.emit("auth", e.message, None)
                return
            except RateLimited as e:
                delay = min(MAX_BACKOFF, e.retry_after or backoff)
                self.emit("down", e.message, delay)
                self._pause(delay)
                recovering = True
                continue
            except NetworkError as e:
                self.emit("down", e.message, backoff)
                self._pause(backoff)
                backoff, recovering = min(MAX_BACKOFF, backoff * 2), True
                continue
            except Exception as e:  # an odd answer: say it, keep going
                self.emit("down", f"{type(e).__name__}: {e}", backoff)
                self._pause(backoff)
                backoff, recovering = min(MAX_BACKOFF, backoff * 2), True
                continue
            backoff, recovering = 1.0, False
            latest = _latest(answer)
            new_cursor = answer.get("cursor")
            if isinstance(new_cursor, str):
                cursor = new_cursor
            if not self._stop.is_set():
                self.emit("up", answer, news)

    def _news(self, answer: JSONObject, before: dict[str, int]) -> list[JSONObject]:
        """The messages that woke us: none when no room's newest counted message moved (we
        read something, here or elsewhere); one room's when only it moved (cheap), else
        everything since the last fetch."""
        if answer.get("changed") is False:
            return []
        moved = [r for r, seq in _latest(answer).items() if seq > before.get(r, 0)]
        if not moved and answer.get("new") is not True:
            return []
        if len(moved) == 1:
            found = self.session.fetch_room(moved[0])
            if found is not None:
                return found
        return self.session.fetch_new()

    def _pause(self, seconds: float) -> None:
        self._wake.wait(seconds)
        self._wake.clear()


def _latest(answer: JSONObject) -> dict[str, int]:
    """Per room of a /notify answer, the newest message its count covers."""
    found: dict[str, int] = {}
    for entry in unread_by_room(answer).values():
        seq = entry.get("latest")
        if isinstance(seq, int) and not isinstance(seq, bool):
            found[str(entry.get("room_id"))] = seq
    return found
