"""Files in ``$AGENT_CHAT_HOME`` (default ``~/.agent-chat``) and the environment.

- ``config.toml`` (mode 0600: it may hold the registration token)::

      [server]
      url = "http://127.0.0.1:8009"
      registration_token = "..."

      [identity]
      nick = "BlueLake"

- ``credentials.json`` (mode 0600, written atomically under a lock): identities keyed by
  server URL and nick, see :mod:`agent_chat.identity`.
- ``state.json`` and ``unread.line``: caches; deleting them loses nothing.

Environment: ``AGENT_CHAT_HOME``, ``AGENT_CHAT_SERVER`` (the API URL), ``AGENT_CHAT_NICK`` (one
identity per nick), ``AGENT_CHAT_TOKEN`` (a token and no files at all, for CI).

This module is on every hot path: it reads the flat TOML we write with a tiny parser of its own
(``tomllib`` costs ~10 ms of imports) and falls back to ``tomllib`` for anything fancier.
"""

import json
import os

DEFAULT_SERVER = "http://127.0.0.1:8009"
API_PREFIX = "/_agent_chat/v1"

CONFIG_FILE = "config.toml"
CREDENTIALS_FILE = "credentials.json"
STATE_FILE = "state.json"
UNREAD_LINE_FILE = "unread.line"

#: ``ac config --set`` keys and where they live in config.toml.
CONFIG_KEYS = {
    "server": ("server", "url"),
    "url": ("server", "url"),
    "server.url": ("server", "url"),
    "registration_token": ("server", "registration_token"),
    "server.registration_token": ("server", "registration_token"),
    "nick": ("identity", "nick"),
    "identity.nick": ("identity", "nick"),
}


class ConfigFileError(Exception):
    """config.toml or credentials.json cannot be read or parsed."""


def home_dir(env=None):
    """The client's directory: ``$AGENT_CHAT_HOME`` or ``~/.agent-chat``."""
    env = os.environ if env is None else env
    home = env.get("AGENT_CHAT_HOME")
    if home:
        return os.path.abspath(os.path.expanduser(home))
    return os.path.join(os.path.expanduser("~"), ".agent-chat")


def normalize_server_url(url):
    """Strip whitespace, trailing slashes and a pasted ``/_agent_chat/v1`` suffix."""
    url = url.strip().rstrip("/")
    if url.endswith(API_PREFIX):
        url = url[: -len(API_PREFIX)].rstrip("/")
    return url


def valid_server_url(url):
    """True for ``http://host[:port][/path]`` and ``https://...`` URLs."""
    for scheme in ("http://", "https://"):
        if url.startswith(scheme) and len(url) > len(scheme) and url[len(scheme)] not in "/:":
            return True
    return False


# --- files -----------------------------------------------------------------------------------


def ensure_dir(home):
    """Create the home directory (mode 0700) if needed."""
    os.makedirs(home, mode=0o700, exist_ok=True)


def atomic_write(path, data, mode=0o600, fsync=False):
    """Write bytes to ``path`` through a temporary file and a rename; the file gets ``mode``."""
    directory = os.path.dirname(path) or "."
    ensure_dir(directory)
    tmp = os.path.join(
        directory, ".%s.%d.%s.tmp" % (os.path.basename(path), os.getpid(), os.urandom(4).hex())
    )
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        try:
            os.write(fd, data) if len(data) < 65536 else _write_all(fd, data)
            os.fchmod(fd, mode)
            if fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _write_all(fd, data):
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def read_text(path):
    """The file's text, or None if it does not exist."""
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except FileNotFoundError:
        return None


# --- config.toml -----------------------------------------------------------------------------


def _unescape_basic(s):
    out = []
    i = 0
    n = len(s)
    while i < n:
        c = s[i]
        if c == "\\":
            if i + 1 >= n:
                raise ValueError("dangling backslash")
            e = s[i + 1]
            simple = {
                "\\": "\\",
                '"': '"',
                "n": "\n",
                "t": "\t",
                "r": "\r",
                "b": "\b",
                "f": "\f",
                "e": "\x1b",
            }
            if e in simple:
                out.append(simple[e])
                i += 2
            elif e in "uU":
                width = 4 if e == "u" else 8
                out.append(chr(int(s[i + 2 : i + 2 + width], 16)))
                i += 2 + width
            else:
                raise ValueError("unknown escape")
        elif c == '"':
            raise ValueError("unescaped quote")
        else:
            out.append(c)
            i += 1
    return "".join(out)


def parse_flat_toml(text):
    """Parse the flat tables of strings we write; raise ValueError on anything else."""
    data = {}
    table = data
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("[") and line.endswith("]") and not line.startswith("[["):
            name = line[1:-1].strip()
            if not name or not all(c.isalnum() or c in "_-" for c in name):
                raise ValueError("complex table name")
            table = data.setdefault(name, {})
            continue
        key, eq, value = line.partition("=")
        key = key.strip()
        value = value.strip()
        if not eq or not key or not all(c.isalnum() or c in "_-" for c in key):
            raise ValueError("complex key")
        if len(value) >= 2 and value[0] == value[-1] == '"' and not value.startswith('"""'):
            table[key] = _unescape_basic(value[1:-1])
        elif len(value) >= 2 and value[0] == value[-1] == "'" and not value.startswith("'''"):
            table[key] = value[1:-1]
        else:
            raise ValueError("not a plain string")
    return data


