"""A small HTTP/1.1 client over a raw socket: one request per connection.

Why not ``http.client``/``urllib``: their imports cost ~26 ms of a hook's budget, a raw socket
~1-3 ms (see DESIGN.md). It speaks exactly what the appservice API needs, and no more.

Supported:

- ``http://`` and ``https://`` URLs (TLS through ``_ssl``, the C module behind ``ssl``, loaded
  for https only: :class:`_TlsSocket` says why), host names, IPv4
  and ``[IPv6]`` literals, an explicit port, a base path;
- the server verified (:func:`set_trust`): the system's trust store, a CA file, or a CA pinned by
  its SHA-256 fingerprint (an invite's): the CA is taken once from the server's own chain, kept
  only if its fingerprint matches, then every connection verifies against it alone, host name
  included; any mismatch is :class:`UntrustedServer` (exit code 2);
- plain ``http://`` only to loopback, unless allowed (``allow_insecure_http`` or
  ``AGENT_CHAT_ALLOW_INSECURE_HTTP=1``), and then with a warning on stderr once per process;
- one request per connection (``Connection: close``), with an optional body sent as
  ``application/json`` with a ``Content-Length``;
- for a server on another machine, the connection taken from the connection keeper
  (:mod:`agent_chat.relay`, :func:`set_relay`) when one runs: its TCP and TLS handshakes are
  done before the command starts; the first such request starts the keeper;
- answers framed by ``Content-Length``, ``Transfer-Encoding: chunked`` (trailers skipped) or the
  end of the connection; interim ``1xx`` answers skipped; no body for ``HEAD``, 204 and 304;
- a per-operation ``timeout`` (connecting, sending, each read) and a total ``deadline`` for the
  whole exchange, so a server that trickles bytes cannot hold a command for ever;
- limits: 64 KiB of status line and headers, 64 MiB of body (kept in memory).

Not supported, by design: keep-alive and pipelining, redirects (a 3xx is returned as it is),
proxies (``HTTP(S)_PROXY`` are ignored), compression (no ``Accept-Encoding`` is sent), user
and password in the URL (dropped), cookies, ``Expect: 100-continue``, HTTP/2, client
certificates, streaming. Host name resolution (``getaddrinfo``) blocks and is bounded by
neither the timeout nor the deadline; non-ASCII host names go through Python's ``idna`` codec.

Headers are checked before anything is sent: a CR, LF or NUL in a header name or value (or a
space or control character in the URL) would let one header smuggle others into the request,
so it is refused with :class:`InvalidHeader` (or ``ValueError`` for the URL).

Connection failures (refused, timed out, reset, DNS, TLS, a truncated answer) raise
:class:`ConnectionFailed`, a :class:`~agent_chat.errors.NetworkError` (exit code 2).
"""

from __future__ import annotations

import _socket
import os
import sys
import time

from .errors import EXIT_UNREACHABLE, AcError, NetworkError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from typing import Any

DEFAULT_TIMEOUT = 15.0
MAX_HEAD = 64 * 1024
MAX_BODY = 64 * 1024 * 1024
USER_AGENT = "ac/0.1"
#: Characters that end a header line (or the C string behind it): never inside one.
_LINE_BREAKS = ("\r", "\n", "\0")


class ConnectionFailed(NetworkError):
    """The server could not be reached or the connection broke.

    Attributes:
        kind: ``refused``, ``timeout``, ``reset``, ``dns``, ``tls`` or ``protocol``.
        sent: whether the whole request had been written before the failure.
    """

    def __init__(
        self, message: str, kind: str, sent: bool = False, detail: str | None = None
    ) -> None:
        super().__init__(message, detail)
        self.kind = kind
        self.sent = sent


class UntrustedServer(AcError):
    """The server's certificate is not the one the invite (or the trust store) vouches for.

    Exit code 2 like a :class:`~agent_chat.errors.NetworkError`, but not one: retrying cannot
    help, so the loops that re-issue requests after a network error (listen, wait) stop on it.
    """

    exit_code = EXIT_UNREACHABLE


