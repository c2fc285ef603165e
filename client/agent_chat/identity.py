"""Who the client is: stored credentials, auto-registration, ``AGENT_CHAT_TOKEN``.

``credentials.json`` (mode 0600, written atomically under ``credentials.lock``)::

    {"version": 1,
     "servers": {"http://127.0.0.1:8009": {
         "default": "bluelake",
         "identities": {"bluelake": {"user_id": "@_ac_bluelake:example", "nick": "BlueLake",
                                     "kind": "agent", "token": "...", "created_at": 1700000000}}}}}

Identities are keyed per server URL and by the nick that was *asked for* (lower case): with
``AGENT_CHAT_NICK=X`` and ``AGENT_CHAT_NICK=Y`` on one machine each agent gets its own identity,
even when the server renamed X to X2 on a collision. Which identity a command uses:
``AGENT_CHAT_TOKEN`` (no files touched) > ``AGENT_CHAT_NICK`` > config ``identity.nick`` > the
server's ``default`` (the first identity stored for it; ``ac register``/``ac login`` change it
only with ``--default``).
"""

from __future__ import annotations

import json
import os
import time

from .errors import AcError, ApiError, AuthError, ConfigFileError, UsageError
from .files import (
    CREDENTIALS_FILE,
    CREDENTIALS_LOCK_FILE,
    atomic_write,
    ensure_dir,
    read_text,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from types import TracebackType

    from .api import Client
    from .config import Settings
    from .shapes import CredentialRecord, JSONObject

#: ``credentials.json`` as read: ``servers`` is checked to be an object, the rest is not (a
#: hand-edited file may hold anything), so every lookup below checks what it finds.
Credentials = dict[str, object]


class Identity:
    """A token and, when known, whose it is."""

    __slots__ = ("key", "kind", "nick", "source", "token", "user_id")

    def __init__(
        self,
        token: str,
        user_id: str | None = None,
        nick: str | None = None,
        kind: str | None = None,
        key: str | None = None,
        source: str = "",
    ) -> None:
        self.token = token
        self.user_id = user_id
        self.nick = nick
        self.kind = kind
        self.key = key
        self.source = source

    def label(self) -> str:
        """How to name it: the nick, else the user id."""
        return self.nick or self.user_id or "(token from AGENT_CHAT_TOKEN)"


def nick_key(nick: str) -> str:
    """The key an identity is stored under: the nick asked for, stripped, lower case."""
    return nick.strip().lower()


def _str(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _identity(record: dict[str, object], key: str, source: str) -> Identity | None:
    """A stored record as an Identity (None without a token)."""
    token = record.get("token")
    if not isinstance(token, str):
        return None
    return Identity(
        token,
        _str(record.get("user_id")),
        _str(record.get("nick")),
        _str(record.get("kind")),
        key,
        source,
    )


# --- credentials.json ------------------------------------------------------------------------


def load_credentials(home: str) -> Credentials:
    """The parsed credentials file (an empty structure when missing)."""
    path = os.path.join(home, CREDENTIALS_FILE)
    try:
        text = read_text(path)
    except UnicodeDecodeError:
        raise ConfigFileError(f"{path} is not UTF-8 text; fix or remove it") from None
    if not text:
        return {"version": 1, "servers": {}}
    try:
        data = json.loads(text)
    except ValueError:
        raise ConfigFileError(f"{path} is not valid JSON; fix or remove it") from None
    if not isinstance(data, dict):
        raise ConfigFileError(f"{path} is not a JSON object; fix or remove it")
    if not isinstance(data.get("servers"), dict):
        data["servers"] = {}
    return data


def save_credentials(home: str, data: Credentials) -> None:
    """Write ``credentials.json`` (atomically, flushed to disk). Only that: a caller that
    changed which identity the settings resolve to also refreshes the shell hook's files
    (:func:`agent_chat.hook_files.refresh`)."""
    data["version"] = 1
    text = json.dumps(data, indent=2, sort_keys=True) + "\n"
    atomic_write(os.path.join(home, CREDENTIALS_FILE), text.encode("utf-8"), 0o600, fsync=True)


class _Entry:
    """One server's part of credentials.json: ``default`` and ``identities`` (checked)."""

    __slots__ = ("identities", "raw")

    def __init__(self, raw: dict[str, object]) -> None:
        self.raw = raw
        identities = raw.get("identities")
        if not isinstance(identities, dict):
            identities = raw["identities"] = {}
        self.identities: dict[str, object] = identities

    @property
    def default(self) -> str | None:
        return _str(self.raw.get("default"))

    @default.setter
    def default(self, key: str) -> None:
        self.raw["default"] = key

    def record(self, key: str) -> dict[str, object] | None:
        record = self.identities.get(key)
        return record if isinstance(record, dict) else None


def _server_entry(data: Credentials, server_url: str, create: bool = False) -> _Entry | None:
    servers = data.get("servers")
    if not isinstance(servers, dict):
        servers = data["servers"] = {}
    entry = servers.get(server_url)
    if not isinstance(entry, dict):
        if not create:
            return None
        entry = servers[server_url] = {}
    return _Entry(entry)


def stored_identity(
    data: Credentials, server_url: str, nick: str | None = None
) -> Identity | None:
    """The stored identity for this server and wanted nick (or the default), or None."""
    entry = _server_entry(data, server_url)
    if entry is None:
        return None
    key = nick_key(nick) if nick else entry.default
    if key is None:
        return None
    record = entry.record(key)
    if entry.identities.get(key) is None and nick:  # stored under the name asked for, renamed
        for other in entry.identities:
            candidate = entry.record(other)
            if candidate is not None and nick_key(str(candidate.get("nick") or "")) == key:
                key, record = other, candidate
                break
    return None if record is None else _identity(record, key, "credentials.json")


def store_identity(
    data: Credentials,
    server_url: str,
    key: str,
    answer: JSONObject,
    make_default: bool = False,
    source: str = "credentials.json",
) -> Identity:
    """Put a /register or /login answer (its ``token`` checked to be a string) into the
    credentials structure; return it as an :class:`Identity` (with ``source``)."""
    token = answer.get("token")
    if not isinstance(token, str):
        raise AcError("the server's answer has no token", detail=repr(answer)[:200])
    entry = _server_entry(data, server_url, create=True)
    assert entry is not None  # created
    record: CredentialRecord = {
        "user_id": answer.get("user_id"),
        "nick": answer.get("nick"),
        "kind": answer.get("kind", "agent"),
        "token": token,
        "created_at": int(time.time()),
    }
    entry.identities[key] = record
    if make_default or entry.default not in entry.identities:
        entry.default = key
    found = _identity(dict(record), key, source)
    assert found is not None  # it has a token
    return found


def stored_identities(data: Credentials, server_url: str) -> list[Identity]:
    """Every identity stored for this server, in the order they were stored."""
    entry = _server_entry(data, server_url)
    if entry is None:
        return []
    found = []
    for key in entry.identities:
        record = entry.record(key)
        identity = None if record is None else _identity(record, key, "credentials.json")
        if identity is not None:
            found.append(identity)
    return found


def default_key(data: Credentials, server_url: str) -> str | None:
    """The key of this server's default identity (the first one stored, or ``--default``)."""
    entry = _server_entry(data, server_url)
    return entry.default if entry is not None else None


def set_default(data: Credentials, server_url: str, key: str | None) -> None:
    """Make the identity stored under ``key`` this server's default (``--default``)."""
    entry = _server_entry(data, server_url)
    if entry is not None and key is not None and key in entry.identities:
        entry.default = key


def forget_identity(data: Credentials, server_url: str, key: str) -> None:
    """Remove the identity stored under ``key`` (``ac logout``); the default moves to the
    first one left, if any."""
    entry = _server_entry(data, server_url)
    if entry is None or entry.identities.pop(key, None) is None:
        return
    if entry.default == key:
        entry.raw.pop("default", None)
        if entry.identities:
            entry.default = next(iter(entry.identities))


def free_key(data: Credentials, server_url: str, key: str) -> None:
    """Before storing a new identity under ``key``: move one already there whose server nick
    differs (``AGENT_CHAT_NICK=X`` that became X2) to its own nick's key, so no token is lost."""
    entry = _server_entry(data, server_url)
    if entry is None:
        return
    record = entry.record(key)
    nick = _str(record.get("nick")) if record is not None else None
    if nick is None:
        return
    other = nick_key(nick)
    if other == key or other in entry.identities:
        return
    entry.identities[other] = entry.identities.pop(key)
    if entry.default == key:
        entry.default = other


class CredentialsLock:
    """An exclusive ``flock`` on ``credentials.lock`` around read-modify-write of credentials."""

    def __init__(self, home: str) -> None:
        self.home = home
        self.fd: int | None = None

    def __enter__(self) -> CredentialsLock:
        import fcntl

        ensure_dir(self.home)
        path = os.path.join(self.home, CREDENTIALS_LOCK_FILE)
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing releases the lock
            self.fd = None


# --- resolution ------------------------------------------------------------------------------


def current(settings: Settings) -> Identity | None:
    """The identity to use without registering anything, or None."""
    if settings.env_token:
        return Identity(settings.env_token, source="AGENT_CHAT_TOKEN")
    return stored_identity(load_credentials(settings.home), settings.server_url, settings.nick)


def resolve(settings: Settings, client: Client) -> Identity:
    """The identity to use, registering one (and storing it) if there is none yet.

    A newly registered identity has ``source`` ``"registration"``: the caller points the
    shell hook at it (:func:`agent_chat.hook_files.refresh`).
    """
    found = current(settings)
    if found is not None:
        return found
    with CredentialsLock(settings.home):
        data = load_credentials(settings.home)  # another process may have registered meanwhile
        found = stored_identity(data, settings.server_url, settings.nick)
        if found is not None:
            return found
        answer = register_request(client, settings, settings.nick, exact=False)
        key = nick_key(settings.nick or str(answer["nick"]))
        identity = store_identity(data, settings.server_url, key, answer, source="registration")
        save_credentials(settings.home, data)
    if settings.nick and nick_key(str(answer["nick"])) != nick_key(settings.nick):
        # Once: later commands find the identity stored under the name asked for.
        import sys

        from .safe_text import one_line

        sys.stderr.write(
            f"ac: the name {one_line(settings.nick)} is taken on {settings.server_url}; "
            f"registered as {one_line(answer['nick'])} instead (stored for the name "
            f"{one_line(settings.nick)}: later commands use it without a word)\n"
        )
    return identity


def register_request(
    client: Client, settings: Settings, nick: str | None, exact: bool
) -> JSONObject:
    """POST /register; return the answer (its ``token`` and ``nick`` strings) or raise a clear
    error."""
    body: dict[str, object] = {"exact": bool(exact)}
    if nick:
        body["nick"] = nick
    if settings.registration_token:
        body["registration_token"] = settings.registration_token
    try:
        answer = client.call("POST", "/register", body=body, auth=False)
    except ApiError as e:
        if e.status == 409 and e.errcode == "AC_NAME_OF_PERSON":
            raise AcError(f"registration refused: {e.message}", detail=e.detail) from None
        if e.status == 409:
            raise AcError(
                f"the nick {nick!r} is already taken on {settings.server_url}; "
                "choose another name",
                detail=e.detail,
            ) from None
        if e.status == 403:
            hint = (
                "set the server's registration token: ac config --set registration_token=T"
                if not settings.registration_token
                else "check the registration token (ac config --set registration_token=T)"
            )
            raise AuthError(
                f"registration refused by {settings.server_url}: {e.message}; {hint}",
                detail=e.detail,
            ) from None
        if e.status == 400:
            raise UsageError(f"registration refused: {e.message}", detail=e.detail) from None
        raise
    if not isinstance(answer.get("token"), str):
        raise AcError("the server's /register answer has no token", detail=repr(answer)[:200])
    if not isinstance(answer.get("nick"), str):
        answer["nick"] = nick or answer.get("user_id") or "agent"
    return answer
