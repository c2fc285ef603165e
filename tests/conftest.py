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

Plain helpers (no fixtures) are in helpers.py.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, redirect_stdout
from dataclasses import dataclass
from io import StringIO
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit
import asyncio
import hashlib
import hmac
import os
import random
import secrets
import socket

import pytest

from agent_chat_appservice.config import Config
from agent_chat_server import control
from agent_chat_server.files import load_yaml
from agent_chat_server.init import InitOptions, init_data_dir
from agent_chat_server.paths import DataDir
from helpers import Ac, http_json, reap_spawned, unique

POSTGRES_ENV = "AGENT_CHAT_TEST_POSTGRES"
POSTGRES_SKIP = f"{POSTGRES_ENV} is not set: PostgreSQL tests skipped"
START_TIMEOUT = 90.0


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (see :func:`free_port_block`)."""
    return free_port_block(1)


def free_ports(n: int) -> list[int]:
    """``n`` distinct free ports."""
    ports: set[int] = set()
    while len(ports) < n:
        ports.add(free_port())
    return sorted(ports)


def _log_tails(dd: DataDir, lines: int = 30) -> str:
    out = []
    for path in (dd.supervisor_log, dd.appservice_log, dd.synapse_console_log, dd.synapse_log):
        if path.exists():
            tail = path.read_text(errors="replace").splitlines()[-lines:]
            out.append(f"--- {path} ---\n" + "\n".join(tail))
    return "\n".join(out)


@dataclass
class Stack:
    """A running Synapse + appservice in a temp data dir."""

    dd: DataDir
    config: Config
    registration_shared_secret: str

    @property
    def data_dir(self) -> Path:
        return self.dd.root

    @property
    def server_name(self) -> str:
        return self.config.server_name

    @property
    def synapse_url(self) -> str:
        return self.config.homeserver_url

    @property
    def api_url(self) -> str:
        return self.config.api_url

    @property
    def api_base(self) -> str:
        return self.api_url + "/_agent_chat/v1"

    @property
    def as_token(self) -> str:
        return self.config.as_token

    @property
    def hs_token(self) -> str:
        return self.config.hs_token

    @property
    def registration_token(self) -> str:
        return self.config.registration_token

    @property
    def database(self) -> str:
        return self.config.database

    def stop_appservice(self) -> None:
        """Stop only the appservice (Synapse keeps running and queues transactions)."""
        control.pause_service(self.dd, "appservice")

    def start_appservice(self) -> None:
        """Start the appservice again; return once it is healthy and Synapse's ping works."""
        control.resume_service(self.dd, "appservice", START_TIMEOUT)

    def restart_synapse(self) -> None:
        """Stop and start Synapse; return once everything is healthy again."""
        control.restart_service(self.dd, "synapse", START_TIMEOUT)

    def wait_healthy(self, timeout: float = START_TIMEOUT) -> None:
        control.wait_healthy(self.dd, self.config, timeout)

    def create_human(
        self, localpart: str, password: str | None = None, admin: bool = False
    ) -> dict[str, Any]:
        """Register a human with the shared secret (registration is closed).

        Returns Synapse's answer: user_id, access_token, device_id (plus "password").
        """
        password = password or secrets.token_urlsafe(12)
        url = f"{self.synapse_url}/_synapse/admin/v1/register"
        status, body = http_json("GET", url)
        assert status == 200, body
        nonce = body["nonce"]
        mac = hmac.new(self.registration_shared_secret.encode(), digestmod=hashlib.sha1)
        mac.update(
            b"\x00".join(
                [
                    nonce.encode(),
                    localpart.encode(),
                    password.encode(),
                    b"admin" if admin else b"notadmin",
                ]
            )
        )
        status, body = http_json(
            "POST",
            url,
            {
                "nonce": nonce,
                "username": localpart,
                "password": password,
                "admin": admin,
                "mac": mac.hexdigest(),
            },
        )
        assert status == 200, body
        return {**body, "password": password}


