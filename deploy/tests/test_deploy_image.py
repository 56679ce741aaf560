"""What the image build does, replayed with uv (no Docker engine here): each service installs
alone from the lock file, in the Dockerfile's two steps and with its build context, and its
command then runs from that install alone: it refuses a bad configuration with exit code 2 and
one line naming the variable, and with a good one it serves, becomes ready and stops cleanly."""

from __future__ import annotations

import fnmatch
import os
import re
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from jobs_proto.permissions import service_users
from jobs_proto.subjects import Subjects
from jobs_testkit.servers import NatsServer, free_port

from .conftest import OPERATOR_SECRETS, ROOT

DOCKERFILE = ROOT / "Dockerfile"
# The image's SERVICE build argument: workspace members whose command has the same name.
IMAGES = ("gateway", "webhook-ingest", "ai-runner", "job-store", "replicate-sim")
WORKSPACE_MEMBERS = {
    "jobs-proto",
    "jobs-runtime",
    "jobs-testkit",
    "jobs-bench",
    "gateway",
    "webhook-ingest",
    "ai-runner",
    "job-store",
    "replicate-sim",
}
# Test and development tools never belong in an image.
DEV_ONLY = {"pytest", "mypy", "ruff", "checkov", "hypothesis", "schemathesis"}


def dockerignored(relative: str, patterns: list[str]) -> bool:
    for pattern in patterns:
        if pattern.startswith("**/"):
            if any(fnmatch.fnmatch(part, pattern[3:]) for part in relative.split("/")):
                return True
        elif fnmatch.fnmatch(relative, pattern) or relative.startswith(pattern + "/"):
            return True
    return False


def build_context(target: Path) -> None:
    """Copy the repository as `docker build .` sends it: minus what .dockerignore names."""
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for pattern in patterns:  # the forms `dockerignored` understands
        assert re.fullmatch(r"(\*\*/)?[\w.*-]+(/[\w.-]+)*", pattern), pattern
    for dirpath, dirnames, filenames in os.walk(ROOT):
        relative_dir = os.path.relpath(dirpath, ROOT)
        prefix = "" if relative_dir == "." else relative_dir + "/"
        dirnames[:] = [d for d in dirnames if not dockerignored(prefix + d, patterns)]
        for name in filenames:
            if dockerignored(prefix + name, patterns):
                continue
            (target / prefix).mkdir(parents=True, exist_ok=True)
            shutil.copy2(os.path.join(dirpath, name), target / prefix / name)


def dependency_copies() -> list[tuple[list[str], str]]:
    """The Dockerfile's COPY lines before `COPY . .`: (sources, destination)."""
    text = DOCKERFILE.read_text()
    build = text[text.index("AS build") : text.index("COPY . .")]
    copies = []
    for line in re.findall(r"^COPY (?!--from)(.+)$", build, re.M):
        *sources, destination = line.split()
        copies.append((sources, destination))
    return copies


