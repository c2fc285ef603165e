"""server/docker-compose.yml and server/Dockerfile agree with what `init` writes when run with the
compose file's own options (no Docker engine needed: the files are parsed, init is run for real).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
import re

import pytest

from agent_chat_appservice.config import Config
from agent_chat_server.files import load_yaml
from agent_chat_server.postgres import PgTarget
from deploy_helpers import REPO, run_cli

COMPOSE = REPO / "server" / "docker-compose.yml"
DOCKERFILE = REPO / "server" / "Dockerfile"
ENV = {"POSTGRES_PASSWORD": "0123abcd" * 4}
_VAR = re.compile(r"\$\{([A-Z_]+)(?:(:-|:\?)([^}]*))?\}")


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """Compose's ${VAR}, ${VAR:-default} and ${VAR:?error} substitution."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def sub(m: re.Match[str]) -> str:
        name, op, arg = m.group(1), m.group(2), m.group(3)
        if env.get(name):
            return env[name]
        if op == ":?":
            raise KeyError(f"{name}: {arg}")
        return arg or ""

    return _VAR.sub(sub, value)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return interpolate(load_yaml(COMPOSE), ENV)


@pytest.fixture(scope="module")
def generated(compose: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Run the init service's command here, with /data moved to a temp dir."""
    command = list(compose["services"]["init"]["command"])
    assert command[:2] == ["agent-chat-server", "init"]
    args = command[2:]
    i = args.index("--data-dir")
    assert args[i + 1] == "/data"
    root = tmp_path_factory.mktemp("compose") / "data"
    args[i + 1] = str(root)
    # No PostgreSQL container here: skip the connection (the PostgreSQL tests cover it).
    run_cli("init", *args, "--skip-db-check", check=True)
    return root


def _in_container(path: str, root: Path) -> str:
    """A path init wrote under the temp root, as the containers see it under /data."""
    assert path == str(root) or path.startswith(str(root) + "/"), path
    return "/data" + path[len(str(root)) :]


def _mount(service: dict[str, Any], target: str) -> str | None:
    for volume in service.get("volumes") or []:
        source, _, where = str(volume).partition(":")
        if where.split(":")[0] == target:
            return source
    return None


def _published(service: dict[str, Any]) -> list[tuple[str, int, int]]:
    out = []
    for spec in service.get("ports") or []:
        host, host_port, container_port = str(spec).rsplit(":", 2)
        out.append((host, int(host_port), int(container_port)))
    return out


def test_the_secret_is_required() -> None:
    with pytest.raises(KeyError, match="POSTGRES_PASSWORD"):
        interpolate(load_yaml(COMPOSE), {})


def test_every_service_shares_one_data_volume(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {"postgres", "init", "synapse", "appservice"}
    for name in ("init", "synapse", "appservice"):
        assert _mount(services[name], "/data") == "data", name
    assert "data" in compose["volumes"] and "postgres" in compose["volumes"]
    assert _mount(services["postgres"], "/var/lib/postgresql/data") == "postgres"


def test_startup_order_and_health_checks(compose: dict[str, Any]) -> None:
    s = compose["services"]
    assert s["init"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert s["init"]["restart"] == "no"
    for name in ("synapse", "appservice"):
        assert s[name]["depends_on"]["init"]["condition"] == "service_completed_successfully"
        assert s[name]["restart"] == "unless-stopped"
    assert s["appservice"]["depends_on"]["synapse"]["condition"] == "service_healthy"
    for name in ("postgres", "synapse", "appservice"):
        assert s[name]["healthcheck"]["test"], name


def test_synapse_container_matches_homeserver_yaml(
    compose: dict[str, Any], generated: Path
) -> None:
    syn = compose["services"]["synapse"]
    assert syn["image"].startswith("matrixdotorg/synapse")
    hs = load_yaml(generated / "homeserver.yaml")
    assert syn["environment"]["SYNAPSE_CONFIG_PATH"] == "/data/homeserver.yaml"
    [listener] = hs["listeners"]
    assert listener["bind_addresses"] == ["0.0.0.0"]  # reachable from the other containers
    assert [p[2] for p in _published(syn)] == [listener["port"]]
    assert f"localhost:{listener['port']}/health" in " ".join(syn["healthcheck"]["test"])
    for key in ("log_config", "media_store_path", "signing_key_path"):
        assert _in_container(hs[key], generated).startswith("/data/"), key
    assert [_in_container(f, generated) for f in hs["app_service_config_files"]] == [
        "/data/registration.yaml"
    ]
    log_config = load_yaml(generated / "homeserver.log.config")
    assert (
        _in_container(log_config["handlers"]["file"]["filename"], generated)
        == "/data/logs/homeserver.log"
    )
    assert hs["public_baseurl"] == "http://localhost:8008/"
    # The Synapse image drops to UID:GID; the appservice image writes the files as that user.
    assert (syn["environment"]["UID"], syn["environment"]["GID"]) == ("991", "991")
    assert "USER 991:991" in DOCKERFILE.read_text()


def test_service_urls_name_compose_services_and_ports(
    compose: dict[str, Any], generated: Path
) -> None:
    services = compose["services"]
    hs = load_yaml(generated / "homeserver.yaml")
    reg = load_yaml(generated / "registration.yaml")
    config = Config.load(generated / "appservice.yaml")

    # Synapse -> appservice
    url = urlsplit(reg["url"])
    assert url.hostname == "appservice" and url.hostname in services
    assert url.port == config.port
    assert config.host == "0.0.0.0"
    assert [p[2] for p in _published(services["appservice"])] == [config.port]
    assert f"127.0.0.1:{config.port}/_agent_chat/v1/health" in " ".join(
        services["appservice"]["healthcheck"]["test"]
    )
    # appservice -> Synapse
    url = urlsplit(config.homeserver_url)
    assert url.hostname == "synapse" and url.hostname in services
    assert url.port == hs["listeners"][0]["port"]
    # Both read the configs from the volume.
    command = services["appservice"]["command"]
    assert command[command.index("-c") + 1] == "/data/appservice.yaml"
    assert (config.as_token, config.hs_token) == (reg["as_token"], reg["hs_token"])
    # Published on the chosen host address only.
    for name in ("synapse", "appservice"):
        assert {p[0] for p in _published(services[name])} == {"127.0.0.1"}


def test_databases_are_on_the_postgres_service(compose: dict[str, Any], generated: Path) -> None:
    pg_env = compose["services"]["postgres"]["environment"]
    hs = load_yaml(generated / "homeserver.yaml")
    config = Config.load(generated / "appservice.yaml")
    assert hs["database"]["name"] == "psycopg2"
    synapse_db = PgTarget.from_synapse(hs["database"]["args"])
    appservice_db = PgTarget.parse(config.database)
    for db in (synapse_db, appservice_db):
        assert db.host == "postgres" and db.port == 5432
        assert db.user == pg_env["POSTGRES_USER"]
        assert db.password == pg_env["POSTGRES_PASSWORD"] == ENV["POSTGRES_PASSWORD"]
    assert appservice_db.dbname == pg_env["POSTGRES_DB"]  # created by the image
    assert synapse_db.dbname != appservice_db.dbname  # created by init, collation C


def test_images_and_dockerfile_agree(compose: dict[str, Any]) -> None:
    s = compose["services"]
    assert s["init"]["image"] == s["appservice"]["image"]
    for name in ("init", "appservice"):
        build = s[name]["build"]
        context = (COMPOSE.parent / build["context"]).resolve()
        assert (context / build["dockerfile"]).resolve() == DOCKERFILE
    text = DOCKERFILE.read_text()
    for src in re.findall(r"^COPY (\S+) ", text, re.M):
        assert (REPO / src).exists(), src
    assert '"agent_chat_appservice", "-c", "/data/appservice.yaml"' in text
    # pg_dump in the image must not be older than the server it dumps.
    client = int(re.search(r"postgresql-client-(\d+)", text).group(1))  # type: ignore[union-attr]
    server = int(re.match(r"postgres:(\d+)", s["postgres"]["image"]).group(1))  # type: ignore
    assert client >= server
    ignore = (DOCKERFILE.parent / "Dockerfile.dockerignore").read_text()
    assert "**/.venv" in ignore and ".git" in ignore


def test_rerunning_init_keeps_everything(compose: dict[str, Any], generated: Path) -> None:
    """`docker compose up` runs init every time: the second run must change nothing."""
    before = {p.name: p.read_bytes() for p in generated.iterdir() if p.is_file()}
    args = list(compose["services"]["init"]["command"][2:])
    args[args.index("--data-dir") + 1] = str(generated)
    r = run_cli("init", *args, check=True)  # no --skip-db-check: existing files need no DB
    assert "wrote" not in r.stdout and "ignored" not in r.stdout, r.stdout
    assert {p.name: p.read_bytes() for p in generated.iterdir() if p.is_file()} == before


# --- server/docker-compose.workers.yml: Synapse workers, API replicas, the router ---------------

COMPOSE_WORKERS = REPO / "server" / "docker-compose.workers.yml"


@pytest.fixture(scope="module")
def wcompose() -> dict[str, Any]:
    return interpolate(load_yaml(COMPOSE_WORKERS), ENV)


@pytest.fixture(scope="module")
def wgenerated(wcompose: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The workers file's init command, run here with /data moved to a temp dir."""
    command = list(wcompose["services"]["init"]["command"])
    assert command[:2] == ["agent-chat-server", "init"]
    args = command[2:]
    args[args.index("--data-dir") + 1] = str(
        root := tmp_path_factory.mktemp("compose-workers") / "data"
    )
    run_cli("init", *args, "--skip-db-check", check=True)  # no PostgreSQL or Redis here
    return root


def _worker_names(root: Path) -> list[str]:
    return [w["name"] for w in load_yaml(root / "workers" / "topology.yaml")["synapse_workers"]]


def test_workers_compose_has_a_service_per_process(
    wcompose: dict[str, Any], wgenerated: Path
) -> None:
    services = wcompose["services"]
    workers = _worker_names(wgenerated)
    assert workers == ["persister1", "generic1", "generic2"]
    assert set(services) == {
        *("postgres", "redis", "init", "synapse", "appservice", "appservice-api", "router"),
        *workers,
    }
    for name in ("init", "synapse", "appservice", "appservice-api", *workers):
        assert _mount(services[name], "/data") == "data", name
    assert services["appservice-api"]["deploy"]["replicas"] == "2"
    assert services["appservice-api"]["image"] == services["appservice"]["image"]


def test_workers_compose_start_order(wcompose: dict[str, Any]) -> None:
    s = wcompose["services"]

    def healthy(name: str, dep: str) -> bool:
        return bool(s[name]["depends_on"][dep]["condition"] == "service_healthy")

    assert s["init"]["depends_on"]["redis"]["condition"] == "service_healthy"
    assert s["synapse"]["depends_on"]["init"]["condition"] == "service_completed_successfully"
    assert healthy("synapse", "redis") and healthy("persister1", "synapse")
    assert healthy("generic1", "persister1") and healthy("generic2", "persister1")
    assert healthy("appservice", "generic1") and healthy("appservice", "generic2")
    assert healthy("appservice-api", "appservice") and healthy("router", "appservice")
    for name, svc in s.items():
        if name != "init":
            assert svc["restart"] == "unless-stopped", name
        if name not in ("router", "init"):
            assert svc["healthcheck"]["test"], name


def test_workers_compose_matches_the_worker_configs(
    wcompose: dict[str, Any], wgenerated: Path
) -> None:
    services = wcompose["services"]
    hs = load_yaml(wgenerated / "homeserver.yaml")
    assert hs["redis"]["host"] == "redis" and hs["redis"]["host"] in services
    assert hs["stream_writers"] == {"events": "persister1"}
    assert hs["notify_appservices_from_worker"] == "generic1"
    replication = [li for li in hs["listeners"] if li["resources"][0]["names"] == ["replication"]]
    assert [li["bind_addresses"] for li in replication] == [["0.0.0.0"]]
    assert hs["instance_map"]["main"] == {"host": "synapse", "port": replication[0]["port"]}
    for name in _worker_names(wgenerated):
        svc = services[name]
        worker = load_yaml(wgenerated / "workers" / f"{name}.yaml")
        assert worker["worker_name"] == name
        [listener] = worker["worker_listeners"]
        assert listener["bind_addresses"] == ["0.0.0.0"]
        assert svc["entrypoint"][:2] == ["/start.py", "run"]
        assert svc["entrypoint"][2:] == [
            "--config-path=/data/homeserver.yaml",
            f"--config-path=/data/workers/{name}.yaml",
        ]
        assert svc["environment"]["SYNAPSE_WORKER"] == worker["worker_app"]
        assert svc["image"] == services["synapse"]["image"]
        health = " ".join(svc["healthcheck"]["test"])
        assert f"localhost:{listener['port']}/health" in health, name
        assert _in_container(worker["worker_log_config"], wgenerated).startswith("/data/")
        if name in hs["instance_map"]:
            assert hs["instance_map"][name] == {"host": name, "port": listener["port"]}
    config = Config.load(wgenerated / "appservice.yaml")
    for i, url in enumerate(config.homeserver_worker_urls, 1):
        worker = load_yaml(wgenerated / "workers" / f"generic{i}.yaml")
        assert url == f"http://generic{i}:{worker['worker_listeners'][0]['port']}"
    assert urlsplit(config.homeserver_url).hostname == "synapse"


def test_workers_compose_router_and_transactions(
    wcompose: dict[str, Any], wgenerated: Path
) -> None:
    router = wcompose["services"]["router"]
    config = Config.load(wgenerated / "appservice.yaml")
    reg = load_yaml(wgenerated / "registration.yaml")
    caddyfile = (wgenerated / "Caddyfile.workers").read_text()
    # Synapse -> the router's transactions port -> whichever appservice process holds the lock.
    tp = config.transactions_port
    assert tp is not None and tp != config.port
    assert reg["url"] == f"http://router:{tp}"
    block = caddyfile.split(f":{tp} {{", 1)[1].split("\n}\n", 1)[0]
    assert f"a appservice {tp}" in block and f"a appservice-api {tp}" in block
    # Clients -> the router's published port, the site Caddy serves.
    assert [p[2] for p in _published(router)] == [8080]
    assert {p[0] for p in _published(router)} == {"127.0.0.1"}
    assert "\n:8080 {" in caddyfile
    mount = _mount(router, "/agent-chat")
    assert mount == "data" and "/agent-chat/Caddyfile.workers" in router["command"]
    assert _mount(router, "/data") != "data"  # Caddy's own storage stays its own
    assert f"a appservice {config.port}" in caddyfile
    assert f"a appservice-api {config.port}" in caddyfile
    for i in (1, 2):
        port = load_yaml(wgenerated / "workers" / f"generic{i}.yaml")["worker_listeners"][0]
        assert f"generic{i}:{port['port']}" in caddyfile
    assert "reverse_proxy synapse:8008" in caddyfile
    hs = load_yaml(wgenerated / "homeserver.yaml")
    assert hs["public_baseurl"] == "http://localhost:8080/"


def test_rerunning_the_workers_init_keeps_everything(
    wcompose: dict[str, Any], wgenerated: Path
) -> None:
    files = [p for p in wgenerated.rglob("*") if p.is_file()]
    before = {p: p.read_bytes() for p in files}
    args = list(wcompose["services"]["init"]["command"][2:])
    args[args.index("--data-dir") + 1] = str(wgenerated)
    r = run_cli("init", *args, check=True)
    assert "wrote" not in r.stdout, r.stdout
    assert {p: p.read_bytes() for p in wgenerated.rglob("*") if p.is_file()} == before
