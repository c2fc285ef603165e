"""``agent-chat-server init``: generate a complete data directory, keeping existing secrets."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
import ipaddress
import os
import re

from signedjson.key import read_signing_keys

from agent_chat_appservice.config import Config, ConfigError

from . import postgres, tls
from . import synapse_config as sc
from . import workers as wk
from .errors import ServerError
from .files import dump_yaml, load_yaml, private_dir, temp_path, write_temp
from .paths import DataDir

DEFAULT_SERVER_NAME = "agent-chat.local"
DEFAULT_SYNAPSE_PORT = 8008
DEFAULT_API_PORT = 8009

_SERVER_NAME_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?(:[0-9]{1,5})?$")


@dataclass
class InitOptions:
    """What the user asked for; ``None`` means "default, or whatever the files already say"."""

    server_name: str | None = None
    synapse_port: int | None = None
    api_port: int | None = None
    database: str | None = None
    synapse_database: str | None = None
    #: Address Synapse and the API listen on (127.0.0.1; 0.0.0.0 or a Tailscale/LAN address
    #: for remote agents).
    bind: str | None = None
    #: How the appservice reaches Synapse (default http://BIND:SYNAPSE_PORT).
    synapse_url: str | None = None
    #: How Synapse reaches the appservice (default http://BIND:API_PORT).
    appservice_url: str | None = None
    #: Synapse's public_baseurl: the URL humans give Element.
    public_url: str | None = None
    #: Do not connect to PostgreSQL (or Redis) to check/create the databases.
    skip_db_check: bool = False
    #: Synapse worker mode: this many generic workers plus one event persister.
    workers: int | None = None
    #: Worker mode's Redis (redis://HOST:PORT/DB): one database per deployment.
    redis: str | None = None
    #: Appservice processes (API replicas on one PostgreSQL ledger); worker mode only.
    api_replicas: int | None = None
    #: First port of the workers' listeners (default: Synapse's port + 100).
    worker_port_base: int | None = None
    #: The appservice's transactions port with --api-replicas > 1 (default: after the workers').
    transactions_port: int | None = None
    #: Processes reach each other by their Docker Compose service names.
    compose_hosts: bool = False
    #: With an https public URL: the operator's certificate (full chain) and key, instead of
    #: a private CA made here (tls.py).
    tls_cert: str | None = None
    tls_key: str | None = None
    #: Federation with the servers named in ``federation_allow`` only (off by default), over
    #: TLS on ``federation_port``; ``federation_ca``: other servers' private CAs to trust.
    federation: bool = False
    federation_allow: list[str] | None = None
    federation_ca: list[str] | None = None
    federation_port: int | None = None


@dataclass
class InitReport:
    """What ``init`` did."""

    written: list[Path] = field(default_factory=list)
    kept: list[Path] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = list(self.notes)
        out += [f"wrote {p}" for p in self.written]
        out += [f"left alone {p} (exists: kept as is, secrets included)" for p in self.kept]
        out += self.ignored
        return out


@dataclass
class _Existing:
    """Values read from files already in the data dir."""

    appservice: Config | None = None
    registration: dict[str, Any] | None = None
    homeserver: dict[str, Any] | None = None


def _load_mapping(path: Path) -> dict[str, Any]:
    try:
        data = load_yaml(path)
    except OSError as e:
        raise ServerError(f"cannot read {path}: {e.strerror}") from None
    except Exception as e:  # ruamel has many parser error types
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ServerError(f"{path} is not valid YAML: {first}") from None
    if not isinstance(data, dict):
        raise ServerError(f"{path} is corrupt: not a YAML mapping")
    return data


def _require_str(path: Path, data: dict[str, Any], *keys: str) -> None:
    for key in keys:
        if not isinstance(data.get(key), str) or not data[key]:
            raise ServerError(f"{path} is corrupt: {key} missing or not a string")


def load_appservice_config(dd: DataDir) -> Config:
    """The appservice config, or a one-line ServerError."""
    try:
        return Config.load(dd.appservice_yaml)
    except ConfigError as e:
        raise ServerError(str(e)) from None


def load_registration(dd: DataDir) -> dict[str, Any]:
    """registration.yaml as a checked mapping."""
    data = _load_mapping(dd.registration_yaml)
    _require_str(dd.registration_yaml, data, "id", "url", "as_token", "hs_token")
    return data


def load_homeserver(dd: DataDir) -> dict[str, Any]:
    """homeserver.yaml as a checked mapping."""
    data = _load_mapping(dd.homeserver_yaml)
    _require_str(dd.homeserver_yaml, data, "server_name")
    if not isinstance(data.get("listeners"), list):
        raise ServerError(f"{dd.homeserver_yaml} is corrupt: listeners missing")
    return data


def check_existing(dd: DataDir) -> _Existing:
    """Parse every existing config file; any corrupt one is an error before anything is written."""
    ex = _Existing()
    if dd.appservice_yaml.exists():
        ex.appservice = load_appservice_config(dd)
    if dd.registration_yaml.exists():
        ex.registration = load_registration(dd)
    if dd.homeserver_yaml.exists():
        ex.homeserver = load_homeserver(dd)
    if dd.log_config.exists():
        _load_mapping(dd.log_config)
    if dd.signing_key.exists():
        try:
            with dd.signing_key.open() as f:
                keys = read_signing_keys(f)
        except OSError as e:
            raise ServerError(f"cannot read {dd.signing_key}: {e.strerror}") from None
        except Exception:
            keys = []
        if not keys:
            raise ServerError(f"{dd.signing_key} is corrupt: not a Synapse signing key")
    return ex


def _homeserver_port(hs: dict[str, Any]) -> int | None:
    for listener in hs.get("listeners") or []:
        if isinstance(listener, dict) and isinstance(listener.get("port"), int):
            return int(listener["port"])
    return None


def _url_port(url: str) -> int | None:
    try:
        return urlsplit(url).port
    except ValueError:
        return None


def _pick(
    report: InitReport, flag: str, asked: Any, existing: Any, source: str | None, default: Any
) -> Any:
    """Existing value wins over the option (noting the conflict), the option over the default."""
    if existing is not None:
        if asked is not None and asked != existing:
            report.ignored.append(
                f"ignored {flag} {asked}: {source} already says {existing} "
                "(edit it, or delete it and re-run init)"
            )
        return existing
    return asked if asked is not None else default


def _check_url(flag: str, url: str | None) -> None:
    if url is None:
        return
    parts = urlsplit(url)
    try:
        _ = parts.port  # parsing it raises for a port out of range or not a number
    except ValueError:
        raise ServerError(f"invalid {flag} {url!r}: bad port") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ServerError(f"invalid {flag} {url!r}: want http://HOST:PORT")


def _check_bind(bind: str) -> None:
    try:
        ipaddress.ip_address(bind)
    except ValueError:
        raise ServerError(
            f"invalid --bind {bind!r}: want an IP address (127.0.0.1, 0.0.0.0, 100.x.y.z)"
        ) from None


def _validate(server_name: str, synapse_port: int, api_port: int, database: str) -> None:
    if not _SERVER_NAME_RE.match(server_name):
        raise ServerError(f"invalid server name {server_name!r} (want e.g. agent-chat.local)")
    for name, port in (("--synapse-port", synapse_port), ("--api-port", api_port)):
        if not 0 < port < 65536:
            raise ServerError(f"invalid {name} {port}: want 1-65535")
    if synapse_port == api_port:
        raise ServerError(f"Synapse and the appservice cannot share port {api_port}")
    if not database.startswith(("sqlite:", "sqlite3:", "postgres://", "postgresql://")):
        raise ServerError(
            f"unsupported --database {database!r} (want sqlite:PATH or postgres://user@host/db)"
        )


def _same_synapse_db(url: str, hs: dict[str, Any], dd: DataDir) -> bool:
    try:
        wanted = sc.synapse_database(url, dd)
    except ValueError:
        return False
    have = hs.get("database") or {}
    keys = ("user", "password", "database", "host", "port")
    return bool(
        wanted["name"] == have.get("name")
        and all(wanted["args"].get(k) == (have.get("args") or {}).get(k) for k in keys)
    )


def _make_data_dir(dd: DataDir) -> None:
    """The data dir and its logs/ and run/, private (0700) whatever the umask."""
    try:
        for path in (dd.root, dd.logs, dd.run):
            private_dir(path)
    except OSError as e:
        raise ServerError(f"cannot create data dir {dd.root}: {e.strerror}") from None
    if not os.access(dd.root, os.W_OK | os.X_OK):
        raise ServerError(f"data dir {dd.root} is not writable")


@dataclass
class _Settings:
    """Where everything listens and lives: the files' values, else the options, else defaults."""

    server_name: str
    synapse_port: int
    api_port: int
    database: str
    bind: str
    synapse_url: str
    api_url: str


