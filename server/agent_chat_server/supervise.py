"""The supervisor: runs Synapse and the appservice, stops both when either dies.

Used in the foreground by ``run`` and, detached, by ``start``. It holds ``run/supervisor.lock``
for its whole life (so a second copy refuses to start), writes pid files under ``run/``, and
answers signals: SIGTERM/SIGINT stop everything (exit 0); SIGUSR1 re-reads the hold files
(``run/hold-synapse``, ``run/hold-appservice``) and stops held services / restarts released ones.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
import datetime
import fcntl
import json
import os
import signal
import subprocess
import sys
import time

from agent_chat_appservice.config import Config

from . import health
from .errors import EXIT_APPSERVICE, EXIT_ERROR, EXIT_OK, EXIT_SYNAPSE, ServerError
from .files import write_atomic
from .paths import DataDir
from .process import die_with_parent, read_pid, terminate, write_pid

SYNAPSE = "synapse"
APPSERVICE = "appservice"
SERVICES = (SYNAPSE, APPSERVICE)

#: How long Synapse may take to answer /versions before the supervisor gives up.
SYNAPSE_BOOT_TIMEOUT = 120.0


def service_command(dd: DataDir, name: str) -> list[str]:
    """The command line of service ``name``."""
    if name == SYNAPSE:
        return [sys.executable, "-m", "synapse.app.homeserver", "-c", str(dd.homeserver_yaml)]
    return [sys.executable, "-m", "agent_chat_appservice", "-c", str(dd.appservice_yaml)]


def service_log(dd: DataDir, name: str) -> Path:
    """Where a background service's stdout/stderr go."""
    return dd.synapse_console_log if name == SYNAPSE else dd.appservice_log


@dataclass
class _Service:
    name: str
    exit_code: int
    proc: subprocess.Popen[bytes] | None = None
    held: bool = False


