"""The `taskstack` command: developer tooling, never installed into a service image."""

import argparse
import os
import sys
from importlib.metadata import entry_points
from pathlib import Path
from typing import NoReturn

from pydantic import ValidationError
from sqlalchemy.exc import OperationalError

from taskstack.common.migrations import MigrationLockTimeout, upgrade
from taskstack.common.settings import (
    MigrationSettings,
    describe_settings_error,
    normalize_database_url,
)
from taskstack.dev.errors import CliError, first_line
from taskstack.dev.keys import add_keys_commands
from taskstack.dev.logs import LOG_FORMATS, LogLines
from taskstack.dev.mail import latest, mail_dir
from taskstack.dev.services import SERVICES
from taskstack.dev.up import UpOptions, up


def main(argv: list[str] | None = None) -> None:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        args.run(args)
    except CliError as exc:
        print(f"taskstack: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    except BrokenPipeError:  # output piped into `head` and the like
        raise SystemExit(0) from None


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line, as every other taskstack error; --help has the usage.
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="taskstack", description=__doc__)
    commands = parser.add_subparsers(required=True, metavar="command", parser_class=_Parser)

    start = commands.add_parser(
        "up",
        help="run PostgreSQL, both services and a gateway on http://127.0.0.1:8000",
        description="Start an embedded PostgreSQL (or use --database-url), migrate, run auth "
        "and tasks, and route http://127.0.0.1:PORT to them as the Ingress does. "
        "Ctrl-C stops it all.",
    )
    start.add_argument("--port", type=_port, default=8000, help="gateway port (default 8000)")
    start.add_argument(
        "--auth-port", type=_port, default=8001, help="auth service port (default 8001)"
    )
    start.add_argument(
        "--tasks-port", type=_port, default=8002, help="tasks service port (default 8002)"
    )
    start.add_argument(
        "--data-dir",
        type=Path,
        default=Path(".taskstack"),
        help="where the embedded PostgreSQL keeps its data (default .taskstack)",
    )
    start.add_argument(
        "--database-url", type=_database_url, help="use this PostgreSQL instead of the embedded one"
    )
    start.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="services' log level",
    )
    start.add_argument(
        "--log-format",
        default="auto",
        choices=LOG_FORMATS,
        help="the services' logs as readable lines (pretty) or as their JSON lines (json); "
        "auto, the default, is pretty at a terminal and json otherwise. NO_COLOR=1 turns "
        "colour off",
    )
    start.add_argument(
        "--reload", action="store_true", help="restart a service when its code changes"
    )
    start.add_argument(
        "--smtp-port",
        type=_port_or_zero,
        default=0,
        help="port of the development mail sink (default 0: any free port)",
    )
    start.set_defaults(run=_up)

    mail = commands.add_parser(
        "mail",
        help="list the latest mails `taskstack up` received, with their links",
        description="Show the newest messages the development SMTP sink kept.",
    )
    mail.add_argument(
        "--data-dir", type=Path, default=Path(".taskstack"), help="the stack's data folder"
    )
    mail.add_argument("-n", "--count", type=int, default=10, help="how many (default 10)")
    mail.set_defaults(run=_mail)

    migrate = commands.add_parser(
        "migrate",
        help="migrate every service's schema at DATABASE_MIGRATION_URL or DATABASE_URL",
        description="Run each service's migrations (idempotent; safe to run concurrently).",
    )
    migrate.set_defaults(run=_migrate)
    add_keys_commands(commands)
    # Commands of other tools (`taskstack bench`), installed beside this one.
    for command in entry_points(group="taskstack.commands"):
        command.load()(commands)
    return parser


def _port(value: str) -> int:
    if not value.isdigit() or not 1 <= int(value) <= 65535:
        raise argparse.ArgumentTypeError(f"{value!r} is not a port number")
    return int(value)


def _port_or_zero(value: str) -> int:
    return 0 if value == "0" else _port(value)


def _database_url(value: str) -> object:
    try:
        return normalize_database_url(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _up(args: argparse.Namespace) -> None:
    up(
        UpOptions(
            data_dir=args.data_dir.resolve(),
            port=args.port,
            service_ports={"auth": args.auth_port, "tasks": args.tasks_port},
            database_url=args.database_url,
            log_level=args.log_level,
            log_lines=LogLines.choose(
                args.log_format,
                [service.name for service in SERVICES],
                stdout=sys.stdout,
                environ=os.environ,
            ),
            reload=args.reload,
            smtp_port=args.smtp_port,
        )
    )


def _mail(args: argparse.Namespace) -> None:
    mails = latest(mail_dir(args.data_dir.resolve()), args.count)
    if not mails:
        print("taskstack: no mail yet")
    for mail in mails:
        print(f"{mail.message['Date']}  to {mail.recipient}  {mail.subject}")
        for link in mail.links:
            print(f"    {link}")


def _migrate(_: argparse.Namespace) -> None:
    try:
        settings = MigrationSettings()
    except ValidationError as exc:
        raise CliError(describe_settings_error(exc)) from None
    for service in SERVICES:
        try:
            upgrade(
                settings.migration_database,
                service.history,
                lock_timeout=settings.database_migration_lock_timeout_seconds,
            )
        except MigrationLockTimeout as exc:
            raise CliError(str(exc)) from None
        except OperationalError as exc:
            raise CliError(f"cannot reach the database: {first_line(exc.orig or exc)}") from None
        print(f"taskstack: {service.name}: schema {service.history.schema!r} is at head")