@dataclass
class _Secrets:
    as_token: str
    hs_token: str
    registration_token: str


def init_data_dir(dd: DataDir, options: InitOptions | None = None) -> InitReport:
    """Write whatever config is missing in ``dd``; existing files (and their secrets) stay.

    Everything is validated and rendered first, then written to temp files, then renamed:
    a failure leaves no half-written config behind.
    """
    opts = options or InitOptions()
    report = InitReport()
    if dd.root.exists() and not dd.root.is_dir():
        raise ServerError(f"data dir {dd.root} exists and is not a directory")
    ex = check_existing(dd) if dd.root.is_dir() else _Existing()
    if opts.bind is not None:
        _check_bind(opts.bind)
    tls_plan = _tls_plan(opts, ex)
    if tls_plan is not None:  # TLS on the public address; plain listeners on loopback only
        opts = replace(opts, bind="127.0.0.1")
    settings = _settings(dd, opts, ex, report)
    if ex.homeserver is not None:
        _note_ignored_synapse_options(dd, opts, ex.homeserver, report)
    synapse_db = _check_settings(dd, opts, ex, settings)
    layout, redis = _worker_layout(opts, ex, settings, synapse_db, report)
    texts, new_config = _render_missing(
        dd, opts, ex, settings, synapse_db, _secrets(ex), layout, redis, tls_plan
    )
    if not opts.skip_db_check:  # before writing anything
        if redis is not None:
            wk.check_redis(redis)
        _ensure_databases(ex, settings, synapse_db, report)
    _make_data_dir(dd)
    if layout is not None:
        _make_dir(dd.workers_dir, dd)
    if tls_plan is not None:
        _make_tls(dd, tls_plan, report)
    written = _write_all(dd, texts, new_config)
    for path in dd.config_files():
        (report.written if path in written else report.kept).append(path)
    report.written += [p for p in texts if p not in dd.config_files()]
    if layout is not None:
        report.notes.append(
            f"Synapse worker mode: main, {wk.PERSISTER}, "
            f"{', '.join(layout.names[1:])}; appservice processes on ports "
            f"{', '.join(map(str, layout.api_ports))}; router config {dd.router_config}"
        )
    return report


