"""The `sendguard` command line."""

from __future__ import annotations

import argparse
import asyncio
import difflib
import gc
import getpass
import json
import os
import shutil
import signal
import sys
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sendguard import __version__
from sendguard.client import (
    DEFAULT_URL,
    Client,
    ClientError,
    api_url,
    environ,
    quote,
    resolve_token,
    table,
)
from sendguard.errors import ConfigError, StoreError
from sendguard.password import hash_password
from sendguard.phrasing import human_time

if TYPE_CHECKING:
    from sendguard.config import HttpOptions


def _worker_count(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 256:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a number of workers from 1 to 256 (e.g. --workers 2)"
        )
    return int(text)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sendguard",
        description="A send proxy that checks every outbound message against policies.",
    )
    parser.add_argument("--version", action="version", version=f"sendguard {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the SMTP and HTTP ingresses and the dispatcher")
    serve.add_argument("--config", type=Path, help="YAML config (default: the embedded default)")
    serve.add_argument(
        "--loop",
        choices=("auto", "uvloop", "asyncio"),
        default="auto",
        help="event loop: uvloop where installed (auto, the default), or the standard asyncio one",
    )
    serve.add_argument(
        "--workers",
        type=_worker_count,
        default=None,
        metavar="N",
        help="worker processes sharing the listeners and the store (default: one per CPU;"
        " 1: everything in this one process)",
    )
    # Set by the supervisor of `--workers N` for each worker it starts; not for people.
    serve.add_argument("--worker-handoff", help=argparse.SUPPRESS)

    check = commands.add_parser("check-config", help="validate a config and print every error")
    check.add_argument("--config", type=Path, help="YAML config (default: the embedded default)")

    _simulate_parser(commands)

    commands.add_parser(
        "hash-password", help="hash a password for smtp.auth_users or review.users (stdin)"
    )

    health = commands.add_parser(
        "healthcheck",
        help="exit 0 if the server answers /healthz (the HTTP address from --config)",
    )
    _address_options(health)
    health.add_argument(
        "--timeout", type=float, default=3.0, help="seconds to wait for the answer (default 3)"
    )

    api = argparse.ArgumentParser(add_help=False)
    _address_options(api)
    api.add_argument(
        "--token",
        help="API token (default: $SENDGUARD_API_TOKEN, else the first http.api_tokens of"
        " --config, else the server's token file, var/api-token)",
    )
    api.add_argument("--json", action="store_true", help="print the API's JSON answer")

    review = commands.add_parser("review", help="the review queue: held deliveries and campaigns")
    actions = review.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser("list", parents=[api], help="held deliveries, newest first")
    listing.add_argument("--campaign", help="only this campaign")
    listing.add_argument(
        "--limit", type=int, default=50, help="show at most this many (0: all); all are counted"
    )
    listing.add_argument("--after", help="continue after this delivery id (from a previous list)")
    show = actions.add_parser("show", parents=[api], help="one delivery with its reasons")
    show.add_argument("delivery_id")
    for verb in ("approve", "reject"):
        act = actions.add_parser(verb, parents=[api], help=f"{verb} a delivery or a campaign")
        target = act.add_mutually_exclusive_group(required=True)
        target.add_argument("delivery_id", nargs="?", help="a held delivery's id")
        target.add_argument("--campaign", help="the whole campaign instead of one delivery")
        act.add_argument("--reviewer", help=_REVIEWER_HELP)
        act.add_argument("--note", default="", help="why")
        if verb == "approve":
            act.add_argument(
                "--release-all",
                action="store_true",
                help="with --campaign: lift every hold reason (patterns, sensitive recipients)",
            )
            act.add_argument(
                "--quiet",
                action="store_true",
                help="with --campaign: no warning when the server has no message of it yet",
            )
    for verb, what in (("pause", "hold every unsent delivery"), ("resume", "lift a pause")):
        for group in (actions, commands):  # `sendguard review pause` = `sendguard pause`
            switch = group.add_parser(
                verb, parents=[api], help=f"{what}: all sending, or one --campaign"
            )
            switch.set_defaults(switch=verb)
            switch.add_argument("--campaign", help="only this campaign (its kill switch)")
            switch.add_argument("--reviewer", help=_REVIEWER_HELP)
            switch.add_argument("--note", default="", help="why")

    timeline = commands.add_parser(
        "timeline", parents=[api], help="what a person was sent, spared or is waiting for"
    )
    timeline.add_argument("address")
    timeline.add_argument("--limit", type=int, default=50)
    _suppressions_parser(commands, api)
    _foresight_parser(commands, api)
    return parser


