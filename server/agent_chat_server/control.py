"""Commands that act on a (possibly) running server from outside: start, stop, status, and
pausing/resuming one service (used by tests for durability checks)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit
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
from .files import PRIVATE_UMASK, open_private_append, private_dir
from .init import (
    InitOptions,
    InitReport,
    check_existing,
    init_data_dir,
)
from .paths import DataDir
from .process import (
    cmdline_mentions,
    die_with_parent,
    pid_alive,
    port_in_use,
    read_pid,
    terminate,
    wait_dead,
)
from .states import RestartPolicy
from .supervise import (
    API,
    APPSERVICE,
    MAIN,
    SERVICES,
    SYNAPSE,
    ServiceSpec,
    service_specs,
    stamp,
)

DEFAULT_START_TIMEOUT = 60.0


def ensure_initialised(dd: DataDir, options: InitOptions | None = None) -> InitReport | None:
    """Run ``init`` if the data dir has no complete config; None if it already had one."""
    if dd.is_initialised():
        return None
    return init_data_dir(dd, options)


def load_config(dd: DataDir) -> Config:
    """The appservice config, after checking every config file parses."""
    if not dd.root.is_dir():
        raise ServerError(f"no server in {dd.root}: run `agent-chat-server init` first")
    missing = [p.name for p in dd.config_files() if not p.exists()]
    if missing:
        raise ServerError(
            f"{dd.root} lacks {', '.join(missing)}: run `agent-chat-server init` to complete it"
        )
    config = check_existing(dd).appservice
    assert config is not None
    workers.load_topology(dd)  # worker mode: every worker's file is there
    return config


def running_pid(dd: DataDir) -> int | None:
    """The supervisor's pid if one holds this data dir's lock, else None."""
    if not dd.lock_file.exists():
        return None
    with open(dd.lock_file, "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return read_pid(dd.pid_file("supervisor")) or -1
        fcntl.flock(lock, fcntl.LOCK_UN)
    return None


def _synapse_port(config: Config) -> int:
    return urlsplit(config.homeserver_url).port or 80


def check_ports_free(config: Config, dd: DataDir | None = None) -> None:
    """Fail with one line if Synapse's or the appservice's port (or, in worker mode, any
    worker's) is taken."""
    ports = [("Synapse", _synapse_port(config)), ("the appservice API", config.port)]
    topo = workers.load_topology(dd) if dd is not None else None
    if topo is not None:
        ports = topo.ports
    for label, port in ports:
        if port_in_use(config.host, port):
            raise ServerError(f"port {port} ({label}) is already in use on {config.host}")


@dataclass
class StartResult:
    """What ``start`` found or did."""

    pid: int
    api_url: str
    synapse_url: str
    seconds: float
    already_running: bool


def _supervisor_exit_message(dd: DataDir, code: int) -> str:
    if code == EXIT_SYNAPSE:
        return f"Synapse exited during startup; see {dd.synapse_log} and {dd.synapse_console_log}"
    if code == EXIT_APPSERVICE:
        return f"the appservice exited during startup; see {dd.appservice_log}"
    return f"the server exited during startup (status {code}); see {dd.supervisor_log}"


def wait_healthy(
    dd: DataDir,
    config: Config,
    timeout: float,
    proc: subprocess.Popen[bytes] | None = None,
) -> None:
    """Return when Synapse answers, the appservice answers and Synapse's ping succeeds."""
    deadline = time.monotonic() + timeout
    specs = service_specs(dd, config)
    while True:
        if proc is not None and (code := proc.poll()) is not None:
            raise ServerError(_supervisor_exit_message(dd, code))
        probe, log = _first_unhealthy(dd, specs)
        if probe.ok:
            probe = health.ping_appservice(config.homeserver_url, config.as_token)
            log = str(dd.appservice_log)
        # The supervisor we started also says so itself: until then, a death still counts as
        # one during startup (which stops everything), not a crash to restart.
        if probe.ok and (proc is None or _all_running(dd)):
            return
        if time.monotonic() > deadline:
            raise ServerError(f"not healthy after {timeout:.0f} s: {probe.detail}; see {log}")
        time.sleep(0.05)


def _spec_log(dd: DataDir, spec: ServiceSpec) -> str:
    if spec.kind == MAIN:
        return str(dd.synapse_log)
    if spec.name == APPSERVICE:
        return str(dd.appservice_log)
    if spec.kind == API:
        return str(dd.console_log(spec.name))
    return f"{dd.worker_log(spec.name)} and {dd.console_log(spec.name)}"


def _first_unhealthy(dd: DataDir, specs: list[ServiceSpec]) -> tuple[health.Probe, str]:
    """The first failing probe in start order (and the log to read), else an ok probe."""
    probe = health.Probe(True, "")
    for spec in specs:
        probe = spec.probe()
        if not probe.ok:
            return probe, _spec_log(dd, spec)
    return probe, ""


def start_background(
    dd: DataDir,
    timeout: float = DEFAULT_START_TIMEOUT,
    tie_to_caller: bool = False,
    log_format: str = "text",
) -> StartResult:
    """Start a detached supervisor (unless one runs) and wait until everything is healthy.

    On failure nothing is left running and the ServerError names the log to read.
    ``tie_to_caller``: the server gets SIGTERM if the calling process dies (test harnesses).
    """
    config = load_config(dd)
    try:
        RestartPolicy.from_env(os.environ)  # the supervisor would refuse it: say so here
    except ValueError as e:
        raise ServerError(str(e)) from None
    t0 = time.monotonic()
    pid = running_pid(dd)
    if pid is not None:
        wait_healthy(dd, config, timeout)
        return StartResult(pid, config.api_url, config.homeserver_url, 0.0, True)
    try:
        check_ports_free(config, dd)
    except ServerError:
        pid = running_pid(dd)  # a concurrent `start` may have just taken the ports
        if pid is None:
            raise
        wait_healthy(dd, config, timeout)
        return StartResult(pid, config.api_url, config.homeserver_url, 0.0, True)
    private_dir(dd.logs)
    private_dir(dd.run)
    with open_private_append(dd.supervisor_log) as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "agent_chat_server",
                "run",
                "--data-dir",
                str(dd.root),
                "--log-to-files",
                "--log-format",
                log_format,
            ],
            cwd=dd.root,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent if tie_to_caller else None,
            umask=PRIVATE_UMASK,
        )
    try:
        wait_healthy(dd, config, timeout, proc)
    except ServerError:
        other = running_pid(dd)
        if proc.poll() == EXIT_ERROR and other is not None and other != proc.pid:
            # Another `start` won the race for the lock: use its server.
            wait_healthy(dd, config, timeout)
            return StartResult(other, config.api_url, config.homeserver_url, 0.0, True)
        _abandon(dd, proc)
        raise
    except BaseException:
        _abandon(dd, proc)
        raise
    return StartResult(
        proc.pid, config.api_url, config.homeserver_url, time.monotonic() - t0, False
    )