def _check_federation(opts: InitOptions, plan: tls.TlsPlan | None) -> None:
    wanted = opts.federation_allow or opts.federation_ca or opts.federation_port
    if not opts.federation:
        if wanted:
            raise ServerError(
                "--federation-allow, --federation-ca and --federation-port need --federation"
            )
        return
    if plan is None:
        raise ServerError(
            "--federation needs TLS: --public-url https://HOST:PORT with --bind ADDR (not "
            "loopback) or --tls-cert/--tls-key"
        )
    if not opts.federation_allow:
        raise ServerError(
            "--federation needs --federation-allow SERVER (one or more): an open federation "
            "is never the default"
        )
    for name in opts.federation_allow:
        if not _SERVER_NAME_RE.match(name):
            raise ServerError(f"invalid --federation-allow {name!r}: want a server name")
    port = opts.federation_port or sc.FEDERATION_PORT
    if port in (plan.client_port, plan.api_port):
        raise ServerError(f"--federation-port {port} is taken by the TLS listeners")


def _tls_plan(opts: InitOptions, ex: _Existing) -> tls.TlsPlan | None:
    """TLS listeners for a fresh config with an https public URL (tls.py says why)."""
    plan = _tls_plan_only(opts, ex)
    _check_federation(opts, plan)
    return plan


def _tls_plan_only(opts: InitOptions, ex: _Existing) -> tls.TlsPlan | None:
    plan = tls.plan(opts.public_url, opts.bind, opts.tls_cert, opts.tls_key)
    if plan is None or ex.homeserver is not None or ex.appservice is not None:
        return None
    if not opts.tls_cert and (opts.bind is None or ipaddress.ip_address(opts.bind).is_loopback):
        return None  # a reverse proxy in front serves the https URL (docs/deployment.md)
    if opts.workers is not None:
        raise ServerError(
            "--workers with an https --public-url: worker mode's Caddy router terminates TLS "
            "(Caddyfile.workers); give it an https public URL without these listeners"
        )
    return plan


