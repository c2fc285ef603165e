"""Errors the client reports, each carrying the exit code the spec gives it.

Exit codes: 0 success; 1 any other error (usage errors included); 2 server unreachable;
3 authentication failed; 4 rate-limited; 5 timed out (``ac wait``: nothing new; ``ac ask``);
6 ``ac claim``: the paths are claimed by someone else.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_UNREACHABLE = 2
EXIT_AUTH = 3
EXIT_RATE_LIMITED = 4
EXIT_TIMEOUT = 5
EXIT_CONFLICT = 6


class ConfigFileError(Exception):
    """config.toml or credentials.json cannot be read or parsed (exit code 1)."""


class AcError(Exception):
    """An error shown as one concise line on stderr; ``detail`` is added with ``--verbose``."""

    exit_code = EXIT_ERROR

    def __init__(self, message: str, detail: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail


class UsageError(AcError):
    """Bad command line or bad configuration value."""


class NetworkError(AcError):
    """The server could not be reached (refused, timed out, reset, DNS, TLS, 502/503)."""

    exit_code = EXIT_UNREACHABLE


class AuthError(AcError):
    """The server rejected our token or registration token."""

    exit_code = EXIT_AUTH


class RateLimited(AcError):
    """The server answered 429."""

    exit_code = EXIT_RATE_LIMITED

    def __init__(
        self, message: str, retry_after: float | None = None, detail: str | None = None
    ) -> None:
        super().__init__(message, detail)
        self.retry_after = retry_after


class ApiError(AcError):
    """Any other error answer from the API (``errcode``/``error``/``status`` kept)."""

    def __init__(
        self, message: str, status: int = 0, errcode: str = "", detail: str | None = None
    ) -> None:
        super().__init__(message, detail)
        self.status = status
        self.errcode = errcode


class ClaimConflict(AcError):
    """``ac claim``: another agent holds an overlapping claim (exit code 6)."""

    exit_code = EXIT_CONFLICT
