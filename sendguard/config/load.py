"""Loading the configuration: read the YAML (or the embedded default), read its secrets,
validate it against `sendguard.config.models`, resolve every policy's options against that
policy's own model, and raise ConfigError listing every problem with its path, e.g.
`policies[2].options.caps[0].window: ...`. Nothing below this package reads files or
environment variables for configuration.
"""

from __future__ import annotations

import os
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, Tag, ValidationError

from sendguard.config.listeners import listener_problems
from sendguard.config.models import (
    BUILTIN_UPSTREAMS,
    ApiToken,
    Config,
    HttpOptions,
    NamedTokenOptions,
    PluginUpstreamOptions,
    PolicyEntryOptions,
    StoreOptions,
    token_names,
)
from sendguard.config.routes import route_problems, route_problems_unvalidated
from sendguard.errors import ConfigError, ConfigProblem
from sendguard.policy import Policy, PolicyLoadError, installed_policies, load_policy_class
from sendguard.secret import DEFAULT_API_TOKEN, SecretError, is_reference, resolve_secret
from sendguard.store import open_store
from sendguard.validation import allowed_names, field_path, problems


@dataclass(frozen=True)
class ResolvedPolicy:
    """A policy entry with its class and validated options."""

    name: str
    cls: type[Policy]
    options: BaseModel
    config: PolicyEntryOptions


@dataclass(frozen=True)
class Settings:
    """A validated config, its policies resolved and its secrets read: what `serve` runs."""

    config: Config
    policies: tuple[ResolvedPolicy, ...]
    api_tokens: tuple[tuple[str, str], ...]
    """(name, token) of every configured token whose secret is set."""
    source: str


def _problems(exc: ValidationError, prefix: Sequence[int | str] = ()) -> list[ConfigProblem]:
    out = []
    for problem in problems(exc, noun="key"):
        loc = [*prefix, *problem.loc]
        message = problem.message
        if problem.kind == "extra_forbidden":
            model = model_at(Config, loc[:-1])
            if model is not None:
                message += "; allowed: " + ", ".join(allowed_names(model))
        elif problem.kind == "union_tag_invalid":
            message = "unknown kind; use " + " or ".join(_upstream_kinds())
        out.append(ConfigProblem(field_path(_without_tags(loc)), message))
    return out


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The models an annotation can hold (`list[X]`, `dict[str, X]`, `X | Y`, Annotated)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    found: list[type[BaseModel]] = []
    for arg in typing.get_args(annotation):
        found.extend(m for m in _models_in(arg) if m not in found)
    return found


def _kinds_of(model: type[BaseModel]) -> list[str]:
    """The values of a model's Literal `kind` (what a config writes to choose it)."""
    kind = model.model_fields.get("kind")
    return [str(a) for a in typing.get_args(kind.annotation)] if kind is not None else []


def _tags_in(annotation: Any) -> dict[str, type[BaseModel]]:
    """The members of a discriminated union by the tag pydantic puts into error locations:
    a member's `Tag` (a callable discriminator, like the upstreams'), else its `kind`."""
    if typing.get_origin(annotation) is Annotated:
        inner, *metadata = typing.get_args(annotation)
        tags = [m.tag for m in metadata if isinstance(m, Tag)]
        models = _models_in(inner)
        if tags:
            return {tags[0]: models[0]} if len(models) == 1 else {}
        return _tags_in(inner)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return dict.fromkeys(_kinds_of(annotation), annotation)
    out: dict[str, type[BaseModel]] = {}
    for arg in typing.get_args(annotation):
        out.update(_tags_in(arg))
    return out


def model_at(root: type[BaseModel], loc: Sequence[int | str]) -> type[BaseModel] | None:
    """The model that holds the keys at `loc` (`["smtp", "tls"]` gives TlsOptions), derived
    from the annotations: a new section or option needs no registry entry."""
    model: type[BaseModel] | None = root
    pending: list[type[BaseModel]] = []
    tags: dict[str, type[BaseModel]] = {}
    keyed = False  # the part after a mapping is a key of it, not a field
    for part in loc:
        if isinstance(part, int) or keyed:
            keyed = False
            continue
        if pending:  # a union: the next part names the member (pydantic's tag)
            if part in tags:
                model, pending = tags[part], []
                continue
            model, pending = (pending[0], []) if len(pending) == 1 else (None, [])
        if model is None:
            return None
        field = next((f for name, f in model.model_fields.items() if part in (name, f.alias)), None)
        if field is None:
            if part in ("plain", "named"):
                continue  # the tags of an API token's two shapes
            return None
        keyed = typing.get_origin(field.annotation) is dict
        candidates = _models_in(field.annotation)
        tags = _tags_in(field.annotation)
        model, pending = (candidates[0], []) if len(candidates) == 1 else (None, candidates)
    if pending:
        return pending[0] if len(pending) == 1 else None
    return model


