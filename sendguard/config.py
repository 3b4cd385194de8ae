"""The configuration: pydantic models of the YAML, validated once at the edge.

`load_config` reads a file (or the embedded default), validates it, resolves every policy's
options against that policy's own model, and raises ConfigError listing every problem with its
path, e.g. `policies[2].options.caps[0].window: ...`. Nothing below this module reads files or
environment variables for configuration.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    PlainSerializer,
    PlainValidator,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

from sendguard.duration import Duration
from sendguard.errors import ConfigError, ConfigProblem
from sendguard.fields import DEFAULT_SOURCES
from sendguard.policy import Policy, PolicyLoadError, load_policy_class
from sendguard.secret import DEFAULT_API_TOKEN, SecretError, is_reference, resolve_secret
from sendguard.verdict import Mode

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


class Strict(BaseModel):
    """Base of every config model: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


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


class TlsConfig(Strict):
    """STARTTLS is offered when both files are set."""

    cert: Path | None = None
    key: Path | None = None

    @model_validator(mode="after")
    def _both_or_neither(self) -> TlsConfig:
        if (self.cert is None) != (self.key is None):
            raise ValueError("set both cert and key for STARTTLS, or neither")
        return self

    @property
    def enabled(self) -> bool:
        """True when STARTTLS is configured."""
        return self.cert is not None


class SmtpConfig(Strict):
    """The SMTP ingress."""

    listen: Listen = "127.0.0.1:2525"
    allowed_networks: list[Network] = Field(
        default_factory=lambda: [
            ipaddress.ip_network("127.0.0.0/8"),
            ipaddress.ip_network("::1/128"),
        ]
    )
    auth_users: dict[str, str] = Field(default_factory=dict)
    tls: TlsConfig = TlsConfig()
    max_message_size: int = Field(default=26_214_400, gt=0)
    max_recipients: int = Field(default=100, gt=0, le=1000)
    reject_dropped: bool = False
    hostname: str | None = None
    timeout: Duration = timedelta(minutes=5)

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


IDENTITY_NAME = r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,99}$"


class NamedToken(Strict):
    """An API token with a name: the identity the audit records for what it does."""

    name: str = Field(pattern=IDENTITY_NAME)
    token: str


def _token_kind(value: Any) -> str:
    return "plain" if isinstance(value, str) else "named"


# Tagged, so an error in `{name, token}` is reported for that shape alone.
ApiToken = Annotated[
    Annotated[str, Tag("plain")] | Annotated[NamedToken, Tag("named")],
    Discriminator(_token_kind),
]


def _default_tokens() -> list[ApiToken]:
    return ["env:SENDGUARD_API_TOKEN"]


class HttpConfig(Strict):
    """The HTTP API."""

    listen: Listen = "127.0.0.1:8025"
    # A plain string is a token named `token-N`, N its 1-based position in this list.
    api_tokens: list[ApiToken] = Field(default_factory=_default_tokens)
    token_file: Path = Path("var/api-token")
    metrics_public: bool = True
    max_body_size: int = Field(default=30 * 1024 * 1024, gt=0)

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
        (t.name, t.token) if isinstance(t, NamedToken) else (f"token-{n}", t)
        for n, t in enumerate(tokens, 1)
    ]


