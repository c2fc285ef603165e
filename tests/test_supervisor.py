"""The supervisor's restart rules, without Synapse: fake processes on a fake clock.

The supervisor takes its clock, its output, how it starts processes and how it probes them as
arguments (honcho's manager tests do the same with a FakeClock); here every one is a fake, so
back-off, crash loops and holds are checked in milliseconds and to the tick. The same rules
against real processes: tests/test_server_cli.py (kill -9 of Synapse or the appservice).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
import json
import signal

import pytest

from agent_chat_appservice.config import Config
from agent_chat_server.errors import EXIT_APPSERVICE, EXIT_OK, EXIT_SYNAPSE
from agent_chat_server.paths import DataDir
from agent_chat_server.states import (
    CRASH_LOOP_ENV,
    InvalidTransition,
    ProcessRecord,
    ProcessState,
    RestartPolicy,
)
from agent_chat_server.supervise import (
    API,
    APPSERVICE,
    MAIN,
    POLL_INTERVAL,
    SYNAPSE,
    WORKER,
    ServiceSpec,
    Supervisor,
)

START = 1000.0
WALL = 1_800_000_000.0 - START
#: How long a fake process takes to answer its probe.
BOOT = 0.3


class FakeClock:
    """Time moves only when the supervisor sleeps; events fire at their (fake) time."""

    def __init__(self) -> None:
        self.now = START
        self.events: list[tuple[float, Callable[[], None]]] = []

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return self.now + WALL

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        if self.now - START > 3600:
            raise AssertionError("the supervisor ran an hour of fake time without stopping")
        due = [e for e in self.events if e[0] <= self.now]
        self.events = [e for e in self.events if e[0] > self.now]
        for _, action in sorted(due, key=lambda e: e[0]):
            action()

    def at(self, seconds: float, action: Callable[[], None]) -> None:
        """Run ``action`` once ``seconds`` of fake time have passed since START."""
        self.events.append((START + seconds, action))


@dataclass
class FakeChild:
    pid: int
    name: str
    spawned_at: float
    status: int | None = None
    stopped_by_supervisor: bool = False

    def poll(self) -> int | None:
        return self.status

    def signal(self, sig: int) -> None:
        if self.status is None:
            self.status = -sig
            self.stopped_by_supervisor = True

    def stop(self) -> bool:
        if self.status is not None and not self.stopped_by_supervisor:
            return False
        was_running = self.status is None or self.stopped_by_supervisor
        self.status = self.status if self.status is not None else -signal.SIGTERM
        self.stopped_by_supervisor = True
        return was_running


@dataclass
class World:
    """The fake processes: what was started, which die at once, which answer probes."""

    clock: FakeClock
    children: list[FakeChild] = field(default_factory=list)
    #: name -> exit status of every start after the first (a service that cannot start again).
    dies_on_restart: dict[str, int] = field(default_factory=dict)
    #: name -> exit status of its very first start.
    dies_at_once: dict[str, int] = field(default_factory=dict)
    next_pid: int = 100
    kills: int = 0

    def launch(self, spec: ServiceSpec) -> FakeChild:
        self.next_pid += 1
        child = FakeChild(self.next_pid, spec.name, self.clock.now)
        earlier = self.started(spec.name)
        if earlier and spec.name in self.dies_on_restart:
            child.status = self.dies_on_restart[spec.name]
        if not earlier and spec.name in self.dies_at_once:
            child.status = self.dies_at_once[spec.name]
        self.children.append(child)
        return child

    def probe(self, spec: ServiceSpec) -> bool:
        live = [c for c in self.children if c.name == spec.name and c.status is None]
        return bool(live) and self.clock.now - live[-1].spawned_at >= BOOT

    def started(self, name: str) -> list[FakeChild]:
        return [c for c in self.children if c.name == name]

    def current(self, name: str) -> FakeChild:
        return self.started(name)[-1]

    def kill(
        self, name: str, status: int = -signal.SIGKILL, if_running: bool = False
    ) -> Callable[[], None]:
        """An event: ``name``'s current process dies with ``status``."""

        def action() -> None:
            child = self.current(name)
            if if_running and child.status is not None:
                return
            assert child.status is None, f"{name} is not running"
            child.status = status
            self.kills += 1

        return action


