"""``agent-chat-server``: set up, run, start, stop and check a local Agent Chat server."""

from __future__ import annotations

from collections.abc import Sequence
import argparse
import os
import sys

from . import accounts, agents, control, ops
from .client_config import client_home, ensure_client_config
from .errors import EXIT_CODES_HELP, EXIT_ERROR, EXIT_OK, SUBCOMMAND_EXIT_CODES, ServerError
from .init import InitOptions, init_data_dir
from .paths import DATA_DIR_ENV, DataDir

DESCRIPTION = """\
Run a local Agent Chat server: Synapse (the Matrix homeserver) plus the Agent Chat
application service (agent identities, unread ledger, REST API for `ac`)."""


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 < port < 65536:
        raise argparse.ArgumentTypeError(f"port out of range 1-65535: {port}")
    return port


def _add_data_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data-dir",
        metavar="DIR",
        help=f"server data directory (default: ${DATA_DIR_ENV} or ~/.agent-chat-server)",
    )


def _add_init_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("config options (used only when the config is generated)")
    g.add_argument(
        "--server-name", metavar="NAME", help="Matrix server name (default: agent-chat.local)"
    )
    g.add_argument("--synapse-port", type=_port, metavar="P", help="Synapse port (default: 8008)")
    g.add_argument(
        "--api-port", type=_port, metavar="P", help="appservice API port (default: 8009)"
    )
    g.add_argument(
        "--database",
        metavar="URL",
        help="appservice database: sqlite:PATH or "
        "postgres://user:pass@host/db (default: sqlite:DIR/appservice.db)",
    )
    g.add_argument(
        "--synapse-database",
        metavar="URL",
        help="Synapse database: sqlite:PATH "
        "or postgres://... (default: SQLite DIR/homeserver.db); a missing PostgreSQL "
        "database is created with collation C",
    )
    g.add_argument(
        "--bind",
        "--host",
        dest="bind",
        metavar="ADDR",
        help="address Synapse and "
        "the API listen on (default: 127.0.0.1; e.g. 0.0.0.0 or a Tailscale "
        "100.x.y.z address for remote agents)",
    )
    g.add_argument(
        "--public-url",
        metavar="URL",
        help="Synapse's public_baseurl, the "
        "homeserver URL humans give Element (default: http://BIND:SYNAPSE_PORT/)",
    )
    g.add_argument(
        "--tls-cert",
        metavar="PEM",
        help="with --public-url https://HOST:PORT: this certificate (full chain) instead of "
        "a private CA made by init (docs/remote.md)",
    )
    g.add_argument("--tls-key", metavar="PEM", help="the key of --tls-cert (unencrypted PEM)")
    f = p.add_argument_group("federation (off by default; docs/remote.md)")
    f.add_argument(
        "--federation",
        action="store_true",
        help="let this server federate, over TLS on port 8448 of --bind, with the servers "
        "--federation-allow names only (needs the TLS options above)",
    )
    f.add_argument(
        "--federation-allow",
        action="append",
        metavar="SERVER",
        help="a server name this one federates with (repeat for more)",
    )
    f.add_argument(
        "--federation-ca",
        action="append",
        metavar="PEM",
        help="trust this CA for federation too (another server's private CA; repeat for more)",
    )
    f.add_argument(
        "--federation-port", type=_port, metavar="P", help="the federation port (default: 8448)"
    )
    g.add_argument(
        "--synapse-url",
        metavar="URL",
        help="how the appservice reaches Synapse "
        "(default: http://BIND:SYNAPSE_PORT; containers: http://synapse:8008)",
    )
    g.add_argument(
        "--appservice-url",
        metavar="URL",
        help="how Synapse reaches the appservice (default: http://BIND:API_PORT)",
    )
    g.add_argument(
        "--skip-db-check",
        action="store_true",
        help="do not connect to PostgreSQL (or Redis) to check or create the databases",
    )
    w = p.add_argument_group(
        "Synapse workers (scaling out; PostgreSQL and Redis required, see README)"
    )
    w.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="run Synapse as a main process, an event persister and N generic workers",
    )
    w.add_argument(
        "--redis",
        metavar="URL",
        help="the workers' Redis: redis://[:password@]HOST:PORT/DB (one database and one "
        "server name per deployment)",
    )
    w.add_argument(
        "--api-replicas",
        type=int,
        metavar="M",
        help="appservice processes serving the REST API on ports API_PORT..API_PORT+M-1 "
        "(default 1; above 1 needs --database postgres://...)",
    )
    w.add_argument(
        "--worker-port-base",
        type=_port,
        metavar="P",
        help="first port of the workers' listeners (default: SYNAPSE_PORT+100): P main's "
        "replication, P+1 the persister, P+1+i generic worker i",
    )
    w.add_argument(
        "--transactions-port",
        type=_port,
        metavar="P",
        help="with --api-replicas > 1: where the ledger writer takes Synapse's transactions "
        "(default: P+2+N)",
    )
    w.add_argument(
        "--compose-hosts",
        action="store_true",
        help="processes reach each other by Docker Compose service names "
        "(server/docker-compose.workers.yml)",
    )


