"""Shared fixtures: a throwaway Synapse + appservice started through agent-chat-server's own code.

Fixtures:
    stack       session: the appservice on SQLite.
    worker_stack  module: Synapse workers + 2 appservice processes on PostgreSQL and Redis
                (needs AGENT_CHAT_TEST_POSTGRES and AGENT_CHAT_TEST_REDIS).
    pg_stack    session: the appservice on PostgreSQL (needs AGENT_CHAT_TEST_POSTGRES).
    any_stack   parametrized over ["sqlite", "postgres"]: stack or pg_stack.
    pg_url      a fresh, empty PostgreSQL database URL (dropped afterwards).
    database_url  parametrized: an empty SQLite file, then a fresh PostgreSQL database.
    agent_home  a temp dir set as AGENT_CHAT_HOME.
    make_ac     makes an ``Ac`` (the ``ac`` console script) with its own home, on ``stack``.
    room        an owner ``Ac`` (a fresh identity) and a fresh room it created.

Plain helpers (no fixtures), ``Stack`` and how stacks are started are in helpers.py: test
modules import them from there.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from agent_chat_server import control
from helpers import (
    Ac,
    Stack,
    WorkerStack,
    create_pg_database,
    reap_spawned,
    start_stack,
    start_worker_stack,
    stop_detached,
    unique,
)


@pytest.fixture(scope="session", autouse=True)
def _isolated_client_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Nothing in the test session reads or writes the real ~/.agent-chat."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AGENT_CHAT_HOME", str(tmp_path_factory.mktemp("agent-chat-home")))
        yield


@pytest.fixture(autouse=True)
def _reap_spawned(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Whatever a test started through helpers.spawn is killed when it ends, pass or fail, and
    so are the processes the client detaches for a home of this session (wake hubs,
    connection keepers): they would otherwise leave on their own only when idle."""
    try:
        yield
    finally:
        reap_spawned()
        stop_detached(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Synapse + appservice (SQLite), for the whole session."""
    st = start_stack(tmp_path_factory.mktemp("stack") / "server")
    try:
        yield st
    finally:
        control.stop(st.dd)


# --- PostgreSQL ------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def pg_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Synapse (SQLite) + appservice on a fresh PostgreSQL database, for the whole session."""
    db = create_pg_database()
    try:
        st = start_stack(tmp_path_factory.mktemp("pg-stack") / "server", database=db.url)
        try:
            yield st
        finally:
            control.stop(st.dd)
    finally:
        db.drop()


STACKS = {"sqlite": "stack", "postgres": "pg_stack", "workers": "shared_worker_stack"}


@pytest.fixture
def any_stack(request: pytest.FixtureRequest) -> Stack:
    """The SQLite stack, then the PostgreSQL one (skipped without AGENT_CHAT_TEST_POSTGRES);
    for tests marked ``workers``, then the worker-mode one (Synapse workers, two appservice
    processes; skipped without AGENT_CHAT_TEST_REDIS)."""
    return request.getfixturevalue(STACKS[request.param])


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """``any_stack``: SQLite, then PostgreSQL, and for a test marked ``workers`` the
    worker-mode stack too."""
    if "any_stack" in metafunc.fixturenames:
        kinds = (
            list(STACKS)
            if metafunc.definition.get_closest_marker("workers")
            else ["sqlite", "postgres"]
        )
        metafunc.parametrize("any_stack", kinds, indirect=True)


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database URL, dropped after the test."""
    db = create_pg_database()
    try:
        yield db.url
    finally:
        db.drop()


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty appservice database: a SQLite file, then a PostgreSQL database (skipped
    without AGENT_CHAT_TEST_POSTGRES)."""
    if request.param == "sqlite":
        return f"sqlite:{tmp_path / 'appservice.db'}"
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def agent_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A temp dir set as AGENT_CHAT_HOME."""
    home = tmp_path / "agent-home"
    home.mkdir()
    monkeypatch.setenv("AGENT_CHAT_HOME", str(home))
    return home


# --- the ac console script -------------------------------------------------------------------


@pytest.fixture
def make_ac(stack: Stack, tmp_path: Path) -> Callable[..., Ac]:
    """``make_ac(name=None, registration_token="default")``: an ``Ac`` with its own home."""

    def make(name: str | None = None, registration_token: str | None = "default") -> Ac:
        token = stack.registration_token if registration_token == "default" else registration_token
        return Ac(tmp_path / (name or unique("home")), stack.api_url, token)

    return make


@pytest.fixture
def room(make_ac: Callable[..., Ac]) -> tuple[Ac, str]:
    """An owner agent (registered under a fresh nick) and a fresh room it created."""
    owner = make_ac("owner")
    owner.ok("register", unique("Owner"))
    name = "#" + unique("t-")
    owner.ok("create-room", name, "--topic", "test room")
    return owner, name


# --- Synapse worker mode (tests/test_workers.py) ---------------------------------------------


@pytest.fixture(scope="module")
def worker_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerStack]:
    """A worker-mode stack for one module (test_workers.py kills its processes)."""
    with start_worker_stack(tmp_path_factory) as st:
        yield st


@pytest.fixture(scope="module")
def shared_worker_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerStack]:
    """A worker-mode stack for a module of tests marked ``workers`` (``any_stack``'s
    "workers"). Per module, so that its eight processes are gone before test_workers.py
    kills processes of its own on this 2-core machine."""
    with start_worker_stack(tmp_path_factory) as st:
        yield st
