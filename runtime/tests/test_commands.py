"""Every service's command line: serving without arguments, one-off commands with their own
arguments, usage errors and configuration errors, each with its exit code."""

import argparse

import pytest

from jobs_runtime.commands import FAILED, OK, USAGE, Command, load_or_exit, main
from jobs_runtime.settings import EnvSettings


class ToolSettings(EnvSettings, frozen=True):
    retries: int = 3


def _replay(args: argparse.Namespace) -> int:
    return FAILED if args.truncate else OK


COMMANDS = (
    Command(
        "replay",
        "rebuild the tables from the stream",
        _replay,
        lambda parser: parser.add_argument("--truncate", action="store_true"),
    ),
)


def _exit_code(argv: list[str], serve_code: int = OK) -> int:
    with pytest.raises(SystemExit) as done:
        main("job-store", lambda: serve_code, COMMANDS, argv)
    assert isinstance(done.value.code, int)
    return done.value.code


def test_no_argument_serves_and_exits_with_its_code() -> None:
    assert _exit_code([]) == OK
    assert _exit_code([], serve_code=3) == 3


def test_a_command_runs_with_its_arguments() -> None:
    assert _exit_code(["replay"]) == OK
    assert _exit_code(["replay", "--truncate"]) == FAILED


@pytest.mark.parametrize("argv", [["migrate"], ["replay", "--force"], ["--verbose"]])
def test_bad_usage_says_how_and_exits_2(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert _exit_code(argv) == USAGE
    assert capsys.readouterr().err.startswith("usage: job-store")


def test_help_lists_the_commands(capsys: pytest.CaptureFixture[str]) -> None:
    assert _exit_code(["--help"]) == OK
    assert "replay" in capsys.readouterr().out


def test_a_configuration_error_is_one_line_and_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("RETRIES", "many")
    with pytest.raises(SystemExit) as done:
        load_or_exit("job-store", ToolSettings)
    assert done.value.code == USAGE
    err = capsys.readouterr().err
    assert err.startswith("job-store: configuration error: ")
    assert err.count("\n") == 1


def test_settings_load_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RETRIES", "5")
    assert load_or_exit("job-store", ToolSettings).retries == 5