def _make_tls(dd: DataDir, plan: tls.TlsPlan, report: InitReport) -> None:
    try:
        files = plan.make(dd.root)
    except OSError as e:
        raise ServerError(f"cannot write TLS files in {dd.root}: {e.strerror}") from None
    report.notes.append(
        f"TLS: Synapse's client API on {plan.bind}:{plan.client_port}, the Agent Chat API on "
        f"{plan.bind}:{plan.api_port} ({plan.api_url}), certificate {files.cert}"
    )
    if files.ca is not None:
        report.notes.append(
            f"TLS: private CA {files.ca}, fingerprint {tls.fingerprint(files.ca.read_bytes())}"
            " (agent-chat-server invite prints it for new machines)"
        )


def _make_dir(path: Path, dd: DataDir) -> None:
    try:
        private_dir(path)
    except OSError as e:
        raise ServerError(f"cannot create {path} in data dir {dd.root}: {e.strerror}") from None


def _worker_layout(
    opts: InitOptions,
    ex: _Existing,
    settings: _Settings,
    synapse_db: dict[str, Any],
    report: InitReport,
) -> tuple[wk.WorkerLayout | None, dict[str, Any] | None]:
    """Worker mode's layout and Redis section, checked; (None, None) without --workers."""
    if opts.workers is None:
        for flag, value in (
            ("--redis", opts.redis),
            ("--api-replicas", opts.api_replicas),
            ("--worker-port-base", opts.worker_port_base),
            ("--transactions-port", opts.transactions_port),
            ("--compose-hosts", opts.compose_hosts or None),
        ):
            if value is not None:
                raise ServerError(f"{flag} needs --workers N (Synapse worker mode)")
        return None, None
    if not 1 <= opts.workers <= wk.MAX_WORKERS:
        raise ServerError(f"invalid --workers {opts.workers}: want 1-{wk.MAX_WORKERS}")
    if opts.api_replicas is not None and not 1 <= opts.api_replicas <= wk.MAX_API_REPLICAS:
        raise ServerError(
            f"invalid --api-replicas {opts.api_replicas}: want 1-{wk.MAX_API_REPLICAS}"
        )
    if opts.redis is not None:
        wk.parse_redis_url(opts.redis)
    if ex.homeserver is not None or ex.appservice is not None or ex.registration is not None:
        report.ignored.append(
            "ignored --workers: the data dir already has a config (worker mode is set up "
            "by a fresh init; see README, Scaling out)"
        )
        return None, None
    if synapse_db["name"] != "psycopg2":
        raise ServerError(
            "--workers needs Synapse on PostgreSQL (--synapse-database postgres://...): "
            "Synapse's worker processes cannot share an SQLite database"
        )
    if not opts.redis:
        raise ServerError(
            "--workers needs --redis redis://HOST:PORT/DB (one Redis database per deployment)"
        )
    redis = wk.parse_redis_url(opts.redis)
    replicas = 1 if opts.api_replicas is None else opts.api_replicas
    if replicas > 1 and not postgres.is_postgres_url(settings.database):
        raise ServerError(
            "--api-replicas above 1 needs the appservice on PostgreSQL (--database "
            "postgres://...): the replicas share its ledger"
        )
    if replicas <= 1 and opts.transactions_port is not None:
        raise ServerError("--transactions-port needs --api-replicas 2 or more")
    layout = wk.WorkerLayout(
        workers=opts.workers,
        api_replicas=replicas,
        port_base=(
            settings.synapse_port + 100 if opts.worker_port_base is None else opts.worker_port_base
        ),
        api_port=settings.api_port,
        bind=settings.bind,
        compose_hosts=opts.compose_hosts,
        transactions_port_option=opts.transactions_port,
    )
    layout.check(settings.synapse_port)
    return layout, redis


def _settings(dd: DataDir, opts: InitOptions, ex: _Existing, report: InitReport) -> _Settings:
    asc, reg, hs = ex.appservice, ex.registration, ex.homeserver
    server_name = _pick(
        report,
        "--server-name",
        opts.server_name,
        asc.server_name if asc else (hs["server_name"] if hs else None),
        "appservice.yaml" if asc else "homeserver.yaml",
        DEFAULT_SERVER_NAME,
    )
    synapse_port = _pick(
        report,
        "--synapse-port",
        opts.synapse_port,
        _url_port(asc.homeserver_url) if asc else (_homeserver_port(hs) if hs else None),
        "appservice.yaml" if asc else "homeserver.yaml",
        DEFAULT_SYNAPSE_PORT,
    )
    api_port = _pick(
        report,
        "--api-port",
        opts.api_port,
        asc.port if asc else (_url_port(reg["url"]) if reg else None),
        "appservice.yaml" if asc else "registration.yaml",
        DEFAULT_API_PORT,
    )
    database = _pick(
        report,
        "--database",
        opts.database,
        asc.database if asc else None,
        "appservice.yaml",
        f"sqlite:{dd.appservice_db}",
    )
    bind = _pick(
        report, "--bind", opts.bind, asc.host if asc else None, "appservice.yaml", "127.0.0.1"
    )
    synapse_url = _pick(
        report,
        "--synapse-url",
        opts.synapse_url,
        asc.homeserver_url if asc else None,
        "appservice.yaml",
        f"http://{sc.url_host(bind)}:{synapse_port}",
    )
    api_url = _pick(
        report,
        "--appservice-url",
        opts.appservice_url,
        reg["url"] if reg else None,
        "registration.yaml",
        f"http://{sc.url_host(bind)}:{api_port}",
    )
    return _Settings(server_name, synapse_port, api_port, database, bind, synapse_url, api_url)


