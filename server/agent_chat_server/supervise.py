"""The supervisor: runs Synapse and the appservice, starts again whichever dies.

Used in the foreground by ``run`` and, detached, by ``start``. It holds ``run/supervisor.lock``
for its whole life (so a second copy refuses to start), writes pid files under ``run/``, and
answers signals: SIGTERM/SIGINT stop everything (exit 0); SIGUSR1 re-reads the hold files
(``run/hold-synapse``, ``run/hold-appservice``) and stops held services / restarts released ones.

Once everything is up, a process that dies is started again with back-off (0.5 s, doubling to
30 s; reset after a minute up) while the rest serve; one that dies 5 times within 60 s
(``$AGENT_CHAT_CRASH_LOOP``, see states.py) is a crash loop: the supervisor stops everything
and exits 3 (Synapse) or 4 (the appservice), the reason in its log and in ``status``. A death
during startup stops everything at once (``start`` reports it). Each process's state and
restarts are in ``run/services.json`` (``status`` shows them).

Worker mode (``workers/topology.yaml``, see workers.py): Synapse's main process, then the event
persister, then the generic workers, then the appservice process(es), each stage waited for on
its health endpoint. Workers and appservice processes are restarted as above; the main process
dying stops everything (the workers' replication state hangs on it).

The supervisor and everything it starts run with umask 077 (files 0600, folders 0700), and
``run`` first takes group and other permissions off whatever is already in the data dir.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol
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
from .files import PRIVATE_UMASK, open_private_append, private_dir, tighten_tree, write_atomic
from .paths import DataDir
from .process import die_with_parent, read_pid, signal_group, terminate, write_pid
from .states import ALIVE, ProcessRecord, ProcessState, RestartPolicy

SYNAPSE = "synapse"
APPSERVICE = "appservice"
#: The services of single-process mode (worker mode adds workers and appservice replicas).
SERVICES = (SYNAPSE, APPSERVICE)

#: How long Synapse may take to answer /versions before the supervisor gives up.
SYNAPSE_BOOT_TIMEOUT = 120.0
#: How often the supervisor looks for dead processes, and probes starting ones.
POLL_INTERVAL = 0.05
PROBE_INTERVAL = 0.2

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
    #: Started again with back-off when it dies once everything is up (all but worker mode's
    #: main process).
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
        topo is None,
        config.homeserver_url,
    )
    if topo is None:
        api = ServiceSpec(
            APPSERVICE,
            API,
            service_command(dd, APPSERVICE),
            _STAGES[API],
            EXIT_APPSERVICE,
            True,
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


class Clock(Protocol):
    """Time as the supervisor sees it (tests drive a fake one)."""

    def monotonic(self) -> float: ...

    def time(self) -> float: ...

    def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """The real clock."""

    def monotonic(self) -> float:
        return time.monotonic()

    def time(self) -> float:
        return time.time()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


class Child(Protocol):
    """A started service process (tests use fake ones)."""

    @property
    def pid(self) -> int: ...

    def poll(self) -> int | None:
        """Its exit status once it has exited (reaped), else None."""
        ...

    def signal(self, sig: int) -> None:
        """Send ``sig`` to its process group if it still runs."""
        ...

    def stop(self) -> bool:
        """SIGTERM, then SIGKILL if it lingers; reaped. False if it had already exited."""
        ...


#: Starts one service's process.
Launcher = Callable[[ServiceSpec], Child]


@dataclass
class PopenChild:
    """A real process, leading its own process group (its children are signalled with it)."""

    proc: subprocess.Popen[bytes]

    @property
    def pid(self) -> int:
        return self.proc.pid

    def poll(self) -> int | None:
        return self.proc.poll()

    def signal(self, sig: int) -> None:
        if self.proc.poll() is None:
            signal_group(self.proc.pid, sig)

    def stop(self) -> bool:
        if self.proc.poll() is not None:
            return False
        terminate(self.proc.pid)
        self.proc.wait()
        return True


@dataclass
class Spawner:
    """Starts services as real processes: private files (umask 077), own session, output to
    their log file (or the supervisor's own output)."""

    dd: DataDir
    log_to_files: bool = False

    def __call__(self, spec: ServiceSpec) -> Child:
        if self.log_to_files:
            private_dir(self.dd.logs)
        # The child writes its own copy of the log file's descriptor: ours closes at once.
        with self._output(spec.name) as out:
            proc = subprocess.Popen(
                spec.command,
                cwd=self.dd.root,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT if out else None,
                start_new_session=True,  # Ctrl-C reaches the supervisor only; it stops them
                preexec_fn=die_with_parent,
                umask=PRIVATE_UMASK,
            )
        return PopenChild(proc)

    def _output(self, name: str) -> AbstractContextManager[IO[bytes] | None]:
        """Where a service's output goes: its log file, or (None) the supervisor's own."""
        if self.log_to_files:
            return open_private_append(service_log(self.dd, name))
        return nullcontext()


def _print_line(line: str) -> None:
    print(line, flush=True)


def _probe(spec: ServiceSpec) -> bool:
    return spec.probe().ok


@dataclass
class _Service:
    spec: ServiceSpec
    record: ProcessRecord
    child: Child | None = None
    held: bool = False

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def exit_code(self) -> int:
        return self.spec.exit_code


@dataclass
class Supervisor:
    """Runs the services until a signal arrives, a process dies where no restart applies, or
    one crash-loops.

    The clock, the output, how processes start and how they are probed are injected (the
    defaults are the real ones), so the restart rules are tested with fake processes on a fake
    clock (tests/test_supervisor.py).
    """

    dd: DataDir
    config: Config
    log_to_files: bool = False
    #: "text" (a timestamp and a sentence) or "json" (one object per line, for journald/Loki).
    log_format: str = "text"
    clock: Clock = field(default_factory=SystemClock)
    #: Receives each log line.
    output: Callable[[str], None] = _print_line
    #: Starts a service (default: a Spawner, real processes).
    launch: Launcher | None = None
    #: True when a service answers its health endpoint.
    probe: Callable[[ServiceSpec], bool] = _probe
    #: True when Synapse's ping of the appservice succeeds (default: over HTTP).
    ping: Callable[[], bool] | None = None
    policy: RestartPolicy = field(default_factory=RestartPolicy)
    #: The services (default: service_specs of the data dir).
    specs: list[ServiceSpec] | None = None
    _services: dict[str, _Service] = field(default_factory=dict)
    _stop_signal: int | None = None
    _reconcile: bool = False
    _lock: int | None = None  # the lock file's descriptor, held while we run
    _exit_reason: str | None = None
    _ready: bool = False

    def __post_init__(self) -> None:
        if self.launch is None:
            self.launch = Spawner(self.dd, self.log_to_files)
        if self.ping is None:
            config = self.config
            self.ping = lambda: health.ping_appservice(config.homeserver_url, config.as_token).ok

    def say(self, text: str, level: str = "info") -> None:
        now = self.clock.time()
        if self.log_format == "json":
            record = {
                "ts": datetime.datetime.fromtimestamp(now, datetime.UTC).isoformat(
                    timespec="milliseconds"
                ),
                "level": level,
                "logger": "agent-chat-server",
                "pid": os.getpid(),
                "data_dir": str(self.dd.root),
                "msg": text,
            }
            self.output(json.dumps(record))
            return
        self.output(f"{stamp(now)} agent-chat-server: {text}")

    def records(self) -> dict[str, ProcessRecord]:
        """Each service's state and restart history."""
        return {name: svc.record for name, svc in self._services.items()}

    def request_stop(self, signum: int = signal.SIGTERM) -> None:
        """Stop everything at the next turn of the loop (what SIGTERM does)."""
        self._stop_signal = signum

    def request_reconcile(self) -> None:
        """Re-read the hold files at the next turn of the loop (what SIGUSR1 does)."""
        self._reconcile = True

    # --- lifecycle -----------------------------------------------------------------------

    def acquire_lock(self) -> None:
        """Take ``run/supervisor.lock`` or fail: another supervisor owns this data dir."""
        private_dir(self.dd.run)
        lock = os.open(self.dd.lock_file, os.O_RDWR | os.O_CREAT, 0o600)
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
        specs = self.specs if self.specs is not None else service_specs(self.dd, self.config)
        self.acquire_lock()
        loose = tighten_tree(self.dd.root)
        if loose:
            self.say(f"made {len(loose)} file(s) and folder(s) in {self.dd.root} private")
        self._services = {spec.name: _Service(spec, ProcessRecord(spec.name)) for spec in specs}
        for name in self._services:
            self.dd.hold_file(name).unlink(missing_ok=True)
        self._publish()
        old = {
            sig: signal.signal(sig, self._on_signal)
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1)
        }
        reason = "supervisor crashed"
        try:
            code = self.supervise()
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
            write_atomic(self.dd.last_exit_file, f"{stamp(self.clock.time())} {reason}\n")
        except OSError:
            pass

    def _publish(self) -> None:
        """``run/services.json``: every service's state and restarts, for ``status``."""
        data = {"services": {name: rec.as_dict() for name, rec in self.records().items()}}
        try:
            write_atomic(self.dd.services_file, json.dumps(data) + "\n")
        except OSError:
            pass

    def _on_signal(self, signum: int, frame: Any) -> None:
        if signum == signal.SIGUSR1:
            self.request_reconcile()
        else:
            self.request_stop(signum)

    def supervise(self) -> int:
        """Start the services stage by stage, then watch them (the part ``run`` wraps with
        the lock, the signals and the cleanup)."""
        started = self.clock.monotonic()
        stages = sorted({svc.spec.stage for svc in self._services.values()})
        for stage in stages:
            names = [n for n, svc in self._services.items() if svc.spec.stage == stage]
            for name in names:
                self._start(name)
            if stage != stages[-1]:  # the last (the appservice) is awaited by the ready probe
                code = self._wait_up(names)
                if code is not None:
                    return code
        last_probe = -PROBE_INTERVAL
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
            now = self.clock.monotonic()
            if now - last_probe >= PROBE_INTERVAL:
                last_probe = now
                if not self._ready:
                    self._ready = self._probe_ready(now - started)
                else:
                    self._probe_restarted()
            self.clock.sleep(POLL_INTERVAL)

    def _wait_up(self, names: list[str]) -> int | None:
        """Wait for these services to answer before starting the next stage (which needs
        them)."""
        deadline = self.clock.monotonic() + SYNAPSE_BOOT_TIMEOUT
        waiting = list(names)
        while waiting:
            waiting = [n for n in waiting if not self.probe(self._services[n].spec)]
            if not waiting:
                break
            if self._stop_signal is not None:
                self.say(f"stopping before {', '.join(waiting)} was up")
                return EXIT_OK
            code = self._check_deaths()
            if code is not None:
                return code
            if self.clock.monotonic() > deadline:
                what = "Synapse" if waiting == [SYNAPSE] else ", ".join(waiting)
                self._exit_reason = f"{what} did not answer within {SYNAPSE_BOOT_TIMEOUT:.0f} s"
                self.say(self._exit_reason, "error")
                return self._services[waiting[0]].exit_code
            self.clock.sleep(POLL_INTERVAL)
        self._came_up(names)
        if len(self._services) > 2:
            self.say(f"{', '.join(names)} up")
        return None

    def _came_up(self, names: list[str]) -> None:
        for name in names:
            self._services[name].record.up()
        self._publish()

    def _probe_ready(self, elapsed: float) -> bool:
        apis = [svc.spec for svc in self._services.values() if svc.spec.kind == API]
        if not all(self.probe(spec) for spec in apis):
            return False
        assert self.ping is not None
        if not self.ping():
            return False
        self._came_up([spec.name for spec in apis])
        self.say(
            f"ready in {elapsed:.1f} s: Synapse {self.config.homeserver_url}, "
            f"API {self.config.api_url}{health.API_PREFIX}"
        )
        return True

    def _probe_restarted(self) -> None:
        """A process started again: RUNNING once it answers its health endpoint."""
        for svc in self._services.values():
            if svc.record.state is ProcessState.STARTING and self.probe(svc.spec):
                svc.record.up()
                self.say(f"{svc.name} is up (pid {svc.record.pid})")
                self._publish()

    # --- services ------------------------------------------------------------------------

    def _start(self, name: str) -> None:
        svc = self._services[name]
        assert self.launch is not None
        try:
            svc.child = self.launch(svc.spec)
        except OSError as e:
            raise ServerError(f"cannot start {name}: {e}") from None
        again = svc.record.state is ProcessState.BACKOFF
        svc.record.spawned(svc.child.pid, self.clock.monotonic(), self.clock.time())
        write_pid(self.dd.pid_file(name), svc.child.pid)
        self.say(f"started {name}{' again' if again else ''} (pid {svc.child.pid})")
        self._publish()

    def _stop(self, name: str) -> None:
        svc = self._services[name]
        if svc.child is not None:
            if svc.record.state in ALIVE:
                svc.record.stopping()
            if svc.child.stop():
                self.say(f"stopped {name}")
            svc.child = None
        svc.record.stopped()
        self.dd.pid_file(name).unlink(missing_ok=True)
        self._publish()

    def _stop_all(self) -> None:
        """Stop stage by stage, the last started first; each stage's processes together."""
        for stage in sorted({svc.spec.stage for svc in self._services.values()}, reverse=True):
            names = [n for n, svc in self._services.items() if svc.spec.stage == stage]
            for name in names:  # SIGTERM them all, then wait for each
                child = self._services[name].child
                if child is not None:
                    child.signal(signal.SIGTERM)
            for name in names:
                self._stop(name)

    def _check_deaths(self) -> int | None:
        for svc in self._services.values():
            if svc.child is None or (rc := svc.child.poll()) is None:
                continue
            svc.child = None
            self.dd.pid_file(svc.name).unlink(missing_ok=True)
            rec = svc.record
            rec.died(rc, self.clock.monotonic(), self.policy, self._ready and svc.spec.restartable)
            self._publish()
            if rec.state is ProcessState.BACKOFF:
                assert rec.restart_at is not None
                delay = rec.restart_at - self.clock.monotonic()
                self.say(
                    f"{svc.name} exited unexpectedly (status {rc}); starting it again in "
                    f"{delay:.1f} s (failure {rec.failures} in a row)",
                    "error",
                )
                continue
            self._exit_reason = rec.reason
            if rec.state is ProcessState.FATAL:
                log = service_log(self.dd, svc.name)
                self.say(f"{rec.reason}; giving up, stopping everything (see {log})", "error")
            else:
                self.say(f"{rec.reason}; stopping everything", "error")
            return svc.exit_code
        return None

    def _restart_due(self) -> None:
        now = self.clock.monotonic()
        for name, svc in self._services.items():
            if svc.record.restart_due(now):
                if svc.held:
                    svc.record.stopped()
                    self._publish()
                else:
                    self._start(name)

    def _apply_holds(self) -> None:
        for name, svc in self._services.items():
            svc.held = self.dd.hold_file(name).exists()
            if svc.held and svc.child is not None:
                self.say(f"stopping {name} on request")
                self._stop(name)
            elif svc.held and svc.record.state is ProcessState.BACKOFF:
                svc.record.stopped()
                self._publish()
            elif not svc.held and svc.child is None:
                self.say(f"starting {name} on request")
                self._start(name)


def stamp(epoch: float) -> str:
    """Local date and time to the second, as the supervisor's log and ``status`` show it."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch))


def run_foreground(
    dd: DataDir, config: Config, log_to_files: bool = False, log_format: str = "text"
) -> int:
    """Entry point of ``run``: supervise in this process; returns the exit code."""
    os.umask(PRIVATE_UMASK)  # the supervisor's own files, and its children's
    try:
        policy = RestartPolicy.from_env(os.environ)
    except ValueError as e:
        print(f"agent-chat-server: {e}", file=sys.stderr)
        return EXIT_ERROR
    try:
        return Supervisor(dd, config, log_to_files, log_format, policy=policy).run()
    except ServerError as e:
        print(f"agent-chat-server: {e}", file=sys.stderr)
        return e.exit_code if e.exit_code else EXIT_ERROR
