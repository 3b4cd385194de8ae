"""The configuration's pydantic models: one `*Options` class per section of the YAML.

Loading, secrets and error reporting live in `sendguard.config.load`; these models only say
what is valid.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import (
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    PlainSerializer,
    PlainValidator,
    Tag,
    create_model,
    field_validator,
    model_validator,
)

from sendguard.duration import Duration
from sendguard.fields import FIELDS
from sendguard.lifecycle import LifecycleEvent
from sendguard.message import HoldExpiry, MessageClass
from sendguard.store import StoreSettings
from sendguard.validation import Strict
from sendguard.verdict import Mode, OnError

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def _network(value: Any) -> IPNetwork:
    if isinstance(value, ipaddress.IPv4Network | ipaddress.IPv6Network):
        return value
    try:
        return ipaddress.ip_network(str(value))
    except ValueError:
        raise ValueError(
            f"{value!r} is not a network; write it like 10.0.0.0/8 or 2001:db8::/32"
        ) from None


Network = Annotated[IPNetwork, PlainValidator(_network), PlainSerializer(str)]


def _listen(value: Any) -> Any:
    if not isinstance(value, str):
        # pydantic turns ValueError (not TypeError) into a validation error with the path
        raise ValueError("expected 'host:port', like '127.0.0.1:2525' or '[::1]:2525'")  # noqa: TRY004
    host, sep, port = value.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f"{value!r} is not 'host:port' (like '127.0.0.1:2525')")
    return value


Listen = Annotated[str, BeforeValidator(_listen)]


def split_listen(value: str) -> tuple[str, int]:
    """('127.0.0.1', 2525) from '127.0.0.1:2525'; IPv6 hosts may be written in brackets."""
    host, _, port = value.rpartition(":")
    return host.strip("[]"), int(port)


class TlsOptions(Strict):
    """The certificate of the SMTP listeners: STARTTLS is offered when both files are set."""

    cert: Path | None = None
    key: Path | None = None

    @model_validator(mode="after")
    def _both_or_neither(self) -> TlsOptions:
        if (self.cert is None) != (self.key is None):
            raise ValueError("set both cert and key for STARTTLS, or neither")
        return self

    @property
    def enabled(self) -> bool:
        """True when a certificate is configured."""
        return self.cert is not None


TlsMode = Literal["none", "starttls", "implicit"]
"""How a listener speaks TLS: not at all, after STARTTLS, or from the first byte (465)."""


class ListenerOptions(Strict):
    """One entry of `smtp.listeners`. A key left out takes its value under `smtp:`.

    A new per-listener option is a field here (None: inherit), the same name with its default
    under `SmtpOptions`, and its type on `Listener`; `SmtpOptions.listeners_in_use` fills it.
    """

    listen: Listen
    tls: TlsMode | None = None
    """Default: `starttls` when `smtp.tls` has a certificate, else `none`."""
    require_auth: bool | None = None
    require_tls: bool | None = None
    allowed_networks: list[Network] | None = None


class Listener(Strict):
    """A listener with every option decided: what the SMTP ingress binds and enforces."""

    listen: Listen
    tls: TlsMode
    require_auth: bool
    require_tls: bool
    allowed_networks: list[Network]
    source: str = "smtp"
    """Where it is configured: `smtp` (the one-listener form) or `smtp.listeners[N]`."""
    inherited: frozenset[str] = frozenset()
    """The options taken from `smtp:` rather than set on the listener."""

    def field(self, name: str) -> str:
        """The config path where option `name` of this listener is set."""
        return f"smtp.{name}" if name in self.inherited else f"{self.source}.{name}"


def _default_networks() -> list[IPNetwork]:
    return [ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128")]


def _zero_is_off(value: Any) -> Any:
    """`0` (no unit) for a duration that 0 turns off, as people write it; `off`, `no`, `on`
    and the other words YAML reads as booleans are refused saying what to write."""
    if isinstance(value, bool):
        # pydantic reports a ValueError as the key's problem (a TypeError would escape it).
        raise ValueError(  # noqa: TRY004
            _RESEND_WINDOW_RANGE + " (YAML reads off/on, no/yes, false/true as a boolean)"
        )
    return timedelta(0) if isinstance(value, int | str) and str(value).strip() == "0" else value


ResendWindow = Annotated[Duration, BeforeValidator(_zero_is_off)]
"""`smtp.resend_window`: a duration, or 0 (off)."""
MIN_RESEND_WINDOW = timedelta(minutes=1)
MAX_RESEND_WINDOW = timedelta(days=30)
_RESEND_WINDOW_RANGE = "set 0 to turn the resend check off, or a window between 1m and 30d"


class SmtpOptions(Strict):
    """The SMTP ingress: one listener (`listen`) or several (`listeners`)."""

    listen: Listen = "127.0.0.1:2525"
    listeners: list[ListenerOptions] = Field(default_factory=list)
    """Several listeners in one process; instead of `listen`. Each inherits the options
    below that it does not set itself (`tls`, `require_auth`, `require_tls`,
    `allowed_networks`)."""
    allowed_networks: list[Network] = Field(default_factory=_default_networks)
    auth_users: dict[str, str] = Field(default_factory=dict)
    tls: TlsOptions = TlsOptions()
    require_auth: bool = False
    """Relay only for clients that authenticated, whatever their address."""
    require_tls: bool = False
    """Every client, from `allowed_networks` too, must use TLS before MAIL."""
    max_message_size: int = Field(default=26_214_400, gt=0)
    max_recipients: int = Field(default=100, gt=0, le=1000)
    reject_dropped: bool = False
    hostname: str | None = None
    timeout: Duration = timedelta(minutes=5)
    data_timeout: Duration = timedelta(minutes=10)
    """From DATA to the final dot: a client trickling its message is cut off past it."""
    max_connections: int = Field(default=1000, gt=0, le=100_000)
    max_connections_per_ip: int = Field(default=100, gt=0, le=100_000)
    resend_window: ResendWindow = timedelta(hours=24)
    """How long a message is looked for when its client sends it again (the same Message-ID,
    sender and content to the same recipient: a retry after a lost `250`): such a copy is
    dropped, not sent twice (sendguard/resend.py). 0 turns the check off."""

    @field_validator("resend_window")
    @classmethod
    def _resend_window(cls, value: timedelta) -> timedelta:
        if value and not MIN_RESEND_WINDOW <= value <= MAX_RESEND_WINDOW:
            raise ValueError(
                _RESEND_WINDOW_RANGE + ": a client sends a message again within its queue"
                " lifetime (Postfix's default is 5d)"
            )
        return value

    @field_validator("auth_users")
    @classmethod
    def _hashed(cls, users: dict[str, str]) -> dict[str, str]:
        from sendguard.password import is_hash  # noqa: PLC0415 - avoids a cycle at import

        for name, value in users.items():
            if not is_hash(value):
                raise ValueError(
                    f"the password of {name!r} must be a hash: run `sendguard hash-password` "
                    "and paste its output"
                )
        return users

    @model_validator(mode="after")
    def _listen_or_listeners(self) -> SmtpOptions:
        if self.listeners and "listen" in self.model_fields_set:
            raise ValueError(
                "set either listen (one listener) or listeners (several), not both; "
                "move listen into listeners as `- listen: ...`"
            )
        return self

    def listeners_in_use(self) -> list[Listener]:
        """Every listener with its options decided (`listen` alone is the one-listener case)."""
        entries = self.listeners or [ListenerOptions(listen=self.listen)]
        out = []
        for index, entry in enumerate(entries):
            values: dict[str, Any] = {}
            inherited = set()
            for name in ListenerOptions.model_fields:
                value = getattr(entry, name)
                if value is None:
                    inherited.add(name)
                    value = (
                        ("starttls" if self.tls.enabled else "none")
                        if name == "tls"
                        else getattr(self, name)
                    )
                values[name] = value
            source = f"smtp.listeners[{index}]" if self.listeners else "smtp"
            out.append(Listener(**values, source=source, inherited=frozenset(inherited)))
        return out


IDENTITY_NAME = r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,99}$"


class NamedTokenOptions(Strict):
    """An API token with a name: the identity the audit records for what it does."""

    name: str = Field(pattern=IDENTITY_NAME)
    token: str


def _token_kind(value: Any) -> str:
    return "plain" if isinstance(value, str) else "named"


# Tagged, so an error in `{name, token}` is reported for that shape alone.
ApiToken = Annotated[
    Annotated[str, Tag("plain")] | Annotated[NamedTokenOptions, Tag("named")],
    Discriminator(_token_kind),
]


def _default_tokens() -> list[ApiToken]:
    return ["env:SENDGUARD_API_TOKEN"]


class HttpOptions(Strict):
    """The HTTP API."""

    listen: Listen = "127.0.0.1:8025"
    # A plain string is a token named `token-N`, N its 1-based position in this list.
    api_tokens: list[ApiToken] = Field(default_factory=_default_tokens)
    token_file: Path = Path("var/api-token")
    metrics_public: bool = True
    max_body_size: int = Field(default=30 * 1024 * 1024, gt=0)
    trusted_proxies: list[Network] = Field(default_factory=list)
    """Reverse proxies (networks) whose forwarding headers say who the client is and which
    scheme and host it used; from every other peer those headers are ignored. Empty: none."""
    proxy_headers: Literal["x-forwarded", "forwarded"] = "x-forwarded"
    """Which headers the trusted proxies write: `X-Forwarded-For`/`-Proto`/`-Host`, or RFC
    7239 `Forwarded`. Only those are read: the other kind may be the client's own."""

    @field_validator("api_tokens")
    @classmethod
    def _unique_names(cls, tokens: list[ApiToken]) -> list[ApiToken]:
        names = [name for name, _ in token_names(tokens)]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"token names must be unique; used twice: {', '.join(twice)}")
        return tokens