def spec(name: str, kind: str, stage: int, code: int, restartable: bool = True) -> ServiceSpec:
    return ServiceSpec(name, kind, [name], stage, code, restartable, f"http://{name}")


SINGLE = [spec(SYNAPSE, MAIN, 0, EXIT_SYNAPSE), spec(APPSERVICE, API, 3, EXIT_APPSERVICE)]


@dataclass
class Run:
    sup: Supervisor
    world: World
    clock: FakeClock
    lines: list[str]
    dd: DataDir

    def go(self) -> int:
        return self.sup.run()

    def log(self) -> str:
        return "\n".join(self.lines)

    def spawn_times(self, name: str) -> list[float]:
        return [c.spawned_at - START for c in self.world.started(name)]


def make_run(
    tmp_path: Path,
    specs: list[ServiceSpec] | None = None,
    policy: RestartPolicy | None = None,
    log_format: str = "text",
) -> Run:
    dd = DataDir.at(tmp_path / "server")
    dd.root.mkdir()
    clock = FakeClock()
    world = World(clock)
    lines: list[str] = []
    config = Config(
        server_name="test.local",
        homeserver_url="http://127.0.0.1:1",
        as_token="as",
        hs_token="hs",
        registration_token="reg",
        database=f"sqlite:{dd.appservice_db}",
    )
    sup = Supervisor(
        dd,
        config,
        log_format=log_format,
        clock=clock,
        output=lines.append,
        launch=world.launch,
        probe=world.probe,
        ping=lambda: True,
        policy=policy or RestartPolicy(),
        specs=specs or SINGLE,
    )
    return Run(sup, world, clock, lines, dd)


def assert_waits(waits: list[float], expected: list[float]) -> None:
    """Each wait is the back-off, give or take the poll ticks that notice the death and the
    due time."""
    assert len(waits) == len(expected), waits
    for got, want in zip(waits, expected, strict=True):
        assert want <= got <= want + 3 * POLL_INTERVAL, waits


# --- restarts ----------------------------------------------------------------------------------


@pytest.mark.parametrize("victim, other", [(APPSERVICE, SYNAPSE), (SYNAPSE, APPSERVICE)])
def test_a_dead_process_is_started_again_and_the_other_keeps_running(
    tmp_path: Path, victim: str, other: str
) -> None:
    r = make_run(tmp_path)
    r.clock.at(10, r.world.kill(victim))
    seen: dict[str, object] = {}

    def look() -> None:
        seen.update(json.loads(r.dd.services_file.read_text())["services"][victim])
        r.sup.request_stop()

    r.clock.at(20, look)
    assert r.go() == EXIT_OK
    assert len(r.world.started(other)) == 1, "the other process was never restarted"
    assert r.world.current(other).stopped_by_supervisor  # by the final stop, not before
    assert r.spawn_times(victim)[1] == pytest.approx(10 + 0.5, abs=2 * POLL_INTERVAL)
    assert f"{victim} exited unexpectedly (status -9); starting it again in 0.5 s" in r.log()
    assert f"{victim} is up (pid {r.world.current(victim).pid})" in r.log()
    assert "stopping everything" not in r.log()
    # What `status` reads: one restart, when, and the process running again.
    assert seen["state"] == "running" and seen["restarts"] == 1
    assert seen["last_restart"] == pytest.approx(START + WALL + 10.5, abs=0.2)
    assert seen["pid"] == r.world.current(victim).pid
    assert r.dd.last_exit_file.read_text().split(" ", 2)[2] == "stopped by SIGTERM\n"


def test_back_off_doubles_up_to_the_cap(tmp_path: Path) -> None:
    """Each failure in a row waits twice as long, up to 30 s (no crash loop here: a high
    limit)."""
    r = make_run(tmp_path, policy=RestartPolicy(crash_limit=1000))
    r.world.dies_on_restart[APPSERVICE] = 1
    r.clock.at(5, r.world.kill(APPSERVICE))
    r.clock.at(400, r.sup.request_stop)
    assert r.go() == EXIT_OK
    spawns = r.spawn_times(APPSERVICE)[1:]
    deaths = [5.0, *spawns[:-1]]  # each restart dies at once: found at the next poll
    waits = [s - d for s, d in zip(spawns, deaths, strict=True)]
    expected = [0.5, 1, 2, 4, 8, 16, 30, 30, 30]
    assert_waits(waits[: len(expected)], expected)
    assert r.sup.records()[SYNAPSE].restarts == 0


