"""Which secret `gateway dev-token` signs with: the environment's AUTH_JWT_SECRET, else the one
`make run` keeps in `.data/dev-secrets.json` (found from the folder it runs in upwards), else
the dev default; it says which."""

import json
from pathlib import Path

from gateway.__main__ import dev_signing_secret
from gateway.config import DEV_JWT_SECRET, Settings
from jobs_runtime.settings import load_settings

RUN_SECRET = "make-run-secret-0123456789abcdefghijkl"


def make_run_secrets(folder: Path, **values: object) -> Path:
    path = folder / ".data" / "dev-secrets.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(values))
    return path


def test_the_environment_comes_first(tmp_path: Path) -> None:
    make_run_secrets(tmp_path, jwt_secret=RUN_SECRET)
    settings = load_settings(Settings, {"AUTH_JWT_SECRET": "from-env, older"})
    assert dev_signing_secret(settings, tmp_path) == (
        "from-env",
        "AUTH_JWT_SECRET from the environment",
    )


def test_then_make_runs_secret_from_here_or_a_folder_above(tmp_path: Path) -> None:
    path = make_run_secrets(tmp_path, jwt_secret=RUN_SECRET, replicate_token="r8_x")
    below = tmp_path / "services" / "gateway"
    below.mkdir(parents=True)
    secret, source = dev_signing_secret(load_settings(Settings, {}), below)
    assert secret == RUN_SECRET
    assert str(path) in source
    assert "make run" in source


def test_then_the_dev_default(tmp_path: Path) -> None:
    secret, source = dev_signing_secret(load_settings(Settings, {}), tmp_path)
    assert (secret, "default" in source) == (DEV_JWT_SECRET, True)


def test_a_broken_secrets_file_is_passed_over(tmp_path: Path) -> None:
    (tmp_path / ".data").mkdir()
    (tmp_path / ".data" / "dev-secrets.json").write_text("{not json")
    assert dev_signing_secret(load_settings(Settings, {}), tmp_path)[0] == DEV_JWT_SECRET
    (tmp_path / ".data" / "dev-secrets.json").write_text('["a list"]')
    assert dev_signing_secret(load_settings(Settings, {}), tmp_path)[0] == DEV_JWT_SECRET
