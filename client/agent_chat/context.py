"""The environment every ``ac`` command runs in: settings, verbosity, the API client and the
identity (made on first use), and where output goes.

Commands receive a :class:`Context`; nothing here knows any command (httpie keeps its
``Environment`` apart from the program the same way).
"""

from __future__ import annotations

import os
import sys

from . import identity as ident
from .api import Client, log
from .config import Settings
from .errors import AuthError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import TextIO

    from .identity import Identity


class Context:
    """Settings, verbosity, and the API client and identity, made on first use."""

    def __init__(self, verbose: bool = False, settings: Settings | None = None) -> None:
        self.verbose = verbose
        self.settings = settings or Settings()
        self._identity: Identity | None = None

    def client(self, token: str | None = None, timeout: float | None = None) -> Client:
        """An API client for our server (with ``token``, if given)."""
        if timeout:
            return Client(self.settings.server_url, token, verbose=self.verbose, timeout=timeout)
        return Client(self.settings.server_url, token, verbose=self.verbose)

    def identity(self) -> Identity:
        """Our identity; registers one on first use."""
        found = self._identity
        if found is None:
            found = self._identity = ident.resolve(self.settings, self.client())
            if found.source == "registration":
                point_hook_at(self.settings, found)
            if self.verbose:
                log(f"identity {found.label()} ({found.user_id or '?'}) from {found.source}")
        return found

    def current_identity(self) -> Identity | None:
        """Our identity if there is one already (never registers)."""
        if self._identity is None:
            self._identity = ident.current(self.settings)
        return self._identity

    def authed(self, timeout: float | None = None) -> Client:
        """An API client with our token (registering an identity if needed)."""
        client = self.client(self.identity().token, timeout)
        client.on_rejected = self.rejected
        return client

    def rejected(self, error: AuthError) -> AuthError:
        """The server's 401, reworded: what is true for where our token came from."""
        from .whoami import rejected

        message = rejected(self.settings, self._identity)
        return AuthError(f"authentication failed: {message}", detail=error.detail)

    def cache_key(self) -> str:
        """The identity's key in the caches (``state.json``)."""
        nick = self._identity.key if self._identity and self._identity.key else "default"
        return f"{self.settings.server_url}|{nick}"


def point_hook_at(settings: Settings, identity: Identity | None) -> None:
    """After storing credentials: the shell hook's files follow ``identity``, the one the
    settings now resolve to (``hook_files`` is imported only here: storing is rare)."""
    if identity is None:
        return
    from . import hook_files

    hook_files.refresh(settings, identity)


def out(text: str = "") -> None:
    """A line on stdout."""
    sys.stdout.write(text + "\n")


def use_color(stream: TextIO | None = None) -> bool:
    """Colour on ``stream`` (stdout): a terminal, and neither NO_COLOR nor TERM=dumb."""
    stream = stream or sys.stdout
    if os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        return False
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
