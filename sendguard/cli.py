"""The `sendguard` command line."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from sendguard import __version__, logs
from sendguard.errors import ConfigError, StoreError
from sendguard.password import hash_password


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sendguard",
        description="A send proxy that checks every outbound message against policies.",
    )
    parser.add_argument("--version", action="version", version=f"sendguard {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the SMTP and HTTP ingresses and the dispatcher")
    serve.add_argument("--config", type=Path, help="YAML config (default: the embedded default)")

    check = commands.add_parser("check-config", help="validate a config and print every error")
    check.add_argument("--config", type=Path, help="YAML config (default: the embedded default)")

    commands.add_parser("hash-password", help="hash a password for smtp.auth_users (reads stdin)")
    return parser


def _print_config_error(error: ConfigError, source: Path | None) -> None:
    where = str(source) if source else "the embedded default config"
    print(f"sendguard: {where} is invalid ({len(error.problems)} problem(s)):", file=sys.stderr)
    for problem in error.problems:
        print(f"  {problem}", file=sys.stderr)


def _serve(config_path: Path | None) -> int:
    from sendguard.app import App  # noqa: PLC0415 - keeps `check-config` and `--version` light
    from sendguard.config import load_config  # noqa: PLC0415

    try:
        settings = load_config(config_path)
    except ConfigError as exc:
        _print_config_error(exc, config_path)
        return 2
    logs.configure(settings.config.log.level, settings.config.log.format)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await App(settings).run(stop)

    try:
        asyncio.run(main())
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
    from sendguard.config import load_config  # noqa: PLC0415

    try:
        settings = load_config(config_path)
    except ConfigError as exc:
        _print_config_error(exc, config_path)
        return 2
    names = ", ".join(p.name for p in settings.policies) or "none"
    print(f"{settings.source}: ok (policies: {names})")
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
        return _serve(args.config)
    if args.command == "check-config":
        return _check(args.config)
    return _hash_password()


if __name__ == "__main__":
    sys.exit(main())
