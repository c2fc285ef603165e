"""agent_chat.http: the raw-socket HTTP/1.1 client's framing and failure kinds.

These drive the parser with canned bytes from a local socket (framing cannot be chosen on the
real server). Exit codes are tested end to end against the real server in test_client_cli.py.
"""

from __future__ import annotations

from collections.abc import Iterator
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


def test_dns_failure() -> None:
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
    e = error_for(_resp(503, b'{"errcode":"M_UNAVAILABLE","error":"homeserver down"}'))
    assert isinstance(e, NetworkError) and e.exit_code == 2
    e = error_for(_resp(400, b'{"errcode":"M_BAD_JSON","error":"bad \\u001b[2Jthing"}'))
    assert e.exit_code == 1 and e.message == "bad thing (M_BAD_JSON)"
