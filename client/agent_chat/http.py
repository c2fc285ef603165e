"""A small HTTP/1.1 client over a raw socket: one request per connection.

Why not ``http.client``/``urllib``: their imports cost ~26 ms of a hook's budget, a raw socket
~1-3 ms (see DESIGN.md). This speaks exactly what the appservice API needs: a request with a JSON
body, a response with ``Content-Length``, ``Transfer-Encoding: chunked`` or read-to-close.
``https://`` URLs load ``ssl`` lazily and verify certificates with the system's defaults.

Connection failures (refused, timed out, reset, DNS, TLS, a truncated answer) raise
:class:`ConnectionFailed`, a :class:`~agent_chat.errors.NetworkError` (exit code 2).
"""

import _socket

from .errors import NetworkError

DEFAULT_TIMEOUT = 15.0
MAX_HEAD = 64 * 1024
MAX_BODY = 64 * 1024 * 1024
USER_AGENT = "ac/0.1"


class ConnectionFailed(NetworkError):
    """The server could not be reached or the connection broke.

    Attributes:
        kind: ``refused``, ``timeout``, ``reset``, ``dns``, ``tls`` or ``protocol``.
        sent: whether the whole request had been written before the failure.
    """

    def __init__(self, message, kind, sent=False, detail=None):
        super().__init__(message, detail)
        self.kind = kind
        self.sent = sent


class Response:
    """Status, lower-cased headers and the raw body of an answer."""

    __slots__ = ("body", "headers", "reason", "status")

    def __init__(self, status, reason, headers, body):
        self.status = status
        self.reason = reason
        self.headers = headers
        self.body = body

    def json(self):
        import json

        return json.loads(self.body.decode("utf-8"))


def split_url(url):
    """``http://host:port/base`` → (scheme, host, port, base path without trailing slash)."""
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in ("http", "https"):
        raise ValueError(f"not an http(s) URL: {url!r}")
    hostport, slash, path = rest.partition("/")
    hostport = hostport.rpartition("@")[2]
    if hostport.startswith("["):
        host, _, port = hostport[1:].partition("]")
        port = port[1:] if port.startswith(":") else ""
    elif hostport.count(":") == 1:
        host, _, port = hostport.partition(":")
    else:
        host, port = hostport, ""
    if not host:
        raise ValueError(f"no host in URL: {url!r}")
    port = int(port) if port else (443 if scheme == "https" else 80)
    base = ("/" + path).rstrip("/") if slash else ""
    return scheme, host, port, base


def quote(s, safe=""):
    """Percent-encode a string for a URL path segment or query value (RFC 3986 unreserved)."""
    out = []
    for b in s.encode("utf-8"):
        c = chr(b)
        if ("a" <= c <= "z") or ("A" <= c <= "Z") or ("0" <= c <= "9") or c in "-._~" or c in safe:
            out.append(c)
        else:
            out.append(f"%{b:02X}")
    return "".join(out)


def urlencode(params):
    """Query string from a dict, skipping None values; booleans as ``true``/``false``."""
    parts = []
    for key, value in params.items():
        if value is None:
            continue
        if value is True or value is False:
            value = "true" if value else "false"
        parts.append(f"{quote(str(key))}={quote(str(value))}")
    return "&".join(parts)


def _fail(e, host, port, sent, stage):
    where = "%s:%d" % (host, port)
    if isinstance(e, ConnectionFailed):
        return e
    if isinstance(e, ConnectionRefusedError):
        return ConnectionFailed(
            f"server unreachable: connection refused by {where}", "refused", sent
        )
    if isinstance(e, TimeoutError):
        return ConnectionFailed(
            f"server unreachable: {where} timed out ({stage})", "timeout", sent
        )
    if isinstance(e, _socket.gaierror):
        return ConnectionFailed(
            f"server unreachable: cannot resolve {host}", "dns", sent, detail=str(e)
        )
    if type(e).__module__ == "ssl" or type(e).__name__.startswith("SSL"):
        return ConnectionFailed(f"server unreachable: TLS error with {where}: {e}", "tls", sent)
    if isinstance(e, (ConnectionResetError, BrokenPipeError, ConnectionAbortedError)):
        return ConnectionFailed(f"server unreachable: connection to {where} reset", "reset", sent)
    return ConnectionFailed(
        f"server unreachable: {where}: {e.strerror or e}",
        "refused" if not sent else "reset",
        sent,
        detail=repr(e),
    )


def _connect(scheme, host, port, timeout):
    if scheme == "https":
        import socket
        import ssl

        sock = socket.create_connection((host, port), timeout)
        try:
            return ssl.create_default_context().wrap_socket(sock, server_hostname=host)
        except BaseException:
            sock.close()
            raise
    last = None
    # An ASCII host given as bytes skips the idna codec's import.
    name = host.encode("ascii") if host.isascii() else host
    for family, type_, proto, _name, addr in _socket.getaddrinfo(
        name, port, 0, _socket.SOCK_STREAM
    ):
        sock = _socket.socket(family, type_, proto)
        try:
            sock.settimeout(timeout)
            sock.connect(addr)
            return sock
        except OSError as e:
            sock.close()
            last = e
    raise last if last else ConnectionRefusedError("no address")


