"""The server's URL: the default, the API prefix, and the checks on a URL a user typed."""

from __future__ import annotations

DEFAULT_SERVER = "http://127.0.0.1:8009"
API_PREFIX = "/_agent_chat/v1"


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
