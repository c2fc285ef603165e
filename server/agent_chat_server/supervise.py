"""The supervisor: runs Synapse and the appservice, stops both when either dies.

Used in the foreground by ``run`` and, detached, by ``start``. It holds ``run/supervisor.lock``
for its whole life (so a second copy refuses to start), writes pid files under ``run/``, and
answers signals: SIGTERM/SIGINT stop everything (exit 0); SIGUSR1 re-reads the hold files
(``run/hold-synapse``, ``run/hold-appservice``) and stops held services / restarts released ones.

Worker mode (``workers/topology.yaml``, see workers.py): Synapse's main process, then the event
persister, then the generic workers, then the appservice process(es), each stage waited for on
its health endpoint. Once everything is up, a worker or appservice process that dies is started
again with back-off (0.5 s, doubling to 30 s; reset after a minute up) while the rest serve; the
main process dying still stops everything, as any death during startup does.
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

from . import health, workers
from .errors import EXIT_APPSERVICE, EXIT_ERROR, EXIT_OK, EXIT_SYNAPSE, ServerError
from .files import write_atomic
from .paths import DataDir
from .process import die_with_parent, read_pid, signal_group, terminate, write_pid

SYNAPSE = "synapse"
APPSERVICE = "appservice"
#: The services of single-process mode (worker mode adds workers and appservice replicas).
SERVICES = (SYNAPSE, APPSERVICE)

#: How long Synapse may take to answer /versions before the supervisor gives up.
SYNAPSE_BOOT_TIMEOUT = 120.0
#: Restart back-off of a worker or appservice process that died (worker mode).
RESTART_FIRST_DELAY = 0.5
RESTART_MAX_DELAY = 30.0
#: Up this long, a process's earlier failures are forgotten.
RESTART_RESET_AFTER = 60.0

#: Kinds of service.
MAIN, WORKER, API = "synapse", "worker", "appservice"
_STAGES = {MAIN: 0, WORKER: 2, API: 3}


def service_command(dd: DataDir, name: str) -> list[str]:
    """The command line of service ``name`` (single-process mode)."""
    if name == SYNAPSE:
        return [sys.executable, "-m", "synapse.app.homeserver", "-c", str(dd.homeserver_yaml)]
    return [sys.executable, "-m", "agent_chat_appservice", "-c", str(dd.appservice_yaml)]


def service_log(dd: DataDir, name: str) -> Path:
    """Where a background service's stdout/stderr go."""
    if name == SYNAPSE:
        return dd.synapse_console_log
    if name == APPSERVICE:
        return dd.appservice_log
    return dd.console_log(name)


@dataclass(frozen=True)
class ServiceSpec:
    """One supervised process."""

    name: str
    kind: str  # MAIN, WORKER or API
    command: list[str]
    #: Start order: everything of one stage is started, then waited for, before the next.
    stage: int
    #: The exit code when it dies during startup (or, for main, at any time).
    exit_code: int
    #: Started again with back-off when it dies once everything is up (worker mode).
    restartable: bool
    #: Synapse's client URL (MAIN), the worker's /health URL, or the API process's URL.
    url: str

    def probe(self) -> health.Probe:
        if self.kind == MAIN:
            return health.synapse_up(self.url)
        if self.kind == WORKER:
            return health.worker_up(self.name, self.url)
        return health.appservice_up(self.url)


def api_url_on(config: Config, port: int) -> str:
    """The API URL of the appservice process serving on ``port``."""
    return config.api_url.rsplit(":", 1)[0] + f":{port}"


def appservice_name(i: int) -> str:
    """The i-th appservice process (0-based): appservice, appservice2, appservice3..."""
    return APPSERVICE if i == 0 else f"{APPSERVICE}{i + 1}"


def service_specs(dd: DataDir, config: Config) -> list[ServiceSpec]:
    """Every process to run, in start order: two in single-process mode, more with workers."""
    topo = workers.load_topology(dd)
    main = ServiceSpec(
        SYNAPSE,
        MAIN,
        service_command(dd, SYNAPSE),
        _STAGES[MAIN],
        EXIT_SYNAPSE,
        False,
        config.homeserver_url,
    )
    if topo is None:
        api = ServiceSpec(
            APPSERVICE,
            API,
            service_command(dd, APPSERVICE),
            _STAGES[API],
            EXIT_APPSERVICE,
            False,
            config.api_url,
        )
        return [main, api]
    specs = [main]
    for w in topo.synapse_workers:
        command = [
            sys.executable,
            "-m",
            "synapse.app.generic_worker",
            "-c",
            str(dd.homeserver_yaml),
            "-c",
            str(dd.worker_yaml(w.name)),
        ]
        # The event persister first: the generic workers send events through it.
        stage = 1 if w.name == workers.PERSISTER else _STAGES[WORKER]
        specs.append(ServiceSpec(w.name, WORKER, command, stage, EXIT_SYNAPSE, True, w.health_url))
    several = len(topo.api_ports) > 1
    for i, port in enumerate(topo.api_ports):
        command = service_command(dd, APPSERVICE) + (["--port", str(port)] if several else [])
        specs.append(
            ServiceSpec(
                appservice_name(i),
                API,
                command,
                _STAGES[API],
                EXIT_APPSERVICE,
                True,
                api_url_on(config, port),
            )
        )
    return specs