class InsecureHttp(AcError):
    """Plain HTTP to a host other than this machine, not allowed by the user (exit code 1)."""


#: The phrase every certificate failure carries (the issue's wording, for scripts and people).
CERT_MISMATCH = "the server's certificate does not match the invite"
ALLOW_HTTP_ENV = "AGENT_CHAT_ALLOW_INSECURE_HTTP"


class _Trust:
    """How https servers are verified and whether plain HTTP may leave this machine."""

    __slots__ = ("allow_http", "ca_file", "fingerprint", "store", "warned")

    def __init__(self) -> None:
        self.ca_file: str | None = None
        self.fingerprint: str | None = None
        self.store: str | None = None
        self.allow_http = False
        self.warned = False


_trust = _Trust()


def normalize_fingerprint(text: str) -> str | None:
    """``sha256:AB:CD...``, ``AB:CD...`` or plain hex → 64 lower-case hex digits, else None."""
    value = text.strip().lower()
    if value.startswith("sha256:"):
        value = value[7:]
    value = value.replace(":", "")
    if len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
        return None
    return value


def set_trust(
    ca_file: str | None = None,
    fingerprint: str | None = None,
    store: str | None = None,
    allow_http: bool = False,
) -> None:
    """Set how servers are trusted (``config.Settings`` calls it from config.toml).

    Args:
        ca_file: a PEM CA bundle to verify against instead of the system's.
        fingerprint: a pinned CA fingerprint (:func:`normalize_fingerprint`'s forms).
        store: where the pinned CA is kept once fetched (None: fetched for every connection).
        allow_http: plain HTTP to other machines allowed (a warning is still printed).
    """
    _trust.ca_file = ca_file
    _trust.fingerprint = normalize_fingerprint(fingerprint) if fingerprint else None
    _trust.store = store
    _trust.allow_http = allow_http


def ca_file_in_use() -> str | None:
    """The CA file https servers are verified with (the pinned CA once kept, or ca_file),
    for curl's ``cacert`` in the hook; None: the system's trust store."""
    if _trust.fingerprint:
        return _trust.store if _trust.store and os.path.exists(_trust.store) else None
    return _trust.ca_file


def is_loopback(host: str) -> bool:
    """``localhost``, 127.0.0.0/8 or ::1 (no DNS lookup, no ipaddress import)."""
    host = host.lower()
    return host in ("localhost", "::1", "0:0:0:0:0:0:0:1") or (
        host.startswith("127.") and host.replace(".", "").isdigit()
    )


def _check_plain_http(host: str) -> None:
    if is_loopback(host):
        return
    allowed = _trust.allow_http or os.environ.get(ALLOW_HTTP_ENV, "").strip().lower() in (
        "1",
        "true",
        "yes",
    )
    if not allowed:
        raise InsecureHttp(
            f"refusing plain HTTP to {host}: tokens and messages would cross the network "
            "unencrypted; use the server's https URL (agent-chat-server invite), or allow it "
            "on a trusted network: ac config --set allow_insecure_http=true "
            f"(or {ALLOW_HTTP_ENV}=1)"
        )
    if not _trust.warned:
        _trust.warned = True
        print(
            f"ac: warning: plain HTTP to {host}: tokens and messages are not encrypted",
            file=sys.stderr,
        )


class _Relay:
    """Where the connection keepers' sockets are (:mod:`agent_chat.relay`); None: no keeper."""

    __slots__ = ("directory", "starts")

    def __init__(self) -> None:
        self.directory: str | None = None
        self.starts = True


_relay = _Relay()
RELAY_ENV = "AGENT_CHAT_RELAY"
#: The header of the keeper's answer "no warm connection: connect yourself".
RELAY_HEADER = "x-agent-chat-relay"
#: A Unix socket's path is at most 107 bytes on Linux; a longer one means no keeper.
_MAX_SOCKET_PATH = 100


