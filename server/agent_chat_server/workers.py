"""Synapse worker mode (``init --workers N --redis URL``): the settings, the files, the router.

Layout (Synapse 1.163, verified against its sources):

- the main process keeps its client listener and gains a ``replication`` listener (loopback),
  ``redis: {enabled: true, ...}``, ``instance_map`` (main and the event persister, each with a
  replication listener), ``stream_writers: {events: persister1}``,
  ``notify_appservices_from_worker: generic1`` and a ``worker_replication_secret``;
- ``workers/persister1.yaml``: the event persister (a replication listener only; ``/health`` is
  served on every Synapse HTTP listener);
- ``workers/generic1.yaml`` ... ``genericN.yaml``: generic workers, each with a client listener;
  generic1 also sends every appservice transaction (one sender keeps them in stream order);
- ``workers/topology.yaml``: the process list the supervisor runs (no secrets);
- ``Caddyfile.workers``: the router for production (receipts, read markers and typing to main,
  which writes those streams; /sync and sends to the generic workers, each masqueraded user's
  sends pinned to one worker, since Synapse deduplicates a txnId only inside one process).

Ports: from ``--worker-port-base B`` (default Synapse's port + 100): B main's replication
listener, B+1 the persister's, B+1+i generic worker i, and with ``--api-replicas M`` > 1 the
appservice's transactions port B+2+N; the M appservice processes serve the REST API on
``--api-port`` A, A+1, ... A+M-1.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit
import socket

from .errors import ServerError
from .files import dump_yaml, load_yaml
from .paths import DataDir

PERSISTER = "persister1"
GENERIC_PREFIX = "generic"
MAX_WORKERS = 32
MAX_API_REPLICAS = 16
#: The Synapse main process's name in ``instance_map``.
MAIN_INSTANCE = "main"
#: Docker Compose service names when ``--compose-hosts`` is given.
COMPOSE_MAIN_HOST = "synapse"
COMPOSE_ROUTER_HOST = "router"
ROUTER_DEFAULT_SITE = ":8080"


def generic_name(i: int) -> str:
    return f"{GENERIC_PREFIX}{i}"


def parse_redis_url(url: str) -> dict[str, Any]:
    """Synapse's ``redis`` section for ``redis://[[user]:password@]host[:port][/db]`` (or
    ``rediss://`` for TLS), or a one-line ServerError."""
    parts = urlsplit(url)
    want = "want redis://HOST:PORT/DB"
    if parts.scheme not in ("redis", "rediss"):
        raise ServerError(f"invalid --redis {url!r}: {want}")
    try:
        port = parts.port or 6379
    except ValueError:
        raise ServerError(f"invalid --redis {url!r}: bad port ({want})") from None
    if not parts.hostname:
        raise ServerError(f"invalid --redis {url!r}: no host ({want})")
    db = parts.path.strip("/") or "0"
    if not db.isdigit() or int(db) > 1_000_000 or parts.query or parts.fragment:
        raise ServerError(f"invalid --redis {url!r}: the database must be a number ({want})")
    section: dict[str, Any] = {
        "enabled": True,
        "host": parts.hostname,
        "port": port,
        "dbid": int(db),
    }
    if parts.scheme == "rediss":
        section["use_tls"] = True
    if parts.password:
        section["password"] = unquote(parts.password)
        if parts.username:
            section["username"] = unquote(parts.username)
    return section


def check_redis(section: dict[str, Any], timeout: float = 3.0) -> None:
    """Connect to Redis and PING it (AUTH and SELECT first); a one-line ServerError if not."""
    where = f"{section['host']}:{section['port']}"
    if section.get("use_tls"):
        return  # TLS: trust the URL (a plain PING would not get through)
    cmds = []
    if "password" in section:
        auth = [section.get("username"), section["password"]]
        cmds.append(["AUTH", *[a for a in auth if a is not None]])
    cmds += [["SELECT", str(section["dbid"])], ["PING"]]
    payload = b"".join(_resp(c) for c in cmds)
    try:
        with socket.create_connection((section["host"], section["port"]), timeout) as s:
            s.sendall(payload)
            got = b""
            while got.count(b"\r\n") < len(cmds):
                chunk = s.recv(4096)
                if not chunk:
                    break
                got += chunk
    except OSError as e:
        raise ServerError(f"cannot reach Redis at {where}: {e.strerror or e}") from None
    for line in got.split(b"\r\n")[: len(cmds)]:
        if not line.startswith(b"+"):
            text = line.decode(errors="replace")[:200] or "connection closed"
            raise ServerError(f"Redis at {where} refused: {text}")


