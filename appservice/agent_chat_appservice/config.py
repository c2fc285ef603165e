"""The appservice's own configuration (``appservice.yaml``), written by ``agent-chat-server init``.

It holds secrets (the as/hs tokens and the registration token), so it is written with mode 0600.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
import hashlib
import hmac
import ipaddress
import os

from ruamel.yaml import YAML

from agent_chat.wire import AGENT_LOCALPART_PREFIX

from .invites import InvitePolicy

DEFAULT_ROOMS: list[dict[str, str]] = [
    {"alias": "general", "topic": "Default, casual coordination"},
    {"alias": "status", "topic": "Status updates: starting X, done with Y"},
    {"alias": "alerts", "topic": "Important: build failures, urgent issues"},
]

#: Every agent's Matrix localpart starts with this. The leading underscore is the bridge
#: convention: no ordinary human username (alice, bob, ci_admin) falls into the namespace.
USER_PREFIX = AGENT_LOCALPART_PREFIX


def _is_port(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value < 65536


class ConfigError(Exception):
    """The config file is missing, unreadable or malformed."""


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value


def _check_limits(config: Config, path: Path) -> None:
    """The connection and rate limits: positive numbers, proxies as addresses or networks."""
    for key in (
        "max_waits_per_identity",
        "room_create_burst",
        "register_burst",
        "webhook_burst",
    ):
        value = getattr(config, key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"config file {path}: {key} must be a whole number of at least 1")
    for key in (
        "header_timeout_seconds",
        "body_timeout_seconds",
        "room_create_per_minute",
        "register_per_minute",
        "webhook_per_minute",
        "presence_gone_after_seconds",
    ):
        if not _is_number(getattr(config, key)) or getattr(config, key) <= 0:
            raise ConfigError(f"config file {path}: {key} must be a number above 0")
    cap = config.max_connections
    if cap is not None and (not isinstance(cap, int) or isinstance(cap, bool) or cap < 16):
        raise ConfigError(f"config file {path}: max_connections must be a number of at least 16")
    proxies = config.trusted_proxies
    if not isinstance(proxies, list):
        raise ConfigError(f"config file {path}: trusted_proxies must be a list of addresses")
    for proxy in proxies:
        try:
            ipaddress.ip_network(proxy, strict=False)
        except (TypeError, ValueError):
            raise ConfigError(
                f"config file {path}: trusted_proxies: {proxy!r} is not an IP address or network"
            ) from None


@dataclass
class Config:
    """Everything the appservice process needs to run."""

    server_name: str
    homeserver_url: str
    as_token: str
    hs_token: str
    registration_token: str
    database: str
    host: str = "127.0.0.1"
    port: int = 8009
    appservice_id: str = "agent-chat"
    user_prefix: str = USER_PREFIX
    bot_localpart: str = USER_PREFIX + "bot"
    bot_displayname: str = "Agent Chat"
    open_registration: bool = False
    #: Per-caller send limit (token bucket): a runaway agent loop gets 429, not the whole room.
    send_rate_per_second: float = 5.0
    send_rate_burst: int = 30
    #: The loop guard: agents answering each other in one direct chat or thread get 429 after
    #: this many answers within a minute (0 turns it off). Humans are never limited by it.
    loop_guard_answers_per_minute: int = 6
    #: Held connections (docs/security.md): long-poll waits one identity may hold at once (a
    #: newer one answers the oldest early), seconds a client has to send a request's headers
    #: (and to start its next request on a kept-alive connection), seconds to send a body,
    #: and open connections served at most (None: below the process's open-file limit).
    max_waits_per_identity: int = 8
    header_timeout_seconds: float = 15.0
    body_timeout_seconds: float = 30.0
    max_connections: int | None = None
    #: Public rooms one identity may create: a burst, then this many per minute.
    room_create_burst: int = 10
    room_create_per_minute: float = 2.0
    #: Registrations from one client address: a burst, then this many per minute.
    register_burst: int = 60
    register_per_minute: float = 60.0
    #: Posts one webhook may make: a burst, then this many per minute.
    webhook_burst: int = 10
    webhook_per_minute: float = 60.0
    #: Addresses (or CIDR networks) of reverse proxies whose X-Forwarded-For names the client;
    #: from any other peer the header is ignored and the peer's own address is the client's.
    trusted_proxies: list[str] = field(default_factory=list)
    rooms: list[dict[str, str]] = field(default_factory=lambda: [dict(r) for r in DEFAULT_ROOMS])
    log_level: str = "INFO"
    #: "text", or "json" for one JSON object per line (for log shippers).
    log_format: str = "text"
    #: /metrics answers only loopback callers unless this is true (e.g. behind a firewall).
    metrics_public: bool = False
    #: Several appservice processes on one PostgreSQL ledger (docs/scaling.md): the port where
    #: the one elected to write the ledger serves the homeserver's transactions (Synapse's
    #: registration url points here); every process serves the REST API on its own ``port``.
    #: None: one process serves both on ``port``.
    transactions_port: int | None = None
    #: Synapse generic workers' client URLs: each agent's sends go to one of them, chosen by
    #: its user id, so Synapse's per-process txnId deduplication always applies. Receipts,
    #: read markers and typing stay on ``homeserver_url`` (the main process writes them).
    homeserver_worker_urls: list[str] = field(default_factory=list)
    #: The API over TLS as well, for remote agents (``init --public-url https://...``): this
    #: address and port, this certificate chain and key; None: plain HTTP only.
    tls_host: str | None = None
    tls_port: int | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    #: Whose invitations agents accept by themselves (``invites.py``): "local" (agents and
    #: this homeserver's people), "all", "none", or a list of user ids and server names.
    auto_join: Any = "local"
    #: An agent session with no sign of life (hook call, wake waiter) for this long is ``gone``
    #: (``presence.py``); a SessionEnd hook makes it gone at once.
    presence_gone_after_seconds: float = 1800.0
    #: A person writing to an agent with no running session gets one m.notice from it saying
    #: so, at most once an hour (``gone_notice.py``); false: never.
    gone_notice: bool = True

    @property
    def bot_mxid(self) -> str:
        return f"@{self.bot_localpart}:{self.server_name}"

    def is_ours(self, user_id: str) -> bool:
        """In the appservice's exclusive namespace: an agent, a bot, the service itself."""
        return user_id.startswith("@" + self.user_prefix) and user_id.endswith(
            ":" + self.server_name
        )

    @property
    def admin_token(self) -> str:
        """The operator's token for /admin routes, derived from the as_token: whoever can read
        appservice.yaml may administer, and no second secret has to be kept in step."""
        digest = hmac.new(self.as_token.encode(), b"agent-chat admin API", hashlib.sha256)
        return "acadm_" + digest.hexdigest()

    @property
    def token_key(self) -> bytes:
        """The key sealing humans' Matrix tokens in the database (``db/sealed.py``), derived
        from the as_token like the admin token: it is kept in this 0600 file (and Synapse's
        registration.yaml), never in the database."""
        key = hmac.new(self.as_token.encode(), b"agent-chat matrix tokens at rest", hashlib.sha256)
        return key.digest()

    @property
    def api_url(self) -> str:
        host = self.host if self.host not in ("0.0.0.0", "::") else "127.0.0.1"
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    @classmethod
    def load(cls, path: str | Path) -> Config:
        path = Path(path)
        try:
            data = YAML(typ="safe").load(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist") from None
        except OSError as e:
            raise ConfigError(f"cannot read config file {path}: {e.strerror}") from None
        except Exception as e:  # ruamel raises many parser error types
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ConfigError(f"config file {path} is not valid YAML: {first}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"config file {path} is not a YAML mapping")
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"config file {path}: unknown keys {', '.join(unknown)}")
        try:
            config = cls(**data)
        except TypeError as e:
            raise ConfigError(f"config file {path}: {e}") from None
        for key in ("server_name", "homeserver_url", "as_token", "hs_token", "database"):
            if not isinstance(getattr(config, key), str) or not getattr(config, key):
                raise ConfigError(f"config file {path}: {key} must be a non-empty string")
        if not isinstance(config.gone_notice, bool):
            raise ConfigError(f"config file {path}: gone_notice must be true or false")
        if config.log_format not in ("text", "json"):
            raise ConfigError(f"config file {path}: log_format must be text or json")
        try:
            InvitePolicy(config.auto_join, config.server_name, lambda _: False)
        except ValueError as e:
            raise ConfigError(f"config file {path}: auto_join {e}") from None
        guard = config.loop_guard_answers_per_minute
        if not isinstance(guard, int) or isinstance(guard, bool) or not 0 <= guard <= 10000:
            raise ConfigError(
                f"config file {path}: loop_guard_answers_per_minute must be a number 0-10000"
            )
        if not _is_port(config.port):
            raise ConfigError(f"config file {path}: port must be a number 1-65535")
        if config.transactions_port is not None:
            if not _is_port(config.transactions_port) or config.transactions_port == config.port:
                raise ConfigError(
                    f"config file {path}: transactions_port must be a number 1-65535 other "
                    "than port"
                )
            if not config.database.startswith(("postgres:", "postgresql:")):
                raise ConfigError(
                    f"config file {path}: transactions_port (several appservice processes) "
                    "needs a PostgreSQL database; SQLite serves one process"
                )
        _check_limits(config, path)
        urls = config.homeserver_worker_urls
        if not isinstance(urls, list) or not all(
            isinstance(u, str) and u.startswith(("http://", "https://")) for u in urls
        ):
            raise ConfigError(
                f"config file {path}: homeserver_worker_urls must be a list of http(s) URLs"
            )
        return config

    @property
    def clustered(self) -> bool:
        """Whether several appservice processes share the ledger (``transactions_port``)."""
        return self.transactions_port is not None

    def save(self, path: str | Path) -> None:
        """Write atomically with mode 0600: the file holds tokens."""
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            yaml = YAML()
            yaml.default_flow_style = False
            yaml.dump(asdict(self), f)
        os.replace(tmp, path)
