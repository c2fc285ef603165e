"""Helpers for the deployment tests (tests/test_deploy_*.py): the CLI as a subprocess, agents
over the REST API, throwaway PostgreSQL databases."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit
import os
import secrets
import signal
import subprocess
import sys

import pytest

from helpers import POSTGRES_ENV, POSTGRES_SKIP, processes_mentioning

REPO = Path(__file__).resolve().parent.parent


def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 150.0, check: bool = False
) -> subprocess.CompletedProcess[str]:
    """``agent-chat-server ARGS`` as a user would run it."""
    r = subprocess.run(
        [sys.executable, "-m", "agent_chat_server", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        env={**os.environ, **(env or {})},
    )
    if check:
        assert r.returncode == 0, f"{args}: {r.returncode}\n{r.stdout}\n{r.stderr}"
    return r


def on_ports(root: Path, synapse_port: int, api_port: int) -> list[str]:
    """``--data-dir ROOT --synapse-port N --api-port M``: a data dir on this test's ports."""
    return [
        "--data-dir",
        str(root),
        "--synapse-port",
        str(synapse_port),
        "--api-port",
        str(api_port),
    ]


# --- PostgreSQL --------------------------------------------------------------------------------


def pg_admin_url() -> str:
    url = os.environ.get(POSTGRES_ENV)
    if not url:
        pytest.skip(POSTGRES_SKIP)
    return url


def pg_url_for(admin_url: str, dbname: str) -> str:
    return urlunsplit(urlsplit(admin_url)._replace(path="/" + dbname))


def pg_query(url: str, sql: str, *params: Any, autocommit: bool = True) -> list[tuple[Any, ...]]:
    import psycopg2

    conn = psycopg2.connect(url)
    try:
        conn.autocommit = autocommit
        with conn.cursor() as cur:
            cur.execute(sql, params or None)
            return list(cur.fetchall()) if cur.description else []
    finally:
        conn.close()


def pg_drop(admin_url: str, *names: str) -> None:
    for name in names:
        pg_query(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def pg_names(*prefixes: str) -> Iterator[list[str]]:
    """Fresh database names (not created); whatever exists under them afterwards is dropped."""
    admin = pg_admin_url()
    names = [f"{p}_{secrets.token_hex(4)}" for p in prefixes]
    try:
        yield names
    finally:
        pg_drop(admin, *names)


def kill_leftovers(needle: str) -> None:
    """SIGKILL anything still mentioning ``needle`` (a temp dir of this test)."""
    for pid in processes_mentioning(needle):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
