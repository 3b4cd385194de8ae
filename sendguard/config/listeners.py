"""What `check-config` (and so `serve` and a reload) finds wrong with the listeners beyond
each key's own shape: TLS files that cannot be used, an open relay, a listener without the
certificate or the users it needs, and two listeners on one address and port."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator

from sendguard.config.models import Config, Listener, SmtpUpstreamOptions, split_listen
from sendguard.errors import ConfigProblem
from sendguard.tls import CertificateError, server_context

_WILDCARDS = frozenset({"", "0.0.0.0", "::", "*"})  # noqa: S104 - compared, not bound


def listener_problems(config: Config) -> list[ConfigProblem]:
    """Every problem of a validated config's listeners, each with the field to change."""
    smtp = config.smtp
    listeners = smtp.listeners_in_use()
    problems = _tls_file_problems(config)
    for listener in listeners:
        problems.extend(_listener_problems(listener, config))
    problems.extend(_clashes(config, listeners))
    return problems


def _tls_file_problems(config: Config) -> list[ConfigProblem]:
    problems = []
    tls = config.smtp.tls
    if tls.cert is not None and tls.key is not None:
        try:
            server_context(tls.cert, tls.key)
        except CertificateError as exc:
            problems.append(exc.problem)
    for path, upstream in _smtp_upstreams(config):
        if upstream.tls_ca is not None:
            try:
                with upstream.tls_ca.open("rb") as file:
                    file.read(1)
            except OSError as exc:
                problems.append(
                    ConfigProblem(
                        f"{path}.tls_ca",
                        f"cannot read {upstream.tls_ca}: {exc.strerror}; give a PEM bundle "
                        "sendguard's user can read, or leave tls_ca out for the system's CAs",
                    )
                )
    return problems


def _smtp_upstreams(config: Config) -> Iterator[tuple[str, SmtpUpstreamOptions]]:
    if isinstance(config.upstream, SmtpUpstreamOptions):
        yield "upstream", config.upstream
    for name, upstream in config.upstreams.items():
        if isinstance(upstream, SmtpUpstreamOptions):
            yield f"upstreams.{name}", upstream


def _listener_problems(listener: Listener, config: Config) -> list[ConfigProblem]:
    smtp = config.smtp
    problems = []
    if listener.tls != "none" and not smtp.tls.enabled:
        problems.append(
            ConfigProblem(
                listener.field("tls"),
                f"tls: {listener.tls} needs a certificate: set smtp.tls.cert and smtp.tls.key",
            )
        )
    if listener.require_tls and listener.tls == "none":
        problems.append(
            ConfigProblem(
                listener.field("require_tls"),
                "require_tls on a listener without TLS would refuse every client; "
                "set smtp.tls.cert and smtp.tls.key (STARTTLS) or use tls: implicit",
            )
        )
    if listener.require_auth and not smtp.auth_users:
        problems.append(
            ConfigProblem(
                listener.field("require_auth"),
                "require_auth needs smtp.auth_users (name: hash from `sendguard hash-password`)",
            )
        )
    everyone = [n for n in listener.allowed_networks if n.prefixlen == 0]
    if everyone and not listener.require_auth:
        problems.append(
            ConfigProblem(
                listener.field("allowed_networks"),
                f"{', '.join(map(str, everyone))} lets anyone on the internet relay through "
                "sendguard (an open relay); list only your own networks, or set "
                "require_auth: true so every client must log in",
            )
        )
    return problems


def _host(value: str) -> str:
    host, _ = split_listen(value)
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return host.lower()


def _overlap(one: str, other: str) -> bool:
    return one == other or one in _WILDCARDS or other in _WILDCARDS


def _clashes(config: Config, listeners: list[Listener]) -> list[ConfigProblem]:
    """Two listeners (SMTP or HTTP) on one port of one address (a wildcard is every address).
    Port 0 asks the system for a free port of its own, so it clashes with nothing."""
    bound = [(listener.field("listen"), listener.listen) for listener in listeners]
    bound.append(("http.listen", config.http.listen))
    bound = [(field, listen) for field, listen in bound if split_listen(listen)[1] != 0]
    problems = []
    for index, (field, listen) in enumerate(bound):
        for earlier, other in bound[:index]:
            if split_listen(listen)[1] == split_listen(other)[1] and _overlap(
                _host(listen), _host(other)
            ):
                problems.append(
                    ConfigProblem(
                        field,
                        f"{listen} is also where {earlier} ({other}) listens; "
                        "give each listener its own port",
                    )
                )
                break
    return problems