def _resp(args: list[str]) -> bytes:
    out = [f"*{len(args)}\r\n".encode()]
    for a in args:
        b = a.encode()
        out.append(f"${len(b)}\r\n".encode() + b + b"\r\n")
    return b"".join(out)


@dataclass(frozen=True)
class WorkerLayout:
    """How many processes, and their ports (see the module docstring)."""

    workers: int
    api_replicas: int
    port_base: int
    api_port: int
    #: The address the workers' client listeners bind (the main listener's ``--bind``).
    bind: str = "127.0.0.1"
    #: Reach each process by its Docker Compose service name instead of 127.0.0.1.
    compose_hosts: bool = False
    transactions_port_option: int | None = None

    @property
    def names(self) -> list[str]:
        return [PERSISTER] + [generic_name(i) for i in range(1, self.workers + 1)]

    @property
    def main_replication_port(self) -> int:
        return self.port_base

    @property
    def persister_port(self) -> int:
        return self.port_base + 1

    def generic_port(self, i: int) -> int:
        return self.port_base + 1 + i

    @property
    def transactions_port(self) -> int | None:
        if self.api_replicas <= 1:
            return None
        if self.transactions_port_option is not None:
            return self.transactions_port_option
        return self.port_base + 2 + self.workers

    @property
    def api_ports(self) -> list[int]:
        return [self.api_port + i for i in range(self.api_replicas)]

    def port_of(self, name: str) -> int:
        if name == PERSISTER:
            return self.persister_port
        return self.generic_port(int(name[len(GENERIC_PREFIX) :]))

    def host_of(self, name: str) -> str:
        """How other processes reach ``name`` (main: ``main``)."""
        if self.compose_hosts:
            return COMPOSE_MAIN_HOST if name == MAIN_INSTANCE else name
        return "127.0.0.1"

    @property
    def listen_host(self) -> str:
        """Where replication listeners bind: loopback, or every interface in containers."""
        return "0.0.0.0" if self.compose_hosts else "127.0.0.1"

    def generic_urls(self) -> list[str]:
        from .synapse_config import url_host

        out = []
        for i in range(1, self.workers + 1):
            name = generic_name(i)
            host = name if self.compose_hosts else url_host(self.bind)
            out.append(f"http://{host}:{self.generic_port(i)}")
        return out

    def ports(self, synapse_port: int) -> list[tuple[str, int]]:
        """Every port of the deployment with what uses it."""
        out = [("Synapse", synapse_port), ("Synapse's replication listener", self.port_base)]
        out += [(name, self.port_of(name)) for name in self.names]
        for i, port in enumerate(self.api_ports):
            out.append(("the appservice API" + (f" replica {i + 1}" if i else ""), port))
        if self.transactions_port is not None:
            out.append(("the appservice's transactions port", self.transactions_port))
        return out

    def check(self, synapse_port: int) -> None:
        """One-line errors for out-of-range counts and clashing ports."""
        if not 1 <= self.workers <= MAX_WORKERS:
            raise ServerError(f"invalid --workers {self.workers}: want 1-{MAX_WORKERS}")
        if not 1 <= self.api_replicas <= MAX_API_REPLICAS:
            raise ServerError(
                f"invalid --api-replicas {self.api_replicas}: want 1-{MAX_API_REPLICAS}"
            )
        seen: dict[int, str] = {}
        for label, port in self.ports(synapse_port):
            if not 0 < port < 65536:
                raise ServerError(
                    f"port {port} ({label}) is out of range 1-65535: "
                    "choose a lower --worker-port-base or --api-port"
                )
            if port in seen:
                raise ServerError(
                    f"port clash: {label} and {seen[port]} would both use port {port} "
                    "(choose another --worker-port-base, --api-port or --synapse-port)"
                )
            seen[port] = label


# --- Synapse's config ----------------------------------------------------------------------


