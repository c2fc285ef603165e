"""The supervisor's process states and restart rules, as pure logic (no clock, no processes).

The states are supervisord's (``supervisor/states.py``), so its documentation reads across:

- STOPPED: not started yet, or stopped on request (a hold file, ``stop``);
- STARTING: spawned, not yet answering its health probe;
- RUNNING: answering;
- BACKOFF: died unexpectedly; started again at ``restart_at``;
- STOPPING: being stopped (SIGTERM, then SIGKILL);
- EXITED: died where no restart applies (during startup; worker mode's Synapse main process):
  the supervisor then stops everything;
- FATAL: a crash loop (``RestartPolicy.crash_limit`` unexpected exits within
  ``crash_window`` s): the supervisor gives up and stops everything.

Every change goes through ``ProcessRecord.to``, which refuses a transition the table below does
not list: a slip in the supervisor shows up as an error in the unit tests, not as a process
silently left behind.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
import enum

#: ``COUNT/SECONDS``: a process dying unexpectedly COUNT times within SECONDS is a crash loop.
CRASH_LOOP_ENV = "AGENT_CHAT_CRASH_LOOP"


class ProcessState(enum.Enum):
    STOPPED = "stopped"
    STARTING = "starting"
    RUNNING = "running"
    BACKOFF = "backoff"
    STOPPING = "stopping"
    EXITED = "exited"
    FATAL = "fatal"


S = ProcessState
#: Which state may follow which.
TRANSITIONS: dict[ProcessState, frozenset[ProcessState]] = {
    S.STOPPED: frozenset({S.STARTING}),
    S.STARTING: frozenset({S.RUNNING, S.BACKOFF, S.EXITED, S.FATAL, S.STOPPING}),
    S.RUNNING: frozenset({S.BACKOFF, S.EXITED, S.FATAL, S.STOPPING}),
    S.BACKOFF: frozenset({S.STARTING, S.STOPPED}),
    S.STOPPING: frozenset({S.STOPPED}),
    S.EXITED: frozenset({S.STOPPED}),
    S.FATAL: frozenset({S.STOPPED}),
}
#: States with a live process.
ALIVE = frozenset({S.STARTING, S.RUNNING, S.STOPPING})


class InvalidTransition(RuntimeError):
    """The supervisor asked for a state change the table does not allow (a bug)."""


@dataclass(frozen=True)
class RestartPolicy:
    """When a dead process is started again, and when the supervisor gives up."""

    #: Back-off before the first restart; doubles with each failure in a row, up to max_delay.
    first_delay: float = 0.5
    max_delay: float = 30.0
    #: Up this long, a process's earlier failures are forgotten (the back-off starts over).
    reset_after: float = 60.0
    #: A crash loop: this many unexpected exits of one process within crash_window seconds.
    crash_limit: int = 5
    crash_window: float = 60.0

    def delay(self, failures: int) -> float:
        """The wait before restart number ``failures`` (1-based) of a run of failures."""
        return min(self.max_delay, self.first_delay * 2.0 ** max(0, failures - 1))

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> RestartPolicy:
        """The defaults, with ``$AGENT_CHAT_CRASH_LOOP`` (``COUNT/SECONDS``, e.g. ``5/60``) if
        set; ValueError with a one-line reason if it is malformed."""
        text = environ.get(CRASH_LOOP_ENV, "").strip()
        if not text:
            return cls()
        count, sep, seconds = text.partition("/")
        try:
            limit, window = int(count), float(seconds)
        except ValueError:
            limit, window = 0, 0.0
        if not sep or not 2 <= limit <= 1000 or not 1 <= window <= 86400:
            raise ValueError(
                f"invalid {CRASH_LOOP_ENV}={text!r}: want COUNT/SECONDS, e.g. 5/60 "
                "(COUNT 2-1000, SECONDS 1-86400)"
            )
        return cls(crash_limit=limit, crash_window=window)

    def describe(self) -> str:
        return f"{self.crash_limit} times within {self.crash_window:g} s"


@dataclass
class ProcessRecord:
    """One supervised process's state and history. Times: ``now`` is monotonic seconds,
    ``wall`` is epoch seconds (shown by ``status``)."""

    name: str
    state: ProcessState = S.STOPPED
    pid: int | None = None
    #: When it was last spawned (monotonic).
    started_at: float = 0.0
    #: Unexpected exits in a row (the back-off); reset once up for ``reset_after``.
    failures: int = 0
    #: When it died unexpectedly within the crash window (monotonic).
    crashes: list[float] = field(default_factory=list)
    #: Restarts after unexpected exits, and when the last one was (wall clock).
    restarts: int = 0
    last_restart: float | None = None
    #: BACKOFF: when to start it again (monotonic).
    restart_at: float | None = None
    #: Why it is EXITED or FATAL.
    reason: str = ""

    def to(self, new: ProcessState) -> None:
        if new not in TRANSITIONS[self.state]:
            raise InvalidTransition(f"{self.name}: {self.state.value} -> {new.value}")
        self.state = new

    def spawned(self, pid: int, now: float, wall: float) -> None:
        """Started (a restart if it was in BACKOFF)."""
        if self.state is S.BACKOFF:
            self.restarts += 1
            self.last_restart = wall
        self.to(S.STARTING)
        self.pid, self.started_at, self.restart_at, self.reason = pid, now, None, ""

    def up(self) -> None:
        """Its health probe answered."""
        if self.state is S.STARTING:
            self.to(S.RUNNING)

    def died(self, status: int, now: float, policy: RestartPolicy, restartable: bool) -> None:
        """It exited on its own with ``status``: EXITED (no restart applies), FATAL (a crash
        loop) or BACKOFF (``restart_at`` says when to start it again)."""
        self.pid = None
        if not restartable:
            self.reason = f"{self.name} exited unexpectedly (status {status})"
            self.to(S.EXITED)
            return
        if now - self.started_at >= policy.reset_after:
            self.failures = 0
        self.failures += 1
        self.crashes = [t for t in self.crashes if now - t < policy.crash_window] + [now]
        if len(self.crashes) >= policy.crash_limit:
            self.reason = (
                f"{self.name} is crash-looping: it exited unexpectedly "
                f"{policy.describe()} (last status {status})"
            )
            self.to(S.FATAL)
            return
        self.restart_at = now + policy.delay(self.failures)
        self.to(S.BACKOFF)

    def restart_due(self, now: float) -> bool:
        return self.state is S.BACKOFF and self.restart_at is not None and now >= self.restart_at

    def stopping(self) -> None:
        self.to(S.STOPPING)

    def stopped(self) -> None:
        """Stopped on request, or by the supervisor's shutdown: no pid, no pending restart.
        EXITED and FATAL stay as they are (they say why the supervisor stopped)."""
        if self.state not in (S.STOPPED, S.EXITED, S.FATAL):
            if self.state in (S.STARTING, S.RUNNING):
                self.to(S.STOPPING)
            self.to(S.STOPPED)
        self.pid, self.restart_at = None, None

    def as_dict(self) -> dict[str, Any]:
        """What ``run/services.json`` holds for ``status``."""
        return {
            "state": self.state.value,
            "pid": self.pid,
            "restarts": self.restarts,
            "last_restart": self.last_restart,
            "reason": self.reason,
        }
