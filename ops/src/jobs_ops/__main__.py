"""`jobsctl`: the operator's command. Parses the arguments, opens what the subcommand needs
(NATS always; Postgres and Replicate when configured), prints the report as text or `--json`.

Exit codes: 0 answered; 1 could not answer (NATS unreachable, the job-store down, the job
unknown everywhere, a replayed message not applied); 2 bad arguments or configuration; 3
`health` found a problem.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import uuid
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AsyncExitStack
from typing import Final, NoReturn

import msgspec

from jobs_ops.adapters.bus import Bus, Unreachable, connect
from jobs_ops.adapters.replicate import PredictionReader
from jobs_ops.adapters.store import DatabaseReader
from jobs_ops.commands import job_report, parked_report, replay_parked, stuck_report
from jobs_ops.config import Settings
from jobs_ops.ports import StoreUnavailable
from jobs_ops.render import health_text, job_text, parked_text, replay_text, stuck_text
from jobs_ops.reports import Report
from jobs_runtime.commands import FAILED, OK, REFUSED, USAGE
from jobs_runtime.settings import SettingsError, load_settings

NAME: Final = "jobsctl"
UNHEALTHY: Final = REFUSED
DEFAULT_OLDER_THAN_S: Final = 600.0


class Failed(Exception):
    """The command could not answer; its message is the one line printed."""


def _job_id(text: str) -> uuid.UUID:
    try:
        return uuid.UUID(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a job id (a UUID): {text!r}") from None


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"not a positive number of seconds: {text!r}")
    return value


def _sequence(text: str) -> int:
    if not text.isdecimal() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"not a stream sequence (1 or more): {text!r}")
    return int(text)


def parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="print JSON for programs"
    )
    top = argparse.ArgumentParser(
        prog=NAME,
        description="The operator's command: jobs, stuck jobs, dead letters and stream health,"
        " from NATS and the job-store (configured by the environment like the services).",
        parents=[common],
    )
    sub = top.add_subparsers(dest="command", metavar="COMMAND", required=True)
    job = sub.add_parser(
        "job",
        parents=[common],
        help="what happened to one job: state, history, predictions, events",
    )
    job.add_argument("job_id", type=_job_id, metavar="JOB_ID")
    job.add_argument(
        "--user", help="the job's owner, when the stream no longer holds its `requested` event"
    )
    stuck = sub.add_parser(
        "stuck", parents=[common], help="jobs not yet terminal past their deadline or --older-than"
    )
    stuck.add_argument(
        "--older-than",
        type=_seconds,
        default=DEFAULT_OLDER_THAN_S,
        metavar="S",
        help=f"seconds waiting (default {DEFAULT_OLDER_THAN_S:g})",
    )
    parked = sub.add_parser(
        "parked", parents=[common], help="the dead letters; --replay sends them back"
    )
    parked.add_argument(
        "--replay", action="store_true", help="republish to the original subject and remove"
    )
    which = parked.add_mutually_exclusive_group()
    which.add_argument("--seq", type=_sequence, metavar="N", help="only this parked message")
    which.add_argument("--all", action="store_true", help="every parked message")
    sub.add_parser(
        "health", parents=[common], help="streams, buckets and consumers; exit 3 when unhealthy"
    )
    return top


async def _run(args: argparse.Namespace, settings: Settings) -> tuple[Report, str, int]:
    async with AsyncExitStack() as stack:
        nc = await connect(settings)
        stack.push_async_callback(nc.close)
        bus = Bus(nc, settings)
        database = None
        if settings.database_url and args.command in ("job", "stuck"):
            try:
                database = await DatabaseReader.open(settings.database_url, settings.ops_timeout_s)
            except Exception as exc:
                raise Failed(f"cannot reach the database: {type(exc).__name__}") from None
            stack.push_async_callback(database.close)
        replicate = None
        if settings.replicate_api_token and args.command in ("job", "stuck"):
            replicate = PredictionReader(
                api_token=settings.replicate_api_token,
                base_url=settings.replicate_base_url,
                timeout_s=settings.ops_timeout_s,
            )
            stack.push_async_callback(replicate.aclose)
        match args.command:
            case "job":
                report = await job_report(
                    args.job_id, bus, user_id=args.user, database=database, replicate=replicate
                )
                known = report.job is not None or report.events
                return report, job_text(report), OK if known else FAILED
            case "stuck":
                found = await stuck_report(
                    args.older_than, bus, database=database, replicate=replicate
                )
                return found, stuck_text(found), OK
            case "parked" if args.replay:
                replayed = await replay_parked(bus, None if args.all else args.seq)
                if args.seq is not None and not replayed.items:
                    raise Failed(f"no parked message with seq {args.seq}")
                kept = any(r.outcome == "kept" for r in replayed.items)
                return replayed, replay_text(replayed), FAILED if kept else OK
            case "parked":
                listed = await parked_report(bus)
                return listed, parked_text(listed), OK
            case _:
                health = await bus.health()
                return health, health_text(health), OK if health.healthy else UNHEALTHY


def main(argv: Sequence[str] | None = None) -> NoReturn:
    top = parser()
    args = top.parse_args(argv)  # bad usage: the usage line on stderr and exit 2
    if args.command == "parked" and args.replay and args.seq is None and not args.all:
        top.exit(USAGE, f"{NAME}: error: --replay needs --seq N or --all\n")
    if args.command == "parked" and not args.replay and (args.seq is not None or args.all):
        top.exit(USAGE, f"{NAME}: error: --seq and --all go with --replay\n")
    try:
        settings = load_settings(Settings)
    except SettingsError as exc:
        top.exit(USAGE, f"{NAME}: configuration error: {exc}\n")
    sys.exit(_answer(lambda: _run(args, settings), as_json=getattr(args, "json", False)))


def _answer(run: Callable[[], Awaitable[tuple[Report, str, int]]], *, as_json: bool) -> int:
    async def guarded() -> tuple[Report, str, int]:
        return await run()

    try:
        report, text, code = asyncio.run(guarded())
    except (Unreachable, StoreUnavailable, Failed) as exc:
        sys.stderr.write(f"{NAME}: {exc}\n")
        return FAILED
    except Exception as exc:
        # One line, never a traceback: the operator needs what failed, not where.
        sys.stderr.write(f"{NAME}: {type(exc).__name__}: {exc}\n")
        return FAILED
    if as_json:
        sys.stdout.write(msgspec.json.encode(report).decode() + "\n")
    else:
        sys.stdout.write(text + "\n")
    return code


if __name__ == "__main__":
    main()