def homeserver_settings(
    layout: WorkerLayout, redis: dict[str, Any], secret: str
) -> dict[str, Any]:
    """What worker mode adds to homeserver.yaml (besides the replication listener)."""
    return {
        "worker_replication_secret": secret,
        "redis": redis,
        "instance_map": {
            MAIN_INSTANCE: {
                "host": layout.host_of(MAIN_INSTANCE),
                "port": layout.main_replication_port,
            },
            PERSISTER: {"host": layout.host_of(PERSISTER), "port": layout.persister_port},
        },
        "stream_writers": {"events": PERSISTER},
        # One sender of appservice transactions: they stay in stream order.
        "notify_appservices_from_worker": generic_name(1),
    }


def replication_listener(layout: WorkerLayout) -> dict[str, Any]:
    return {
        "port": layout.main_replication_port,
        "bind_addresses": [layout.listen_host],
        "type": "http",
        "tls": False,
        "resources": [{"names": ["replication"], "compress": False}],
    }


def worker_config(
    dd: DataDir, layout: WorkerLayout, name: str, x_forwarded: bool
) -> dict[str, Any]:
    """``workers/NAME.yaml``: read after homeserver.yaml (``-c homeserver.yaml -c NAME.yaml``)."""
    if name == PERSISTER:
        listener: dict[str, Any] = {
            "type": "http",
            "port": layout.persister_port,
            "bind_addresses": [layout.listen_host],
            "tls": False,
            "resources": [{"names": ["replication"], "compress": False}],
        }
    else:
        listener = {
            "type": "http",
            "port": layout.port_of(name),
            "bind_addresses": ["0.0.0.0" if layout.compose_hosts else layout.bind],
            "tls": False,
            "x_forwarded": x_forwarded,
            "resources": [{"names": ["client"], "compress": False}],
        }
    return {
        "worker_app": "synapse.app.generic_worker",
        "worker_name": name,
        "worker_listeners": [listener],
        "worker_log_config": str(dd.worker_log_config(name)),
    }


def worker_log_config(dd: DataDir, name: str) -> dict[str, Any]:
    from .synapse_config import log_config

    conf = log_config(dd)
    conf["handlers"]["file"]["filename"] = str(dd.worker_log(name))
    return conf


def topology(layout: WorkerLayout, synapse_port: int) -> dict[str, Any]:
    """``workers/topology.yaml``: what the supervisor runs, in start order, and every port
    (``start`` checks they are free)."""
    return {
        "synapse_workers": [
            {"name": name, "health_port": layout.port_of(name)} for name in layout.names
        ],
        "api_ports": layout.api_ports,
        "ports": [{"port": port, "use": label} for label, port in layout.ports(synapse_port)],
    }


# --- the router ----------------------------------------------------------------------------

#: Client API paths Synapse's generic workers serve (its workers documentation), other than
#: /sync and the event-sending ones below. Everything else (login, media, account changes,
#: pushers, devices, admin) goes to main.
_WORKER_READS = [
    r"^/_matrix/client/(api/v1|r0|v3|unstable)/rooms/[^/]+/(messages|members|joined_members"
    r"|state|context/[^/]+|event/[^/]+|initialSync|aliases)$",
    r"^/_matrix/client/(v1|unstable)/rooms/[^/]+/(relations/.*|threads|hierarchy"
    r"|timestamp_to_event)$",
    r"^/_matrix/client/(api/v1|r0|v3|unstable)/(createRoom|publicRooms|joined_rooms|search"
    r"|initialSync)$",
    r"^/_matrix/client/(api/v1|r0|v3|unstable)/(profile|directory/room)/",
    r"^/_matrix/client/(r0|v3|unstable)/(capabilities|user_directory/search"
    r"|keys/query|keys/changes|keys/claim)$",
    r"^/_matrix/client/versions$",
]
#: Streams the main process writes (stream_writers names only the events stream): a generic
#: worker answers these with HTTP 500.
_MAIN_ONLY = r"^/_matrix/client/[^/]+/rooms/[^/]+/(receipt|read_markers|typing)(/|$)"
#: Requests that create events: pinned per masqueraded user, else per access token.
_SENDS = (
    r"^/_matrix/client/(api/v1|r0|v3|unstable)/rooms/[^/]+/(send|state|redact)/"
    r"|^/_matrix/client/(api/v1|r0|v3|unstable)/rooms/[^/]+/(join|invite|leave|ban|unban|kick)$"
    r"|^/_matrix/client/(api/v1|r0|v3|unstable)/join/"
)
_SYNC = r"^/_matrix/client/(api/v1|r0|v3)/(sync|events)$"


