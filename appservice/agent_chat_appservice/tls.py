"""The API's TLS listener for remote agents (``tls_*`` in appservice.yaml, made by ``init``)."""

from __future__ import annotations

import ssl

from .config import Config


def server_context(config: Config) -> ssl.SSLContext:
    """TLS 1.2 or newer with the configured certificate chain (leaf, then the private CA)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    assert config.tls_cert and config.tls_key
    context.load_cert_chain(config.tls_cert, config.tls_key)
    return context
