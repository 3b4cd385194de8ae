"""A real nginx (Debian's package) terminating TLS in front of a sendguard, as operators run it.

nginx listens with a self-signed certificate (trustme) on its own loopback address and proxies
to sendguard's HTTP port from another one (`proxy_bind`), so sendguard sees a peer address that
is the proxy's alone: clients on 127.0.0.1, 127.0.0.2, ... are other people, and a test can say
which of them is the trusted proxy. The headers are set as docs/review.md tells operators to.
"""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import subprocess
import time
from pathlib import Path

import pytest
import trustme

from tests.support.process import DIE_WITH_TEST, free_port

NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
LISTEN_ADDRESS = "127.0.0.5"
"""Where nginx accepts clients (https)."""
PROXY_ADDRESS = "127.0.0.9"
"""Where nginx connects to sendguard from: the address to trust in `http.trusted_proxies`."""
PUBLIC_HOST = "review.test"
"""The name users reach nginx by; its certificate is for this name (and LISTEN_ADDRESS)."""

CONFIG = """
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
{user}
events {{ worker_connections 64; }}
http {{
    access_log {dir}/access.log;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    server {{
        listen {listen}:{port} ssl;
        server_name {host};
        ssl_certificate {dir}/cert.pem;
        ssl_certificate_key {dir}/key.pem;
        location / {{
            proxy_pass http://127.0.0.1:{upstream};
            proxy_bind {proxy_address};
            proxy_set_header Host $http_host;
{forwarding}
        }}
    }}
}}
"""


# What nginx tells sendguard of the client, by `http.proxy_headers`. With `forwarded` it writes
# RFC 7239 `Forwarded` (replacing the client's) and passes a client's X-Forwarded-* on as sent.
FORWARDING = {
    "x-forwarded": """
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Forwarded-Host $http_host;""",
    "forwarded": """
            proxy_set_header Forwarded "for=$remote_addr;proto=$scheme;host=$http_host";""",
}


def require_nginx() -> str:
    """nginx's path; skip (fail under CI, whose .ci/run installs it) when it is absent."""
    if NGINX is None:
        message = "needs Debian's nginx (.ci/run installs it)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return NGINX


class Nginx:
    """nginx terminating TLS on LISTEN_ADDRESS:port, proxying to 127.0.0.1:`upstream_port`."""

    def __init__(self, workdir: Path, upstream_port: int, headers: str = "x-forwarded") -> None:
        self.binary = require_nginx()
        self.dir = workdir / "nginx"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.ca = trustme.CA()
        cert = self.ca.issue_cert(PUBLIC_HOST, LISTEN_ADDRESS)
        cert.private_key_pem.write_to_path(str(self.dir / "key.pem"))
        cert.cert_chain_pems[0].write_to_path(str(self.dir / "cert.pem"))
        (self.dir / "nginx.conf").write_text(
            CONFIG.format(
                dir=self.dir,
                # As root nginx's workers would run as nobody, who cannot write in a test's
                # temporary directory.
                user="user root;" if os.geteuid() == 0 else "",
                listen=LISTEN_ADDRESS,
                port=self.port,
                host=PUBLIC_HOST,
                upstream=upstream_port,
                proxy_address=PROXY_ADDRESS,
                forwarding=FORWARDING[headers],
            )
        )
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def origin(self) -> str:
        """What a browser on the proxy's address calls this origin."""
        return f"https://{LISTEN_ADDRESS}:{self.port}"

    def ssl_context(self) -> ssl.SSLContext:
        """A client context that trusts the proxy's certificate (and checks it)."""
        context = ssl.create_default_context()
        self.ca.configure_trust(context)
        return context

    def start(self, timeout: float = 15.0) -> None:
        command = [self.binary, "-p", str(self.dir), "-c", str(self.dir / "nginx.conf")]
        with (self.dir / "stderr.log").open("wb") as stderr:
            self.proc = subprocess.Popen(
                [*DIE_WITH_TEST, *command, "-e", str(self.dir / "error.log"), "-g", "daemon off;"],
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"nginx exited at start:\n{self.log()}")
            try:
                with socket.create_connection((LISTEN_ADDRESS, self.port), timeout=1):
                    return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise AssertionError(f"nginx did not start:\n{self.log()}")

    def log(self) -> str:
        return "".join(
            path.read_text(errors="replace")
            for path in (self.dir / "stderr.log", self.dir / "error.log")
            if path.exists()
        )

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()  # SIGTERM: nginx's fast shutdown, workers included
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