def parse_toml(text, path="config.toml"):
    """Parse config.toml: the fast flat parser, else tomllib."""
    try:
        return parse_flat_toml(text)
    except (ValueError, IndexError):
        pass
    import tomllib

    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigFileError(f"{path} is not valid TOML: {e}") from None


def _toml_string(value):
    out = ['"']
    for c in value:
        if c == '"':
            out.append('\\"')
        elif c == "\\":
            out.append("\\\\")
        elif c == "\n":
            out.append("\\n")
        elif c == "\t":
            out.append("\\t")
        elif ord(c) < 0x20 or ord(c) == 0x7F:
            out.append(f"\\u{ord(c):04x}")
        else:
            out.append(c)
    out.append('"')
    return "".join(out)


def dump_toml(data):
    """Write flat tables of strings (``{"server": {"url": "..."}}``) as TOML."""
    chunks = []
    for table, values in data.items():
        if not isinstance(values, dict):
            continue
        lines = [f"[{table}]"]
        for key, value in values.items():
            if value is None:
                continue
            lines.append(f"{key} = {_toml_string(str(value))}")
        chunks.append("\n".join(lines) + "\n")
    return "\n".join(chunks)


def load_config(home):
    """config.toml as nested dicts (empty when the file does not exist)."""
    path = os.path.join(home, CONFIG_FILE)
    text = read_text(path)
    if text is None:
        return {}
    data = parse_toml(text, path)
    return data if isinstance(data, dict) else {}


def save_config(home, data):
    """Write config.toml (mode 0600) atomically."""
    atomic_write(os.path.join(home, CONFIG_FILE), dump_toml(data).encode("utf-8"), 0o600)


def config_get(data, table, key):
    """A string value of config.toml, or None."""
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
    data = {"server": {"url": normalize_server_url(server_url)}}
    if registration_token:
        data["server"]["registration_token"] = registration_token
    text = "# Agent Chat client configuration (see `ac config`).\n" + dump_toml(data)
    # O_EXCL: never clobber a config another process wrote meanwhile.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    return True


# --- settings --------------------------------------------------------------------------------


class Settings:
    """Everything a command needs to know before talking to the server."""

    def __init__(self, env=None):
        env = os.environ if env is None else env
        self.home = home_dir(env)
        self.config = load_config(self.home)
        env_server = (env.get("AGENT_CHAT_SERVER") or "").strip()
        if env_server:
            self.server_url = normalize_server_url(env_server)
            self.server_source = "AGENT_CHAT_SERVER"
        elif config_get(self.config, "server", "url"):
            self.server_url = normalize_server_url(config_get(self.config, "server", "url"))
            self.server_source = CONFIG_FILE
        else:
            self.server_url = DEFAULT_SERVER
            self.server_source = "default"
        self.registration_token = config_get(self.config, "server", "registration_token")
        self.env_nick = (env.get("AGENT_CHAT_NICK") or "").strip() or None
        self.config_nick = config_get(self.config, "identity", "nick")
        self.env_token = (env.get("AGENT_CHAT_TOKEN") or "").strip() or None

    @property
    def nick(self):
        """The wanted nick: ``AGENT_CHAT_NICK``, else config's ``identity.nick``, else None."""
        return self.env_nick or self.config_nick

    @property
    def writes_files(self):
        """With ``AGENT_CHAT_TOKEN`` the client touches no files."""
        return self.env_token is None

    def path(self, name):
        return os.path.join(self.home, name)


# --- caches ----------------------------------------------------------------------------------


def _safe_file_part(nick):
    return "".join(c if (c.isascii() and (c.isalnum() or c in "_-")) else "_" for c in nick)


def unread_line_path(settings):
    """``unread.line``, or ``unread.<nick>.line`` for an ``AGENT_CHAT_NICK`` identity."""
    if settings.env_nick:
        return settings.path(f"unread.{_safe_file_part(settings.env_nick.lower())}.line")
    return settings.path(UNREAD_LINE_FILE)


def write_caches(settings, identity_key, unread_line=None, unread=None, last_event=None):
    """Best effort: update state.json and unread.line; never raises, never with a token env."""
    if not settings.writes_files:
        return
    try:
        import time

        path = settings.path(STATE_FILE)
        try:
            state = json.loads(read_text(path) or "{}")
            if not isinstance(state, dict):
                state = {}
        except ValueError:
            state = {}
        identities = state.setdefault("identities", {})
        if not isinstance(identities, dict):
            identities = state["identities"] = {}
        entry = identities.setdefault(identity_key, {})
        if not isinstance(entry, dict):
            entry = identities[identity_key] = {}
        now = int(time.time())
        if unread is not None:
            entry["unread"] = unread
            entry["notify_at"] = now
        if last_event is not None:
            entry["last_event"] = last_event
        entry["updated_at"] = now
        state["version"] = 1
        atomic_write(path, json.dumps(state, indent=1, sort_keys=True).encode(), 0o600)
        if unread_line is not None:
            atomic_write(unread_line_path(settings), (unread_line + "\n").encode("utf-8"), 0o600)
    except Exception:
        pass
