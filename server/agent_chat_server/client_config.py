"""The local user's ``ac`` client config, written by ``start`` when missing."""

from __future__ import annotations

from pathlib import Path
import json
import os

from .files import write_atomic


def client_home() -> Path:
    """``$AGENT_CHAT_HOME``, else ``~/.agent-chat`` (the client's own rule)."""
    env = os.environ.get("AGENT_CHAT_HOME")
    return Path(env).expanduser() if env else Path.home() / ".agent-chat"


def _write_fallback(server_url: str, registration_token: str) -> bool:
    """Same shape as the client's own writer; used when the client package lacks one."""
    path = client_home() / "config.toml"
    if path.exists():
        return False
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    # JSON string escapes are valid TOML basic-string escapes.
    text = (
        "[server]\n"
        f"url = {json.dumps(server_url)}\n"
        f"registration_token = {json.dumps(registration_token)}\n"
    )
    write_atomic(path, text, 0o600)
    return True


def ensure_client_config(server_url: str, registration_token: str) -> bool:
    """Write the client config if it is missing; True if written."""
    try:
        from agent_chat.config import ensure_client_config as client_writer
    except ImportError:
        return _write_fallback(server_url, registration_token)
    return bool(client_writer(server_url, registration_token))