def start_stack(root: Path, database: str | None = None, ports: list[int] | None = None) -> Stack:
    """init + start a stack in ``root`` on free ports (the same code as the CLI)."""
    synapse_port, api_port = ports or free_ports(2)
    dd = DataDir.at(root)
    init_data_dir(dd, InitOptions(synapse_port=synapse_port, api_port=api_port, database=database))
    try:
        control.start_background(dd, timeout=START_TIMEOUT, tie_to_caller=True)
    except Exception as e:
        tails = _log_tails(dd)
        control.stop(dd)
        pytest.fail(f"could not start the test stack: {e}\n{tails}", pytrace=False)
    hs = load_yaml(dd.homeserver_yaml)
    return Stack(dd, control.load_config(dd), hs["registration_shared_secret"])


@pytest.fixture(scope="session", autouse=True)
def _isolated_client_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Nothing in the test session reads or writes the real ~/.agent-chat."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AGENT_CHAT_HOME", str(tmp_path_factory.mktemp("agent-chat-home")))
        yield


@pytest.fixture(autouse=True)
def _reap_spawned() -> Iterator[None]:
    """Whatever a test started through helpers.spawn is killed when it ends, pass or fail."""
    try:
        yield
    finally:
        reap_spawned()


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Synapse + appservice (SQLite), for the whole session."""
    st = start_stack(tmp_path_factory.mktemp("stack") / "server")
    try:
        yield st
    finally:
        control.stop(st.dd)


# --- PostgreSQL ------------------------------------------------------------------------------


def _run_async(make: Callable[[], Any]) -> Any:
    """Run a coroutine in a private loop on another thread (safe inside pytest-asyncio)."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(lambda: asyncio.run(make())).result()


def _pg_execute(admin_url: str, sql: str) -> None:
    import asyncpg

    async def go() -> None:
        conn = await asyncpg.connect(admin_url)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    _run_async(go)


