"""Work the appservice does beside the request that caused it: one registry, drained on stop.

Two kinds of task: *work* (a read receipt, recording a send's event id, joining a room an agent
was invited to) is awaited on stop, for a bounded time, so that what a caller was told happened
is not lost to a restart; *loops* (watching the homeserver, pinging it, catching up) are
cancelled at once: the next start runs them again.
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any
import asyncio
import logging

log = logging.getLogger("agent_chat.background")

#: How long stop waits for work in progress before cancelling it.
DRAIN_SECONDS = 5.0


class Background:
    def __init__(self) -> None:
        self._work: set[asyncio.Task[Any]] = set()
        self._loops: set[asyncio.Task[Any]] = set()

    def __len__(self) -> int:
        return len(self._work) + len(self._loops)

    def spawn(self, coro: Coroutine[Any, Any, Any], *, loop: bool = False) -> asyncio.Task[Any]:
        """Run ``coro`` in the background: as work (drained on stop) or as a ``loop``
        (cancelled on stop). An exception it raises is logged, never lost."""
        task = asyncio.create_task(coro)
        tasks = self._loops if loop else self._work
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        task.add_done_callback(_log_failure)
        return task

    def cancel_loops(self) -> None:
        for task in list(self._loops):
            task.cancel()

    async def drain(self, timeout: float = DRAIN_SECONDS) -> None:
        """Cancel the loops, wait up to ``timeout`` seconds for the work, cancel what is left."""
        self.cancel_loops()
        if self._work:
            _, pending = await asyncio.wait(list(self._work), timeout=timeout)
            if pending:
                log.warning(
                    "stopping: %d background task(s) still running after %.0f s, cancelled",
                    len(pending),
                    timeout,
                )
            for task in pending:
                task.cancel()
        leftover = self._loops | self._work
        if leftover:  # let the cancelled tasks unwind (their finally blocks) before returning
            await asyncio.gather(*leftover, return_exceptions=True)


def _log_failure(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("background task %s failed", task.get_name(), exc_info=task.exception())
