"""Synapse's configuration for Agent Chat, as data: homeserver.yaml, log config, signing key,
and the appservice registration."""

from __future__ import annotations

from dataclasses import dataclass
from io import StringIO
from typing import Any
import re
import secrets
import string

from signedjson.key import generate_signing_key, write_signing_keys

from agent_chat.wire import AGENT_LOCALPART_PREFIX

from .paths import DataDir
from .postgres import PgTarget

APPSERVICE_ID = "agent-chat"
BOT_LOCALPART = "_ac_bot"
USER_PREFIX = AGENT_LOCALPART_PREFIX

#: Rate limits for agents: generous, but still a brake on a runaway loop.
RATE_LIMITS: dict[str, Any] = {
    "rc_message": {"per_second": 50, "burst_count": 500},
    "rc_registration": {"per_second": 10, "burst_count": 100},
    "rc_registration_token_validity": {"per_second": 10, "burst_count": 100},
    "rc_login": {
        "address": {"per_second": 10, "burst_count": 100},
        "account": {"per_second": 10, "burst_count": 100},
        "failed_attempts": {"per_second": 1, "burst_count": 20},
    },
    "rc_joins": {
        "local": {"per_second": 20, "burst_count": 200},
        "remote": {"per_second": 1, "burst_count": 10},
    },
    "rc_joins_per_room": {"per_second": 20, "burst_count": 200},
    "rc_invites": {
        "per_room": {"per_second": 10, "burst_count": 100},
        "per_user": {"per_second": 10, "burst_count": 100},
        "per_issuer": {"per_second": 10, "burst_count": 100},
    },
    "rc_room_creation": {"per_second": 5, "burst_count": 50},
    "rc_presence": {"per_user": {"per_second": 5, "burst_count": 50}},
}


def url_host(bind: str) -> str:
    """The host to put in a URL reaching a service bound to ``bind`` (wildcards: loopback)."""
    host = "127.0.0.1" if bind in ("0.0.0.0", "", "*") else ("::1" if bind == "::" else bind)
    return f"[{host}]" if ":" in host else host


def random_secret(length: int = 48) -> str:
    """A random token of letters and digits (safe in YAML, URLs and headers)."""
    alphabet = string.ascii_letters + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(length))


def signing_key_text() -> str:
    """A fresh ed25519 signing key in Synapse's file format."""
    version = "a_" + random_secret(4)
    out = StringIO()
    write_signing_keys(out, [generate_signing_key(version)])
    return out.getvalue()


def synapse_database(url: str | None, dd: DataDir) -> dict[str, Any]:
    """Synapse's ``database`` section for a URL (``None``: SQLite in the data dir).

    Accepts ``sqlite:PATH`` and ``postgres://user:password@host:port/dbname``.
    """
    if url is None:
        return {"name": "sqlite3", "args": {"database": str(dd.synapse_db)}}
    if url.startswith(("sqlite:", "sqlite3:")):
        path = url.split(":", 1)[1]
        if path.startswith("//"):
            path = path[2:]
        if not path:
            raise ValueError(f"no file path in SQLite URL {url!r}")
        return {"name": "sqlite3", "args": {"database": path}}
    if not url.startswith(("postgres://", "postgresql://")):
        raise ValueError(
            f"unsupported database URL {url!r} (want sqlite:PATH or postgres://user@host/db)"
        )
    args = PgTarget.parse(url).synapse_args()
    args.update({"cp_min": 5, "cp_max": 10})
    return {"name": "psycopg2", "args": args}


@dataclass
class SynapseSecrets:
    """Secrets Synapse keeps across re-runs of ``init``."""

    registration_shared_secret: str
    macaroon_secret_key: str
    form_secret: str

    @classmethod
    def generate(cls) -> SynapseSecrets:
        return cls(random_secret(), random_secret(), random_secret())


def homeserver_config(
    dd: DataDir,
    server_name: str,
    port: int,
    database: dict[str, Any],
    synapse_secrets: SynapseSecrets,
    bind: str = "127.0.0.1",
    public_baseurl: str | None = None,
) -> dict[str, Any]:
    """homeserver.yaml: offline-safe, no federation, registration closed, agent rate limits.

    ``bind``: the listener's address; ``public_baseurl``: the URL clients (Element) use, by
    default http://BIND:PORT/ (127.0.0.1 when BIND is a wildcard address). A reverse proxy in
    front (public_baseurl on https) makes Synapse trust X-Forwarded-For from it.
    """
    if public_baseurl is None:
        public_baseurl = f"http://{url_host(bind)}:{port}/"
    if not public_baseurl.endswith("/"):
        public_baseurl += "/"
    return {
        "server_name": server_name,
        "public_baseurl": public_baseurl,
        "listeners": [
            {
                "port": port,
                "bind_addresses": [bind],
                "type": "http",
                "tls": False,
                "x_forwarded": public_baseurl.startswith("https://"),
                # client only: no federation listener
                "resources": [{"names": ["client"], "compress": False}],
            }
        ],
        "database": database,
        "log_config": str(dd.log_config),
        "media_store_path": str(dd.media_store),
        "signing_key_path": str(dd.signing_key),
        "report_stats": False,
        "enable_metrics": False,
        "registration_shared_secret": synapse_secrets.registration_shared_secret,
        "macaroon_secret_key": synapse_secrets.macaroon_secret_key,
        "form_secret": synapse_secrets.form_secret,
        # Offline: no key servers, no federation.
        "trusted_key_servers": [],
        "suppress_key_server_warning": True,
        "federation_domain_whitelist": [],
        "allow_public_rooms_over_federation": False,
        "url_preview_enabled": False,
        # Humans are created by an admin (registration_shared_secret); agents by the appservice.
        "enable_registration": False,
        "app_service_config_files": [str(dd.registration_yaml)],
        # Without this, public rooms (#general...) never show in /publicRooms.
        "room_list_publication_rules": [{"action": "allow"}],
        **RATE_LIMITS,
    }