def _note_ignored_synapse_options(
    dd: DataDir, opts: InitOptions, hs: dict[str, Any], report: InitReport
) -> None:
    """homeserver.yaml exists: Synapse options that disagree with it are ignored, and said so."""
    same: dict[str, Callable[[str], bool]] = {
        "--synapse-database": lambda url: _same_synapse_db(url, hs, dd),
        "--public-url": lambda url: url.rstrip("/") == str(hs.get("public_baseurl")).rstrip("/"),
    }
    for flag, value in (
        ("--synapse-database", opts.synapse_database),
        ("--public-url", opts.public_url),
    ):
        if value is not None and not same[flag](value):
            report.ignored.append(
                f"ignored {flag}: homeserver.yaml exists and says "
                "otherwise (edit it, or delete it and re-run init)"
            )


def _check_settings(
    dd: DataDir, opts: InitOptions, ex: _Existing, settings: _Settings
) -> dict[str, Any]:
    """Refuse invalid settings before anything is written; Synapse's database config."""
    _validate(settings.server_name, settings.synapse_port, settings.api_port, settings.database)
    _check_bind(settings.bind)
    for flag, url in (
        ("--synapse-url", settings.synapse_url),
        ("--appservice-url", settings.api_url),
        ("--public-url", opts.public_url),
    ):
        _check_url(flag, url)
    try:
        synapse_db = sc.synapse_database(opts.synapse_database, dd)
    except ValueError as e:
        raise ServerError(f"invalid --synapse-database: {e}") from None
    if ex.homeserver is None and ex.appservice is None:
        _check_distinct_databases(settings.database, synapse_db)
    return synapse_db


def _check_distinct_databases(database: str, synapse_db: dict[str, Any]) -> None:
    if not (postgres.is_postgres_url(database) and synapse_db["name"] == "psycopg2"):
        return
    ours, synapses = postgres.PgTarget.parse(database), synapse_db["args"]
    if (
        ours.dbname == synapses["database"]
        and ours.where() == postgres.PgTarget.from_synapse(synapses).where()
    ):
        raise ServerError(
            "--database and --synapse-database name the same PostgreSQL database: "
            "give the appservice its own (e.g. .../agent_chat and .../synapse)"
        )


def _secrets(ex: _Existing) -> _Secrets:
    """The tokens the files already hold, new random ones for what none holds."""
    asc, reg = ex.appservice, ex.registration
    if asc is not None:
        return _Secrets(asc.as_token, asc.hs_token, asc.registration_token)
    return _Secrets(
        reg["as_token"] if reg else sc.random_secret(),
        reg["hs_token"] if reg else sc.random_secret(),
        sc.random_secret(32),
    )