def set_relay(directory: str | None, starts: bool = True) -> None:
    """Requests to servers on other machines go through a connection keeper whose socket is
    in ``directory``, started on first use unless not ``starts`` (then only one ``ac``
    started is used); None, or ``AGENT_CHAT_RELAY=off``: each process connects by itself."""
    off = os.environ.get(RELAY_ENV, "").strip().lower() in ("0", "off", "false", "no")
    _relay.directory = None if off else directory
    _relay.starts = starts


def relay_socket(scheme: str, host: str, port: int) -> str | None:
    """The keeper's socket for a server, or None where no keeper is used: loopback, keepers
    off, a pinned CA not fetched yet (the first request fetches it directly), a long path.

    The name holds the CA the keeper verifies with: other trust settings, another keeper."""
    if _relay.directory is None or is_loopback(host):
        return None
    ca = ca_file_in_use() if scheme == "https" else ""
    if ca is None and _trust.fingerprint:
        return None
    from .files import sha256_hex

    key = sha256_hex(f"{scheme}\n{host}\n{port}\n{ca or ''}")[:20]
    path = os.path.join(_relay.directory, key + ".sock")
    return path if len(path) <= _MAX_SOCKET_PATH else None


def start_relay(path: str, scheme: str, host: str, port: int) -> None:
    """Start the keeper for ``path`` in the background (at most once every 10 s per socket,
    so a keeper that cannot start costs a failing command nothing more than one try)."""
    if not _relay.starts:
        return
    marker = path + ".started"
    try:
        if time.time() - os.stat(marker).st_mtime < 10:
            return
    except OSError:
        pass
    try:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        os.close(os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))
        package_parent = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        code = (
            "import sys; sys.path.insert(0, sys.argv[1]); from agent_chat.relay import main;"
            " sys.exit(main(sys.argv[2:]))"
        )
        ca = (ca_file_in_use() or "") if scheme == "https" else ""
        args = [sys.executable, "-S", "-c", code, package_parent, path, scheme, host, str(port)]
        # sh puts the keeper in the background and exits at once (reaped here), so the keeper
        # is nobody's child: no zombie under a long-lived command, no terminal, no waiting.
        pid = os.posix_spawn(
            "/bin/sh",
            ["sh", "-c", 'exec "$@" </dev/null >/dev/null 2>&1 &', "sh", *args, ca],
            os.environ,
            setsid=True,
        )
        os.waitpid(pid, 0)
    except OSError:
        pass  # no keeper: every command connects by itself, as without one


def _via_relay(
    path: str,
    data: bytes,
    method: str,
    clock: _Clock,
    scheme: str,
    host: str,
    port: int,
    opened: Callable[[_socket.socket], object] | None,
) -> Response | None:
    """The request through the keeper at ``path``; None when the caller must connect itself
    (no keeper there, one started; or the keeper has no warm connection: nothing was sent)."""
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        sock.settimeout(clock.next())
        try:
            sock.connect(path)
        except OSError:  # none yet, or a dead one's socket: a new keeper for the next request
            start_relay(path, scheme, host, port)
            return None
        if opened is not None:
            opened(sock)
        sock.sendall(data)
        response = _read_response(_Reader(sock, clock), method)
    except OSError as e:
        # Whether the keeper had sent it on cannot be known: counted as sent, as a reset is
        raise _fail(e, host, port, True, "waiting for the answer", clock) from None
    finally:
        sock.close()
    if response.status == 503 and RELAY_HEADER in response.headers:
        return None
    return response


class InvalidHeader(AcError):
    """A header name or value the client refuses to send (a line break or NUL in it)."""