@dataclass
class _Service:
    spec: ServiceSpec
    proc: subprocess.Popen[bytes] | None = None
    held: bool = False
    started_at: float = 0.0
    failures: int = 0
    restart_at: float | None = None

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def exit_code(self) -> int:
        return self.spec.exit_code


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
    _ready: bool = False

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

    def run(self) -> int:
        """Supervise until stopped; the exit code says why (see errors.py)."""
        specs = service_specs(self.dd, self.config)
        self.acquire_lock()
        self._services = {spec.name: _Service(spec) for spec in specs}
        for name in self._services:
            self.dd.hold_file(name).unlink(missing_ok=True)
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
        stages = sorted({svc.spec.stage for svc in self._services.values()})
        for stage in stages:
            names = [n for n, svc in self._services.items() if svc.spec.stage == stage]
            for name in names:
                self._start(name)
            if stage != stages[-1]:  # the last (the appservice) is awaited by the ready probe
                code = self._wait_up(names)
                if code is not None:
                    return code
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
            self._restart_due()
            now = time.monotonic()
            if not self._ready and now - last_probe > 0.2:
                last_probe = now
                self._ready = self._probe_ready(now - started)
            time.sleep(0.05)

    def _wait_up(self, names: list[str]) -> int | None:
        """Wait for these services to answer before starting the next stage (which needs
        them)."""
        deadline = time.monotonic() + SYNAPSE_BOOT_TIMEOUT
        waiting = list(names)
        while waiting:
            waiting = [n for n in waiting if not self._services[n].spec.probe().ok]
            if not waiting:
                break
            if self._stop_signal is not None:
                self.say(f"stopping before {', '.join(waiting)} was up")
                return EXIT_OK
            code = self._check_deaths()
            if code is not None:
                return code
            if time.monotonic() > deadline:
                what = "Synapse" if waiting == [SYNAPSE] else ", ".join(waiting)
                self.say(f"{what} did not answer within {SYNAPSE_BOOT_TIMEOUT:.0f} s", "error")
                return self._services[waiting[0]].exit_code
            time.sleep(0.05)
        if len(self._services) > 2:
            self.say(f"{', '.join(names)} up")
        return None

    def _probe_ready(self, elapsed: float) -> bool:
        apis = [svc.spec for svc in self._services.values() if svc.spec.kind == API]
        if not all(spec.probe().ok for spec in apis):
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
                    svc.spec.command,
                    cwd=self.dd.root,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT if out else None,
                    start_new_session=True,  # Ctrl-C reaches the supervisor only; it stops them
                    preexec_fn=die_with_parent,
                )
        except OSError as e:
            raise ServerError(f"cannot start {name}: {e}") from None
        svc.started_at = time.monotonic()
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
        """Stop stage by stage, the last started first; each stage's processes together."""
        for stage in sorted({svc.spec.stage for svc in self._services.values()}, reverse=True):
            names = [n for n, svc in self._services.items() if svc.spec.stage == stage]
            for name in names:  # SIGTERM them all, then wait for each
                proc = self._services[name].proc
                if proc is not None and proc.poll() is None:
                    signal_group(proc.pid, signal.SIGTERM)
            for name in names:
                self._stop(name)

    def _check_deaths(self) -> int | None:
        for svc in self._services.values():
            if svc.proc is not None and (rc := svc.proc.poll()) is not None:
                svc.proc = None
                self.dd.pid_file(svc.name).unlink(missing_ok=True)
                if self._ready and svc.spec.restartable:
                    self._schedule_restart(svc, rc)
                    continue
                self._exit_reason = f"{svc.name} exited unexpectedly (status {rc})"
                self.say(f"{self._exit_reason}; stopping everything", "error")
                return svc.exit_code
        return None

    def _schedule_restart(self, svc: _Service, rc: int) -> None:
        now = time.monotonic()
        if now - svc.started_at > RESTART_RESET_AFTER:
            svc.failures = 0
        svc.failures += 1
        delay = min(RESTART_MAX_DELAY, RESTART_FIRST_DELAY * 2 ** (svc.failures - 1))
        svc.restart_at = now + delay
        self.say(
            f"{svc.name} exited unexpectedly (status {rc}); starting it again in {delay:.1f} s "
            f"(failure {svc.failures} in a row)",
            "error",
        )

    def _restart_due(self) -> None:
        now = time.monotonic()
        for name, svc in self._services.items():
            if svc.restart_at is not None and now >= svc.restart_at:
                svc.restart_at = None
                if svc.proc is None and not svc.held:
                    self._start(name)

    def _apply_holds(self) -> None:
        for name, svc in self._services.items():
            svc.held = self.dd.hold_file(name).exists()
            if svc.held and svc.proc is not None:
                self.say(f"stopping {name} on request")
                self._stop(name)
            elif not svc.held and svc.proc is None:
                self.say(f"starting {name} on request")
                svc.restart_at = None
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