@dataclass
class Supervisor:
    """Runs both services until a signal arrives or one of them dies."""

    dd: DataDir
    config: Config
    log_to_files: bool = False
    #: "text" (a timestamp and a sentence) or "json" (one object per line, for journald/Loki).
    log_format: str = "text"
    _services: dict[str, _Service] = field(default_factory=dict)
    _stop_signal: int | None = None
    _reconcile: bool = False
    _lock: int | None = None  # the lock file's descriptor, held while we run
    _exit_reason: str | None = None

    def say(self, text: str, level: str = "info") -> None:
        if self.log_format == "json":
            record = {
                "ts": datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds"),
                "level": level,
                "logger": "agent-chat-server",
                "pid": os.getpid(),
                "data_dir": str(self.dd.root),
                "msg": text,
            }
            print(json.dumps(record), flush=True)
            return
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        print(f"{stamp} agent-chat-server: {text}", flush=True)

    # --- lifecycle -----------------------------------------------------------------------

    def acquire_lock(self) -> None:
        """Take ``run/supervisor.lock`` or fail: another supervisor owns this data dir."""
        self.dd.run.mkdir(parents=True, exist_ok=True)
        lock = os.open(self.dd.lock_file, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(lock)
            pid = read_pid(self.dd.pid_file("supervisor"))
            raise ServerError(f"already running for {self.dd.root} (pid {pid})") from None
        self._lock = lock
        write_pid(self.dd.pid_file("supervisor"), os.getpid())
        for name in SERVICES:
            self.dd.hold_file(name).unlink(missing_ok=True)

    def run(self) -> int:
        """Supervise until stopped; the exit code says why (see errors.py)."""
        self.acquire_lock()
        self._services = {
            SYNAPSE: _Service(SYNAPSE, EXIT_SYNAPSE),
            APPSERVICE: _Service(APPSERVICE, EXIT_APPSERVICE),
        }
        old = {
            sig: signal.signal(sig, self._on_signal)
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1)
        }
        reason = "supervisor crashed"
        try:
            code = self._run()
            reason = self._exit_reason or f"exited with status {code}"
            return code
        finally:
            self._stop_all()
            self._write_last_exit(reason)
            for sig, handler in old.items():
                signal.signal(sig, handler)
            self.dd.pid_file("supervisor").unlink(missing_ok=True)
            if self._lock is not None:
                os.close(self._lock)

    def _write_last_exit(self, reason: str) -> None:
        """Leave ``run/last-exit`` for ``status``: when and why the supervisor ended."""
        try:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            write_atomic(self.dd.last_exit_file, f"{stamp} {reason}\n", 0o644)
        except OSError:
            pass

    def _on_signal(self, signum: int, frame: Any) -> None:
        if signum == signal.SIGUSR1:
            self._reconcile = True
        else:
            self._stop_signal = signum

    def _run(self) -> int:
        started = time.monotonic()
        self._start(SYNAPSE)
        code = self._wait_synapse_boot()
        if code is not None:
            return code
        self._start(APPSERVICE)
        ready = False
        last_probe = 0.0
        while True:
            if self._stop_signal is not None:
                self._exit_reason = f"stopped by {signal.Signals(self._stop_signal).name}"
                self.say(f"got {signal.Signals(self._stop_signal).name}, stopping")
                return EXIT_OK
            if self._reconcile:
                self._reconcile = False
                self._apply_holds()
            code = self._check_deaths()
            if code is not None:
                return code
            now = time.monotonic()
            if not ready and now - last_probe > 0.2:
                last_probe = now
                ready = self._probe_ready(now - started)
            time.sleep(0.05)

    def _wait_synapse_boot(self) -> int | None:
        """Wait for Synapse to answer before starting the appservice (which talks to it)."""
        deadline = time.monotonic() + SYNAPSE_BOOT_TIMEOUT
        url = self.config.homeserver_url
        while not health.synapse_up(url).ok:
            if self._stop_signal is not None:
                self.say("stopping before Synapse was up")
                return EXIT_OK
            code = self._check_deaths()
            if code is not None:
                return code
            if time.monotonic() > deadline:
                self.say(f"Synapse did not answer within {SYNAPSE_BOOT_TIMEOUT:.0f} s", "error")
                return EXIT_SYNAPSE
            time.sleep(0.05)
        return None

    def _probe_ready(self, elapsed: float) -> bool:
        if not health.appservice_up(self.config.api_url).ok:
            return False
        ping = health.ping_appservice(self.config.homeserver_url, self.config.as_token)
        if not ping.ok:
            return False
        self.say(
            f"ready in {elapsed:.1f} s: Synapse {self.config.homeserver_url}, "
            f"API {self.config.api_url}{health.API_PREFIX}"
        )
        return True

    # --- services ------------------------------------------------------------------------

    def _start(self, name: str) -> None:
        svc = self._services[name]
        if self.log_to_files:
            self.dd.logs.mkdir(parents=True, exist_ok=True)
        try:
            # The child writes its own copy of the log file's descriptor: ours closes at once.
            with self._output(name) as out:
                svc.proc = subprocess.Popen(
                    service_command(self.dd, name),
                    cwd=self.dd.root,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT if out else None,
                    start_new_session=True,  # Ctrl-C reaches the supervisor only; it stops them
                    preexec_fn=die_with_parent,
                )
        except OSError as e:
            raise ServerError(f"cannot start {name}: {e}") from None
        write_pid(self.dd.pid_file(name), svc.proc.pid)
        self.say(f"started {name} (pid {svc.proc.pid})")

    def _output(self, name: str) -> AbstractContextManager[IO[bytes] | None]:
        """Where a service's output goes: its log file, or (None) the supervisor's own."""
        if self.log_to_files:
            return open(service_log(self.dd, name), "ab")
        return nullcontext()

    def _stop(self, name: str) -> None:
        svc = self._services[name]
        if svc.proc is not None:
            if svc.proc.poll() is None:
                terminate(svc.proc.pid)
                svc.proc.wait()
                self.say(f"stopped {name}")
            svc.proc = None
        self.dd.pid_file(name).unlink(missing_ok=True)

    def _stop_all(self) -> None:
        for name in (APPSERVICE, SYNAPSE):
            if name in self._services:
                self._stop(name)

    def _check_deaths(self) -> int | None:
        for svc in self._services.values():
            if svc.proc is not None and (rc := svc.proc.poll()) is not None:
                svc.proc = None
                self.dd.pid_file(svc.name).unlink(missing_ok=True)
                self._exit_reason = f"{svc.name} exited unexpectedly (status {rc})"
                self.say(f"{self._exit_reason}; stopping everything", "error")
                return svc.exit_code
        return None

    def _apply_holds(self) -> None:
        for name in SERVICES:
            svc = self._services[name]
            svc.held = self.dd.hold_file(name).exists()
            if svc.held and svc.proc is not None:
                self.say(f"stopping {name} on request")
                self._stop(name)
            elif not svc.held and svc.proc is None:
                self.say(f"starting {name} on request")
                self._start(name)


def run_foreground(
    dd: DataDir, config: Config, log_to_files: bool = False, log_format: str = "text"
) -> int:
    """Entry point of ``run``: supervise in this process; returns the exit code."""
    try:
        return Supervisor(dd, config, log_to_files, log_format).run()
    except ServerError as e:
        print(f"agent-chat-server: {e}", file=sys.stderr)
        return e.exit_code if e.exit_code else EXIT_ERROR
