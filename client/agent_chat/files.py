"""The client's files: where they are, what they are called, how they are read and written.

``$AGENT_CHAT_HOME`` (default ``~/.agent-chat``, mode 0700) holds:

- ``config.toml`` (mode 0600: it may hold the registration token): :mod:`agent_chat.config`;
- ``credentials.json`` (mode 0600, written atomically under ``credentials.lock``): identities
  keyed by server URL and nick, :mod:`agent_chat.identity`;
- ``state.json`` and ``unread.line``: caches, deleting them loses nothing: :mod:`agent_chat.state`;
- ``hook/``: the files the shell hook reads: :mod:`agent_chat.hook_files`;
- ``relay/``: the connection keepers' sockets, one per remote server: :mod:`agent_chat.relay`.

Files are replaced atomically (a temporary file and a rename) with private modes. One module
rather than two (paths, writing): every ``ac`` process needs both, and each module imported
costs a cold start ~0.1 ms.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

CONFIG_FILE = "config.toml"
CREDENTIALS_FILE = "credentials.json"
CREDENTIALS_LOCK_FILE = "credentials.lock"
STATE_FILE = "state.json"
UNREAD_LINE_FILE = "unread.line"
HOOK_DIR = "hook"
RELAY_DIR = "relay"

#: The bytes a nick keeps in a file name; every other byte becomes ``_``.
FILE_NAME_BYTES = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")


def file_part(nick: str | None) -> str:
    """A nick's name in file names: ``hook/<part>.curl``, ``hook/line.<part>``,
    ``unread.<part>.line``.

    The one rule, which ``integrations/hooks/ac-hook.sh`` implements too (a test runs the
    script against this function): ``AGENT_CHAT_NICK`` exactly as the shell sees it, its bytes
    (nothing stripped, no case folding), each byte outside ``[A-Za-z0-9_-]`` as ``_``;
    ``default`` when it is unset or empty. Give it the raw environment value, not a cleaned
    nick, or the shell would look for another file.
    """
    if not nick:
        return "default"
    # os.fsencode undoes Python's decoding of the environment: the shell's very bytes.
    return "".join(chr(b) if b in FILE_NAME_BYTES else "_" for b in os.fsencode(nick))


def home_dir(env: Mapping[str, str] | None = None) -> str:
    """The client's directory: ``$AGENT_CHAT_HOME`` or ``~/.agent-chat``."""
    env = os.environ if env is None else env
    home = env.get("AGENT_CHAT_HOME")
    if home:
        return os.path.abspath(os.path.expanduser(home))
    return os.path.join(os.path.expanduser("~"), ".agent-chat")


def sha256_hex(text: str) -> str:
    """SHA-256 of ``text`` in hex, for names of files that must not show what they stand for
    (a token's state file). The C module behind ``hashlib``, which would load OpenSSL: ~2 ms of
    a cold start; it is ``_sha256`` up to Python 3.11, ``_sha2`` from 3.12."""
    try:
        from _sha256 import sha256  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        from _sha2 import sha256  # type: ignore[import-not-found,unused-ignore]
    return str(sha256(text.encode()).hexdigest())


# --- reading and writing ------------------------------------------------------------------


def ensure_dir(path: str) -> None:
    """Create a directory (mode 0700) and its parents if needed."""
    os.makedirs(path, mode=0o700, exist_ok=True)


def atomic_write(path: str, data: bytes, mode: int = 0o600, fsync: bool = False) -> None:
    """Write bytes to ``path`` through a temporary file and a rename; the file gets ``mode``.

    Readers see the old content or the new one, never a part. ``fsync`` flushes the data to
    disk before the rename (for credentials, which cannot be recreated).
    """
    directory = os.path.dirname(path) or "."
    ensure_dir(directory)
    tmp = os.path.join(
        directory, f".{os.path.basename(path)}.{os.getpid()}.{os.urandom(4).hex()}.tmp"
    )
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        try:
            _write_all(fd, data)
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


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def read_text(path: str) -> str | None:
    """The file's text, or None if it does not exist."""
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except FileNotFoundError:
        return None