def request(method, url, body=None, headers=None, timeout=DEFAULT_TIMEOUT):
    """Send one request and read the whole answer.

    Args:
        method: ``GET``, ``POST``, ``PUT``...
        url: absolute URL (path and query already encoded).
        body: bytes or None.
        headers: extra headers (dict).
        timeout: seconds for connecting and for each read.

    Returns:
        :class:`Response`, whatever the status.

    Raises:
        ConnectionFailed: the server was unreachable or the connection broke.
    """
    scheme, host, port, path = split_url(url)
    if not path:
        path = "/"
    host_header = host if ":" not in host else f"[{host}]"
    if port != (443 if scheme == "https" else 80):
        host_header = "%s:%d" % (host_header, port)
    lines = [
        f"{method} {path} HTTP/1.1",
        "Host: " + host_header,
        "User-Agent: " + USER_AGENT,
        "Accept: application/json",
        "Connection: close",
    ]
    if body is not None:
        lines.append("Content-Type: application/json")
        lines.append("Content-Length: %d" % len(body))
    if headers:
        for key, value in headers.items():
            lines.append(f"{key}: {value}")
    data = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    if body:
        data += body
    sent = False
    sock = None
    stage = "connecting"
    try:
        sock = _connect(scheme, host, port, timeout)
        stage = "sending"
        sock.sendall(data)
        sent = True
        stage = "waiting for the answer"
        return _read_response(sock, method)
    except OSError as e:
        raise _fail(e, host, port, sent, stage) from None
    finally:
        if sock is not None:
            sock.close()


class _Reader:
    __slots__ = ("buf", "eof", "sock")

    def __init__(self, sock):
        self.sock = sock
        self.buf = bytearray()
        self.eof = False

    def fill(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            self.eof = True
            return False
        self.buf += chunk
        return True

    def until(self, marker, limit):
        start = 0
        while True:
            i = self.buf.find(marker, start)
            if i >= 0:
                out = bytes(self.buf[:i])
                del self.buf[: i + len(marker)]
                return out
            if len(self.buf) > limit:
                raise ConnectionFailed("server sent an oversized HTTP header", "protocol", True)
            start = max(0, len(self.buf) - len(marker) + 1)
            if not self.fill():
                raise ConnectionFailed("server closed the connection mid-answer", "reset", True)

    def exactly(self, n):
        while len(self.buf) < n:
            if not self.fill():
                raise ConnectionFailed("server closed the connection mid-answer", "reset", True)
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def rest(self):
        while self.fill():
            if len(self.buf) > MAX_BODY:
                raise ConnectionFailed("answer too large", "protocol", True)
        out = bytes(self.buf)
        self.buf.clear()
        return out


def _read_response(sock, method):
    reader = _Reader(sock)
    while True:
        head = reader.until(b"\r\n\r\n", MAX_HEAD)
        status_line, _, header_block = head.partition(b"\r\n")
        parts = status_line.split(None, 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
            raise ConnectionFailed(f"not an HTTP answer: {status_line[:60]!r}", "protocol", True)
        status = int(parts[1])
        reason = parts[2].decode("latin-1") if len(parts) > 2 else ""
        headers = {}
        for line in header_block.split(b"\r\n"):
            key, sep, value = line.partition(b":")
            if sep:
                headers[key.strip().lower().decode("latin-1")] = value.strip().decode("latin-1")
        if 100 <= status < 200 and status != 101:
            continue  # 100 Continue and friends: the real answer follows
        break
    if method == "HEAD" or status in (204, 304):
        return Response(status, reason, headers, b"")
    if "chunked" in headers.get("transfer-encoding", "").lower():
        chunks = []
        total = 0
        while True:
            size_line = reader.until(b"\r\n", 4096)
            try:
                size = int(size_line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise ConnectionFailed("bad chunked encoding", "protocol", True) from None
            if size == 0:
                # trailers, then the empty line
                while reader.until(b"\r\n", MAX_HEAD):
                    pass
                break
            total += size
            if total > MAX_BODY:
                raise ConnectionFailed("answer too large", "protocol", True)
            chunks.append(reader.exactly(size))
            reader.exactly(2)
        body = b"".join(chunks)
    elif "content-length" in headers:
        try:
            length = int(headers["content-length"])
        except ValueError:
            raise ConnectionFailed("bad Content-Length", "protocol", True) from None
        if length < 0 or length > MAX_BODY:
            raise ConnectionFailed("bad Content-Length", "protocol", True)
        body = reader.exactly(length)
    else:
        body = reader.rest()
    return Response(status, reason, headers, body)
