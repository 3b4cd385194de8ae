"""The SMTP listeners' TLS certificate: loaded once, checked with a reason naming the field,
and swapped for new connections on a reload without a restart.

`check-config` and `serve` load the files exactly as a listener will (`server_context`), so a
missing, unreadable or mismatched cert/key is a config error, never a surprise at the first
STARTTLS. A reload loads the files again into a new context; only when that succeeds do new
connections use it (sessions already encrypted keep theirs), else the old one stays.
"""

from __future__ import annotations

import hashlib
import ssl
from pathlib import Path

from sendguard.errors import ConfigProblem


class CertificateError(Exception):
    """The certificate or key cannot be used; `problem` names the field and the fix."""

    def __init__(self, problem: ConfigProblem) -> None:
        super().__init__(str(problem))
        self.problem = problem
        self.kept: str | None = None
        """On a reload: the fingerprint of the certificate that stays in use."""


def _readable(path: Path, field: str) -> None:
    try:
        with path.open("rb") as file:
            file.read(1)
    except OSError as exc:
        raise CertificateError(
            ConfigProblem(
                field,
                f"cannot read {path}: {exc.strerror}; give the path of a PEM file "
                "sendguard's user can read",
            )
        ) from None


def server_context(cert: Path, key: Path, prefix: str = "smtp.tls") -> ssl.SSLContext:
    """A server-side context with `cert` (the chain, PEM) and `key` loaded; raise
    CertificateError naming `prefix.cert` or `prefix.key` when they cannot be used."""
    _readable(cert, f"{prefix}.cert")
    _readable(key, f"{prefix}.key")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(cert, key)
    except ssl.SSLError as exc:
        reason = str(exc.reason or exc)
        if "KEY_VALUES_MISMATCH" in reason:
            problem = ConfigProblem(
                f"{prefix}.key",
                f"{key} is not the private key of the certificate in {cert}; "
                "give the key the certificate was issued for",
            )
        elif "PEM" in reason or "NO_START_LINE" in reason or "CA_MD" in reason:
            problem = ConfigProblem(
                f"{prefix}.cert",
                f"cannot load {cert} with {key} ({reason}); both must be PEM "
                "(-----BEGIN CERTIFICATE----- and -----BEGIN PRIVATE KEY-----)",
            )
        else:
            problem = ConfigProblem(f"{prefix}.cert", f"cannot load {cert} with {key}: {reason}")
        raise CertificateError(problem) from None
    return context


def fingerprint(cert: Path) -> str:
    """The SHA-256 fingerprint of the first certificate in a PEM file (as `openssl x509
    -fingerprint -sha256` prints it, without colons, lower case)."""
    try:
        pem = cert.read_text(encoding="ascii", errors="replace")
        begin = pem.index("-----BEGIN CERTIFICATE-----")
        end = pem.index("-----END CERTIFICATE-----", begin) + len("-----END CERTIFICATE-----")
        der = ssl.PEM_cert_to_DER_cert(pem[begin:end])
    except (OSError, ValueError) as exc:
        raise CertificateError(
            ConfigProblem("smtp.tls.cert", f"cannot read a certificate from {cert}: {exc}")
        ) from None
    return hashlib.sha256(der).hexdigest()


class Certificates:
    """The certificate every TLS listener presents; `reload` replaces it for new connections.

    Each listener is given `context` once (asyncio binds an implicit-TLS server to one
    context). Its SNI callback, which OpenSSL calls on every ClientHello (with or without a
    server name), hands the connection the newest context, so a reload needs no new sockets.
    """

    def __init__(self, cert: Path, key: Path) -> None:
        self.context = server_context(cert, key)
        self._current = self.context
        self.fingerprint = fingerprint(cert)
        self.context.sni_callback = self._select

    def _select(self, connection: ssl.SSLObject, _name: str | None, _: ssl.SSLContext) -> None:
        if self._current is not self.context:
            connection.context = self._current

    @property
    def current(self) -> ssl.SSLContext:
        """The context new connections use."""
        return self._current

    def reload(self, cert: Path, key: Path) -> str:
        """Use `cert`/`key` for new connections; return the new fingerprint. On
        CertificateError the certificate in use stays."""
        try:
            context = server_context(cert, key)
            digest = fingerprint(cert)
        except CertificateError as exc:
            exc.kept = self.fingerprint
            raise
        self._current, self.fingerprint = context, digest
        return digest