class Response:
    """Status, lower-cased headers and the raw body of an answer."""

    __slots__ = ("body", "headers", "reason", "status")

    def __init__(self, status: int, reason: str, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.reason = reason
        self.headers = headers
        self.body = body

    def json(self) -> object:
        """The body parsed as JSON (``ValueError`` if it is not)."""
        import json

        result: object = json.loads(self.body.decode("utf-8"))
        return result


def split_url(url: str) -> tuple[str, str, int, str]:
    """``http://host:port/base`` → (scheme, host, port, base path without trailing slash).

    Raises:
        ValueError: not an http(s) URL, no host, a bad port, or a space or control character.
    """
    if any(c <= " " or c == "\x7f" for c in url):
        raise ValueError(f"space or control character in URL: {url!r}")
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in ("http", "https"):
        raise ValueError(f"not an http(s) URL: {url!r}")
    hostport, slash, path = rest.partition("/")
    hostport = hostport.rpartition("@")[2]
    if hostport.startswith("["):
        host, _, port_text = hostport[1:].partition("]")
        port_text = port_text[1:] if port_text.startswith(":") else ""
    elif hostport.count(":") == 1:
        host, _, port_text = hostport.partition(":")
    else:
        host, port_text = hostport, ""
    if not host:
        raise ValueError(f"no host in URL: {url!r}")
    port = int(port_text) if port_text else (443 if scheme == "https" else 80)
    base = ("/" + path).rstrip("/") if slash else ""
    return scheme, host, port, base


def quote(s: str, safe: str = "") -> str:
    """Percent-encode a string for a URL path segment or query value (RFC 3986 unreserved)."""
    out = []
    for b in s.encode("utf-8"):
        c = chr(b)
        if ("a" <= c <= "z") or ("A" <= c <= "Z") or ("0" <= c <= "9") or c in "-._~" or c in safe:
            out.append(c)
        else:
            out.append(f"%{b:02X}")
    return "".join(out)


def urlencode(params: Mapping[str, object]) -> str:
    """Query string from a dict, skipping None values; booleans as ``true``/``false``."""
    parts = []
    for key, value in params.items():
        if value is None:
            continue
        if value is True or value is False:
            value = "true" if value else "false"
        parts.append(f"{quote(str(key))}={quote(str(value))}")
    return "&".join(parts)


def header_line(name: str, value: str) -> str:
    """``Name: value``, refusing what would end the line early or is not a header name.

    Raises:
        InvalidHeader: a CR, LF or NUL in the name or value (the value is not shown: it may
            be a token), or a name with a colon, space or control character.
    """
    if not name or any(c <= " " or c in ":\x7f" for c in name):
        raise InvalidHeader(f"refusing to send a header named {name!r}: not a header name")
    if any(c in value for c in _LINE_BREAKS):
        raise InvalidHeader(
            f"refusing to send the {name} header: its value contains a line break (CR or LF)"
            " or a NUL character"
        )
    return f"{name}: {value}"


class _DeadlinePassed(TimeoutError):
    """The request's total deadline passed (a TimeoutError: the same ``timeout`` kind)."""


class _Clock:
    """Per-operation timeouts, cut short by what is left of the request's total deadline."""

    __slots__ = ("deadline", "end", "timeout")

    def __init__(self, timeout: float, deadline: float) -> None:
        self.timeout = timeout
        self.deadline = deadline
        self.end = time.monotonic() + deadline

    def next(self) -> float:
        """Seconds the next socket operation may take; raises once the deadline passed."""
        left = self.end - time.monotonic()
        if left <= 0:
            raise _DeadlinePassed
        return min(self.timeout, left)

    def passed(self) -> bool:
        return time.monotonic() >= self.end


def _fail(e: OSError, host: str, port: int, sent: bool, stage: str, clock: _Clock) -> NetworkError:
    where = f"{host}:{port}"
    if isinstance(e, ConnectionFailed):
        return e
    if isinstance(e, ConnectionRefusedError):
        return ConnectionFailed(
            f"server unreachable: connection refused by {where}", "refused", sent
        )
    if isinstance(e, TimeoutError) and (isinstance(e, _DeadlinePassed) or clock.passed()):
        return ConnectionFailed(
            f"server unreachable: no complete answer from {where} within {clock.deadline:g} s"
            f" ({stage})",
            "timeout",
            sent,
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


class _TlsSocket:
    """A TLS connection through ``_ssl``, the C module behind ``ssl``: importing ``ssl`` itself
    (its enums, ``socket``, ``base64``, ``re``) costs a cold command 12-17 ms, and one request
    needs none of it. The calls are the ones ``ssl.SSLSocket`` makes; the raw socket's timeout
    bounds each of them, as it does there."""

    __slots__ = ("raw", "tls")

    def __init__(self, raw: _socket.socket, tls: Any) -> None:
        self.raw = raw
        self.tls = tls

    def settimeout(self, timeout: float) -> None:
        self.raw.settimeout(timeout)

    def sendall(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[self.tls.write(view) :]

    def recv(self, size: int) -> bytes:
        import _ssl

        try:
            data: bytes = self.tls.read(size)
        except (_ssl.SSLZeroReturnError, _ssl.SSLEOFError):
            return b""  # a close, or a close without TLS's goodbye (ssl's ragged EOF)
        return data

    def close(self) -> None:
        self.raw.close()


class _WeakSocket(_socket.socket):
    """A raw socket ``_ssl`` may keep a weak reference to (``_socket.socket`` takes none)."""

    __slots__ = ("__weakref__",)


def _tls_connect(host: str, port: int, clock: _Clock, context: Any) -> _TlsSocket:
    import _ssl

    raw = _tcp_connect(host, port, clock, _WeakSocket)
    try:
        # The handshake's last flight and the request are two small writes: with Nagle's
        # algorithm the request would wait for the Finished's ACK, one more round trip on a
        # real link (40 ms of delayed ACK where the server answers the Finished with nothing).
        raw.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_NODELAY, 1)
        raw.settimeout(clock.next())
        tls = context._wrap_socket(raw, False, host)
        tls.do_handshake()
        return _TlsSocket(raw, tls)
    except _ssl.SSLCertVerificationError as e:
        raw.close()
        why = e.verify_message or e.reason or "not verified"
        raise UntrustedServer(
            f"{CERT_MISMATCH} ({host}:{port}: {why}); check the server URL, or get a new "
            "invite from the server's operator (agent-chat-server invite)"
        ) from None
    except BaseException:
        raw.close()
        raise


def _pem_to_der(pem: str) -> bytes:
    import binascii

    body = pem.partition("-----BEGIN CERTIFICATE-----")[2].partition("-----END CERTIFICATE-----")
    if not body[1]:
        raise ValueError("not a PEM certificate")
    return binascii.a2b_base64(body[0].encode("ascii"))


def _der_to_pem(der: bytes) -> bytes:
    import binascii

    text = binascii.b2a_base64(der, newline=False)
    lines = [text[i : i + 64] for i in range(0, len(text), 64)]
    return b"-----BEGIN CERTIFICATE-----\n" + b"\n".join(lines) + b"\n-----END CERTIFICATE-----\n"


def _pinned_ca(host: str, port: int, clock: _Clock) -> bytes:
    """The pinned CA (DER), from the store or else from the server's handshake chain."""
    import _ssl
    import hashlib

    wanted = _trust.fingerprint
    if _trust.store:
        try:
            with open(_trust.store, "rb") as f:
                der = _pem_to_der(f.read().decode("ascii"))
            if hashlib.sha256(der).hexdigest() == wanted:
                return der
        except (OSError, ValueError):
            pass
    probe = _ssl._SSLContext(_ssl.PROTOCOL_TLS_CLIENT)
    probe.check_hostname = False
    probe.verify_mode = _ssl.CERT_NONE  # only to read the chain; nothing is sent on it
    sock = _tls_connect(host, port, clock, probe)
    try:
        chain = sock.tls.get_unverified_chain() or []
        found: list[bytes] = [c.public_bytes(_ssl.ENCODING_DER) for c in chain]
    finally:
        sock.close()
    for der in found:
        if hashlib.sha256(der).hexdigest() == wanted:
            if _trust.store:
                from .files import atomic_write

                atomic_write(_trust.store, _der_to_pem(der), 0o600)
            return der
    raise UntrustedServer(
        f"{CERT_MISMATCH} ({host}:{port} presents no CA with fingerprint sha256:{wanted}); "
        "check the server URL and the fingerprint (agent-chat-server invite prints both)"
    )


def _tls_context(host: str, port: int, clock: _Clock, whole_store: bool = False) -> Any:
    """What ``ssl.create_default_context()`` makes for a client, with the CA the trust names:
    TLS 1.2 or newer, certificate and host name checked (``_ssl``'s defaults for a client).

    The system's store: its hashed directory alone when it has one (OpenSSL reads the one CA
    a chain needs), unless ``whole_store`` or ``SSL_CERT_FILE``/``SSL_CERT_DIR`` is set;
    loading the whole bundle file costs a cold command 17-39 ms."""
    import _ssl

    context = _ssl._SSLContext(_ssl.PROTOCOL_TLS_CLIENT)
    if sys.version_info >= (3, 13):  # what create_default_context adds from 3.13 on
        context.verify_flags |= _ssl.VERIFY_X509_STRICT | _ssl.VERIFY_X509_PARTIAL_CHAIN
    if _trust.fingerprint:
        context.load_verify_locations(cadata=_pinned_ca(host, port, clock))
    elif _trust.ca_file:
        context.load_verify_locations(cafile=_trust.ca_file)
    else:
        file_env, _file, dir_env, directory = _ssl.get_default_verify_paths()
        told = os.environ.get(file_env) or os.environ.get(dir_env)
        if whole_store or told or not os.path.isdir(directory):
            context.set_default_verify_paths()
        else:
            context.load_verify_locations(capath=directory)
    return context


def _tcp_connect(
    host: str, port: int, clock: _Clock, kind: type[_socket.socket] = _socket.socket
) -> _socket.socket:
    last: OSError | None = None
    # An ASCII host given as bytes skips the idna codec's import.
    name = host.encode("ascii") if host.isascii() else host
    for family, type_, proto, _name, addr in _socket.getaddrinfo(
        name, port, 0, _socket.SOCK_STREAM
    ):
        raw = kind(family, type_, proto)
        try:
            raw.settimeout(clock.next())
            raw.connect(addr)
            return raw
        except OSError as e:
            raw.close()
            last = e
    raise last if last else ConnectionRefusedError("no address")


def _connect(scheme: str, host: str, port: int, clock: _Clock) -> _socket.socket | _TlsSocket:
    """A connected socket (a :class:`_TlsSocket` for https), with the clock's timeout."""
    if scheme == "https":
        try:
            return _tls_connect(host, port, clock, _tls_context(host, port, clock))
        except UntrustedServer:
            if _trust.fingerprint or _trust.ca_file:
                raise
            # the system's CA directory lacks the issuer: the bundle file too, as ssl would
            return _tls_connect(host, port, clock, _tls_context(host, port, clock, True))
    return _tcp_connect(host, port, clock)


def request(
    method: str,
    url: str,
    body: bytes | None = None,
    headers: Mapping[str, str] | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    deadline: float | None = None,
    opened: Callable[[_socket.socket], object] | None = None,
) -> Response:
    """Send one request and read the whole answer.

    Args:
        method: ``GET``, ``POST``, ``PUT``...
        url: absolute URL (path and query already encoded).
        body: bytes or None.
        headers: extra headers.
        timeout: seconds for connecting, for sending, and for each read.
        deadline: seconds for the whole exchange, from connecting to the answer's last byte
            (default: twice ``timeout``).
        opened: given the connected socket (its TCP or Unix socket), so that another thread
            may cut a long-poll short (``shutdown``): the request then fails as a reset.

    Returns:
        :class:`Response`, whatever the status.

    Raises:
        ConnectionFailed: the server was unreachable, the connection broke, or the timeout or
            the deadline passed (kind ``timeout``).
        InvalidHeader: a header with a line break or NUL in it; nothing was sent.
        ValueError: a malformed URL; nothing was sent.
        UntrustedServer: the server's certificate is not trusted; nothing was sent.
        InsecureHttp: plain HTTP to another machine, not allowed; nothing was sent.
    """
    scheme, host, port, path = split_url(url)
    if scheme == "http":
        _check_plain_http(host)
    if not path:
        path = "/"
    host_header = host if ":" not in host else f"[{host}]"
    if port != (443 if scheme == "https" else 80):
        host_header = f"{host_header}:{port}"
    lines = [
        f"{method} {path} HTTP/1.1",
        "Host: " + host_header,
        "User-Agent: " + USER_AGENT,
        "Accept: application/json",
        "Connection: close",
    ]
    if body is not None:
        lines.append("Content-Type: application/json")
        lines.append(f"Content-Length: {len(body)}")
    if headers:
        for key, value in headers.items():
            lines.append(header_line(key, value))
    try:
        data = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    except UnicodeEncodeError:
        raise InvalidHeader("refusing to send a header with characters outside Latin-1") from None
    if body:
        data += body
    clock = _Clock(timeout, 2 * timeout if deadline is None else deadline)
    relay = relay_socket(scheme, host, port)
    if relay is not None:
        answer = _via_relay(relay, data, method, clock, scheme, host, port, opened)
        if answer is not None:
            return answer
    sent = False
    sock = None
    stage = "connecting"
    try:
        sock = _connect(scheme, host, port, clock)
        if opened is not None:
            opened(sock.raw if isinstance(sock, _TlsSocket) else sock)
        stage = "sending"
        sock.settimeout(clock.next())
        sock.sendall(data)
        sent = True
        stage = "waiting for the answer"
        return _read_response(_Reader(sock, clock), method)
    except OSError as e:
        raise _fail(e, host, port, sent, stage, clock) from None
    finally:
        if sock is not None:
            sock.close()


class _Reader:
    __slots__ = ("buf", "clock", "eof", "sock")

    def __init__(self, sock: _socket.socket | _TlsSocket, clock: _Clock) -> None:
        self.sock = sock
        self.clock = clock
        self.buf = bytearray()
        self.eof = False

    def fill(self) -> bool:
        self.sock.settimeout(self.clock.next())
        chunk = self.sock.recv(65536)
        if not chunk:
            self.eof = True
            return False
        self.buf += chunk
        return True

    def until(self, marker: bytes, limit: int) -> bytes:
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

    def exactly(self, n: int) -> bytes:
        while len(self.buf) < n:
            if not self.fill():
                raise ConnectionFailed("server closed the connection mid-answer", "reset", True)
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def rest(self) -> bytes:
        while self.fill():
            if len(self.buf) > MAX_BODY:
                raise ConnectionFailed("answer too large", "protocol", True)
        out = bytes(self.buf)
        self.buf.clear()
        return out


def _read_head(reader: _Reader) -> tuple[int, str, dict[str, str]]:
    """Status, reason and lower-cased headers of the final (non-1xx) answer."""
    while True:
        head = reader.until(b"\r\n\r\n", MAX_HEAD)
        status_line, _, header_block = head.partition(b"\r\n")
        parts = status_line.split(None, 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
            raise ConnectionFailed(f"not an HTTP answer: {status_line[:60]!r}", "protocol", True)
        status = int(parts[1])
        if 100 <= status < 200 and status != 101:
            continue  # 100 Continue and friends: the real answer follows
        reason = parts[2].decode("latin-1") if len(parts) > 2 else ""
        headers = {}
        for line in header_block.split(b"\r\n"):
            key, sep, value = line.partition(b":")
            if sep:
                headers[key.strip().lower().decode("latin-1")] = value.strip().decode("latin-1")
        return status, reason, headers


def _read_chunked(reader: _Reader) -> bytes:
    chunks: list[bytes] = []
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
            return b"".join(chunks)
        total += size
        if total > MAX_BODY:
            raise ConnectionFailed("answer too large", "protocol", True)
        chunks.append(reader.exactly(size))
        reader.exactly(2)


def _read_response(reader: _Reader, method: str) -> Response:
    status, reason, headers = _read_head(reader)
    if method == "HEAD" or status in (204, 304):
        return Response(status, reason, headers, b"")
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = _read_chunked(reader)
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