def test_a_minute_up_forgets_earlier_failures(tmp_path: Path) -> None:
    r = make_run(tmp_path)
    r.clock.at(5, r.world.kill(APPSERVICE))  # restart after 0.5 s
    r.clock.at(8, r.world.kill(APPSERVICE))  # up 2.5 s only: 1 s
    r.clock.at(80, r.world.kill(APPSERVICE))  # up 71 s: back to 0.5 s
    r.clock.at(90, r.sup.request_stop)
    assert r.go() == EXIT_OK
    spawns = r.spawn_times(APPSERVICE)
    waits = [s - d for s, d in zip(spawns[1:], [5, 8, 80], strict=True)]
    assert_waits(waits, [0.5, 1, 0.5])
    assert r.sup.records()[APPSERVICE].restarts == 3


def test_a_crash_loop_stops_everything_with_the_reason(tmp_path: Path) -> None:
    r = make_run(tmp_path)
    r.world.dies_on_restart[APPSERVICE] = 1
    r.clock.at(5, r.world.kill(APPSERVICE))
    assert r.go() == EXIT_APPSERVICE
    assert len(r.world.started(APPSERVICE)) == 5  # the first and four restarts: 5 deaths
    assert len(r.world.started(SYNAPSE)) == 1
    assert r.world.current(SYNAPSE).stopped_by_supervisor
    reason = "appservice is crash-looping: it exited unexpectedly 5 times within 60 s"
    [line] = [x for x in r.lines if "crash-looping" in x]
    assert reason in line and "giving up, stopping everything" in line
    assert "logs/appservice.log" in line
    assert reason in r.dd.last_exit_file.read_text()
    assert len(r.dd.last_exit_file.read_text().splitlines()) == 1
    assert r.sup.records()[APPSERVICE].state is ProcessState.FATAL
    services = json.loads(r.dd.services_file.read_text())["services"]
    assert services[APPSERVICE]["state"] == "fatal" and reason in services[APPSERVICE]["reason"]
    assert services[SYNAPSE]["state"] == "stopped"


def test_the_crash_loop_limit_is_a_setting(tmp_path: Path) -> None:
    policy = RestartPolicy.from_env({CRASH_LOOP_ENV: "3/10"})
    r = make_run(tmp_path, policy=policy)
    r.world.dies_on_restart[SYNAPSE] = 1
    r.clock.at(5, r.world.kill(SYNAPSE))
    assert r.go() == EXIT_SYNAPSE
    assert len(r.world.started(SYNAPSE)) == 3
    assert "synapse is crash-looping: it exited unexpectedly 3 times within 10 s" in r.log()


def test_crashes_spread_out_are_not_a_loop(tmp_path: Path) -> None:
    """A crash every 16 s (when it runs) for five minutes: never 5 within a minute, so it is
    restarted each time, however long the back-off has grown."""
    r = make_run(tmp_path)
    for t in range(16, 300, 16):
        r.clock.at(t, r.world.kill(APPSERVICE, if_running=True))
    r.clock.at(330, r.sup.request_stop)
    assert r.go() == EXIT_OK
    assert r.world.kills >= 8
    assert r.sup.records()[APPSERVICE].restarts == r.world.kills
    assert "crash-looping" not in r.log()


# --- where no restart applies --------------------------------------------------------------------


def test_a_death_during_startup_stops_everything(tmp_path: Path) -> None:
    r = make_run(tmp_path)
    r.world.dies_at_once[APPSERVICE] = 2
    assert r.go() == EXIT_APPSERVICE
    assert len(r.world.started(APPSERVICE)) == 1
    assert "appservice exited unexpectedly (status 2); stopping everything" in r.log()
    assert r.sup.records()[APPSERVICE].state is ProcessState.EXITED