def log_config(dd: DataDir) -> dict[str, Any]:
    """Synapse's logging config: one size-rotated file under logs/, written unbuffered."""
    return {
        "version": 1,
        "formatters": {
            "precise": {
                "format": "%(asctime)s - %(name)s - %(lineno)d - %(levelname)s - "
                "%(request)s - %(message)s"
            }
        },
        "handlers": {
            "file": {
                "class": "logging.handlers.RotatingFileHandler",
                "formatter": "precise",
                "filename": str(dd.synapse_log),
                "maxBytes": 10 * 1024 * 1024,
                "backupCount": 3,
                "encoding": "utf8",
            }
        },
        "loggers": {"synapse.storage.SQL": {"level": "INFO"}},
        "root": {"level": "INFO", "handlers": ["file"]},
        "disable_existing_loggers": False,
    }


def registration(
    server_name: str, appservice_url: str, as_token: str, hs_token: str
) -> dict[str, Any]:
    """The appservice registration Synapse loads (``registration.yaml``)."""
    name = re.escape(server_name)
    return {
        "id": APPSERVICE_ID,
        "url": appservice_url,
        "as_token": as_token,
        "hs_token": hs_token,
        "sender_localpart": BOT_LOCALPART,
        # Synapse uses re.match: anchored at the start only, so anchor the end here.
        "namespaces": {
            "users": [{"exclusive": True, "regex": f"@{USER_PREFIX}[a-z0-9._=-]+:{name}$"}],
            "aliases": [{"exclusive": False, "regex": f"#[^:]+:{name}$"}],
            "rooms": [],
        },
        "rate_limited": False,
        "receive_ephemeral": True,
    }


def add_tls_listener(hs_conf: dict[str, Any], files: Any, bind: str, port: int) -> None:
    """A second client listener, TLS on ``bind:port`` (``tls.TlsPlan``); the first stays plain
    on loopback for the appservice, and, serving TLS itself, trusts no X-Forwarded-For."""
    hs_conf["listeners"][0]["x_forwarded"] = False
    hs_conf["listeners"].append(_tls_listener(bind, port, "client"))
    hs_conf["tls_certificate_path"] = str(files.cert)
    hs_conf["tls_private_key_path"] = str(files.key)


def _tls_listener(bind: str, port: int, resource: str) -> dict[str, Any]:
    """A Synapse listener serving TLS itself (so it believes no X-Forwarded-For)."""
    return {
        "port": port,
        "bind_addresses": [bind],
        "type": "http",
        "tls": True,
        "x_forwarded": False,
        "resources": [{"names": [resource], "compress": False}],
    }


FEDERATION_PORT = 8448


def enable_federation(
    hs_conf: dict[str, Any], bind: str, port: int, allow: list[str], custom_cas: list[str]
) -> None:
    """Federation over TLS on ``bind:port`` with the servers ``allow`` names only.

    Private addresses the allowed names resolve to now (a LAN, a VPN, tests) are let through
    Synapse's default block of private ranges, those addresses only (Synapse never federates
    with a server named by a private IP literal); ``custom_cas`` are trusted for outgoing
    federation (another server's private CA; real certificates need none). A failed
    destination is tried again after 5 s, doubling up to 5 min, not Synapse's 10 min: agents
    wait on what crosses.
    """
    import ipaddress
    import socket

    hs_conf["listeners"].append(_tls_listener(bind, port, "federation"))
    hs_conf["federation_domain_whitelist"] = list(allow)
    hs_conf["allow_public_rooms_over_federation"] = False
    hs_conf["federation_verify_certificates"] = True
    if custom_cas:
        hs_conf["federation_custom_ca_list"] = list(custom_cas)
    hs_conf["federation"] = {
        "destination_min_retry_interval": "5s",
        "destination_retry_multiplier": 2,
        "destination_max_retry_interval": "5m",
    }
    addresses: list[str] = []
    for name in allow:
        host = name.rsplit(":", 1)[0] if name.count(":") == 1 else name
        try:
            found = {str(a[4][0]) for a in socket.getaddrinfo(host.strip("[]"), None)}
        except OSError:
            continue
        addresses += sorted(a for a in found if ipaddress.ip_address(a).is_private)
    if addresses:
        hs_conf["ip_range_whitelist"] = sorted(set(addresses))