def token_names(tokens: Sequence[ApiToken]) -> list[tuple[str, str]]:
    """(name, configured token) of each entry: a plain string is `token-N` (1-based)."""
    return [
        (t.name, t.token) if isinstance(t, NamedTokenOptions) else (f"token-{n}", t)
        for n, t in enumerate(tokens, 1)
    ]


class StoreOptions(Strict):
    """Where state is kept."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    url: str = "sqlite:///var/sendguard.db"
    """Its scheme picks the backend (`sendguard.stores` entry points); parse_config checks it."""
    busy_timeout: Duration = timedelta(seconds=5)
    schema_: str = Field(default="public", alias="schema", pattern=r"^[a-z_][a-z0-9_]{0,62}$")
    pool_size: int = Field(default=10, gt=1, le=500)
    retention: Duration = timedelta(days=90)

    def settings(self) -> StoreSettings:
        """What the backend is given besides the URL."""
        return StoreSettings(self.busy_timeout, self.schema_, self.pool_size)

    @field_validator("retention")
    @classmethod
    def _retention(cls, value: timedelta) -> timedelta:
        if value < timedelta(days=1):
            # policies that read further back keep their records longer on their own
            raise ValueError("keep at least 1d")
        return value


class OutboxUpstreamOptions(Strict):
    """Writes each forwarded delivery as an .eml file (the embedded default)."""

    kind: Literal["outbox"]
    path: Path = Path("var/outbox")


class SmtpUpstreamOptions(Strict):
    """Relays to a smarthost or ESP over SMTP."""

    kind: Literal["smtp"]
    host: str
    port: int = Field(default=25, gt=0, lt=65536)
    """Default: 25, or 465 with `tls: implicit`."""
    tls: Literal["starttls", "implicit"] = "starttls"
    """`starttls`: plain connection, upgraded as `starttls` says; `implicit`: TLS from the
    first byte (port 465 style, RFC 8314), verified as `tls_verify` and `tls_ca` say."""
    starttls: Literal["auto", "always", "never"] = "auto"
    tls_verify: bool = True
    tls_ca: Path | None = None
    username: str | None = None
    password: str | None = None
    pool_size: int = Field(default=4, gt=0, le=256)
    timeout: Duration = timedelta(seconds=30)
    idle_timeout: Duration = timedelta(seconds=30)

    @model_validator(mode="before")
    @classmethod
    def _implicit_port(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("tls") == "implicit" and "port" not in data:
            return {**data, "port": 465}
        return data

    @model_validator(mode="after")
    def _credentials(self) -> SmtpUpstreamOptions:
        if self.tls == "implicit" and "starttls" in self.model_fields_set:
            raise ValueError(
                "tls: implicit encrypts from the first byte, so starttls does not apply; "
                "remove starttls (or use tls: starttls)"
            )
        if (self.username is None) != (self.password is None):
            raise ValueError("set both username and password for AUTH, or neither")
        return self


class EspUpstreamOptions(Strict):
    """Sends through an ESP's HTTP API (sendgrid, postmark or mailgun)."""

    kind: Literal["sendgrid", "postmark", "mailgun"]
    api_key: str = Field(min_length=1)
    base_url: str | None = Field(default=None, pattern=r"^https?://")
    """The API's address; the ESP's public API unless set (a regional or test endpoint)."""
    domain: str | None = None
    """mailgun: the sending domain (required there)."""
    message_stream: str | None = None
    """postmark: the message stream (Postmark's default outbound stream unless set)."""
    timeout: Duration = timedelta(seconds=30)
    pool_size: int = Field(default=10, gt=0, le=256)

    @model_validator(mode="after")
    def _domain(self) -> EspUpstreamOptions:
        if self.kind == "mailgun" and not self.domain:
            raise ValueError("mailgun needs domain (the sending domain, e.g. mg.example.com)")
        return self