def uv(*args: str, cwd: Path, venv: Path) -> None:
    # uv's own settings (a cache directory, an index) stay; the target environment is ours.
    env = {
        k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "UV_PROJECT_ENVIRONMENT")
    }
    env |= {"UV_PROJECT_ENVIRONMENT": str(venv), "UV_NO_PROGRESS": "1", "UV_LINK_MODE": "copy"}
    done = subprocess.run(
        [shutil.which("uv") or str(ROOT / ".tools" / "bin" / "uv"), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, f"uv {' '.join(args)}:\n{done.stderr}"


@pytest.fixture(scope="session")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Each image's /app, installed as the Dockerfile does: the lock and the members'
    pyproject.toml first (third-party dependencies), then the whole build context."""
    src = tmp_path_factory.mktemp("context")
    for sources, destination in dependency_copies():
        assert destination.endswith("/"), destination
        for source in sources:
            target = src / destination / Path(source).name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / source, target)
    apps = {name: tmp_path_factory.mktemp(name) / "app" for name in IMAGES}
    for name, app in apps.items():
        uv("sync", "--locked", "--package", name, "--no-dev", "--no-install-workspace",
           cwd=src, venv=app)  # fmt: skip
    build_context(src)
    for name, app in apps.items():
        uv("sync", "--locked", "--package", name, "--no-dev", "--no-editable", cwd=src, venv=app)
        (app / "bin" / "service").symlink_to(app / "bin" / name)
    return apps


def test_the_dockerfile_copies_every_workspace_member() -> None:
    import tomllib

    root = tomllib.loads((ROOT / "pyproject.toml").read_text())
    members = [
        p.parent.relative_to(ROOT).as_posix()
        for pattern in root["tool"]["uv"]["workspace"]["members"]
        for p in sorted(ROOT.glob(f"{pattern}/pyproject.toml"))
    ]
    copied = {s for sources, _ in dependency_copies() for s in sources}
    for member in members:
        assert f"{member}/pyproject.toml" in copied, f"Dockerfile: COPY {member}/pyproject.toml"


def installed(app: Path) -> set[str]:
    site = next((app / "lib").glob("python3*/site-packages"))
    names = set()
    for dist in site.glob("*.dist-info"):
        name = dist.name.removesuffix(".dist-info").rsplit("-", 1)[0]
        names.add(name.lower().replace("_", "-"))
    return names


@pytest.mark.parametrize("image", IMAGES)
def test_each_image_holds_its_service_alone(images: dict[str, Path], image: str) -> None:
    packages = installed(images[image])
    assert image in packages
    assert "jobs-runtime" in packages
    # Not the other services, not the test kit, not the development tools.
    others = WORKSPACE_MEMBERS - {image, "jobs-proto", "jobs-runtime"}
    assert not packages & others, packages & others
    assert not packages & DEV_ONLY, packages & DEV_ONLY


def run(app: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    # The environment of a container: nothing of this machine's but a PATH to the image's venv.
    return subprocess.run(
        [str(app / "bin" / "service"), *args],
        env={"PATH": f"{app / 'bin'}:/usr/bin:/bin", **env},
        cwd=app,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


# The services that talk to NATS, each as its own user.
IMAGES_ON_NATS = ("gateway", "webhook-ingest", "ai-runner", "job-store")
# What prod needs of NATS before a service's own settings: a URL, its user, TLS.
PROD_NATS = {
    "NATS_URL": "tls://nats:4222",
    "NATS_USER": "svc",
    "NATS_PASSWORD": secrets.token_urlsafe(24),
}


@pytest.mark.parametrize(
    ("image", "args", "env", "variable"),
    [
        ("gateway", (), {}, "NATS_URL"),
        ("gateway", (), PROD_NATS, "AUTH_JWT_SECRET or AUTH_JWKS_URL"),
        (
            "gateway",
            (),
            {**PROD_NATS, "AUTH_JWKS_URL": "https://id.example.com/jwks"},
            "AUTH_JWT_ISSUER",
        ),
        ("webhook-ingest", (), PROD_NATS, "REPLICATE_WEBHOOK_SECRET"),
        ("webhook-ingest", ("fetch-secret",), {}, "REPLICATE_API_TOKEN"),
        ("ai-runner", (), PROD_NATS, "REPLICATE_API_TOKEN"),
        ("job-store", (), PROD_NATS, "DATABASE_URL"),
        ("job-store", ("migrate",), {}, "DATABASE_URL"),
        ("replicate-sim", (), {"SIM_WEBHOOK_SECRET": "not-whsec"}, "SIM_WEBHOOK_SECRET"),
    ],
)
def test_a_missing_setting_stops_the_command_naming_it(
    images: dict[str, Path], image: str, args: tuple[str, ...], env: dict[str, str], variable: str
) -> None:
    done = run(images[image], *args, env={"APP_ENV": "prod", **env})
    assert done.returncode == 2, done.stderr
    (line,) = done.stderr.splitlines()
    assert "configuration error" in line
    assert variable in line


def wait_ready(process: subprocess.Popen[str], url: str, within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        assert process.poll() is None, f"exited {process.returncode}: {process.communicate()}"
        try:
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    pytest.fail(f"{url} not ready within {within} s")


def serve_until_ready_then_stop(app: Path, env: dict[str, str], ready_url: str) -> None:
    process = subprocess.Popen(
        [str(app / "bin" / "service")],
        env={"PATH": f"{app / 'bin'}:/usr/bin:/bin", **env},
        cwd=app,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        try:
            wait_ready(process, ready_url)
        except pytest.fail.Exception:
            process.kill()
            output, _ = process.communicate()
            pytest.fail(f"{ready_url} never answered 200; the service said:\n{output[-3000:]}")
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
        assert process.returncode == 0, output
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


@dataclass(frozen=True)
class ProdNats:
    """A NATS server as production runs it: TLS, and a user per service for one stream."""

    server: NatsServer
    stream: str
    prefix: str
    passwords: dict[str, str]


@pytest.fixture(scope="module")
def prod_nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProdNats]:
    unique = f"d{os.getpid()}{time.monotonic_ns() % 10**9}"
    passwords = {service: secrets.token_urlsafe(24) for service in IMAGES_ON_NATS}
    server = NatsServer(tmp_path_factory.mktemp("prod-nats"), anonymous=False, tls=True)
    server.authorize(service_users(Subjects(f"{unique}."), f"JOBS_{unique}", passwords))
    with server:
        yield ProdNats(server, f"JOBS_{unique}", f"{unique}.", passwords)


def service_env(nats: ProdNats, service: str) -> dict[str, str]:
    """The operator's prod configuration: the service's own NATS user over verified TLS."""
    assert nats.server.certificate is not None
    return {
        **{k: v for k, v in OPERATOR_SECRETS.items() if k != "DATABASE_URL"},
        "APP_ENV": "prod",
        "NATS_URL": nats.server.url,
        "NATS_TLS_CA": str(nats.server.certificate.ca_file),
        "NATS_USER": service,
        "NATS_PASSWORD": nats.passwords[service],
        "JOBS_STREAM": nats.stream,
        "SUBJECT_PREFIX": nats.prefix,
        "ADMIN_PORT": str(free_port()),
        "HTTP_PORT": str(free_port()),
        "SHUTDOWN_GRACE_S": "5",
        "REPLICATE_BASE_URL": "http://127.0.0.1:9",
        "REPLICATE_WEBHOOK_URL": "https://jobs.example.com/api/webhooks/replicate",
        "AUTH_JWT_ISSUER": "https://id.example.com/",
        "AUTH_JWT_AUDIENCE": "ai-jobs",
    }


@pytest.mark.parametrize("image", ["gateway", "webhook-ingest", "ai-runner"])
def test_the_lone_install_serves(images: dict[str, Path], image: str, prod_nats: ProdNats) -> None:
    env = service_env(prod_nats, image)
    serve_until_ready_then_stop(images[image], env, f"http://127.0.0.1:{env['ADMIN_PORT']}/readyz")


def test_the_lone_job_store_migrates_then_serves(
    images: dict[str, Path], prod_nats: ProdNats, database_url: str
) -> None:
    app = images["job-store"]
    migrated = run(app, "migrate", env={"APP_ENV": "prod", "DATABASE_URL": database_url})
    # The SQL files are package data: only a complete install can apply them.
    assert migrated.returncode == 0, migrated.stderr
    env = {**service_env(prod_nats, "job-store"), "DATABASE_URL": database_url}
    serve_until_ready_then_stop(app, env, f"http://127.0.0.1:{env['ADMIN_PORT']}/readyz")


def test_the_lone_simulator_serves(images: dict[str, Path]) -> None:
    port = free_port()
    serve_until_ready_then_stop(
        images["replicate-sim"],
        {"APP_ENV": "prod", "HTTP_PORT": str(port)},
        f"http://127.0.0.1:{port}/healthz",
    )
