"""SMTP at the byte level: what smtplib will not send (bare CR/LF, pipelined packets, a chosen
source address), for the security suite."""

from __future__ import annotations

import socket
import ssl
import time


class RawSmtp:
    """One connection; `send` writes bytes as given, `replies` reads whole SMTP replies."""

    def __init__(self, port: int, *, source: str = "127.0.0.1", timeout: float = 20.0) -> None:
        self.sock: socket.socket | ssl.SSLSocket = socket.create_connection(
            ("127.0.0.1", port), timeout=timeout, source_address=(source, 0)
        )
        self._buffer = b""

    def __enter__(self) -> RawSmtp:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _line(self) -> bytes:
        while b"\r\n" not in self._buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"closed by the server; unread: {self._buffer!r}")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\r\n", 1)
        return line

    def reply(self) -> str:
        """One (possibly multi-line) reply, its lines joined by newlines."""
        lines = [self._line()]
        while lines[-1][3:4] == b"-":
            lines.append(self._line())
        return "\n".join(line.decode("utf-8", "replace") for line in lines)

    def replies(self, count: int) -> list[str]:
        return [self.reply() for _ in range(count)]

    def command(self, line: str) -> str:
        self.send(line.encode() + b"\r\n")
        return self.reply()

    def greet(self, name: str = "client.example") -> str:
        assert self.reply().startswith("220")
        return self.command(f"EHLO {name}")

    def starttls(self) -> None:
        """STARTTLS, then the TLS handshake (the test's certificates are not checked)."""
        assert self.command("STARTTLS").startswith("220")
        self.starttls_handshake()

    def starttls_handshake(self) -> None:
        """The TLS handshake after a 220 to STARTTLS; anything still unread is dropped."""
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        self.sock = context.wrap_socket(self.sock, server_hostname="localhost")
        self._buffer = b""

    def closed(self, timeout: float) -> bytes:
        """Read until the server closes the connection; what it said meanwhile."""
        self.sock.settimeout(timeout)
        data, self._buffer = self._buffer, b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError:
                return data
            if not chunk:
                return data
            data += chunk
        raise AssertionError(f"the server kept the connection open; it said {data!r}")
