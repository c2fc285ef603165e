"""Production on PostgreSQL: `init --database --synapse-database` creates correct databases (or
refuses wrong ones with the command that fixes them), and the whole stack runs on them."""

from __future__ import annotations

from pathlib import Path
import re
import shlex
import subprocess
import time

import pytest

from agent_chat_appservice.config import Config
from agent_chat_server import postgres
from agent_chat_server.errors import ServerError
from agent_chat_server.files import load_yaml
from deploy_helpers import (
    kill_leftovers,
    on_ports,
    pg_admin_url,
    pg_names,
    pg_query,
    pg_url_for,
    run_cli,
)
from helpers import free_ports, register_at, wait_for

pytestmark = pytest.mark.postgres


def test_full_stack_on_postgres_survives_a_restart(tmp_path: Path) -> None:
    admin = pg_admin_url()
    root = tmp_path / "server"
    synapse_port, api_port = free_ports(2)
    with pg_names("ac_deploy_syn", "ac_deploy_as") as (syn_db, as_db):
        syn_url, as_url = pg_url_for(admin, syn_db), pg_url_for(admin, as_db)
        try:
            t0 = time.monotonic()
            r = run_cli(
                "init",
                *on_ports(root, synapse_port, api_port),
                "--database",
                as_url,
                "--synapse-database",
                syn_url,
                check=True,
            )
            assert f"created database {syn_db}" in r.stdout and "(collation C)" in r.stdout
            assert f"created database {as_db}" in r.stdout
            [(collate, ctype)] = pg_query(
                admin, "SELECT datcollate, datctype FROM pg_database WHERE datname=%s", syn_db
            )
            assert (collate, ctype) == ("C", "C")

            hs = load_yaml(root / "homeserver.yaml")
            assert hs["database"]["name"] == "psycopg2"
            args = hs["database"]["args"]
            assert args["database"] == syn_db and args["cp_min"] >= 1 and args["cp_max"] >= 1
            assert {"user", "host", "port"} <= set(args)
            config = Config.load(root / "appservice.yaml")
            assert config.database == as_url
            assert not (root / "homeserver.db").exists()

            run_cli("start", "--data-dir", str(root), "--no-client-config", check=True)
            started = time.monotonic() - t0
            a = register_at(config.api_url, config.registration_token)
            b = register_at(config.api_url, config.registration_token)
            assert b.count("#general") == 0
            a.send("#general", "hello on postgres")
            wait_for(lambda: b.count("#general") == 1, what="b's unread count")

            # Both services keep their state in PostgreSQL, not in the data dir.
            assert not (root / "homeserver.db").exists() and not (root / "appservice.db").exists()
            assert pg_query(as_url, "SELECT count(*) FROM pg_tables WHERE schemaname='public'")[0][
                0
            ]
            assert pg_query(syn_url, "SELECT count(*) FROM events")[0][0] > 0

            run_cli("stop", "--data-dir", str(root), check=True)
            run_cli("start", "--data-dir", str(root), "--no-client-config", check=True)
            assert b.count("#general") == 1
            assert "hello on postgres" in b.bodies("#general")
            a.send("#general", "after the restart")
            wait_for(lambda: b.count("#general") == 2, what="b's count after restart")
            assert started < 60, f"init + first start took {started:.0f} s"
        finally:
            run_cli("stop", "--data-dir", str(root))
            kill_leftovers(str(root))


def test_wrong_collation_is_refused_with_the_command_that_fixes_it(tmp_path: Path) -> None:
    admin = pg_admin_url()
    with pg_names("ac_deploy_badloc") as (name,):
        pg_query(
            admin,
            f'CREATE DATABASE "{name}" TEMPLATE template0 '
            "LC_COLLATE 'C.UTF-8' LC_CTYPE 'C.UTF-8'",
        )
        root = tmp_path / "server"
        r = run_cli("init", "--data-dir", str(root), "--synapse-database", pg_url_for(admin, name))
        assert r.returncode == 1, r.stdout + r.stderr
        [line] = r.stderr.strip().splitlines()
        assert "LC_COLLATE 'C.UTF-8'" in line and "Synapse needs 'C'" in line
        assert not (root / "homeserver.yaml").exists()
        # The command in the message, run as printed, fixes it.
        command = line.split("recreate it: ", 1)[1].split("  (or name", 1)[0]
        argv = shlex.split(command)
        assert argv[0] == "psql"
        subprocess.run(argv, check=True, capture_output=True, timeout=30)
        r = run_cli(
            "init",
            "--data-dir",
            str(root),
            "--synapse-database",
            pg_url_for(admin, name),
            "--skip-db-check",
        )
        assert r.returncode == 0, r.stderr
        [(collate, ctype)] = pg_query(
            admin, "SELECT datcollate, datctype FROM pg_database WHERE datname=%s", name
        )
        assert (collate, ctype) == ("C", "C")