def router_site(public_url: str | None) -> str:
    """The Caddy site address: the public URL's host (https: automatic certificates), or
    ``:PORT`` for a plain-HTTP public URL, or :8080 without one."""
    if not public_url:
        return ROUTER_DEFAULT_SITE
    parts = urlsplit(public_url)
    if parts.scheme == "https":
        return parts.netloc
    return f":{parts.port or 80}"


def caddyfile(
    layout: WorkerLayout, main_url: str, public_url: str | None, workers_flag: str
) -> str:
    """``Caddyfile.workers``: one host name in front of main, the workers and the API."""
    from .synapse_config import url_host

    main = urlsplit(main_url).netloc
    generics = " ".join(urlsplit(u).netloc for u in layout.generic_urls())
    apis = " ".join(f"{url_host(layout.bind)}:{p}" for p in layout.api_ports)
    site = router_site(public_url)
    base = (public_url or f"http://localhost{site}").rstrip("/")
    lines = [
        f"# Agent Chat with Synapse workers: written by `agent-chat-server init {workers_flag}`.",
        "#",
        "#   caddy run --config Caddyfile.workers     (Caddy 2.6 or newer)",
        "#",
        "# Routing (Synapse 1.163):",
        "#   receipts, read markers, typing -> main: it writes those streams (stream_writers",
        "#       names only the events stream); a generic worker answers them with HTTP 500",
        "#   /sync, /events                 -> the generic workers, sticky per access token",
        "#   sends (send/state/redact/join/leave...) -> the generic workers, each access token",
        "#       pinned to one worker: Synapse deduplicates a txnId only inside one process",
        "#       (Agent Chat's appservice pins each agent to a worker itself, not through here)",
        "#   other reads Synapse's workers serve (messages, members, ...) -> the generic workers",
        "#   everything else (login, media, devices, account, admin) -> main",
        "#   /_agent_chat/*                 -> the appservice's API processes",
        "# Not proxied: /_synapse/admin, /_matrix/app (Synapse talks to the appservice itself).",
        "",
    ]
    if layout.compose_hosts and layout.transactions_port is not None:
        tp = layout.transactions_port
        lines += [
            "# Synapse -> whichever appservice process holds the ledger lock (it alone listens",
            f"# on the transactions port {tp}); registration.yaml points at router:{tp}.",
            f":{tp} {{",
            "\treverse_proxy {",
            "\t\tdynamic multi {",
            f"\t\t\ta appservice {tp}",
            f"\t\t\ta appservice-api {tp}",
            "\t\t}",
            "\t\tlb_policy first",
            "\t\tlb_retries 10",
            "\t\tlb_try_duration 10s",
            "\t}",
            "}",
            "",
        ]
    lines += [
        f"{site} {{",
        "\tencode gzip",
        "",
        "\t@well_known path /.well-known/matrix/client",
        "\thandle @well_known {",
        "\t\theader Content-Type application/json",
        "\t\theader Access-Control-Allow-Origin *",
        f'\t\trespond `{{"m.homeserver": {{"base_url": "{base}"}}}}`',
        "\t}",
        "",
        "\t@hidden path /_synapse/admin/* /_matrix/app/*",
        "\thandle @hidden {",
        "\t\trespond 404",
        "\t}",
        "",
        "\t@agent_chat path /_agent_chat/*",
        "\thandle @agent_chat {",
        *_api_proxy(layout, apis),
        "\t}",
        "",
        f"\t@main_streams path_regexp {_MAIN_ONLY}",
        "\thandle @main_streams {",
        f"\t\treverse_proxy {main}",
        "\t}",
        "",
        f"\t@sends path_regexp {_SENDS}",
        "\thandle @sends {",
        f"\t\treverse_proxy {generics} {{",
        "\t\t\tlb_policy header Authorization",
        "\t\t}",
        "\t}",
        "",
        f"\t@sync path_regexp {_SYNC}",
        "\thandle @sync {",
        f"\t\treverse_proxy {generics} {{",
        "\t\t\tlb_policy header Authorization",
        "\t\t}",
        "\t}",
        "",
    ]
    lines += [
        f"\t@reads path_regexp {'|'.join(_WORKER_READS)}",
        "\thandle @reads {",
        f"\t\treverse_proxy {generics} {{",
        "\t\t\tlb_policy header Authorization",
        "\t\t}",
        "\t}",
        "",
        "\t@synapse path /_matrix/* /_synapse/client/*",
        "\thandle @synapse {",
        f"\t\treverse_proxy {main}",
        "\t}",
        "",
        "\thandle {",
        f'\t\trespond "Agent Chat: Element and ac use {base}" 404',
        "\t}",
        "}",
    ]
    return "\n".join(lines) + "\n"