@dataclass
class _PgDatabase:
    admin_url: str
    name: str

    @property
    def url(self) -> str:
        parts = urlsplit(self.admin_url)
        return urlunsplit(parts._replace(path="/" + self.name))

    def drop(self) -> None:
        _pg_execute(self.admin_url, f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


def create_pg_database(prefix: str = "agent_chat_test") -> _PgDatabase:
    """A fresh database on the server named by AGENT_CHAT_TEST_POSTGRES (or skip)."""
    admin_url = os.environ.get(POSTGRES_ENV)
    if not admin_url:
        pytest.skip(POSTGRES_SKIP)
    db = _PgDatabase(admin_url, f"{prefix}_{secrets.token_hex(4)}")
    _pg_execute(admin_url, f'CREATE DATABASE "{db.name}"')
    return db


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

REDIS_ENV = "AGENT_CHAT_TEST_REDIS"
REDIS_SKIP = f"{REDIS_ENV} is not set (e.g. redis://127.0.0.1:6379): Synapse worker tests skipped"


def _ephemeral_ports_start() -> int:
    """Where the kernel's ephemeral range starts (Linux; 32768 elsewhere)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port_block(n: int) -> int:
    """The first of ``n`` consecutive ports free on 127.0.0.1 right now, below the ephemeral
    range: outgoing connections (to Redis, PostgreSQL, between workers) take their local ports
    from that range, and one took a worker's port between this choice and the worker's bind
    (CI, 'Address already in use')."""
    low, top = 10000, _ephemeral_ports_start() - n
    if top - low < 1000:  # a machine whose ephemeral range starts low: the old choice
        low, top = 30000, 50000
    for _ in range(200):
        base = low + secrets.randbelow(top - low)
        if all(_port_free(base + i) for i in range(n)):
            return base
    raise RuntimeError(f"no {n} consecutive free ports")


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@dataclass
class WorkerStack(Stack):
    """A worker-mode stack: main, persister1, generic1..N, the appservice process(es)."""

    workers: int = 2
    api_replicas: int = 1
    init_output: str = ""


#: Redis databases for worker stacks, one each (Synapse's cache keys are not per server name).
_REDIS_DBS = list(range(1, 16))
random.shuffle(_REDIS_DBS)


@pytest.fixture(scope="module")
def worker_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerStack]:
    """A worker-mode stack for one module (test_workers.py kills its processes)."""
    with _worker_stack(tmp_path_factory) as st:
        yield st


@pytest.fixture(scope="module")
def shared_worker_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerStack]:
    """A worker-mode stack for a module of tests marked ``workers`` (``any_stack``'s
    "workers"). Per module, so that its eight processes are gone before test_workers.py
    kills processes of its own on this 2-core machine."""
    with _worker_stack(tmp_path_factory) as st:
        yield st


@contextmanager
def _worker_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerStack]:
    """``init --workers 2 --api-replicas 2`` (through the CLI) on fresh PostgreSQL databases
    (init creates them) and a Redis database of its own (AGENT_CHAT_TEST_REDIS; a unique server
    name keeps Synapse's Redis channel apart from other stacks'), started as ``start`` does;
    stopped and the databases dropped at the end."""
    from agent_chat_server.cli import main as server_cli

    redis = os.environ.get(REDIS_ENV)
    admin_url = os.environ.get(POSTGRES_ENV)
    if not redis:
        pytest.skip(REDIS_SKIP)
    if not admin_url:
        pytest.skip(POSTGRES_SKIP)
    tag = secrets.token_hex(4)
    synapse_db = _PgDatabase(admin_url, f"agent_chat_test_syn_{tag}")
    appservice_db = _PgDatabase(admin_url, f"agent_chat_test_as_{tag}")
    root = tmp_path_factory.mktemp("worker-stack") / "server"
    dd = DataDir.at(root)
    workers, replicas = 2, 2
    # One block: Synapse, the API processes, then the workers' ports (main's replication,
    # the persister, the generic workers, the transactions port).
    synapse_port = free_port_block(1 + replicas + 3 + workers)
    api_port, base = synapse_port + 1, synapse_port + 1 + replicas
    args = [
        *("init", "--data-dir", str(root), "--server-name", f"w{tag}.test"),
        *("--synapse-port", str(synapse_port), "--api-port", str(api_port)),
        *("--synapse-database", synapse_db.url, "--database", appservice_db.url),
        *("--workers", str(workers), "--api-replicas", str(replicas)),
        *("--redis", "redis://"),
        *("--worker-port-base", str(base)),
    ]
    if not _REDIS_DBS:
        pytest.skip("no Redis database left for another worker stack")
    redis_url = f"{redis.rstrip('/')}/{_REDIS_DBS.pop()}"
    args[args.index("--redis") + 1] = redis_url
    out = StringIO()
    try:
        with redirect_stdout(out):
            assert server_cli(args) == 0, out.getvalue()
        try:
            control.start_background(dd, timeout=START_TIMEOUT, tie_to_caller=True)
        except Exception as e:
            pytest.fail(f"could not start the worker stack: {e}\n{_log_tails(dd)}", pytrace=False)
        hs = load_yaml(dd.homeserver_yaml)
        yield WorkerStack(
            dd,
            control.load_config(dd),
            hs["registration_shared_secret"],
            workers=workers,
            api_replicas=replicas,
            init_output=out.getvalue(),
        )
    finally:
        if dd.root.is_dir():
            control.stop(dd)
        synapse_db.drop()
        appservice_db.drop()
        _flush_redis(redis_url)


def _flush_redis(url: str) -> None:
    """Drop the cache keys Synapse left in its Redis database (a cache: nobody misses them)."""
    parts = urlsplit(url)
    db = parts.path.strip("/") or "0"
    cmds = b"*2\r\n$6\r\nSELECT\r\n$%d\r\n%s\r\n*1\r\n$7\r\nFLUSHDB\r\n" % (
        len(db),
        db.encode(),
    )
    try:
        with socket.create_connection((parts.hostname, parts.port or 6379), 5) as s:
            s.sendall(cmds)
            s.recv(100)
    except OSError:
        pass