def _abandon(dd: DataDir, proc: subprocess.Popen[bytes]) -> None:
    """Stop a supervisor that failed to come up, and anything it left."""
    if proc.poll() is None:
        terminate(proc.pid)
    proc.wait()
    _kill_leftovers(dd)


def _pid_file_names(dd: DataDir) -> list[str]:
    """The services with a pid file (any mode), plus the single-process ones."""
    names = list(SERVICES)
    if dd.run.is_dir():
        names += sorted(
            p.stem
            for p in dd.run.glob("*.pid")
            if p.stem != "supervisor" and p.stem not in SERVICES
        )
    return names


def _kill_leftovers(dd: DataDir) -> list[str]:
    """Kill services whose pid files outlived their supervisor; remove stale run files."""
    killed = []
    for name in _pid_file_names(dd):
        pid = read_pid(dd.pid_file(name))
        if pid and pid_alive(pid) and cmdline_mentions(pid, str(dd.root)):
            terminate(pid, 10.0)
            killed.append(f"killed leftover {name} (pid {pid})")
        dd.pid_file(name).unlink(missing_ok=True)
    if dd.run.is_dir():
        for hold in dd.run.glob("hold-*"):
            hold.unlink(missing_ok=True)
    if running_pid(dd) is None:
        dd.pid_file("supervisor").unlink(missing_ok=True)
    return killed


def stop(dd: DataDir, timeout: float = 30.0) -> list[str]:
    """Stop the supervisor and both services; no process is left behind. Returns what it did."""
    if not dd.root.is_dir():
        raise ServerError(f"no server in {dd.root}")
    done: list[str] = []
    pid = running_pid(dd)
    if pid is not None and pid > 0:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while running_pid(dd) is not None and time.monotonic() < deadline:
            time.sleep(0.05)
        if running_pid(dd) is not None:
            os.kill(pid, signal.SIGKILL)
            wait_dead(pid, 5.0)
            done.append(f"supervisor (pid {pid}) did not stop in {timeout:.0f} s: killed")
        else:
            wait_dead(pid, 5.0)
        done.append(f"stopped the server in {dd.root}")
    done += _kill_leftovers(dd)
    if not done:
        done.append(f"not running in {dd.root}")
    return done


@dataclass
class Status:
    """The outcome of ``status``: an exit code and one line per check."""

    exit_code: int
    lines: list[str]


def status(dd: DataDir) -> Status:
    """Check Synapse, the appservice and Synapse's ping of it."""
    config = load_config(dd)
    lines = []
    pid = running_pid(dd)
    if pid:
        lines.append(f"supervisor: running (pid {pid})")
    else:
        try:
            last = dd.last_exit_file.read_text().strip()
        except OSError:
            last = ""
        lines.append(
            f"supervisor: not running (last exit: {last})" if last else "supervisor: not running"
        )
    specs = service_specs(dd, config)
    restarts = _restarts(dd) if pid else {}
    if len(specs) > 2:
        return _worker_status(dd, config, specs, lines, restarts)
    syn = health.synapse_up(config.homeserver_url)
    asv = health.appservice_up(config.api_url)
    lines += [syn.detail, asv.detail]
    lines += [f"{name}: {text}" for name, text in restarts.items()]
    ping_ok = False
    if syn.ok:
        ping = health.ping_appservice(config.homeserver_url, config.as_token)
        lines.append(ping.detail)
        ping_ok = ping.ok
    if not syn.ok:
        code = EXIT_SYNAPSE
    elif not (asv.ok and ping_ok):
        code = EXIT_APPSERVICE
    else:
        code = EXIT_OK
        lines.append(f"API: {config.api_url}{health.API_PREFIX}")
    return Status(code, lines)


