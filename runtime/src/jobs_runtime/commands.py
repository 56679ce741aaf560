"""Every service's console command, one way: `NAME` serves, `NAME SUBCOMMAND [ARGS]` runs a
one-off command (argparse, so `--help` and usage errors look alike everywhere); configuration
errors are one line on stderr; and the exit codes mean the same in every service."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NoReturn, TypeVar

from jobs_runtime.logs import configure_logging
from jobs_runtime.settings import EnvSettings, SettingsError, load_settings

OK = 0
FAILED = 1  # the command ran and failed (or the service crashed)
USAGE = 2  # bad arguments or configuration: nothing was attempted
REFUSED = 3  # the service would not start on what it found (e.g. a stream keeping too little)

S = TypeVar("S", bound=EnvSettings)


def _no_arguments(parser: argparse.ArgumentParser) -> None:
    del parser


@dataclass(frozen=True, slots=True)
class Command:
    """A one-off command beside serving: `run` gets the parsed arguments, answers an exit code."""

    name: str
    help: str
    run: Callable[[argparse.Namespace], int]
    arguments: Callable[[argparse.ArgumentParser], object] = _no_arguments


def main(
    name: str,
    serve: Callable[[], int],
    commands: Sequence[Command] = (),
    argv: Sequence[str] | None = None,
) -> NoReturn:
    """The body of a service's console command: exits with what the chosen command answers."""
    parser = argparse.ArgumentParser(
        prog=name, description=f"The {name} service; without a command it serves."
    )
    if commands:
        choices = parser.add_subparsers(dest="command", metavar="COMMAND")
        for command in commands:
            sub = choices.add_parser(command.name, help=command.help, description=command.help)
            command.arguments(sub)
            sub.set_defaults(run=command.run)
    args = parser.parse_args(argv)  # bad usage: the usage line on stderr and exit 2 (USAGE)
    run: Callable[[argparse.Namespace], int] | None = getattr(args, "run", None)
    sys.exit(serve() if run is None else run(args))


def load_or_exit(name: str, settings_type: type[S]) -> S:
    """The settings from the environment, logging configured at their level; on an error, one
    line `NAME: configuration error: ...` on stderr and exit `USAGE`."""
    try:
        settings = load_settings(settings_type)
    except SettingsError as exc:
        configuration_error(name, str(exc))
    configure_logging(name, settings.log_level)
    return settings


def configuration_error(name: str, detail: str) -> NoReturn:
    sys.stderr.write(f"{name}: configuration error: {detail}\n")
    sys.exit(USAGE)