def _render_missing(
    dd: DataDir,
    opts: InitOptions,
    ex: _Existing,
    settings: _Settings,
    synapse_db: dict[str, Any],
    secrets: _Secrets,
    layout: wk.WorkerLayout | None = None,
    redis: dict[str, Any] | None = None,
    tls_plan: tls.TlsPlan | None = None,
) -> tuple[dict[Path, tuple[str, int]], Config | None]:
    """The text and mode of every missing file; the appservice config when it is missing."""
    texts: dict[Path, tuple[str, int]] = {}
    api_url = settings.api_url
    if layout is not None and layout.transactions_port is not None:
        # Synapse's transactions go to whichever appservice process holds the ledger lock.
        host = wk.COMPOSE_ROUTER_HOST if layout.compose_hosts else sc.url_host(settings.bind)
        api_url = opts.appservice_url or f"http://{host}:{layout.transactions_port}"
    if ex.homeserver is None:
        hs_conf = sc.homeserver_config(
            dd,
            settings.server_name,
            settings.synapse_port,
            synapse_db,
            sc.SynapseSecrets.generate(),
            bind=settings.bind,
            public_baseurl=opts.public_url,
        )
        if tls_plan is not None:
            sc.add_tls_listener(
                hs_conf, tls_plan.files(dd.root), tls_plan.bind, tls_plan.client_port
            )
            if opts.federation:
                sc.enable_federation(
                    hs_conf,
                    tls_plan.bind,
                    opts.federation_port or sc.FEDERATION_PORT,
                    opts.federation_allow or [],
                    [str(Path(p).expanduser().absolute()) for p in opts.federation_ca or []],
                )
        if layout is not None and redis is not None:
            hs_conf["listeners"].append(wk.replication_listener(layout))
            hs_conf.update(wk.homeserver_settings(layout, redis, sc.random_secret()))
            x_forwarded = bool(hs_conf["listeners"][0]["x_forwarded"])
            texts.update(
                wk.render(
                    dd,
                    layout,
                    settings.synapse_port,
                    x_forwarded,
                    settings.synapse_url,
                    opts.public_url,
                )
            )
        texts[dd.homeserver_yaml] = (dump_yaml(hs_conf), 0o600)
    if not dd.log_config.exists():
        texts[dd.log_config] = (dump_yaml(sc.log_config(dd)), 0o600)
    if not dd.signing_key.exists():
        texts[dd.signing_key] = (sc.signing_key_text(), 0o600)
    if ex.registration is None:
        reg_conf = sc.registration(
            settings.server_name, api_url, secrets.as_token, secrets.hs_token
        )
        texts[dd.registration_yaml] = (dump_yaml(reg_conf), 0o600)
    if ex.appservice is not None:
        return texts, None
    extra: dict[str, Any] = {}
    if layout is not None:
        extra["homeserver_worker_urls"] = layout.generic_urls()
        if layout.transactions_port is not None:
            extra["transactions_port"] = layout.transactions_port
    if tls_plan is not None and opts.federation:
        # Agents accept invitations from the allowed servers, and from this one's people.
        extra["auto_join"] = [settings.server_name, *(opts.federation_allow or [])]
    if tls_plan is not None:
        files = tls_plan.files(dd.root)
        extra.update(
            tls_host=tls_plan.bind,
            tls_port=tls_plan.api_port,
            tls_cert=str(files.cert),
            tls_key=str(files.key),
        )
    return texts, Config(
        server_name=settings.server_name,
        homeserver_url=settings.synapse_url,
        as_token=secrets.as_token,
        hs_token=secrets.hs_token,
        registration_token=secrets.registration_token,
        database=settings.database,
        host=settings.bind,
        port=settings.api_port,
        appservice_id=sc.APPSERVICE_ID,
        bot_localpart=sc.BOT_LOCALPART,
        **extra,
    )


def _ensure_databases(
    ex: _Existing, settings: _Settings, synapse_db: dict[str, Any], report: InitReport
) -> None:
    """PostgreSQL: check (and create) the databases of the configs about to be written."""
    if ex.homeserver is None and synapse_db["name"] == "psycopg2":
        target = postgres.PgTarget.from_synapse(synapse_db["args"])
        state = postgres.ensure_database(target.url(with_password=True), for_synapse=True)
        report.notes.append(state.message)
    if ex.appservice is None and postgres.is_postgres_url(settings.database):
        state = postgres.ensure_database(settings.database, for_synapse=False)
        report.notes.append(state.message)


def _write_all(
    dd: DataDir, texts: dict[Path, tuple[str, int]], new_config: Config | None
) -> set[Path]:
    """Write every file to a temp file first, then rename them all: no half-written config."""
    temps: list[tuple[Path, Path]] = []
    try:
        for path, (text, mode) in texts.items():
            temps.append((write_temp(path, text, mode), path))
        if new_config is not None:
            tmp = temp_path(dd.appservice_yaml)
            new_config.save(tmp)  # mode 0600, atomic itself
            temps.append((tmp, dd.appservice_yaml))
    except OSError as e:
        for tmp, _ in temps:
            tmp.unlink(missing_ok=True)
        raise ServerError(f"cannot write in data dir {dd.root}: {e.strerror}") from None
    for tmp, path in temps:
        os.replace(tmp, path)
    return {path for _, path in temps}
