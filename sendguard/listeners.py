"""The listening sockets of the SMTP and HTTP ingresses, made in one place.

One process binds them; with `serve --workers N` the supervisor binds them once and every
worker inherits the same sockets (see sendguard/workers.py for why not SO_REUSEPORT).
"""

from __future__ import annotations

import socket

from sendguard.config import split_listen

# The kernel's accept queue per listener; connections beyond it wait in SYN retries.
BACKLOG = 1024


def bind(listen: str, field: str) -> socket.socket:
    """A TCP socket listening on `listen` ('host:port'; IPv6 hosts may be in brackets).

    Raises OSError (address in use, not an address of this host, ...) naming the address and
    the config `field` it comes from.
    """
    host, port = split_listen(listen)
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(BACKLOG)
    except OSError as exc:
        sock.close()
        raise OSError(exc.errno, f"cannot listen on {listen} ({field}): {exc.strerror}") from exc
    sock.setblocking(False)
    return sock
