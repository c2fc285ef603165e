"""agent_chat.http: the raw-socket HTTP/1.1 client's framing and failure kinds.

These drive the parser with canned bytes from a local socket (framing cannot be chosen on the
real server). Exit codes are tested end to end against the real server in test_client_cli.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
import socket
import threading
import time

import pytest

from agent_chat import http
from agent_chat.api import error_for
from agent_chat.errors import AuthError, NetworkError, RateLimited


class Trickle:
    """An answer sent one byte at a time, ``interval`` seconds apart."""

    def __init__(self, data: bytes, interval: float) -> None:
        self.data = data
        self.interval = interval


class CannedServer:
    """Accepts connections, reads one request, answers canned bytes (or stalls/trickles)."""

    def __init__(self, answers: list[bytes | Trickle | None]) -> None:
        self.answers = list(answers)
        self.requests: list[bytes] = []
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while self.answers:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            answer = self.answers.pop(0)
            with conn:
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                head, _, body = data.partition(b"\r\n\r\n")
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        n = int(line.split(b":")[1])
                        while len(body) < n:
                            body += conn.recv(65536)
                self.requests.append(head + b"\r\n\r\n" + body)
                if answer is None:  # stall until the client gives up
                    conn.recv(1)
                    continue
                if isinstance(answer, Trickle):
                    try:
                        for i in range(len(answer.data)):
                            conn.sendall(answer.data[i : i + 1])
                            time.sleep(answer.interval)
                    except OSError:  # the client gave up
                        pass
                    continue
                conn.sendall(answer)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def canned() -> Iterator[type[CannedServer]]:
    servers: list[CannedServer] = []

    def make(answers: list[bytes | Trickle | None]) -> CannedServer:
        s = CannedServer(answers)
        servers.append(s)
        return s

    yield make  # type: ignore[misc]
    for s in servers:
        s.close()


def test_content_length(canned) -> None:
    srv = canned([b'HTTP/1.1 200 OK\r\nContent-Length: 11\r\nX-A: b\r\n\r\n{"ok":true}'])
    resp = http.request("PUT", srv.url + "/x?y=1", b'{"a":1}', {"Authorization": "Bearer t"})
    assert resp.status == 200 and resp.json() == {"ok": True}
    assert resp.headers["x-a"] == "b"
    req = srv.requests[0]
    assert req.startswith(b"PUT /x?y=1 HTTP/1.1\r\n")
    assert b"\r\nAuthorization: Bearer t\r\n" in req and req.endswith(b'{"a":1}')
    assert b"Host: 127.0.0.1:" in req


def test_chunked(canned) -> None:
    srv = canned(
        [
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            b'4;ext=1\r\n{"a"\r\n3\r\n:1}\r\n0\r\nX-Trailer: 1\r\n\r\n'
        ]
    )
    assert http.request("GET", srv.url + "/").json() == {"a": 1}


def test_read_to_close_and_continue(canned) -> None:
    srv = canned([b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.0 200 OK\r\n\r\n[1,2]"])
    assert http.request("GET", srv.url).json() == [1, 2]


def test_truncated_answer_is_a_reset(canned) -> None:
    srv = canned([b'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"short'])
    with pytest.raises(http.ConnectionFailed) as e:
        http.request("GET", srv.url)
    assert e.value.kind == "reset" and e.value.sent and e.value.exit_code == 2


def test_garbage_is_a_protocol_error(canned) -> None:
    srv = canned([b"SSH-2.0-OpenSSH\r\n\r\n"])
    with pytest.raises(http.ConnectionFailed) as e:
        http.request("GET", srv.url)
    assert e.value.kind == "protocol"


def test_refused() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(http.ConnectionFailed) as e:
        http.request("GET", f"http://127.0.0.1:{port}/")
    assert e.value.kind == "refused" and not e.value.sent
    assert isinstance(e.value, NetworkError) and e.value.exit_code == 2
    assert "connection refused" in e.value.message


def test_timeout(canned) -> None:
    srv = canned([None])
    with pytest.raises(http.ConnectionFailed) as e:
        http.request("GET", srv.url, timeout=0.3)
    assert e.value.kind == "timeout" and e.value.sent


def test_deadline_bounds_a_trickling_server(canned) -> None:
    # Each byte comes well within the per-read timeout; only the total deadline stops it.
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b" " * 100
    srv = canned([Trickle(answer, 0.05)])
    start = time.monotonic()
    with pytest.raises(http.ConnectionFailed) as e:
        http.request("GET", srv.url, timeout=1.0, deadline=0.5)
    elapsed = time.monotonic() - start
    assert e.value.kind == "timeout" and e.value.sent and e.value.exit_code == 2
    assert "within 0.5 s" in e.value.message
    assert 0.45 <= elapsed < 3.0  # the trickle alone would take 7.5 s


def test_deadline_defaults_to_twice_the_timeout(canned) -> None:
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b" " * 100
    srv = canned([Trickle(answer, 0.05)])
    start = time.monotonic()
    with pytest.raises(http.ConnectionFailed) as e:
        http.request("GET", srv.url, timeout=0.3)
    assert e.value.kind == "timeout" and "within 0.6 s" in e.value.message
    assert time.monotonic() - start < 3.0


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": "Bearer t\r\nX-Evil: 1"},
        {"Authorization": "Bearer t\nX-Evil: 1"},
        {"Authorization": "Bearer t\rX"},
        {"Authorization": "Bearer t\x00"},
        {"X-Evil: 1\r\nAuthorization": "t"},
        {"Bad Name": "t"},
        {"": "t"},
    ],
)
def test_header_injection_is_refused(canned, headers: dict[str, str]) -> None:
    srv = canned([b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"])
    with pytest.raises(http.InvalidHeader) as e:
        http.request("GET", srv.url, headers=headers)
    assert e.value.exit_code == 1
    assert "Bearer" not in e.value.message  # the value (a token) is never shown
    assert not srv.requests  # nothing was sent
    assert http.request("GET", srv.url).status == 200


def test_control_characters_in_the_url_are_refused() -> None:
    for url in ("http://h/a b", "http://h/a\r\nX: 1", "http://h\x00/"):
        with pytest.raises(ValueError):
            http.request("GET", url)


def test_dns_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(http.ALLOW_HTTP_ENV, "1")
    with pytest.raises(http.ConnectionFailed) as e:
        http.request("GET", "http://no-such-host.invalid/", timeout=5)
    assert e.value.kind == "dns" and e.value.exit_code == 2


def test_split_url() -> None:
    assert http.split_url("http://h:1/base/") == ("http", "h", 1, "/base")
    assert http.split_url("https://h") == ("https", "h", 443, "")
    assert http.split_url("http://[::1]:8009") == ("http", "::1", 8009, "")
    with pytest.raises(ValueError):
        http.split_url("ftp://h")


def test_quote_and_urlencode() -> None:
    assert http.quote("#general:srv") == "%23general%3Asrv"
    assert http.quote("é") == "%C3%A9"
    assert (
        http.urlencode({"room": "#a", "unread": True, "x": None, "n": 5})
        == "room=%23a&unread=true&n=5"
    )


def _resp(status: int, body: bytes, headers: dict | None = None) -> http.Response:
    return http.Response(status, "X", headers or {}, body)


def test_error_mapping() -> None:
    e = error_for(_resp(401, b'{"errcode":"M_UNKNOWN_TOKEN","error":"unknown token"}'))
    assert isinstance(e, AuthError) and e.exit_code == 3
    e = error_for(_resp(429, b'{"errcode":"M_LIMIT_EXCEEDED","error":"x","retry_after_ms":1500}'))
    assert isinstance(e, RateLimited) and e.exit_code == 4 and e.retry_after == 1.5
    assert e.message == "rate limited: retry after 1.5 s"
    e = error_for(_resp(429, b"", {"retry-after": "3"}))
    assert e.message == "rate limited: retry after 3 s"
    e = error_for(_resp(429, b'{"errcode":"M_LIMIT_EXCEEDED","retry_after_ms":40}'))
    assert e.message == "rate limited: retry after 0.1 s"  # never "after 0 s"
    e = error_for(_resp(429, b'{"errcode":"M_LIMIT_EXCEEDED","retry_after_ms":0}'))
    assert e.message == "rate limited"
    e = error_for(_resp(503, b'{"errcode":"M_UNAVAILABLE","error":"homeserver down"}'))
    assert isinstance(e, NetworkError) and e.exit_code == 2
    e = error_for(_resp(400, b'{"errcode":"M_BAD_JSON","error":"bad \\u001b[2Jthing"}'))
    assert e.exit_code == 1 and e.message == "bad thing (M_BAD_JSON)"


# --- TLS and plain HTTP to other machines ---------------------------------------------------


@pytest.fixture
def trust() -> Iterator[None]:
    """Every test here starts from, and leaves, the default trust settings."""
    http.set_trust()
    http._trust.warned = False
    yield
    http.set_trust()
    http._trust.warned = False


class TlsServer:
    """A real TLS listener with a certificate from the server's private CA (tls.py), answering
    one canned 200 per connection: what the client verifies is the handshake, not the API."""

    def __init__(self, tmp: Path, hosts: list[str]) -> None:
        import ssl

        from agent_chat_server import tls

        files = tls.make_private_ca(tmp, hosts)
        assert files.ca is not None
        self.ca = files.ca
        self.fingerprint = tls.fingerprint(files.ca.read_bytes())
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.load_cert_chain(files.cert, files.key)
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            try:
                with self.context.wrap_socket(conn, server_side=True) as tconn:
                    tconn.settimeout(5)
                    data = b""
                    while b"\r\n\r\n" not in data:
                        chunk = tconn.recv(65536)
                        if not chunk:
                            break
                        data += chunk
                    if data:
                        tconn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            except OSError:
                conn.close()

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[TlsServer]:
    server = TlsServer(tmp_path / "dd", ["localhost"])
    try:
        yield server
    finally:
        server.close()


def test_plain_http_to_another_machine_is_refused_unless_allowed(
    trust: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv(http.ALLOW_HTTP_ENV, raising=False)
    with pytest.raises(http.InsecureHttp) as e:
        http.request("GET", "http://192.0.2.1:8009/x", timeout=0.5)
    assert "refusing plain HTTP to 192.0.2.1" in e.value.message
    assert "allow_insecure_http=true" in e.value.message and e.value.exit_code == 1
    # allowed: it is attempted (and fails to connect), with one warning on stderr
    http.set_trust(allow_http=True)
    for _ in range(2):
        with pytest.raises(http.ConnectionFailed):
            http.request("GET", "http://192.0.2.1:8009/x", timeout=0.3)
    err = capsys.readouterr().err
    assert err.count("warning: plain HTTP to 192.0.2.1") == 1
    # loopback never needs it
    http.set_trust()
    with pytest.raises(http.ConnectionFailed) as refused:
        http.request("GET", "http://127.0.0.1:9/x", timeout=1)
    assert refused.value.kind == "refused"


def test_untrusted_certificate_is_refused(trust: None, tls_server: TlsServer) -> None:
    with pytest.raises(http.UntrustedServer) as e:
        http.request("GET", f"https://localhost:{tls_server.port}/x", timeout=5)
    assert http.CERT_MISMATCH in e.value.message and e.value.exit_code == 2
    assert not isinstance(e.value, http.ConnectionFailed)  # loops must not retry it


def test_pinned_fingerprint_fetches_the_ca_once_then_verifies(
    trust: None, tls_server: TlsServer, tmp_path: Path
) -> None:
    store = tmp_path / "home" / "server-ca.pem"
    http.set_trust(fingerprint=tls_server.fingerprint, store=str(store))
    url = f"https://localhost:{tls_server.port}/x"
    assert http.request("GET", url, timeout=5).body == b"ok"
    assert store.read_bytes().strip() == tls_server.ca.read_bytes().strip()
    assert store.stat().st_mode & 0o777 == 0o600
    assert http.request("GET", url, timeout=5).status == 200  # from the stored CA
    # the host name is verified too: the certificate names localhost only
    with pytest.raises(http.UntrustedServer):
        http.request("GET", f"https://127.0.0.1:{tls_server.port}/x", timeout=5)


def test_wrong_fingerprint_is_refused(trust: None, tls_server: TlsServer, tmp_path: Path) -> None:
    store = tmp_path / "server-ca.pem"
    http.set_trust(fingerprint="sha256:" + "ab" * 32, store=str(store))
    with pytest.raises(http.UntrustedServer) as e:
        http.request("GET", f"https://localhost:{tls_server.port}/x", timeout=5)
    assert http.CERT_MISMATCH in e.value.message
    assert not store.exists()


def test_another_servers_ca_is_refused(trust: None, tls_server: TlsServer, tmp_path: Path) -> None:
    """A stored CA of another server (a man in the middle's) does not verify this one."""
    from agent_chat_server import tls

    other = tls.make_private_ca(tmp_path / "other", ["127.0.0.1"])
    assert other.ca is not None
    http.set_trust(ca_file=str(other.ca))
    with pytest.raises(http.UntrustedServer):
        http.request("GET", f"https://localhost:{tls_server.port}/x", timeout=5)
    http.set_trust(ca_file=str(tls_server.ca))
    assert http.request("GET", f"https://localhost:{tls_server.port}/x", timeout=5).status == 200


def test_fingerprint_forms() -> None:
    hexa = "ab" * 32
    colons = ":".join(["AB"] * 32)
    for text in (hexa, "sha256:" + hexa, colons, "SHA256:" + colons):
        assert http.normalize_fingerprint(text) == hexa
    for bad in ("", "sha256:", "ab" * 31, "zz" * 32):
        assert http.normalize_fingerprint(bad) is None


def test_plain_loopback_paths_never_import_ssl() -> None:
    """TLS costs the cold paths nothing on loopback: ``ssl`` is imported for https only."""
    import os
    import subprocess
    import sys

    code = (
        "import sys; from agent_chat import cli\n"
        "cli.run(['notify', '--oneline']); cli.run(['send', '#r', 'x']); cli.run(['wait', '--any',"
        " '--timeout', '1'])\n"
        "print('ssl' in sys.modules, '_ssl' in sys.modules)"
    )
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENT_CHAT_")}
    env.update(AGENT_CHAT_SERVER=f"http://127.0.0.1:{port}", AGENT_CHAT_TOKEN="t")
    p = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=30
    )
    assert p.stdout.strip() == "False False", (p.stdout, p.stderr)
