"""The client's settings: ``config.toml`` and the environment.

``config.toml`` (mode 0600: it may hold the registration token)::

    [server]
    url = "http://127.0.0.1:8009"
    registration_token = "..."
    ca_fingerprint = "sha256:..."   # a private CA pinned from the invite (or ca_file = PATH)
    allow_insecure_http = "false"   # plain HTTP to another machine (Tailscale: WireGuard)
    relay = "true"                  # a connection keeper for a server on another machine

    [identity]
    nick = "BlueLake"

Environment: ``AGENT_CHAT_HOME`` (:mod:`agent_chat.files`), ``AGENT_CHAT_SERVER`` (the API URL),
``AGENT_CHAT_NICK`` (one identity per nick), ``AGENT_CHAT_TOKEN`` (a token and no files at all,
for CI), ``AGENT_CHAT_ALLOW_INSECURE_HTTP=1``, ``AGENT_CHAT_CA_FILE`` and ``AGENT_CHAT_RELAY=off``
(:mod:`agent_chat.http`).
:class:`Settings` resolves them; the environment wins over the file.

This module is on every hot path: config.toml is read with :mod:`agent_chat.flat_toml`.
"""

from __future__ import annotations

import os

from . import http
from .errors import ConfigFileError, UsageError
from .files import CONFIG_FILE, RELAY_DIR, atomic_write, ensure_dir, file_part, home_dir, read_text
from .flat_toml import dump_toml, parse_toml
from .wire import API_PREFIX

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

DEFAULT_SERVER = "http://127.0.0.1:8009"

#: ``ac config --set`` keys and where they live in config.toml.
CONFIG_KEYS = {
    "server": ("server", "url"),
    "url": ("server", "url"),
    "server.url": ("server", "url"),
    "registration_token": ("server", "registration_token"),
    "server.registration_token": ("server", "registration_token"),
    "nick": ("identity", "nick"),
    "identity.nick": ("identity", "nick"),
    "ca_fingerprint": ("server", "ca_fingerprint"),
    "ca_file": ("server", "ca_file"),
    "allow_insecure_http": ("server", "allow_insecure_http"),
    "relay": ("server", "relay"),
}
#: Where a CA pinned by its fingerprint is kept once taken from the server (0600).
PINNED_CA_FILE = "server-ca.pem"
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off", "")


def check_config_value(name: str, value: str) -> str:
    """``ac config --set``: the value to store for the TLS keys (others unchanged).

    Raises:
        UsageError: a malformed fingerprint, a CA file that is not there, or a flag that is
            neither true nor false.
    """
    if name == "ca_fingerprint" and value:
        fp = http.normalize_fingerprint(value)
        if fp is None:
            raise UsageError(
                f"bad ca_fingerprint {value!r}: want sha256: and 64 hex digits (from the invite)"
            )
        return "sha256:" + fp
    if name == "ca_file" and value:
        path = os.path.abspath(os.path.expanduser(value))
        if not os.path.isfile(path):
            raise UsageError(f"bad ca_file {value!r}: no such file")
        return path
    if name in ("allow_insecure_http", "relay"):
        if value.lower() not in _TRUE + _FALSE:
            raise UsageError(f"bad {name} {value!r}: want true or false")
        if name == "relay":
            return "true" if value.lower() in _TRUE else "false"
        return "true" if value.lower() in _TRUE else ""
    return value


# --- the server's URL --------------------------------------------------------------------


def normalize_server_url(url: str) -> str:
    """Strip whitespace, trailing slashes and a pasted ``/_agent_chat/v1`` suffix."""
    url = url.strip().rstrip("/")
    if url.endswith(API_PREFIX):
        url = url[: -len(API_PREFIX)].rstrip("/")
    return url


def valid_server_url(url: str) -> bool:
    """True for ``http://host[:port][/path]`` and ``https://...`` URLs."""
    for scheme in ("http://", "https://"):
        if url.startswith(scheme) and len(url) > len(scheme) and url[len(scheme)] not in "/:":
            return True
    return False


# --- config.toml ---------------------------------------------------------------------------


def load_config(home: str) -> dict[str, object]:
    """config.toml as nested dicts (empty when the file does not exist).

    Raises:
        ConfigFileError: the file is not UTF-8 or not valid TOML.
    """
    path = os.path.join(home, CONFIG_FILE)
    try:
        text = read_text(path)
    except UnicodeDecodeError:
        raise ConfigFileError(f"{path} is not UTF-8 text; fix or remove it") from None
    if text is None:
        return {}
    return parse_toml(text, path)


