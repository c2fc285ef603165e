"""The small files the shell hook reads instead of starting Python (``$AGENT_CHAT_HOME/hook/``).

- ``<nick>.curl`` (0600): a curl config with the notify URL and the ``Authorization`` header,
  so the token never appears on a command line (``ps``). ``<nick>`` is
  :func:`agent_chat.files.file_part` of ``AGENT_CHAT_NICK``, the rule ac-hook.sh follows too.
- ``ac-path``: the ``ac`` executable, which the hook runs in the background (``ac setup hook
  --quiet``) when it finds no ``<nick>.curl`` (an identity stored before ``ac`` wrote these
  files, or an agent whose first ``ac`` command has not run yet).

``ac`` refreshes them whenever it stores credentials (registration, ``ac register``, ``ac
login``: :func:`refresh`, called explicitly with the identity the settings now resolve to), and
``ac setup`` writes them (:func:`write_files`). This module knows neither how identities are
stored nor how they are resolved: its callers hand it one. Imported lazily: the ``ac notify``
hot path never loads this module.
"""

from __future__ import annotations

import os
import sys

from . import http
from .files import HOOK_DIR, atomic_write, ensure_dir
from .wire import API_PREFIX

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .config import Settings
    from .identity import Identity


def hook_dir(home: str) -> str:
    return os.path.join(home, HOOK_DIR)


def _curl_string(value: str) -> str:
    return '"{}"'.format(value.replace("\\", "\\\\").replace('"', '\\"'))


def curl_config(server_url: str, token: str, label: str, cacert: str | None = None) -> str:
    """The hook's curl config; ``cacert``: the CA ``ac`` verifies this server with (a pinned
    one, or ca_file), so curl verifies it the same way instead of with the system's."""
    text = (
        "# Agent Chat hook credentials for {}, written by `ac` (keep private)\n"
        "url = {}\nheader = {}\n".format(
            label.replace("\n", " "),
            _curl_string(server_url + API_PREFIX + "/notify"),
            _curl_string("Authorization: Bearer " + token),
        )
    )
    if cacert and server_url.startswith("https://"):
        text += f"cacert = {_curl_string(cacert)}\n"
    return text


def ac_executable() -> str:
    """The ``ac`` console script next to this interpreter (else argv[0], else ``ac``)."""
    candidate = os.path.join(os.path.dirname(sys.executable), "ac")
    if os.access(candidate, os.X_OK):
        return candidate
    argv0 = os.path.abspath(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    if os.path.basename(argv0) == "ac" and os.access(argv0, os.X_OK):
        return argv0
    return "ac"


def curl_path(settings: Settings) -> str:
    """The curl config the hook reads for the identity ``settings`` resolve to."""
    return os.path.join(hook_dir(settings.home), settings.file_part + ".curl")


def write_files(settings: Settings, identity: Identity) -> str:
    """Write the hook's files for ``identity``, the one ``settings`` resolve to; return the
    curl config's path. Files whose content is unchanged are not rewritten."""
    directory = hook_dir(settings.home)
    ensure_dir(directory)
    os.chmod(directory, 0o700)
    _write_if_changed(os.path.join(directory, "ac-path"), ac_executable() + "\n")
    path = curl_path(settings)
    cacert = http.ca_file_in_use()
    _write_if_changed(
        path, curl_config(settings.server_url, identity.token, identity.label(), cacert)
    )
    return path


def refresh(settings: Settings, identity: Identity) -> None:
    """After credentials were stored: point the hook at ``identity``, the one ``settings`` now
    resolve to. Never fails the command that stored them: without the files the hook stays
    quiet and falls back to running ``ac setup hook`` itself. Nothing with AGENT_CHAT_TOKEN."""
    if not settings.writes_files:
        return
    try:
        write_files(settings, identity)
    except OSError:
        pass


def _write_if_changed(path: str, text: str) -> None:
    try:
        with open(path, encoding="utf-8") as f:
            if f.read() == text:
                return
    except (OSError, UnicodeDecodeError):
        pass
    atomic_write(path, text.encode("utf-8"), 0o600)


def remove(home: str) -> list[str]:
    """Remove the hook directory's files (credentials, caches); return what was removed."""
    directory = hook_dir(home)
    removed: list[str] = []
    try:
        names = os.listdir(directory)
    except OSError:
        return removed
    for name in names:
        path = os.path.join(directory, name)
        try:
            os.unlink(path)
            removed.append(path)
        except OSError:
            pass
    try:
        os.rmdir(directory)
    except OSError:
        pass
    return removed