class StoreConfig(Strict):
    """Where state is kept."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    url: str = "sqlite:///var/sendguard.db"
    busy_timeout: Duration = timedelta(seconds=5)
    schema_: str = Field(default="public", alias="schema", pattern=r"^[a-z_][a-z0-9_]{0,62}$")
    pool_size: int = Field(default=10, gt=1, le=500)
    retention: Duration = timedelta(days=90)

    @field_validator("retention")
    @classmethod
    def _retention(cls, value: timedelta) -> timedelta:
        if value < timedelta(days=1):
            # policies that read further back keep their records longer on their own
            raise ValueError("keep at least 1d")
        return value

    @field_validator("url")
    @classmethod
    def _scheme(cls, url: str) -> str:
        if not url.startswith(("sqlite:///", "postgresql://", "postgres://")):
            raise ValueError(
                "use sqlite:///relative/path.db, sqlite:////absolute/path.db "
                "or postgresql://user@host:5432/db"
            )
        return url


class OutboxUpstream(Strict):
    """Writes each forwarded delivery as an .eml file (the embedded default)."""

    kind: Literal["outbox"]
    path: Path = Path("var/outbox")


class SmtpUpstream(Strict):
    """Relays to a smarthost or ESP over SMTP."""

    kind: Literal["smtp"]
    host: str
    port: int = Field(default=25, gt=0, lt=65536)
    starttls: Literal["auto", "always", "never"] = "auto"
    tls_verify: bool = True
    tls_ca: Path | None = None
    username: str | None = None
    password: str | None = None
    pool_size: int = Field(default=4, gt=0, le=256)
    timeout: Duration = timedelta(seconds=30)
    idle_timeout: Duration = timedelta(seconds=30)

    @model_validator(mode="after")
    def _credentials(self) -> SmtpUpstream:
        if (self.username is None) != (self.password is None):
            raise ValueError("set both username and password for AUTH, or neither")
        return self


UpstreamConfig = Annotated[OutboxUpstream | SmtpUpstream, Field(discriminator="kind")]


class DeliveryConfig(Strict):
    """The dispatcher: workers, retries and leases."""

    workers: int = Field(default=8, gt=0, le=512)
    min_backoff: Duration = timedelta(minutes=1)
    max_backoff: Duration = timedelta(hours=1)
    max_lifetime: Duration = timedelta(days=5)
    lease: Duration = timedelta(minutes=5)
    poll_interval: Duration = timedelta(seconds=1)
    drain_timeout: Duration = timedelta(seconds=8)

    @model_validator(mode="after")
    def _order(self) -> DeliveryConfig:
        if self.min_backoff > self.max_backoff:
            raise ValueError("min_backoff must not be larger than max_backoff")
        return self


class HeadersConfig(Strict):
    """Which headers each sendguard field is read from; the first one present wins."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    campaign: list[str] = Field(default_factory=lambda: list(DEFAULT_SOURCES["campaign"]))
    message_class: list[str] = Field(
        default_factory=lambda: list(DEFAULT_SOURCES["class"]), alias="class"
    )
    requires: list[str] = Field(default_factory=lambda: list(DEFAULT_SOURCES["requires"]))
    wait: list[str] = Field(default_factory=lambda: list(DEFAULT_SOURCES["wait"]))
    data_as_of: list[str] = Field(default_factory=lambda: list(DEFAULT_SOURCES["data_as_of"]))
    timezone: list[str] = Field(default_factory=lambda: list(DEFAULT_SOURCES["timezone"]))
    not_before: list[str] = Field(default_factory=lambda: list(DEFAULT_SOURCES["not_before"]))
    offer: list[str] = Field(default_factory=lambda: list(DEFAULT_SOURCES["offer"]))
    unless: list[str] = Field(default_factory=lambda: list(DEFAULT_SOURCES["unless"]))
    on_timeout: list[str] = Field(default_factory=lambda: list(DEFAULT_SOURCES["on_timeout"]))

    def sources(self) -> Mapping[str, Sequence[str]]:
        """Field name (as `read_fields` knows it) to header names."""
        return {
            "campaign": self.campaign,
            "class": self.message_class,
            "requires": self.requires,
            "wait": self.wait,
            "data_as_of": self.data_as_of,
            "timezone": self.timezone,
            "not_before": self.not_before,
            "offer": self.offer,
            "unless": self.unless,
            "on_timeout": self.on_timeout,
        }


class PolicyConfig(Strict):
    """One entry of `policies:`."""

    plugin: str
    mode: Mode = Mode.ENFORCE
    on_error: Literal["hold", "forward"] = "hold"
    budget: Duration = timedelta(milliseconds=500)
    options: dict[str, Any] = Field(default_factory=dict)


class ReviewUser(Strict):
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


class ReviewConfig(Strict):
    """The review queue: what happens to a held delivery nobody reviews; who reviews it."""

    hold_expiry: Duration = timedelta(days=7)
    on_hold_expiry: Literal["drop", "forward"] = "drop"
    users: dict[Annotated[str, Field(pattern=IDENTITY_NAME)], ReviewUser] = Field(
        default_factory=dict
    )
    session_lifetime: Duration = timedelta(hours=8)

    @field_validator("session_lifetime")
    @classmethod
    def _lifetime(cls, value: timedelta) -> timedelta:
        if not timedelta(minutes=5) <= value <= timedelta(days=30):
            raise ValueError("must be between 5m and 30d")
        return value


class LogConfig(Strict):
    """Logging: JSON lines unless on a terminal (`format: auto`)."""

    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"


class Config(Strict):
    """The whole configuration file."""

    smtp: SmtpConfig = SmtpConfig()
    http: HttpConfig = HttpConfig()
    store: StoreConfig = StoreConfig()
    upstream: UpstreamConfig = OutboxUpstream(kind="outbox")
    delivery: DeliveryConfig = DeliveryConfig()
    headers: HeadersConfig = HeadersConfig()
    policies: list[PolicyConfig] = Field(default_factory=list)
    review: ReviewConfig = ReviewConfig()
    log: LogConfig = LogConfig()