def _api_proxy(layout: WorkerLayout, apis: str) -> list[str]:
    """The /_agent_chat upstreams: the API ports here, or in Compose every container of the
    ``appservice`` and ``appservice-api`` services (deploy.replicas) on the API port."""
    if not layout.compose_hosts:
        return [
            f"\t\treverse_proxy {apis} {{",
            "\t\t\tlb_policy least_conn",
            "\t\t\tlb_try_duration 5s",
            "\t\t}",
        ]
    return [
        "\t\treverse_proxy {",
        "\t\t\tdynamic multi {",
        f"\t\t\t\ta appservice {layout.api_port}",
        f"\t\t\t\ta appservice-api {layout.api_port}",
        "\t\t\t}",
        "\t\t\tlb_policy least_conn",
        "\t\t\tlb_try_duration 5s",
        "\t\t}",
    ]


# --- reading it back -----------------------------------------------------------------------


@dataclass(frozen=True)
class SynapseWorker:
    name: str
    health_url: str


@dataclass(frozen=True)
class Topology:
    """The processes of a worker-mode data dir, in start order."""

    synapse_workers: list[SynapseWorker] = field(default_factory=list)
    api_ports: list[int] = field(default_factory=list)
    #: (what, port) for every listener of the deployment.
    ports: list[tuple[str, int]] = field(default_factory=list)

    @property
    def names(self) -> list[str]:
        return [w.name for w in self.synapse_workers]


def load_topology(dd: DataDir) -> Topology | None:
    """``workers/topology.yaml`` (None in single-process mode), checked against the files."""
    path = dd.topology_yaml
    if not path.exists():
        return None
    try:
        data = load_yaml(path)
        workers = data["synapse_workers"]
        api_ports = [int(p) for p in data["api_ports"]]
        ports = [(str(p["use"]), int(p["port"])) for p in data["ports"]]
        out = []
        for w in workers:
            name, port = str(w["name"]), int(w["health_port"])
            out.append(SynapseWorker(name, f"http://127.0.0.1:{port}/health"))
    except OSError as e:
        raise ServerError(f"cannot read {path}: {e.strerror}") from None
    except Exception:
        raise ServerError(f"{path} is corrupt: re-run `agent-chat-server init`") from None
    missing = [str(dd.worker_yaml(w.name)) for w in out if not dd.worker_yaml(w.name).exists()]
    if missing or not out or not api_ports:
        raise ServerError(f"{path} names missing files: {', '.join(missing) or 'none listed'}")
    return Topology(out, api_ports, ports)


def render(
    dd: DataDir,
    layout: WorkerLayout,
    synapse_port: int,
    x_forwarded: bool,
    main_url: str,
    public_url: str | None,
) -> dict[Path, tuple[str, int]]:
    """Every worker file's text and mode."""
    flag = f"--workers {layout.workers}"
    texts: dict[Path, tuple[str, int]] = {}
    for name in layout.names:
        conf = worker_config(dd, layout, name, x_forwarded)
        texts[dd.worker_yaml(name)] = (dump_yaml(conf), 0o600)
        texts[dd.worker_log_config(name)] = (dump_yaml(worker_log_config(dd, name)), 0o600)
    texts[dd.topology_yaml] = (
        "# Written by agent-chat-server init: the processes `run` and `start` supervise.\n"
        + dump_yaml(topology(layout, synapse_port)),
        0o600,
    )
    texts[dd.router_config] = (caddyfile(layout, main_url, public_url, flag), 0o600)
    return texts