def _upstream_kinds() -> list[str]:
    members = _models_in(Config.model_fields["upstream"].annotation)
    return [kind for m in members for kind in _kinds_of(m)]


def _without_tags(loc: Sequence[int | str]) -> list[int | str]:
    """A discriminated union puts its tag into the location; readers know the keys only."""
    out = list(loc)
    upstream_tags = _tags_in(Config.model_fields["upstream"].annotation)
    if out[:1] == ["upstream"] and len(out) > 1 and out[1] in upstream_tags:
        del out[1]
    if out[:1] == ["upstreams"] and len(out) > 2 and out[2] in upstream_tags:
        del out[2]
    if out[:2] == ["http", "api_tokens"] and len(out) > 3 and out[3] in ("plain", "named"):
        del out[3]
    return out


def resolve_tokens(
    tokens: Sequence[ApiToken], environ: Mapping[str, str], problems: list[ConfigProblem]
) -> tuple[tuple[str, str], ...]:
    """(name, token) of each API token, `env:`/`file:` references read; a reference that
    fails is a problem. Only the default's own `env:SENDGUARD_API_TOKEN` may be unset (the
    token file is used then)."""
    out = []
    for index, (name, token) in enumerate(token_names(tokens)):
        named = isinstance(tokens[index], NamedTokenOptions)
        value = _read_token(index, token, named, environ, problems)
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


def _about_unread(path: str, unread: Sequence[str]) -> bool:
    """Whether a validation problem at `path` is about a secret that could not be read (the
    field itself, or the section whose check saw the reference instead of the value)."""
    return any(path.startswith(u) or u.startswith(path + ".") for u in unread)


def _resolve_secrets(
    data: dict[str, Any], environ: Mapping[str, str], problems: list[ConfigProblem]
) -> dict[str, Any]:
    """`data` with the secret fields read (upstream password or API key, store URL, AUTH
    users, webhook secrets, the notification webhook, the ESP webhooks' keys).

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
    for section, key in (("upstream", "password"), ("upstream", "api_key"), ("store", "url")):
        part = out.get(section)
        if isinstance(part, dict) and key in part:
            out[section] = {**part, key: read(part[key], f"{section}.{key}")}
    named = out.get("upstreams")
    if isinstance(named, dict):
        out["upstreams"] = {
            name: {
                **part,
                **{
                    key: read(part[key], f"upstreams.{name}.{key}")
                    for key in ("password", "api_key")
                    if key in part
                },
            }
            if isinstance(part, dict)
            else part
            for name, part in named.items()
        }
    smtp = out.get("smtp")
    if isinstance(smtp, dict) and isinstance(smtp.get("auth_users"), dict):
        users = {
            name: read(value, f"smtp.auth_users.{name}")
            for name, value in smtp["auth_users"].items()
        }
        out["smtp"] = {**smtp, "auth_users": users}
    hooks = out.get("webhooks")
    if isinstance(hooks, list):
        out["webhooks"] = [
            {**hook, "secret": read(hook["secret"], f"webhooks[{index}].secret")}
            if isinstance(hook, dict) and "secret" in hook
            else hook
            for index, hook in enumerate(hooks)
        ]
    review = out.get("review")
    notify = review.get("notify") if isinstance(review, dict) else None
    if isinstance(review, dict) and isinstance(notify, dict) and "webhook_url" in notify:
        url = read(notify["webhook_url"], "review.notify.webhook_url")
        out["review"] = {**review, "notify": {**notify, "webhook_url": url}}
    esp = out.get("esp")
    if isinstance(esp, dict):
        esp = dict(esp)
        for name, key in ESP_SECRETS:
            part = esp.get(name)
            if isinstance(part, dict) and key in part:
                esp[name] = {**part, key: read(part[key], f"esp.{name}.{key}")}
        out["esp"] = esp
    return out


ESP_SECRETS = (
    ("sendgrid", "webhook_public_key"),
    ("postmark", "webhook_password"),
    ("postmark", "webhook_secret"),
    ("mailgun", "webhook_signing_key"),
)
"""The secret keys under `esp:` (section, key)."""


def default_config_text() -> str:
    """The embedded default configuration (identical to `config/sendguard.yaml`)."""
    return resources.files("sendguard").joinpath("default.yaml").read_text(encoding="utf-8")


def _problems_of_policies(raw: list[Any]) -> list[ConfigProblem]:
    problems: list[ConfigProblem] = []
    entries = []
    for index, item in enumerate(raw):
        try:
            entries.append((index, PolicyEntryOptions.model_validate(item)))
        except ValidationError as exc:
            problems.extend(_problems(exc, ("policies", index)))
    _resolve_policies([e for _, e in entries], problems, [i for i, _ in entries])
    return problems


def _resolve_policies(
    entries: Sequence[PolicyEntryOptions],
    problems: list[ConfigProblem],
    indexes: Sequence[int] | None = None,
) -> list[ResolvedPolicy]:
    """Load each policy's class and validate its options; append problems as found."""
    policies = []
    seen: set[str] = set()
    installed = installed_policies()
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
            cls = load_policy_class(entry.plugin, installed)
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


