"""A small client of sendguard's HTTP API, for the command line (`review`, `timeline`,
`suppressions`)."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sendguard.errors import ConfigProblem

if TYPE_CHECKING:
    from sendguard.config import HttpOptions

DEFAULT_URL = "http://127.0.0.1:8025"
DEFAULT_TOKEN_FILE = Path("var/api-token")


class ClientError(Exception):
    """The API answered with an error, or could not be reached."""

    def __init__(self, message: str, problems: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.problems = problems
        """Each `field: message` of an answer that lists several (an invalid config)."""


def api_url(url: str | None, http: HttpOptions | None, environ: Mapping[str, str]) -> str:
    """--url, else $SENDGUARD_URL, else the `http.listen` of --config, else the default's."""
    if url:
        return url
    if environ.get("SENDGUARD_URL"):
        return environ["SENDGUARD_URL"]
    return local_url(http.listen) if http is not None else DEFAULT_URL


def local_url(listen: str) -> str:
    """The URL a client on this host reaches a listener at: a listener on every interface
    (`0.0.0.0`, `::`) is reached on loopback."""
    from sendguard.config import split_listen  # noqa: PLC0415 - the models load only for a --config

    host, port = split_listen(listen)
    if host in ("", "0.0.0.0", "::"):  # noqa: S104 - the address listened on, not bound here
        host = "127.0.0.1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def resolve_token(
    token: str | None,
    environ: Mapping[str, str],
    http: HttpOptions | None = None,
    source: Path | None = None,
) -> str:
    """--token, else $SENDGUARD_API_TOKEN, else the first `http.api_tokens` entry of the
    config (`env:`/`file:` read), else the token file the server writes (`http.token_file`,
    or var/api-token without a config)."""
    if token:
        return token
    if environ.get("SENDGUARD_API_TOKEN"):
        return environ["SENDGUARD_API_TOKEN"]
    token_file = DEFAULT_TOKEN_FILE
    if http is not None:
        from sendguard.config import resolve_tokens  # noqa: PLC0415 - as above

        problems: list[ConfigProblem] = []
        found = resolve_tokens(http.api_tokens[:1], environ, problems)
        if problems:
            raise ClientError(f"no API token: {source} has {problems[0]}; set it, or pass --token")
        if found:
            return found[0][1]
        token_file = http.token_file
    try:
        return token_file.read_text(encoding="utf-8").strip()
    except OSError:
        raise ClientError(
            f"no API token: pass --token or --config, set SENDGUARD_API_TOKEN, or run where "
            f"{token_file} exists (the server writes it when no http.api_tokens are configured)"
        ) from None


class Client:
    """Calls the API with a bearer token; answers are parsed JSON."""

    def __init__(self, url: str, token: str | None, timeout: float = 15.0) -> None:
        self._url = url.rstrip("/")
        self._token = token
        self._timeout = timeout

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        query: Mapping[str, str] | None = None,
        *,
        raw: bytes | None = None,
        content_type: str = "application/json",
    ) -> Any:
        """One request (a JSON `body`, or `raw` bytes of `content_type`); ClientError carries
        the API's error message."""
        url = self._url + path
        if query:
            url += "?" + urllib.parse.urlencode({k: v for k, v in query.items() if v})
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        request = urllib.request.Request(url, data=data, method=method)  # noqa: S310
        if self._token is not None:  # None: a public route (/healthz)
            request.add_header("Authorization", f"Bearer {self._token}")
        if data is not None:
            request.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(request, timeout=self._timeout) as response:  # noqa: S310
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            problems: list[str] = []
            try:
                error = json.loads(exc.read())["error"]
                message = error["message"]
                problems = [
                    f"{p['field']}: {p['message']}" if p["field"] else p["message"]
                    for p in error.get("problems", [])
                ]
            except (ValueError, KeyError, TypeError):
                message = exc.reason
            raise ClientError(f"{exc.code}: {message}", problems) from None
        except (urllib.error.URLError, OSError) as exc:
            raise ClientError(f"cannot reach {self._url}: {exc}") from None


def quote(segment: str) -> str:
    """A path segment, escaped."""
    return urllib.parse.quote(segment, safe="")


def table(
    headers: list[str],
    rows: list[list[str]],
    widths: Mapping[int, int] | None = None,
    *,
    fit: int | None = None,
) -> str:
    """A plain text table; columns listed in `widths` are cut to that many characters, and
    with `fit` the widest columns are cut until every line fits in that many characters."""
    cut = dict(widths or {})
    cells = [[_cut(str(v), cut.get(i)) for i, v in enumerate(row)] for row in rows]
    sizes = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    if fit is not None:
        sizes = _fit(sizes, fit - 2 * (len(headers) - 1))
        cells = [[_cut(v, sizes[i]) for i, v in enumerate(r)] for r in cells]
    lines = ["  ".join(h[: sizes[i]].ljust(sizes[i]) for i, h in enumerate(headers)).rstrip()]
    lines += ["  ".join(v.ljust(sizes[i]) for i, v in enumerate(r)).rstrip() for r in cells]
    return "\n".join(lines)


_NARROWEST = 8  # a column is never cut below this; a very narrow terminal wraps instead


def _fit(sizes: list[int], room: int) -> list[int]:
    """Column sizes that add up to at most `room`, taken one character at a time from the
    widest column (so the long reason column gives way first, short ids stay whole)."""
    sizes = list(sizes)
    while sum(sizes) > room:
        widest = max(range(len(sizes)), key=sizes.__getitem__)
        if sizes[widest] <= _NARROWEST:
            break
        sizes[widest] -= 1
    return sizes


def _cut(text: str, width: int | None) -> str:
    text = " ".join(text.split())
    if width is None or len(text) <= width:
        return text
    return text[: width - 1] + "…"


def environ() -> Mapping[str, str]:
    """The process environment (read here, at the edge, for the CLI only)."""
    return os.environ