def save_config(home: str, data: Mapping[str, object]) -> None:
    """Write config.toml (mode 0600) atomically, keeping the comment lines that head it."""
    path = os.path.join(home, CONFIG_FILE)
    header = []
    for line in (read_text(path) or "").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            break
        header.append(line + "\n")
    while header and not header[-1].strip():
        header.pop()
    atomic_write(path, ("".join(header) + dump_toml(data)).encode("utf-8"), 0o600)


def config_get(data: Mapping[str, object], table: str, key: str) -> str | None:
    """A non-empty string value of config.toml, or None."""
    section = data.get(table)
    if isinstance(section, dict):
        value = section.get(key)
        if isinstance(value, str) and value != "":
            return value
    return None


def ensure_client_config(server_url: str, registration_token: str) -> bool:
    """Write ``config.toml`` pointing at this server, only if it does not exist yet.

    Called by ``agent-chat-server start`` so that ``ac`` on the same machine works at once.

    Args:
        server_url: the appservice API base, e.g. ``http://127.0.0.1:8009``.
        registration_token: the server's registration token, used for auto-registration.

    Returns:
        True if the file was written, False if it already existed.
    """
    home = home_dir()
    path = os.path.join(home, CONFIG_FILE)
    if os.path.exists(path):
        return False
    ensure_dir(home)
    server = {"url": normalize_server_url(server_url)}
    if registration_token:
        server["registration_token"] = registration_token
    text = "# Agent Chat client configuration (see `ac config`).\n" + dump_toml({"server": server})
    # O_EXCL: never clobber a config another process wrote meanwhile.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    return True


# --- settings ----------------------------------------------------------------------------


class Settings:
    """Everything a command needs to know before talking to the server.

    Attributes:
        home: the client's directory.
        config: config.toml as read.
        server_url: the API base URL, and ``server_source`` where it came from
            (``AGENT_CHAT_SERVER``, ``config.toml`` or ``default``).
        registration_token: config's ``server.registration_token``, or None.
        env_nick, config_nick: the nick from ``AGENT_CHAT_NICK`` and from config.toml.
        file_part: ``AGENT_CHAT_NICK``'s name in file names (:func:`agent_chat.files.file_part`).
        env_token: ``AGENT_CHAT_TOKEN``, or None.
    """

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        self.home = home_dir(env)
        self.config = load_config(self.home)
        env_server = (env.get("AGENT_CHAT_SERVER") or "").strip()
        config_server = config_get(self.config, "server", "url")
        if env_server:
            self.server_url = normalize_server_url(env_server)
            self.server_source = "AGENT_CHAT_SERVER"
        elif config_server:
            self.server_url = normalize_server_url(config_server)
            self.server_source = CONFIG_FILE
        else:
            self.server_url = DEFAULT_SERVER
            self.server_source = "default"
        self.registration_token = config_get(self.config, "server", "registration_token")
        raw_nick = env.get("AGENT_CHAT_NICK")
        self.env_nick = (raw_nick or "").strip() or None
        self.file_part = file_part(raw_nick)
        self.config_nick = config_get(self.config, "identity", "nick")
        self.env_token = (env.get("AGENT_CHAT_TOKEN") or "").strip() or None
        allow = config_get(self.config, "server", "allow_insecure_http") or ""
        env_allow = (env.get(http.ALLOW_HTTP_ENV) or "").strip().lower()
        http.set_trust(
            ca_file=(env.get("AGENT_CHAT_CA_FILE") or "").strip()
            or config_get(self.config, "server", "ca_file"),
            fingerprint=config_get(self.config, "server", "ca_fingerprint"),
            store=self.path(PINNED_CA_FILE) if self.writes_files else None,
            allow_http=allow.lower() in _TRUE or env_allow in _TRUE,
        )
        relay = (config_get(self.config, "server", "relay") or "true").lower()
        keeps = self.writes_files and relay not in _FALSE
        http.set_relay(self.path(RELAY_DIR) if keeps else None)

    @property
    def nick(self) -> str | None:
        """The wanted nick: ``AGENT_CHAT_NICK``, else config's ``identity.nick``, else None."""
        return self.env_nick or self.config_nick

    @property
    def writes_files(self) -> bool:
        """With ``AGENT_CHAT_TOKEN`` the client touches no files."""
        return self.env_token is None

    def path(self, name: str) -> str:
        """A file in the client's directory."""
        return os.path.join(self.home, name)
