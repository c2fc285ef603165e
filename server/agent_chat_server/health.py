"""Health probes over HTTP (stdlib only): Synapse, the appservice, Synapse's ping of the AS."""

from __future__ import annotations

from dataclasses import dataclass
import http.client
import json
import urllib.error
import urllib.request

from agent_chat.wire import API_PREFIX as API_PREFIX

from .synapse_config import APPSERVICE_ID


@dataclass
class Probe:
    """One check's outcome: ``ok`` and a short human description."""

    ok: bool
    detail: str


def _request(
    url: str,
    method: str = "GET",
    token: str | None = None,
    body: bytes | None = None,
    timeout: float = 3.0,
) -> tuple[int, bytes]:
    req = urllib.request.Request(url, method=method, data=body)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    if body is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except http.client.HTTPException as e:
        # Not an HTTP answer: "down", like a refused connection. Seen in CI while a worker was
        # starting: probing a local port nobody listens on yet can connect the socket to itself
        # (the kernel picked that port as the source port) and read back its own request.
        raise ConnectionError(f"not an HTTP answer ({type(e).__name__})") from e


def _describe(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None) or exc
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    return str(reason) or type(reason).__name__


def synapse_up(synapse_url: str) -> Probe:
    """Synapse answers ``/_matrix/client/versions``."""
    try:
        status, _ = _request(f"{synapse_url}/_matrix/client/versions")
    except OSError as e:
        return Probe(False, f"Synapse is down at {synapse_url} ({_describe(e)})")
    if status != 200:
        return Probe(False, f"Synapse at {synapse_url} answers HTTP {status}")
    return Probe(True, f"Synapse is up at {synapse_url}")


def worker_up(name: str, health_url: str) -> Probe:
    """A Synapse worker answers ``/health`` (served on every Synapse HTTP listener)."""
    try:
        status, _ = _request(health_url)
    except OSError as e:
        return Probe(False, f"{name} is down at {health_url} ({_describe(e)})")
    if status != 200:
        return Probe(False, f"{name} at {health_url} answers HTTP {status}")
    return Probe(True, f"{name} is up at {health_url}")


def appservice_up(api_url: str) -> Probe:
    """The appservice answers ``GET /_agent_chat/v1/health``."""
    try:
        status, body = _request(f"{api_url}{API_PREFIX}/health")
    except OSError as e:
        return Probe(False, f"appservice is down at {api_url} ({_describe(e)})")
    if status != 200:
        return Probe(False, f"appservice at {api_url} answers HTTP {status}: {body[:200]!r}")
    return Probe(True, f"appservice is up at {api_url}")


def ping_appservice(synapse_url: str, as_token: str) -> Probe:
    """Synapse pings the appservice (which also flushes any queued transactions)."""
    url = f"{synapse_url}/_matrix/client/v1/appservice/{APPSERVICE_ID}/ping"
    try:
        status, body = _request(url, "POST", as_token, b"{}", timeout=10.0)
    except OSError as e:
        return Probe(False, f"Synapse's ping of the appservice failed ({_describe(e)})")
    try:
        data = json.loads(body)
    except ValueError:
        data = {}
    if status != 200:
        why = data.get("error") if isinstance(data, dict) else None
        return Probe(False, f"Synapse's ping of the appservice failed: HTTP {status} {why or ''}")
    ms = data.get("duration_ms") if isinstance(data, dict) else None
    return Probe(True, f"Synapse pings the appservice ({ms} ms)")