def test_existing_c_database_is_used_as_is(tmp_path: Path) -> None:
    admin = pg_admin_url()
    with pg_names("ac_deploy_ok") as (name,):
        pg_query(admin, postgres.create_database_sql(name, for_synapse=True))
        r = run_cli(
            "init",
            "--data-dir",
            str(tmp_path / "s"),
            "--synapse-database",
            pg_url_for(admin, name),
            check=True,
        )
        assert f"database {name} at " in r.stdout and "is ready for Synapse" in r.stdout


def test_same_database_for_both_is_refused(tmp_path: Path) -> None:
    admin = pg_admin_url()
    url = pg_url_for(admin, "ac_deploy_same")
    r = run_cli(
        "init", "--data-dir", str(tmp_path / "s"), "--database", url, "--synapse-database", url
    )
    assert r.returncode == 1 and "same PostgreSQL database" in r.stderr


def test_unreachable_server_is_one_line(tmp_path: Path) -> None:
    [port] = free_ports(1)
    r = run_cli(
        "init",
        "--data-dir",
        str(tmp_path / "s"),
        "--synapse-database",
        f"postgres://postgres@127.0.0.1:{port}/synapse",
    )
    assert r.returncode == 1
    [line] = r.stderr.strip().splitlines()
    assert "cannot connect to PostgreSQL at 127.0.0.1:" in line and "Traceback" not in r.stderr


def test_too_old_server_is_refused() -> None:
    target = postgres.PgTarget.parse("postgres://u:secret@db.example:5433/synapse")
    with pytest.raises(
        ServerError,
        match=re.escape("PostgreSQL 13 at db.example:5433 is too old: Synapse needs 14 or newer"),
    ):
        postgres.check_server_version(target, 130011, for_synapse=True)
    postgres.check_server_version(target, 130011, for_synapse=False)  # the appservice is fine
    postgres.check_server_version(target, 140000, for_synapse=True)


def test_urls_and_messages_never_show_the_password() -> None:
    target = postgres.PgTarget.parse("postgres://u%40x:s%3Acret@db.example:5433/syn%20apse")
    assert (target.user, target.password, target.dbname) == ("u@x", "s:cret", "syn apse")
    assert target.synapse_args() == {
        "user": "u@x",
        "password": "s:cret",
        "database": "syn apse",
        "host": "db.example",
        "port": 5433,
    }
    assert postgres.PgTarget.parse(target.url(with_password=True)) == target
    with pytest.raises(ServerError) as e:
        postgres.check_synapse_locale(target, "en_US.UTF-8", "en_US.UTF-8")
    assert "s:cret" not in str(e.value) and "s%3Acret" not in str(e.value)
    assert postgres.redact("postgres://u:pw@h/db") == "postgres://u:PASSWORD@h/db"


def test_migrate_appservice_db_from_sqlite_keeps_everything(tmp_path: Path) -> None:
    admin = pg_admin_url()
    root = tmp_path / "server"
    synapse_port, api_port = free_ports(2)
    with pg_names("ac_migrate_as") as (as_db,):
        as_url = pg_url_for(admin, as_db)
        try:
            ports = on_ports(root, synapse_port, api_port)
            run_cli("start", *ports, "--no-client-config", check=True)
            config = Config.load(root / "appservice.yaml")
            a = register_at(config.api_url, config.registration_token)
            b = register_at(config.api_url, config.registration_token)
            for i in range(3):
                a.send("#general", f"before {i}")
            wait_for(lambda: b.count("#general") == 3, what="b's count")

            r = run_cli("migrate-db", "--data-dir", str(root), "--to", as_url)
            assert r.returncode == 1 and "is running: stop it first" in r.stderr
            run_cli("stop", "--data-dir", str(root), check=True)
            r = run_cli("migrate-db", "--data-dir", str(root), "--to", as_url, check=True)
            assert "copied " in r.stdout and "identity " in r.stdout
            assert Config.load(root / "appservice.yaml").database == as_url

            run_cli("start", "--data-dir", str(root), "--no-client-config", check=True)
            assert b.count("#general") == 3  # same tokens, same ledger
            assert b.bodies("#general")[-3:] == ["before 0", "before 1", "before 2"]
            a.send("#general", "after")  # serial sequences continue past the copied rows
            wait_for(lambda: b.count("#general") == 4, what="b's count after migration")
            assert b.bodies("#general")[-1] == "after"
            c = register_at(config.api_url, config.registration_token)
            assert c.nick not in (a.nick, b.nick)

            run_cli("stop", "--data-dir", str(root), check=True)
            r = run_cli("migrate-db", "--data-dir", str(root), "--to", as_url)
            assert r.returncode == 1 and "already uses" in r.stderr
        finally:
            run_cli("stop", "--data-dir", str(root))
            kill_leftovers(str(root))