@dataclass(frozen=True)
class ResolvedPolicy:
    """A policy entry with its class and validated options."""

    name: str
    cls: type[Policy]
    options: BaseModel
    config: PolicyConfig


@dataclass(frozen=True)
class Settings:
    """A validated config, its policies resolved and its secrets read: what `serve` runs."""

    config: Config
    policies: tuple[ResolvedPolicy, ...]
    api_tokens: tuple[tuple[str, str], ...]
    """(name, token) of every configured token whose secret is set."""
    source: str


def _path(loc: Sequence[int | str]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _problems(exc: ValidationError, prefix: Sequence[int | str] = ()) -> list[ConfigProblem]:
    problems = []
    for err in exc.errors(include_url=False):
        loc = list(err["loc"])
        # A discriminated union puts its tag into the location; readers know the keys only.
        if loc[:1] == ["upstream"] and len(loc) > 1 and loc[1] in ("outbox", "smtp"):
            del loc[1]
        if loc[:2] == ["http", "api_tokens"] and len(loc) > 3 and loc[3] in ("plain", "named"):
            del loc[3]
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            message = "unknown key" + _allowed_hint([*prefix, *loc])
        elif err["type"] == "missing":
            message = "required key is missing"
        elif err["type"] == "union_tag_invalid":
            message = "unknown kind; use outbox or smtp"
        problems.append(ConfigProblem(_path([*prefix, *loc]), message))
    return problems


_MODELS_BY_PATH: dict[str, type[BaseModel]] = {
    "": Config,
    "smtp": SmtpConfig,
    "smtp.tls": TlsConfig,
    "http": HttpConfig,
    "store": StoreConfig,
    "delivery": DeliveryConfig,
    "headers": HeadersConfig,
    "log": LogConfig,
    "review": ReviewConfig,
    "http.api_tokens": NamedToken,
}


def _allowed_hint(loc: Sequence[int | str]) -> str:
    parent = ".".join(str(p) for p in loc[:-1] if not isinstance(p, int))
    model = PolicyConfig if parent == "policies" else _MODELS_BY_PATH.get(parent)
    if model is None:
        return ""
    names = sorted(f.alias or name for name, f in model.model_fields.items())
    return "; allowed: " + ", ".join(names)


def resolve_tokens(
    tokens: Sequence[ApiToken], environ: Mapping[str, str], problems: list[ConfigProblem]
) -> tuple[tuple[str, str], ...]:
    """(name, token) of each API token, `env:`/`file:` references read; a reference that
    fails is a problem. Only the default's own `env:SENDGUARD_API_TOKEN` may be unset (the
    token file is used then)."""
    out = []
    for index, (name, token) in enumerate(token_names(tokens)):
        value = _read_token(index, token, isinstance(tokens[index], NamedToken), environ, problems)
        if value:
            out.append((name, value))
    return tuple(out)


def _read_token(
    index: int, token: str, named: bool, environ: Mapping[str, str], problems: list[ConfigProblem]
) -> str | None:
    """The token at `http.api_tokens[index]`, read; None (and a problem) if it cannot be."""
    if token == DEFAULT_API_TOKEN and not environ.get(token[4:]):
        return None  # the embedded default's own variable: unset means "use the token file"
    try:
        return resolve_secret(token, environ)
    except SecretError as exc:
        field = f"http.api_tokens[{index}]" + (".token" if named else "")
        problems.append(ConfigProblem(field, str(exc)))
        return None


def _token_problems_unvalidated(
    data: Mapping[str, Any], environ: Mapping[str, str]
) -> list[ConfigProblem]:
    """Problems reading the API tokens of a config that failed validation elsewhere, so
    check-config lists them with the rest instead of after the rest is fixed."""
    http = data.get("http")
    raw = http.get("api_tokens") if isinstance(http, dict) else None
    problems: list[ConfigProblem] = []
    for index, entry in enumerate(raw if isinstance(raw, list) else []):
        if isinstance(entry, str):
            _read_token(index, entry, False, environ, problems)
        elif isinstance(entry, dict) and isinstance(entry.get("token"), str):
            _read_token(index, entry["token"], True, environ, problems)
    return problems


def _resolve_secrets(
    data: dict[str, Any], environ: Mapping[str, str], problems: list[ConfigProblem]
) -> dict[str, Any]:
    """`data` with the secret fields read (upstream password, store URL, AUTH users).

    Resolved before validation, so a validator sees the value (an AUTH user's hash), not the
    reference. API tokens are resolved after validation, by `resolve_tokens`.
    """

    def read(value: Any, path: str) -> Any:
        if not isinstance(value, str) or not is_reference(value):
            return value
        try:
            return resolve_secret(value, environ)
        except SecretError as exc:
            problems.append(ConfigProblem(path, str(exc)))
            return value

    out = dict(data)
    for section, key in (("upstream", "password"), ("store", "url")):
        part = out.get(section)
        if isinstance(part, dict) and key in part:
            out[section] = {**part, key: read(part[key], f"{section}.{key}")}
    smtp = out.get("smtp")
    if isinstance(smtp, dict) and isinstance(smtp.get("auth_users"), dict):
        users = {
            name: read(value, f"smtp.auth_users.{name}")
            for name, value in smtp["auth_users"].items()
        }
        out["smtp"] = {**smtp, "auth_users": users}
    return out


def default_config_text() -> str:
    """The embedded default configuration (identical to `config/sendguard.yaml`)."""
    return resources.files("sendguard").joinpath("default.yaml").read_text(encoding="utf-8")


def _problems_of_policies(raw: list[Any]) -> list[ConfigProblem]:
    problems: list[ConfigProblem] = []
    entries = []
    for index, item in enumerate(raw):
        try:
            entries.append((index, PolicyConfig.model_validate(item)))
        except ValidationError as exc:
            problems.extend(_problems(exc, ("policies", index)))
    _resolve_policies([e for _, e in entries], problems, [i for i, _ in entries])
    return problems


def _resolve_policies(
    entries: Sequence[PolicyConfig],
    problems: list[ConfigProblem],
    indexes: Sequence[int] | None = None,
) -> list[ResolvedPolicy]:
    """Load each policy's class and validate its options; append problems as found."""
    policies = []
    seen: set[str] = set()
    for position, entry in enumerate(entries):
        index = indexes[position] if indexes is not None else position
        where = f"policies[{index}]"
        if entry.plugin in seen:
            problems.append(
                ConfigProblem(f"{where}.plugin", f"{entry.plugin!r} is configured twice")
            )
            continue
        seen.add(entry.plugin)
        try:
            cls = load_policy_class(entry.plugin)
        except PolicyLoadError as exc:
            problems.append(ConfigProblem(f"{where}.plugin", str(exc)))
            continue
        try:
            options = cls.Options.model_validate(entry.options)
        except ValidationError as exc:
            for problem in _problems(exc, ("policies", index, "options")):
                message = problem.message
                if message.startswith("unknown key"):
                    allowed = ", ".join(sorted(cls.Options.model_fields)) or "none"
                    message = f"unknown key for policy {entry.plugin!r}; allowed: {allowed}"
                else:
                    message = f"policy {entry.plugin!r}: {message}"
                problems.append(ConfigProblem(problem.path, message))
            continue
        policies.append(ResolvedPolicy(entry.plugin, cls, options, entry))
    return policies


def _about_unread(path: str, unread: Sequence[str]) -> bool:
    """Whether a validation problem at `path` is about a secret that could not be read (the
    field itself, or the section whose check saw the reference instead of the value)."""
    return any(path.startswith(u) or u.startswith(path + ".") for u in unread)


def parse_config(text: str, source: str, environ: Mapping[str, str] | None = None) -> Settings:
    """Validate a YAML text completely; raise ConfigError listing every problem."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError([ConfigProblem("", f"{source} is not valid YAML: {exc}")]) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError([ConfigProblem("", f"{source} must be a mapping of sections")])
    problems: list[ConfigProblem] = []
    environ = os.environ if environ is None else environ
    data = _resolve_secrets(data, environ, problems)
    unread = [p.path for p in problems]
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        # Report everything at once: policy entries are checked on their own (options
        # included), so a typo in `smtp` does not hide one in `policies[3].options`; the
        # secrets that could not be read come along (their fields' own checks would only
        # repeat that the reference is not a value).
        found = [p for p in _problems(exc) if not _about_unread(p.path, unread)]
        problems.extend(p for p in found if not p.path.startswith("policies["))
        raw = data.get("policies", [])
        if isinstance(raw, list) and all(p.path != "policies" for p in found):
            problems.extend(_problems_of_policies(raw))
        problems.extend(_token_problems_unvalidated(data, environ))
        raise ConfigError(problems) from None
    policies = _resolve_policies(config.policies, problems)
    tokens = resolve_tokens(config.http.api_tokens, environ, problems)
    if problems:
        raise ConfigError(problems)
    return Settings(config, tuple(policies), tokens, source)


def load_config(path: Path | None, environ: Mapping[str, str] | None = None) -> Settings:
    """Read and validate `path`, or the embedded default when `path` is None."""
    if path is None:
        return parse_config(default_config_text(), "the embedded default config", environ)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([ConfigProblem("", f"cannot read {path}: {exc.strerror}")]) from None
    return parse_config(text, str(path), environ)