def test_worker_mode_main_process_death_stops_everything(tmp_path: Path) -> None:
    specs = [
        spec(SYNAPSE, MAIN, 0, EXIT_SYNAPSE, restartable=False),
        spec("generic1", WORKER, 2, EXIT_SYNAPSE),
        spec(APPSERVICE, API, 3, EXIT_APPSERVICE),
    ]
    r = make_run(tmp_path, specs)
    r.clock.at(5, r.world.kill("generic1"))
    r.clock.at(10, r.world.kill(SYNAPSE))
    assert r.go() == EXIT_SYNAPSE
    assert len(r.world.started("generic1")) == 2  # a worker is restarted
    assert "synapse exited unexpectedly (status -9); stopping everything" in r.log()
    assert r.dd.last_exit_file.read_text().endswith("synapse exited unexpectedly (status -9)\n")


def test_a_held_service_stays_stopped_until_released(tmp_path: Path) -> None:
    r = make_run(tmp_path)
    hold = r.dd.hold_file(APPSERVICE)

    def pause() -> None:
        hold.touch()
        r.sup.request_reconcile()

    def resume() -> None:
        hold.unlink()
        r.sup.request_reconcile()

    r.clock.at(5, pause)
    r.clock.at(100, resume)
    r.clock.at(110, r.sup.request_stop)
    assert r.go() == EXIT_OK
    assert r.spawn_times(APPSERVICE)[1] == pytest.approx(100, abs=2 * POLL_INTERVAL)
    assert "stopping appservice on request" in r.log()
    assert "starting appservice on request" in r.log()
    assert r.sup.records()[APPSERVICE].restarts == 0  # not a crash


def test_a_service_held_while_backing_off_is_not_started(tmp_path: Path) -> None:
    r = make_run(tmp_path, policy=RestartPolicy(first_delay=10))
    r.clock.at(5, r.world.kill(APPSERVICE))  # restart due at 15

    def pause() -> None:
        r.dd.hold_file(APPSERVICE).touch()
        r.sup.request_reconcile()

    r.clock.at(6, pause)
    r.clock.at(30, r.sup.request_stop)
    assert r.go() == EXIT_OK
    assert len(r.world.started(APPSERVICE)) == 1


def test_json_output_goes_through_the_injected_output(tmp_path: Path) -> None:
    r = make_run(tmp_path, log_format="json")
    r.clock.at(1, r.sup.request_stop)
    assert r.go() == EXIT_OK
    records = [json.loads(line) for line in r.lines]
    [started] = [rec for rec in records if rec["msg"].startswith("started synapse (pid ")]
    assert started["ts"].startswith("2027-01-15T08:00:00")  # the fake wall clock
    assert started["level"] == "info" and started["logger"] == "agent-chat-server"
    assert any(rec["msg"].startswith("ready in ") for rec in records)


# --- the state table and the setting -------------------------------------------------------------


def test_state_changes_outside_the_table_are_refused() -> None:
    rec = ProcessRecord("x")
    with pytest.raises(InvalidTransition):
        rec.to(ProcessState.RUNNING)  # STOPPED -> RUNNING skips STARTING
    rec.spawned(1, 0.0, 0.0)
    rec.died(1, 1.0, RestartPolicy(), restartable=True)
    assert rec.state is ProcessState.BACKOFF and rec.restart_at == 1.5
    with pytest.raises(InvalidTransition):
        rec.to(ProcessState.RUNNING)
    rec.spawned(2, 1.5, 10.0)
    assert (rec.state, rec.restarts, rec.last_restart) == (ProcessState.STARTING, 1, 10.0)


@pytest.mark.parametrize("text", ["5", "x/60", "1/60", "5/0", "5/-1", "5/60/1", "0/0"])
def test_a_malformed_crash_loop_setting_is_refused_in_one_line(text: str) -> None:
    with pytest.raises(ValueError) as e:
        RestartPolicy.from_env({CRASH_LOOP_ENV: text})
    assert CRASH_LOOP_ENV in str(e.value) and "\n" not in str(e.value)


def test_the_crash_loop_setting_defaults_to_5_in_60_s() -> None:
    assert RestartPolicy.from_env({}) == RestartPolicy(crash_limit=5, crash_window=60.0)
    assert RestartPolicy.from_env({CRASH_LOOP_ENV: " 10/120 "}).describe() == (
        "10 times within 120 s"
    )