def _check_upstream_kind(
    kind: str, problems: list[ConfigProblem], path: str = "upstream.kind"
) -> None:
    # Imported here: the upstream contract must not import the config at module level.
    from sendguard.delivery.upstream import UpstreamLoadError, load_upstream_factory  # noqa: PLC0415

    try:
        load_upstream_factory(kind)
    except UpstreamLoadError as exc:
        problems.append(ConfigProblem(path, str(exc)))


def _with_unknown_upstream_kinds(
    data: Mapping[str, Any], found: list[ConfigProblem]
) -> list[ConfigProblem]:
    """`found`, where an upstream names a kind nothing installs, with that problem instead of
    the keys the kind's model does not know: a typo such as `kind: smtps` beside `host` and
    `port` was reported as `upstream.host: unknown key; allowed: kind, options` only."""
    entries: list[tuple[str, Any]] = [("upstream", data.get("upstream"))]
    named = data.get("upstreams")
    if isinstance(named, dict):
        entries += [(f"upstreams.{name}", entry) for name, entry in named.items()]
    for path, entry in entries:
        kind = entry.get("kind") if isinstance(entry, dict) else None
        if not isinstance(kind, str) or kind in BUILTIN_UPSTREAMS:
            continue
        kind_problems: list[ConfigProblem] = []
        _check_upstream_kind(kind, kind_problems, f"{path}.kind")
        if kind_problems:
            found = [
                p
                for p in found
                if not (p.path.startswith(f"{path}.") and p.message.startswith("unknown key"))
            ]
            found += kind_problems
    return found


def _store_problems(options: StoreOptions) -> list[ConfigProblem]:
    # Building a store does no I/O: this finds the backend by scheme and lets it check the URL.
    try:
        open_store(options.url, options.settings())
    except ConfigError as exc:
        return exc.problems
    return []


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
        found = _with_unknown_upstream_kinds(data, found)
        problems.extend(p for p in found if not p.path.startswith("policies["))
        raw = data.get("policies", [])
        if isinstance(raw, list) and all(p.path != "policies" for p in found):
            problems.extend(_problems_of_policies(raw))
        problems.extend(_token_problems_unvalidated(data, environ))
        problems.extend(route_problems_unvalidated(data))
        raise ConfigError(problems) from None
    policies = _resolve_policies(config.policies, problems)
    if isinstance(config.upstream, PluginUpstreamOptions):
        _check_upstream_kind(config.upstream.kind, problems)
    for name, named in config.upstreams.items():
        if isinstance(named, PluginUpstreamOptions):
            _check_upstream_kind(named.kind, problems, f"upstreams.{name}.kind")
    problems.extend(route_problems(config))
    problems.extend(_store_problems(config.store))
    problems.extend(listener_problems(config))
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


def load_http_options(path: Path) -> HttpOptions:
    """The `http` section of the config file at `path`, validated (its tokens not read yet:
    `resolve_tokens` reads them).

    The command line needs nothing else, so the rest of the file is not validated here and its
    secrets are not read (a store password need not be set where an operator runs `review`).
    Raise ConfigError naming the field (`http.listen: ...`) when it is invalid.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([ConfigProblem("", f"cannot read {path}: {exc.strerror}")]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError([ConfigProblem("", f"{path} is not valid YAML: {exc}")]) from None
    section = data.get("http") if isinstance(data, dict) else None
    try:
        return HttpOptions.model_validate(section or {})
    except ValidationError as exc:
        raise ConfigError(_problems(exc, ("http",))) from None
