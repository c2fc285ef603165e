"""TLS for remote agents: a private CA made at ``init``, or a certificate the operator gives.

Why a private CA by default: agents reach a server on a LAN, a VPN or a cloud box's private
address far more often than on a public host name, and ACME needs a public name and port 80/443
reachable from the internet. A CA made here works offline, and its SHA-256 fingerprint travels in
the invite (``agent-chat-server invite``), so a new machine trusts exactly this server and nothing
else (``ac`` pins it). A public host can give its own certificate (``--tls-cert``/``--tls-key``,
e.g. from certbot) or put Caddy in front for ACME (docs/remote.md).

Files, all 0600 in ``DIR/tls`` (0700): ``ca.pem`` (the CA certificate, the only public part),
``ca.key``, ``server.pem`` (the server certificate followed by the CA's: clients pinning the CA
find it in the handshake) and ``server.key``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
import datetime
import hashlib
import ipaddress

from .errors import ServerError
from .files import private_dir, write_atomic

CA_DAYS = 3650
SERVER_DAYS = 825  # the longest lifetime clients accept for a leaf certificate


@dataclass(frozen=True)
class TlsFiles:
    """Where the certificate, its key and (private CA only) the CA certificate live."""

    cert: Path
    key: Path
    ca: Path | None


def tls_dir(root: Path) -> Path:
    return root / "tls"


def private_ca_files(root: Path) -> TlsFiles:
    d = tls_dir(root)
    return TlsFiles(d / "server.pem", d / "server.key", d / "ca.pem")


def fingerprint(pem: bytes) -> str:
    """The SHA-256 of the first certificate's DER, as ``sha256:`` and lower-case hex."""
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    cert = x509.load_pem_x509_certificate(pem)
    return "sha256:" + hashlib.sha256(cert.public_bytes(Encoding.DER)).hexdigest()


def _name(common_name: str) -> object:
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Agent Chat"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name[:64]),
        ]
    )


def _san(host: str) -> object:
    from cryptography import x509

    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def make_private_ca(root: Path, hosts: list[str]) -> TlsFiles:
    """A new CA and a server certificate for ``hosts`` (names or IP addresses), written 0600.

    Kept when they exist: re-running ``init`` must not change the fingerprint agents pinned.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    files = private_ca_files(root)
    assert files.ca is not None
    if files.ca.exists() and files.cert.exists() and files.key.exists():
        return files
    private_dir(tls_dir(root))
    now = datetime.datetime.now(datetime.UTC)
    start = now - datetime.timedelta(hours=1)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name(f"Agent Chat private CA {hosts[0]}")
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)  # type: ignore[arg-type]
        .issuer_name(ca_name)  # type: ignore[arg-type]
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(now + datetime.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(_name(hosts[0]))  # type: ignore[arg-type]
        .issuer_name(ca_name)  # type: ignore[arg-type]
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(now + datetime.timedelta(days=SERVER_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName([_san(h) for h in dict.fromkeys(hosts)]),  # type: ignore[misc]
            critical=False,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [
                    x509.oid.ExtendedKeyUsageOID.SERVER_AUTH,
                    x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH,
                ]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    no_password = serialization.NoEncryption()
    pkcs8 = serialization.PrivateFormat.PKCS8
    ca_pem = ca.public_bytes(pem).decode()
    write_atomic(tls_dir(root) / "ca.key", ca_key.private_bytes(pem, pkcs8, no_password).decode())
    write_atomic(files.key, key.private_bytes(pem, pkcs8, no_password).decode())
    write_atomic(files.cert, leaf.public_bytes(pem).decode() + ca_pem)
    write_atomic(files.ca, ca_pem)
    return files


def given_certificate(root: Path, cert: str, key: str) -> TlsFiles:
    """The operator's certificate (full chain) and key, copied into ``DIR/tls`` (0600)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    try:
        cert_pem = Path(cert).expanduser().read_bytes()
        key_pem = Path(key).expanduser().read_bytes()
    except OSError as e:
        raise ServerError(f"cannot read {e.filename}: {e.strerror}") from None
    try:
        x509.load_pem_x509_certificate(cert_pem)
    except ValueError:
        raise ServerError(f"--tls-cert {cert}: not a PEM certificate") from None
    try:
        serialization.load_pem_private_key(key_pem, None)
    except (ValueError, TypeError):
        raise ServerError(f"--tls-key {key}: not an unencrypted PEM private key") from None
    private_dir(tls_dir(root))
    files = TlsFiles(tls_dir(root) / "server.pem", tls_dir(root) / "server.key", None)
    write_atomic(files.cert, cert_pem.decode())
    write_atomic(files.key, key_pem.decode())
    return files


def existing(root: Path) -> TlsFiles | None:
    """The TLS files ``init`` made before, or None."""
    files = private_ca_files(root)
    if not (files.cert.exists() and files.key.exists()):
        return None
    assert files.ca is not None
    return files if files.ca.exists() else TlsFiles(files.cert, files.key, None)


def ca_fingerprint(root: Path) -> str | None:
    """The private CA's fingerprint, None with a given certificate or without TLS."""
    files = existing(root)
    if files is None or files.ca is None:
        return None
    return fingerprint(files.ca.read_bytes())


@dataclass(frozen=True)
class TlsPlan:
    """``init --public-url https://HOST[:PORT] --bind ADDR`` (ADDR not loopback, or with
    ``--tls-cert``): Synapse's client API over TLS on PORT and the Agent Chat API on PORT+1,
    both on ADDR; the plain listeners stay on loopback for the services' own traffic. Without
    a public ``--bind`` an https URL still means a reverse proxy in front (docs/deployment.md).
    """

    host: str
    bind: str
    client_port: int
    api_port: int
    given_cert: str | None = None
    given_key: str | None = None

    @property
    def api_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"https://{host}:{self.api_port}"

    def files(self, root: Path) -> TlsFiles:
        d = tls_dir(root)
        ca = None if self.given_cert else d / "ca.pem"
        return TlsFiles(d / "server.pem", d / "server.key", ca)

    def make(self, root: Path) -> TlsFiles:
        """Write the certificate files (a private CA's are kept when they exist)."""
        if self.given_cert and self.given_key:
            return given_certificate(root, self.given_cert, self.given_key)
        hosts = [self.host]
        if self.bind not in ("0.0.0.0", "::", self.host):
            hosts.append(self.bind)
        return make_private_ca(root, hosts)


def plan(
    public_url: str | None,
    bind: str | None,
    tls_cert: str | None = None,
    tls_key: str | None = None,
) -> TlsPlan | None:
    """The TLS listeners an https public URL asks for; None for plain HTTP.

    Raises:
        ServerError: a certificate without its key (or the other way round), or one given
            without an https public URL.
    """
    from urllib.parse import urlsplit

    if bool(tls_cert) != bool(tls_key):
        raise ServerError("--tls-cert and --tls-key go together")
    parts = urlsplit(public_url or "")
    if parts.scheme != "https" or not parts.hostname:
        if tls_cert:
            raise ServerError("--tls-cert needs --public-url https://HOST[:PORT]")
        return None
    port = parts.port or 443
    if port >= 65535:
        raise ServerError(f"--public-url {public_url}: the API takes the port after {port}")
    return TlsPlan(parts.hostname, bind or "0.0.0.0", port, port + 1, tls_cert, tls_key)