class PluginUpstreamOptions(Strict):
    """An upstream kind another distribution registers under `sendguard.upstreams`."""

    kind: str
    options: dict[str, Any] = Field(default_factory=dict)
    """Validated by the plugin's own model when it is built."""


BUILTIN_UPSTREAMS = frozenset({"outbox", "smtp", "sendgrid", "postmark", "mailgun"})


def _upstream_tag(value: Any) -> str:
    kind = value.get("kind") if isinstance(value, dict) else getattr(value, "kind", None)
    if kind in ("outbox", "smtp"):
        return str(kind)
    return "esp" if kind in BUILTIN_UPSTREAMS else "plugin"


UpstreamOptions = Annotated[
    Annotated[OutboxUpstreamOptions, Tag("outbox")]
    | Annotated[SmtpUpstreamOptions, Tag("smtp")]
    | Annotated[EspUpstreamOptions, Tag("esp")]
    | Annotated[PluginUpstreamOptions, Tag("plugin")],
    Discriminator(_upstream_tag),
]


class RouteOptions(Strict):
    """One entry of `routes:`: deliveries whose message matches every condition given go
    through the named upstream. No condition at all makes it the default."""

    campaign: str | None = Field(default=None, min_length=1)
    class_: MessageClass | None = Field(default=None, alias="class")
    sender_domain: str | None = Field(default=None, min_length=1)
    """The envelope sender's domain, exactly (a subdomain is another domain)."""
    upstream: str = Field(min_length=1)
    """A name under `upstreams:`."""

    @field_validator("sender_domain")
    @classmethod
    def _domain(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if "@" in value or not value.strip() or value != value.strip():
            # compared with the part after the @ of the sender, it could never match
            raise ValueError(f"{value!r} is not a domain; write it like example.com")
        return value.lower().rstrip(".")

    def conditions(self) -> dict[str, str]:
        """The conditions given, by the key a config writes."""
        given = {
            "campaign": self.campaign,
            "class": self.class_.value if self.class_ is not None else None,
            "sender_domain": self.sender_domain,
        }
        return {key: value for key, value in given.items() if value is not None}


class DeliveryOptions(Strict):
    """The dispatcher: workers, retries and leases."""

    workers: int = Field(default=8, gt=0, le=512)
    min_backoff: Duration = timedelta(minutes=1)
    max_backoff: Duration = timedelta(hours=1)
    max_lifetime: Duration = timedelta(days=5)
    lease: Duration = timedelta(minutes=5)
    poll_interval: Duration = timedelta(seconds=1)
    drain_timeout: Duration = timedelta(seconds=8)

    @model_validator(mode="after")
    def _order(self) -> DeliveryOptions:
        if self.min_backoff > self.max_backoff:
            raise ValueError("min_backoff must not be larger than max_backoff")
        return self


class HeaderSources(Strict):
    """Which headers each sendguard field is read from; the first one present wins. One key
    per field of `sendguard.fields.FIELDS` (its JSON name), defaulting to its headers."""

    def sources(self) -> Mapping[str, Sequence[str]]:
        """Field (by JSON name, as `read_fields` knows it) to header names."""
        return {f.alias or name: getattr(self, name) for name, f in type(self).model_fields.items()}


def _header_sources() -> dict[str, Any]:
    return {
        spec.name: (
            list[str],
            Field(default_factory=partial(list, spec.headers), alias=spec.key or None),
        )
        for spec in FIELDS
    }


if TYPE_CHECKING:
    HeadersOptions = HeaderSources
else:
    HeadersOptions = create_model(
        "HeadersOptions",
        __base__=HeaderSources,
        __doc__=HeaderSources.__doc__,
        **_header_sources(),
    )


class PolicyEntryOptions(Strict):
    """One entry of `policies:`."""

    plugin: str
    mode: Mode = Mode.ENFORCE
    on_error: OnError = OnError.HOLD
    budget: Duration = timedelta(milliseconds=500)
    options: dict[str, Any] = Field(default_factory=dict)


class ReviewUserOptions(Strict):
    """A person who signs in to the review page."""

    password_hash: str
    role: Literal["reviewer", "viewer"] = "reviewer"

    @field_validator("password_hash")
    @classmethod
    def _hashed(cls, value: str) -> str:
        from sendguard.password import is_hash  # noqa: PLC0415 - avoids a cycle at import

        if not is_hash(value):
            raise ValueError("must be a hash: run `sendguard hash-password` and paste its output")
        return value


class ReviewNotifyOptions(Strict):
    """Telling reviewers that work waits: when a campaign is first held, and as a digest.

    Sent by a webhook (`{"text": ...}`, what Slack and Mattermost incoming webhooks accept)
    and/or an e-mail through the configured upstream, never through sendguard's policies.
    Failures are retried with backoff and counted; they never hold up sending.
    """

    webhook_url: str | None = Field(default=None, pattern=r"^(https?://|env:|file:)")
    """An incoming-webhook URL (a secret: `env:NAME` or `file:/path` work)."""
    email_to: list[Annotated[str, Field(pattern=r"^[^@\s]+@[^@\s]+$")]] = Field(
        default_factory=list
    )
    email_from: str = Field(default="sendguard@localhost", pattern=r"^[^@\s]+@[^@\s]+$")
    check_every: Duration = timedelta(seconds=30)
    digest_every: Duration | None = timedelta(hours=4)
    """While anything is held, a digest this often; null: no digest."""
    retry_min: Duration = timedelta(seconds=10)
    retry_max: Duration = timedelta(minutes=10)
    give_up_after: Duration = timedelta(days=1)
    timeout: Duration = timedelta(seconds=10)

    @field_validator("check_every", "retry_min", "timeout")
    @classmethod
    def _short(cls, value: timedelta) -> timedelta:
        if not timedelta(seconds=1) <= value <= timedelta(hours=1):
            raise ValueError("must be between 1s and 1h")
        return value

    @field_validator("digest_every")
    @classmethod
    def _digest(cls, value: timedelta | None) -> timedelta | None:
        if value is not None and value < timedelta(seconds=1):
            raise ValueError("must be at least 1s, or null for no digest")
        return value

    @property
    def enabled(self) -> bool:
        """True if there is anyone to tell."""
        return self.webhook_url is not None or bool(self.email_to)


class ReviewOptions(Strict):
    """The review queue: what happens to a held delivery nobody reviews; who reviews it."""

    hold_expiry: Duration = timedelta(days=7)
    on_hold_expiry: HoldExpiry = HoldExpiry.DROP
    users: dict[Annotated[str, Field(pattern=IDENTITY_NAME)], ReviewUserOptions] = Field(
        default_factory=dict
    )
    session_lifetime: Duration = timedelta(hours=8)
    public_url: str | None = Field(default=None, pattern=r"^https?://[^/\s]+(/[^\s]*)?$")
    """Where people reach sendguard's HTTP port (links in notifications); default: the
    `http.listen` address."""
    notify: ReviewNotifyOptions = ReviewNotifyOptions()

    @field_validator("session_lifetime")
    @classmethod
    def _lifetime(cls, value: timedelta) -> timedelta:
        if not timedelta(minutes=5) <= value <= timedelta(days=30):
            raise ValueError("must be between 5m and 30d")
        return value


class SimulateOptions(Strict):
    """Bounds of the simulations the server runs (`POST /v1/simulations`), one at a time."""

    max_messages: int = Field(default=100_000, gt=0, le=10_000_000)
    """A window with more recorded messages is refused: choose a shorter one."""
    timeout: Duration = timedelta(minutes=10)
    """A simulation still running after this is stopped and reported as failed."""
    keep: int = Field(default=20, gt=0, le=1000)
    """How many finished simulations (and their reports) are kept in the store, newest first."""
    lease: Duration = timedelta(minutes=1)
    """The running simulation's hold, renewed while it runs: one whose process died (a killed
    worker or instance) blocks the next for at most this long, then is marked failed."""

    @field_validator("timeout")
    @classmethod
    def _timeout(cls, value: timedelta) -> timedelta:
        if not timedelta(seconds=1) <= value <= timedelta(hours=24):
            raise ValueError("must be between 1s and 24h")
        return value

    @field_validator("lease")
    @classmethod
    def _lease(cls, value: timedelta) -> timedelta:
        if not timedelta(seconds=1) <= value <= timedelta(hours=1):
            raise ValueError("must be between 1s and 1h")
        return value


class LogOptions(Strict):
    """Logging: JSON lines unless on a terminal (`format: auto`)."""

    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"


class WebhookOptions(Strict):
    """An outbound webhook: one signed JSON POST per delivery state change it subscribes to."""

    url: str = Field(pattern=r"^https?://[^\s/]+")
    events: list[LifecycleEvent] = Field(default_factory=lambda: list(LifecycleEvent))
    secret: str = Field(min_length=16)
    """Signs every event (HMAC-SHA256); `env:NAME` or `file:/path` like every secret."""
    timeout: Duration = timedelta(seconds=10)
    min_backoff: Duration = timedelta(seconds=10)
    max_backoff: Duration = timedelta(hours=1)
    max_age: Duration = timedelta(hours=24)
    """How long an event is retried before it is given up (logged, counted)."""

    @model_validator(mode="after")
    def _order(self) -> WebhookOptions:
        if self.min_backoff > self.max_backoff:
            raise ValueError("min_backoff must not be larger than max_backoff")
        if not self.events:
            raise ValueError("subscribe to at least one event")
        return self


class SendgridEspOptions(Strict):
    """SendGrid's Event Webhook (`/v1/webhooks/sendgrid`)."""

    webhook_public_key: str | None = None
    """The verification key SendGrid shows for the signed Event Webhook (base64 DER or PEM)."""


class PostmarkEspOptions(Strict):
    """Postmark's webhooks (`/v1/webhooks/postmark`): basic auth, a secret path, or both."""

    webhook_username: str | None = None
    webhook_password: str | None = None
    webhook_secret: str | None = Field(default=None, min_length=16)
    """Accepted as `/v1/webhooks/postmark/<secret>`."""

    @model_validator(mode="after")
    def _pair(self) -> PostmarkEspOptions:
        if (self.webhook_username is None) != (self.webhook_password is None):
            raise ValueError("set both webhook_username and webhook_password, or neither")
        return self


class MailgunEspOptions(Strict):
    """Mailgun's webhooks (`/v1/webhooks/mailgun`)."""

    webhook_signing_key: str | None = None
    """The HTTP webhook signing key of the Mailgun account."""


class EspOptions(Strict):
    """The SendGrid-, Postmark- and Mailgun-compatible endpoints and their webhooks."""

    retry_window: Duration = timedelta(minutes=10)
    """A byte-identical request from the same token within this window is answered again
    without sending again (the SDKs retry on timeouts)."""
    sendgrid: SendgridEspOptions = SendgridEspOptions()
    postmark: PostmarkEspOptions = PostmarkEspOptions()
    mailgun: MailgunEspOptions = MailgunEspOptions()


class Config(Strict):
    """The whole configuration file."""

    smtp: SmtpOptions = SmtpOptions()
    http: HttpOptions = HttpOptions()
    store: StoreOptions = StoreOptions()
    upstream: UpstreamOptions = OutboxUpstreamOptions(kind="outbox")
    upstreams: dict[str, UpstreamOptions] = Field(default_factory=dict)
    """Named upstreams for `routes` (each as `upstream:` is written)."""
    routes: list[RouteOptions] = Field(default_factory=list)
    """The first route whose conditions a delivery matches chooses its upstream; with none,
    `upstream` sends it."""
    delivery: DeliveryOptions = DeliveryOptions()
    headers: HeadersOptions = HeadersOptions()
    policies: list[PolicyEntryOptions] = Field(default_factory=list)
    review: ReviewOptions = ReviewOptions()
    log: LogOptions = LogOptions()
    webhooks: list[WebhookOptions] = Field(default_factory=list)
    esp: EspOptions = EspOptions()
    simulate: SimulateOptions = SimulateOptions()

    @field_validator("webhooks")
    @classmethod
    def _unique_urls(cls, hooks: list[WebhookOptions]) -> list[WebhookOptions]:
        urls = [h.url for h in hooks]
        twice = sorted({u for u in urls if urls.count(u) > 1})
        if twice:
            # the URL names the webhook's queue in the store
            raise ValueError(f"each url may be configured once; twice: {', '.join(twice)}")
        return hooks