def _add_log_format(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--log-format",
        choices=["text", "json"],
        default=os.environ.get("AGENT_CHAT_LOG_FORMAT") or "text",
        help="the supervisor's log lines: text, or one JSON object per line "
        "(default: $AGENT_CHAT_LOG_FORMAT or text)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="agent-chat-server",
        description=DESCRIPTION,
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(
            name,
            help=help_text,
            description=help_text,
            epilog=SUBCOMMAND_EXIT_CODES,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        _add_data_dir(p)
        return p

    p = add(
        "init",
        "write the Synapse config, signing key, appservice registration and "
        "appservice config into DIR (existing files and secrets are kept)",
    )
    _add_init_options(p)

    p = add(
        "run",
        "run Synapse and the appservice in the foreground until Ctrl-C or SIGTERM "
        "(runs init first if needed)",
    )
    _add_init_options(p)
    p.add_argument(
        "--log-to-files",
        action="store_true",
        help="send the services' output to DIR/logs/ instead of this terminal",
    )
    _add_log_format(p)

    p = add(
        "start",
        "start in the background; return once healthy (runs init first if "
        "needed; does nothing if already running)",
    )
    _add_init_options(p)
    p.add_argument(
        "--timeout",
        type=float,
        default=control.DEFAULT_START_TIMEOUT,
        metavar="S",
        help="give up after S seconds (default: %(default).0f)",
    )
    p.add_argument(
        "--no-client-config", action="store_true", help="do not write the local `ac` client config"
    )
    _add_log_format(p)

    add("stop", "stop the background server; no process is left behind")
    p = add(
        "restart",
        "stop the background server and start it again, keeping its data "
        "(starts it if it was not running)",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=control.DEFAULT_START_TIMEOUT,
        metavar="S",
        help="give up starting after S seconds (default: %(default).0f)",
    )
    _add_log_format(p)
    add("status", "check Synapse, the appservice and Synapse's ping of it")
    accounts.add_parsers(add)
    agents.add_parsers(add)
    ops.add_parsers(add)
    return parser


def _init_options(args: argparse.Namespace) -> InitOptions:
    return InitOptions(
        server_name=args.server_name,
        synapse_port=args.synapse_port,
        api_port=args.api_port,
        database=args.database,
        synapse_database=args.synapse_database,
        bind=args.bind,
        synapse_url=args.synapse_url,
        appservice_url=args.appservice_url,
        public_url=args.public_url,
        skip_db_check=args.skip_db_check,
        workers=args.workers,
        redis=args.redis,
        api_replicas=args.api_replicas,
        worker_port_base=args.worker_port_base,
        transactions_port=args.transactions_port,
        compose_hosts=args.compose_hosts,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        federation=args.federation,
        federation_allow=args.federation_allow,
        federation_ca=args.federation_ca,
        federation_port=args.federation_port,
    )


def _print_init_report(lines: list[str]) -> None:
    for line in lines:
        print(line)


def cmd_init(dd: DataDir, args: argparse.Namespace) -> int:
    report = init_data_dir(dd, _init_options(args))
    _print_init_report(report.lines())
    return EXIT_OK


def cmd_run(dd: DataDir, args: argparse.Namespace) -> int:
    from .supervise import run_foreground

    report = control.ensure_initialised(dd, _init_options(args))
    if report:
        _print_init_report(report.lines())
    config = control.load_config(dd)
    pid = control.running_pid(dd)
    if pid is not None:
        raise ServerError(f"already running for {dd.root} (pid {pid}); see `status`")
    control.check_ports_free(config, dd)
    return run_foreground(dd, config, log_to_files=args.log_to_files, log_format=args.log_format)


def cmd_start(dd: DataDir, args: argparse.Namespace) -> int:
    report = control.ensure_initialised(dd, _init_options(args))
    if report:
        _print_init_report(report.lines())
    result = control.start_background(dd, timeout=args.timeout, log_format=args.log_format)
    if result.already_running:
        print(f"already running (pid {result.pid}) and healthy")
    else:
        print(f"started in {result.seconds:.1f} s (pid {result.pid}); logs in {dd.logs}")
    print(f"Synapse: {result.synapse_url}")
    print(f"API: {result.api_url}  (REST API under {result.api_url}/_agent_chat/v1)")
    if not args.no_client_config:
        config = control.load_config(dd)
        path = client_home() / "config.toml"
        if ensure_client_config(config.api_url, config.registration_token):
            print(f"client config: wrote {path}")
        else:
            print(f"client config: left alone {path} (exists)")
    return EXIT_OK


def cmd_stop(dd: DataDir, args: argparse.Namespace) -> int:
    for line in control.stop(dd):
        print(line)
    return EXIT_OK


def cmd_restart(dd: DataDir, args: argparse.Namespace) -> int:
    control.load_config(dd)  # a missing or broken config is refused before anything stops
    for line in control.stop(dd):
        print(line)
    result = control.start_background(dd, timeout=args.timeout, log_format=args.log_format)
    print(f"started in {result.seconds:.1f} s (pid {result.pid}); logs in {dd.logs}")
    print(f"Synapse: {result.synapse_url}")
    print(f"API: {result.api_url}  (REST API under {result.api_url}/_agent_chat/v1)")
    return EXIT_OK


def cmd_status(dd: DataDir, args: argparse.Namespace) -> int:
    result = control.status(dd)
    for line in result.lines:
        print(line)
    return result.exit_code


COMMANDS = {
    "init": cmd_init,
    "run": cmd_run,
    "start": cmd_start,
    "stop": cmd_stop,
    "restart": cmd_restart,
    "status": cmd_status,
    **accounts.COMMANDS,
    **agents.COMMANDS,
    **ops.COMMANDS,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    dd = DataDir.at(args.data_dir)
    try:
        return COMMANDS[args.command](dd, args)
    except ServerError as e:
        print(f"agent-chat-server: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("agent-chat-server: interrupted", file=sys.stderr)
        return EXIT_ERROR
    except OSError as e:
        where = f" ({e.filename})" if e.filename else ""
        print(f"agent-chat-server: {e.strerror or e}{where}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
