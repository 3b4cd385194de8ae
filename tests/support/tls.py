"""A server TLS context for 127.0.0.1 from a fresh trustme CA, for loopback upstreams."""

from __future__ import annotations

import ssl
from pathlib import Path

import trustme


def loopback_server_tls(ca_file: Path) -> ssl.SSLContext:
    """A server context whose certificate (for 127.0.0.1) a new CA signed; the CA's
    certificate is written to `ca_file`, for the client to trust."""
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    ca.cert_pem.write_to_path(str(ca_file))
    return context