def _simulate_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Declare `sendguard simulate` and its options (simulate/command.py runs it; declared
    here so that `--help` and `--version` do not load the engine)."""
    sim = commands.add_parser(
        "simulate", help="replay recorded traffic through a candidate config: what would differ"
    )
    sim.add_argument("--config", type=Path, required=True, help="the candidate YAML config")
    window = sim.add_mutually_exclusive_group()
    window.add_argument("--since", help="the window up to now, like 30d (default for a store)")
    window.add_argument("--from", dest="start", help="window start, RFC 3339")
    sim.add_argument("--to", dest="end", help="window end, RFC 3339 (with --from; default now)")
    sim.add_argument(
        "--store",
        help="a store URL (default: the config's store.url, read only), a .jsonl or an .mbox file",
    )
    out = sim.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="print the report as JSON")
    out.add_argument("--html", type=Path, metavar="FILE", help="write a self-contained HTML page")


def _address_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        type=Path,
        help="the server's YAML config: the API address is its http.listen (0.0.0.0 and :: are"
        " reached on 127.0.0.1), the token its first http.api_tokens entry",
    )
    parser.add_argument(
        "--url",
        help="sendguard's HTTP API (default: $SENDGUARD_URL, else http.listen of --config,"
        f" else {DEFAULT_URL})",
    )


def _foresight_parser(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], api: argparse.ArgumentParser
) -> None:
    commands.add_parser(
        "reload", parents=[api], help="make the server read its config again (as SIGHUP)"
    )
    shadow = commands.add_parser(
        "shadow-report", parents=[api], help="what each shadow policy would have done"
    )
    shadow.add_argument("--since", default="7d", help="the window, like 7d or 24h (default 7d)")
    shadow.add_argument("--examples", type=int, default=5, help="example deliveries per verdict")
    shadow.add_argument("--top", type=int, default=10, help="most affected recipients shown")


def _suppressions_parser(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], api: argparse.ArgumentParser
) -> None:
    suppressions = commands.add_parser(
        "suppressions", help="durable suppressions: unsubscribed, complained, bounced, manual"
    )
    actions = suppressions.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser("list", parents=[api], help="suppressed addresses, by address")
    listing.add_argument("--address", help="only this address")
    listing.add_argument(
        "--reason", choices=["unsubscribe", "complaint", "bounce", "manual", "import"]
    )
    listing.add_argument("--after", help="the cursor a previous page printed")
    listing.add_argument("--limit", type=int, default=100)
    add = actions.add_parser("add", parents=[api], help="suppress an address")
    add.add_argument("address")
    add.add_argument(
        "--reason", default="manual", choices=["unsubscribe", "complaint", "bounce", "manual"]
    )
    imported = actions.add_parser(
        "import", parents=[api], help="import a CSV export (SendGrid, Postmark, Mailgun)"
    )
    imported.add_argument("file", type=Path)
    lift = actions.add_parser("lift", parents=[api], help="lift an address's suppression")
    lift.add_argument("address")
    for action in (add, imported, lift):
        action.add_argument("--reviewer", help=_REVIEWER_HELP)
    for action in (add, lift):
        action.add_argument("--note", default="", help="why")


_REVIEWER_HELP = (
    "for whom you act; kept in the note (the audit records the API token's name as the actor)"
)


def _review_body(args: argparse.Namespace) -> dict[str, str]:
    body = {"note": args.note}
    if args.reviewer:
        body["reviewer"] = args.reviewer
    return body


def _http_options(config: Path | None) -> HttpOptions | None:
    """The `http` section of --config, if given (the config models load only then: a client
    command with --url/--token or the environment starts without them)."""
    if config is None:
        return None
    from sendguard.config.load import load_http_options  # noqa: PLC0415

    return load_http_options(config)


def _client(args: argparse.Namespace) -> Client:
    """A client of the API that --url/--token, the environment or --config name."""
    http = _http_options(args.config)
    env = environ()
    return Client(api_url(args.url, http, env), resolve_token(args.token, env, http, args.config))


def _healthcheck(args: argparse.Namespace) -> int:
    """Exit 0 when /healthz answers 200 (what a container's HEALTHCHECK runs), else 1."""
    http = _http_options(args.config)
    url = api_url(args.url, http, environ())
    try:
        Client(url, token=None, timeout=args.timeout).call("GET", "/healthz")
    except ClientError as exc:
        print(f"sendguard: unhealthy: {exc}", file=sys.stderr)
        return 1
    print(f"{url}/healthz: ok")
    return 0


def _warn_unseen_campaign(client: Client, name: str) -> None:
    """Approving a campaign ahead of its mail is legitimate, but a typo approves nothing that
    is waiting: say so on stderr, with the known campaigns whose names are closest."""
    try:
        listed = client.call("GET", "/v1/campaigns")["campaigns"]
    except ClientError as exc:
        print(
            f"sendguard: warning: could not list campaigns to check {name!r}: {exc}",
            file=sys.stderr,
        )
        return
    seen = [c["name"] for c in listed if any(c["counts"].values())]
    if name in seen:
        return
    lowered = {n.lower(): n for n in seen}
    close = difflib.get_close_matches(name.lower(), list(lowered), n=3, cutoff=0.6)
    hint = (
        f"; did you mean {' or '.join(lowered[c] for c in close)}?"
        if close
        else f"; known campaigns: {', '.join(seen[:10])}" + (" …" if len(seen) > 10 else "")
        if seen
        else "; the server has no campaign mail at all yet"
    )
    print(
        f"sendguard: warning: the server has no message of campaign {name!r}{hint}"
        " (approving it anyway: it applies to mail yet to come; --quiet hides this)",
        file=sys.stderr,
    )


def _review(args: argparse.Namespace) -> int:
    client = _client(args)
    if args.action == "list":
        return _review_list(client, args)
    if args.action == "show":
        answer = client.call("GET", f"/v1/deliveries/{quote(args.delivery_id)}")
        print(json.dumps(answer, indent=2) if args.json else _describe(answer))
        return 0
    if args.action in ("pause", "resume"):
        return _switch(args)
    body = _review_body(args)
    if getattr(args, "release_all", False):
        if not args.campaign:
            print("sendguard: --release-all needs --campaign", file=sys.stderr)
            return 2
        body["release"] = "all"
    if args.campaign:
        if args.action == "approve" and not args.quiet:
            _warn_unseen_campaign(client, args.campaign)
        answer = client.call("POST", f"/v1/campaigns/{quote(args.campaign)}/{args.action}", body)
        text = f"campaign {answer['campaign']}: {args.action}d, {_deliveries(answer['deliveries'])}"
    else:
        answer = client.call(
            "POST", f"/v1/deliveries/{quote(args.delivery_id)}/{args.action}", body
        )
        text = f"delivery {answer['id']} to {answer['recipient']}: now {answer['state']}"
    print(json.dumps(answer, indent=2) if args.json else text)
    return 0


_PAGE = 500
_MAX_LISTED = 100_000  # a queue larger than this is a job for the review page, not a terminal


def _moment(text: str | None) -> str:
    """An API time (RFC 3339) as people read it: `2026-12-01 14:11 UTC`."""
    return human_time(datetime.fromisoformat(text)) if text else "-"


def _deliveries(count: int) -> str:
    return "1 delivery" if count == 1 else f"{count} deliveries"


def _review_list(client: Client, args: argparse.Namespace) -> int:
    """Every held delivery counted, the first `--limit` shown with every reason it is held for."""
    held: list[dict[str, Any]] = []
    after = args.after or ""
    while len(held) < _MAX_LISTED:
        page = client.call(
            "GET",
            "/v1/deliveries",
            query={
                "state": "held",
                "campaign": args.campaign or "",
                "limit": str(_PAGE),
                "cursor": after,
            },
        )
        held += page["deliveries"]
        after = page.get("next_cursor") or ""
        if not after:
            break
    shown = held if args.limit <= 0 else held[: args.limit]
    if args.json:
        print(json.dumps({"deliveries": shown, "total": len(held)}, indent=2))
        return 0
    if not held:
        print("nothing is held for review")
        return 0
    rows = [
        [d["id"], d["recipient"], d["campaign"] or "-", _moment(d["updated_at"]), held_for(d)]
        for d in shown
    ]
    print(table(["ID", "RECIPIENT", "CAMPAIGN", "HELD SINCE", "REASONS"], rows, fit=_width()))
    per_campaign: dict[str, int] = {}
    for d in held:
        name = d["campaign"] or "(no campaign)"
        per_campaign[name] = per_campaign.get(name, 0) + 1
    counts = ", ".join(f"{name} {n}" for name, n in sorted(per_campaign.items()))
    more = "+" if after else ""
    print(f"\n{len(held)}{more} held: {counts}")
    if len(shown) < len(held):
        print(f"showing {len(shown)}; --limit 0 shows all, --after {shown[-1]['id']} the rest")
    return 0


def held_for(delivery: dict[str, Any]) -> str:
    """Every reason of the latest decision that holds the delivery (not only the first)."""
    reasons = delivery.get("reasons") or []
    latest = max((r["at"] for r in reasons), default=None)
    holding = [
        f"{r['policy']}: {r['reason']}"
        for r in reasons
        if r["at"] == latest and r["verdict"] == "hold" and r["mode"] == "enforce"
    ]
    return "; ".join(holding) or delivery["reason"]


def _width() -> int | None:
    """The terminal's width when printing to one; tables written to a pipe are never cut."""
    if not sys.stdout.isatty():
        return None
    return shutil.get_terminal_size().columns


def _switch(args: argparse.Namespace) -> int:
    """`pause` / `resume`: the global kill switch, or a campaign's with --campaign."""
    body = _review_body(args)
    verb = args.switch
    if args.campaign:
        path = f"/v1/campaigns/{quote(args.campaign)}/{verb}"
        what = f"campaign {args.campaign}"
    else:
        path, what = f"/v1/{verb}", "all sending"
    answer = _client(args).call("POST", path, body)
    text = f"{what}: {verb}d, {_deliveries(answer['deliveries'])}"
    print(json.dumps(answer, indent=2) if args.json else text)
    return 0


def _describe(delivery: dict[str, Any]) -> str:
    lines = [
        f"delivery   {delivery['id']}",
        f"message    {delivery['message_id']}",
        f"recipient  {delivery['recipient']}",
        f"campaign   {delivery['campaign'] or '-'}",
        f"subject    {delivery['subject']}",
        f"state      {delivery['state']} ({delivery['reason']})",
        "",
        table(
            ["AT", "STATE", "REASON"],
            [[t["at"], t["state"], t["reason"]] for t in delivery["transitions"]],
            fit=_width(),
        ),
        "",
        table(
            ["AT", "POLICY", "VERDICT", "MODE", "REASON"],
            [
                [r["at"], r["policy"], r["verdict"], r["mode"], r["reason"]]
                for r in delivery["reasons"]
            ],
            fit=_width(),
        ),
    ]
    return "\n".join(lines)


def _timeline(args: argparse.Namespace) -> int:
    answer = _client(args).call(
        "GET", f"/v1/recipients/{quote(args.address)}/timeline", query={"limit": str(args.limit)}
    )
    if args.json:
        print(json.dumps(answer, indent=2))
        return 0
    rows = [
        [_moment(d["created_at"]), d["state"], d["campaign"] or "-", d["subject"], d["reason"]]
        for d in answer["deliveries"]
    ]
    print(f"timeline of {answer['recipient']} (newest first)")
    suppressed = answer.get("suppression")
    if suppressed:
        print(
            f"suppressed: {suppressed['reason']} since {_moment(suppressed['created_at'])}"
            f" (from {suppressed['source']}){_suppression_effect(suppressed)}"
        )
    print(
        table(["RECEIVED", "STATE", "CAMPAIGN", "SUBJECT", "WHY"], rows, {3: 40}, fit=_width())
        if rows
        else "no deliveries"
    )
    if answer["events"]:
        print()
        print(
            table(
                ["AT", "EVENT", "MESSAGE"],
                [[_moment(e["at"]), e["type"], e["message_id"] or "-"] for e in answer["events"]],
            )
        )
    return 0


def _suppression_effect(suppressed: dict[str, Any]) -> str:
    """What the server's config does with the suppression, as the timeline answer says."""
    from sendguard.suppression_enforcement import (  # noqa: PLC0415 - keeps other commands light
        Honour,
        SuppressionEnforcement,
    )

    if "honoured_by" not in suppressed:
        return ""  # a server from before the answer said it: claim nothing
    honours = tuple(Honour.of_view(h) for h in suppressed["honoured_by"])
    return f": {SuppressionEnforcement(honours).summary()}"


def _suppressions(args: argparse.Namespace) -> int:
    client = _client(args)
    if args.action == "list":
        query = {"address": args.address or "", "reason": args.reason or ""}
        query |= {"after": args.after or "", "limit": str(args.limit)}
        answer = client.call("GET", "/v1/suppressions", query=query)
        if not args.json:
            rows = [
                [s["address"], s["reason"], s["source"], _moment(s["created_at"]), s["created_by"]]
                for s in answer["suppressions"]
            ]
            print(
                table(["ADDRESS", "REASON", "SOURCE", "SINCE", "BY"], rows)
                if rows
                else "no suppressions"
            )
            if answer["next"]:
                print(f"more: --after {answer['next']}")
    elif args.action == "add":
        body = {"address": args.address, "reason": args.reason}
        body |= _review_body(args)
        answer = client.call("POST", "/v1/suppressions", body)
        s = answer["suppression"]
        text = "suppressed" if answer["added"] else "already suppressed"
        if not args.json:
            print(f"{s['address']}: {text} ({s['reason']} since {_moment(s['created_at'])})")
    elif args.action == "import":
        return _import_suppressions(client, args)
    else:
        answer = client.call(
            "DELETE",
            f"/v1/suppressions/{quote(args.address)}",
            _review_body(args),
        )
        if not args.json:
            print(f"{answer['lifted']['address']}: lifted (was {answer['lifted']['reason']})")
    if args.json:
        print(json.dumps(answer, indent=2))
    return 0


def _import_suppressions(client: Client, args: argparse.Namespace) -> int:
    """Import a CSV export; exit 1 when any row was not imported (a script must notice)."""
    try:
        content = args.file.read_bytes()
    except OSError as exc:
        raise ClientError(f"cannot read {args.file}: {exc.strerror}") from None
    answer = client.call(
        "POST",
        "/v1/suppressions",
        query={"reviewer": args.reviewer or "", "source": args.file.name},
        raw=content,
        content_type="text/csv",
    )
    if args.json:
        print(json.dumps(answer, indent=2))
    else:
        print(
            f"{answer['added']} added, {answer['already_present']} already present,"
            f" {len(answer['invalid'])} invalid"
        )
        for bad in answer["invalid"]:
            print(f"  line {bad['line']}: {bad['message']}")
        for warning in answer.get("warnings", []):
            print(f"  line {warning['line']} (imported): {warning['message']}")
    return 1 if answer["invalid"] else 0


def _reload(args: argparse.Namespace) -> int:
    try:
        answer = _client(args).call("POST", "/v1/admin/reload", {})
    except ClientError as exc:
        print(f"sendguard: {exc}", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return 1
    # A worker of `serve --workers N` that did not reload (or read another file) fails it.
    lagging = [
        w for w in answer.get("workers", []) if not w["reloaded"] or w["hash"] != answer["hash"]
    ]
    if args.json:
        print(json.dumps(answer, indent=2))
        return 1 if lagging else 0
    print(f"reloaded {answer['source']} (sha256 {answer['hash']})")
    if lagging:
        print("not reloaded by every worker:", file=sys.stderr)
        for worker in lagging:
            why = worker["error"] or f"read sha256 {worker['hash']}"
            print(f"  worker {worker['pid']}: {why}", file=sys.stderr)
    print(f"applied: {', '.join(answer['applied']) or 'nothing changed'}")
    if answer["restart_required"]:
        print(f"restart needed for: {', '.join(answer['restart_required'])}")
    certificate = answer.get("tls_certificate")
    if certificate and certificate["reloaded"]:
        print(f"smtp tls certificate: sha256 {certificate['sha256']}")
    elif certificate:
        problem = certificate["problem"]
        print(f"smtp tls certificate kept (sha256 {certificate['sha256']}):", file=sys.stderr)
        print(f"  {problem['field']}: {problem['message']}", file=sys.stderr)
        return 1
    return 1 if lagging else 0


def _shadow_report(args: argparse.Namespace) -> int:
    answer = _client(args).call(
        "GET",
        "/v1/policies/shadow",
        query={"since": args.since, "examples": str(args.examples), "top": str(args.top)},
    )
    if args.json:
        print(json.dumps(answer, indent=2))
        return 0
    print(f"shadow policies from {answer['since']} to {answer['until']}")
    if not answer["policies"]:
        print("no policy is in shadow mode, and none gave shadow verdicts in the window")
    for policy in answer["policies"]:
        counts = ", ".join(f"{v} {n}" for v, n in policy["counts"].items())
        now = "" if policy["configured_as_shadow"] else " (no longer in shadow mode)"
        print(f"\n{policy['policy']}{now}: {policy['total']} verdicts ({counts})")
        if policy["examples"]:
            rows = [
                [e["at"], e["recipient"], e["campaign"] or "-", e["verdict"], e["reason"]]
                for e in policy["examples"]
            ]
            print(table(["AT", "RECIPIENT", "CAMPAIGN", "WOULD", "REASON"], rows, fit=_width()))
        if policy["recipients"]:
            people = ", ".join(f"{r['recipient']} ({r['count']})" for r in policy["recipients"])
            print(f"most affected: {people}")
    return 0


def _print_config_error(error: ConfigError, source: Path | None) -> None:
    where = str(source) if source else "the embedded default config"
    print(f"sendguard: {where} is invalid ({len(error.problems)} problem(s)):", file=sys.stderr)
    for problem in error.problems:
        print(f"  {problem}", file=sys.stderr)


def loop_factory(choice: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The event loop `serve --loop` asks for; None is asyncio's own."""
    if choice == "asyncio":
        return None
    try:
        import uvloop  # noqa: PLC0415 - optional: not every platform has it
    except ImportError:
        if choice == "uvloop":
            raise SystemExit("sendguard: --loop uvloop, but uvloop is not installed") from None
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


YOUNG_COLLECTION_THRESHOLDS = (10_000, 10, 10)
"""The garbage collector's thresholds once serving (the interpreter's are 700, 10, 10).

A request or a message allocates and frees thousands of objects. With 700, the youngest
generation was collected about every eleventh HTTP request under load, each pass walking every
young object still alive (those of the requests in flight included) and promoting them to be
walked again by the older generations: 3 % of the process's CPU time, and no pass found
garbage. Objects without cycles are freed by their reference counts whatever the threshold; a
cycle waits at most 10,000 allocations longer (docs/performance.md, session 10)."""


async def _freeze_heap(started: asyncio.Event) -> None:
    """Once serving, keep what startup made out of the garbage collector's full passes.

    Modules, pydantic schemas, the config and the app's objects live as long as the process;
    a full collection walked every one of them again (tens of milliseconds each, a few
    times a minute under load: about 4 % of a request's CPU time). `gc.freeze()` moves them
    to a generation that is never collected; what is made afterwards is collected as before.
    """
    await started.wait()
    gc.collect()
    gc.freeze()
    gc.set_threshold(*YOUNG_COLLECTION_THRESHOLDS)


def _serve(
    config_path: Path | None,
    loop: str = "auto",
    workers: int | None = None,
    handoff: str | None = None,
) -> int:
    # A SIGHUP before the app can reload waits (pending) rather than ending the server; the
    # app unblocks it once its reloader runs.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGHUP})
    from sendguard import logs, offload  # noqa: PLC0415
    from sendguard.malloc_tuning import keep_freed_memory  # noqa: PLC0415

    keep_freed_memory()  # before any thread starts: see sendguard/malloc_tuning.py
    from sendguard import client_tls  # noqa: PLC0415
    from sendguard.reload import read_config  # noqa: PLC0415

    try:
        loaded = read_config(config_path)
    except ConfigError as exc:
        _print_config_error(exc, config_path)
        return 2
    settings = loaded.settings
    # The config is read before aiohttp is imported: see sendguard/client_tls.py.
    client_tls.import_aiohttp(client_tls.https_possible(settings))
    from sendguard.app import App  # noqa: PLC0415 - keeps `check-config` and `--version` light
    from sendguard.workers import Handoff, Supervisor, default_workers  # noqa: PLC0415

    logs.configure(settings.config.log.level, settings.config.log.format)
    if workers is None:
        workers = default_workers()
    if handoff is None and workers > 1:
        try:
            return Supervisor(settings.config, config_path, loop, workers).run()
        except StoreError as exc:
            print(f"sendguard: {exc}", file=sys.stderr)
            return 1
        except OSError as exc:
            print(f"sendguard: cannot start: {exc}", file=sys.stderr)
            return 1

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        app = App(
            settings,
            config_path=config_path,
            config_digest=loaded.digest,
            handoff=Handoff.decode(handoff) if handoff is not None else None,
        )
        loop.add_signal_handler(signal.SIGHUP, app.on_sighup)
        started = asyncio.Event()
        settled = asyncio.create_task(_freeze_heap(started), name="freeze-heap")
        try:
            await app.run(stop, started)
        finally:
            settled.cancel()
            offload.close()  # the processes that worked on large messages, if any started

    try:
        with asyncio.Runner(loop_factory=loop_factory(loop)) as runner:
            runner.run(main())
    except ConfigError as exc:
        _print_config_error(exc, config_path)
        return 2
    except StoreError as exc:
        print(f"sendguard: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"sendguard: cannot start: {exc}", file=sys.stderr)
        return 1
    return 0


def _check(config_path: Path | None) -> int:
    from sendguard import logs  # noqa: F401, PLC0415 - first: it imports structlog (see there)
    from sendguard.config import load_config  # noqa: PLC0415

    try:
        settings = load_config(config_path)
    except ConfigError as exc:
        _print_config_error(exc, config_path)
        return 2
    names = ", ".join(p.name for p in settings.policies) or "none"
    print(f"{settings.source}: ok (policies: {names})")
    from sendguard.suppression_enforcement import (  # noqa: PLC0415 - keeps other commands light
        SuppressionEnforcement,
    )

    enforcement = SuppressionEnforcement.of(
        (p.name, p.config.mode, p.cls(p.options)) for p in settings.policies
    )
    warning = enforcement.warning()
    if warning is not None:
        print(f"sendguard: warning: {warning}", file=sys.stderr)
    return 0


def _hash_password() -> int:
    if sys.stdin.isatty():
        password = getpass.getpass("password: ")
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        print("sendguard: empty password", file=sys.stderr)
        return 2
    print(hash_password(password))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `sendguard` console script."""
    args = _parser().parse_args(argv)
    if args.command == "serve":
        return _serve(args.config, args.loop, args.workers, args.worker_handoff)
    if args.command == "check-config":
        return _check(args.config)
    if args.command == "healthcheck":
        try:
            return _healthcheck(args)
        except ConfigError as exc:
            _print_config_error(exc, args.config)
            return 2
    if args.command == "simulate":
        from sendguard.simulate.command import run  # noqa: PLC0415 - loads the engine and store

        return run(args)
    if args.command in (
        "review",
        "timeline",
        "suppressions",
        "pause",
        "resume",
        "reload",
        "shadow-report",
    ):
        handlers = {
            "reload": _reload,
            "shadow-report": _shadow_report,
            "review": _review,
            "timeline": _timeline,
            "suppressions": _suppressions,
            "pause": _switch,
            "resume": _switch,
        }
        try:
            return handlers[args.command](args)
        except ClientError as exc:
            print(f"sendguard: {exc}", file=sys.stderr)
            return 1
        except ConfigError as exc:
            _print_config_error(exc, args.config)
            return 2
        except BrokenPipeError:
            # `sendguard review list | head`: the reader left; say nothing more, as cat does.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 1
    return _hash_password()


if __name__ == "__main__":
    sys.exit(main())