def _service_states(dd: DataDir) -> dict[str, Any]:
    """The supervisor's ``run/services.json``: each process's state and restarts ({} if
    absent or unreadable)."""
    try:
        services = json.loads(dd.services_file.read_text())["services"]
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    return services if isinstance(services, dict) else {}


def _all_running(dd: DataDir) -> bool:
    services = _service_states(dd)
    return bool(services) and all(
        isinstance(rec, dict) and rec.get("state") == "running" for rec in services.values()
    )


def _restarts(dd: DataDir) -> dict[str, str]:
    """From the running supervisor's ``run/services.json``: for each process restarted after
    dying, or not running, what to say (``restarted 2 times, last at ...; running``)."""
    try:
        services = _service_states(dd)
        out = {}
        for name, rec in services.items():
            state, count, last = str(rec["state"]), int(rec["restarts"]), rec["last_restart"]
            if count == 0 and state == "running":
                continue
            text = state
            if count:
                plural = "s" if count > 1 else ""
                text = f"restarted {count} time{plural}, last at {stamp(float(last))}; {state}"
            out[str(name)] = text
        return out
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}


def _worker_status(
    dd: DataDir,
    config: Config,
    specs: list[ServiceSpec],
    lines: list[str],
    restarts: dict[str, str],
) -> Status:
    """Worker mode: one line per process (name, pid, health), then Synapse's ping."""
    synapse_ok = api_ok = main_ok = True
    for spec in specs:
        pid = read_pid(dd.pid_file(spec.name))
        running = f"pid {pid}" if pid and pid_alive(pid) else "no process"
        probe = spec.probe()
        again = f" ({restarts[spec.name]})" if spec.name in restarts else ""
        lines.append(f"{spec.name}: {running}, {probe.detail}{again}")
        if not probe.ok:
            if spec.kind == API:
                api_ok = False
            else:
                synapse_ok = False
                main_ok = main_ok and spec.kind != MAIN
    ping_ok = False
    if main_ok:
        ping = health.ping_appservice(config.homeserver_url, config.as_token)
        lines.append(ping.detail)
        ping_ok = ping.ok
    if not synapse_ok:
        code = EXIT_SYNAPSE
    elif not (api_ok and ping_ok):
        code = EXIT_APPSERVICE
    else:
        code = EXIT_OK
        lines.append(f"API: {config.api_url}{health.API_PREFIX}")
    return Status(code, lines)


def service_names(dd: DataDir) -> list[str]:
    """Every service of this data dir: synapse and appservice, plus workers and replicas."""
    return [spec.name for spec in service_specs(dd, load_config(dd))]


def _signal_supervisor(dd: DataDir) -> None:
    pid = running_pid(dd)
    if not pid or pid < 0:
        raise ServerError(f"not running in {dd.root}")
    os.kill(pid, signal.SIGUSR1)


def pause_service(dd: DataDir, name: str, timeout: float = 30.0) -> None:
    """Make the supervisor stop ``name`` (synapse, appservice, a worker...) and keep it
    stopped."""
    if name not in service_names(dd):
        raise ValueError(name)
    pid = read_pid(dd.pid_file(name))
    dd.hold_file(name).touch(mode=0o600)
    _signal_supervisor(dd)
    deadline = time.monotonic() + timeout
    while dd.pid_file(name).exists() or (pid and pid_alive(pid)):
        if time.monotonic() > deadline:
            raise ServerError(f"{name} did not stop within {timeout:.0f} s")
        time.sleep(0.05)


def resume_service(dd: DataDir, name: str, timeout: float = DEFAULT_START_TIMEOUT) -> None:
    """Let the supervisor start ``name`` again; return when everything is healthy."""
    if name not in service_names(dd):
        raise ValueError(name)
    config = load_config(dd)
    dd.hold_file(name).unlink(missing_ok=True)
    _signal_supervisor(dd)
    wait_healthy(dd, config, timeout)


def restart_service(dd: DataDir, name: str, timeout: float = DEFAULT_START_TIMEOUT) -> None:
    """Stop and start one service; return when everything is healthy again."""
    pause_service(dd, name)
    resume_service(dd, name, timeout)


__all__ = [
    "APPSERVICE",
    "EXIT_ERROR",
    "SYNAPSE",
    "StartResult",
    "Status",
    "check_ports_free",
    "ensure_initialised",
    "load_config",
    "pause_service",
    "restart_service",
    "resume_service",
    "running_pid",
    "start_background",
    "status",
    "stop",
    "wait_healthy",
]
