"""`jobsctl`'s answers before it reads anything: bad input exits 2 with the usage error, an
unreachable NATS exits 1 with one line and no traceback."""

import subprocess

import pytest

from jobs_ops.__main__ import main
from jobs_testkit.processes import command_path
from jobs_testkit.servers import free_port


def jobsctl(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [command_path("jobsctl"), *args],
        env={"APP_ENV": "dev", **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("job", "not-a-uuid"), "not a job id"),
        (("stuck", "--older-than", "-5"), "not a positive number of seconds"),
        (("parked", "--replay"), "--replay needs --seq N or --all"),
        (("parked", "--replay", "--seq", "1", "--all"), "not allowed with"),
        (("parked", "--seq", "3"), "--seq and --all go with --replay"),
        (("frobnicate",), "invalid choice"),
    ],
)
def test_bad_input_exits_2_naming_it(
    args: tuple[str, ...], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(list(args))
    assert exited.value.code == 2
    assert says in capsys.readouterr().err


def test_a_bad_setting_exits_2_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("OPS_TIMEOUT_S", "soon")
    with pytest.raises(SystemExit) as exited:
        main(["health"])
    assert exited.value.code == 2
    assert capsys.readouterr().err.startswith("jobsctl: configuration error: OPS_TIMEOUT_S")


def test_nats_out_of_reach_is_one_line_and_exit_1() -> None:
    url = f"nats://127.0.0.1:{free_port()}"
    answer = jobsctl("health", NATS_URL=url, OPS_TIMEOUT_S="2")
    assert answer.returncode == 1
    assert len(answer.stderr.splitlines()) == 1, answer.stderr
    assert answer.stderr.startswith(f"jobsctl: cannot reach NATS at {url}")
    assert answer.stdout == ""
