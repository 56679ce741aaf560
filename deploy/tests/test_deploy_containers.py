"""The images run as deploy/overlays/dev runs them, in Docker: each Deployment's and StatefulSet's
containers with the rendered command, environment, user, read-only root, dropped capabilities,
volumes and probes, on one network where each is reached by its Service's name. A job submitted
through the gateway container succeeds through the simulator container, and SIGTERM (after each
preStop hook) ends every service with exit code 0. Skipped where no Docker engine answers, unless
JOBS_REQUIRE_DOCKER is set (CI sets it): then that is a failure.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from jobs_testkit.servers.docker import (
    LOCAL_NATS_IMAGE,
    LOCAL_POSTGRES_IMAGE,
    image_present,
    require_docker,
)

from .conftest import ROOT, Obj, Rendered

pytestmark = pytest.mark.timeout(600)

# The workloads in start order; each one's Services name it on the network.
WORKLOADS = (
    "postgres",
    "nats",
    "replicate-sim",
    "job-store",
    "ai-runner",
    "webhook-ingest",
    "gateway",
)
SERVICES = ("gateway", "webhook-ingest", "ai-runner", "job-store", "replicate-sim")
# Sidecars whose images are not built here (the Prometheus exporter of NATS).
SKIPPED_CONTAINERS = {"exporter"}


def docker(*args: str, timeout: float = 60) -> str:
    done = subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    assert done.returncode == 0, f"docker {' '.join(args)}: {done.stderr}"
    return done.stdout.strip()


@dataclass
class Pod:
    """A workload's containers as Docker runs them, and how to reach and probe its main one."""

    name: str
    workload: Obj
    network: str
    containers: list[str] = field(default_factory=list)
    ip: str = ""

    @property
    def spec(self) -> Obj:
        spec: Obj = self.workload["spec"]["template"]["spec"]
        return spec

    @property
    def main(self) -> Obj:
        main: Obj = self.spec["containers"][0]
        return main

    def port(self, container: Obj, port: int | str) -> int:
        if isinstance(port, int):
            return port
        return int(next(p["containerPort"] for p in container["ports"] if p["name"] == port))

    def probe(self, probe: Obj) -> bool:
        """One try of a probe, as the kubelet makes it."""
        if "httpGet" in probe:
            get = probe["httpGet"]
            url = f"http://{self.ip}:{self.port(self.main, get['port'])}{get['path']}"
            try:
                return 200 <= httpx.get(url, timeout=2.0).status_code < 400
            except httpx.TransportError:
                return False
        command = probe["exec"]["command"]
        done = subprocess.run(
            ["docker", "exec", self.containers[-1], *command], capture_output=True, check=False
        )
        return done.returncode == 0


def volume_args(pod: Pod, container: Obj, rendered: Rendered, scratch: Path) -> list[str]:
    """Docker's form of the container's volumes: emptyDirs and claims as tmpfs owned by the pod's
    user, ConfigMaps and Secrets as read-only files."""
    volumes = {v["name"]: v for v in pod.spec.get("volumes", [])}
    claims = {c["metadata"]["name"] for c in pod.workload["spec"].get("volumeClaimTemplates", [])}
    context = pod.spec.get("securityContext", {})
    owner = f"uid={context.get('runAsUser', 0)},gid={context.get('fsGroup', 0)}"
    args: list[str] = []
    for mount in container.get("volumeMounts", []):
        path, volume = mount["mountPath"], volumes.get(mount["name"], {})
        if mount["name"] in claims or "emptyDir" in volume:
            args += ["--tmpfs", f"{path}:rw,mode=0700,{owner}"]
            continue
        files: dict[str, bytes]
        if "configMap" in volume:
            data = rendered.config_map(volume["configMap"]["name"])
            files = {key: value.encode() for key, value in data.items()}
        elif "secret" in volume:
            secret = rendered.get("Secret", volume["secret"]["secretName"])
            files = {key: base64.b64decode(v) for key, v in secret["data"].items()}
        else:
            raise AssertionError(f"{pod.name}: volume {mount['name']} of an unknown kind")
        folder = scratch / pod.name / mount["name"]
        folder.mkdir(parents=True, exist_ok=True)
        for key, content in files.items():
            (folder / key).write_bytes(content)
            (folder / key).chmod(0o644)
        folder.chmod(0o755)
        args += ["-v", f"{folder}:{path}:ro"]
    return args


def run_args(
    pod: Pod, container: Obj, rendered: Rendered, scratch: Path, images: dict[str, str]
) -> list[str]:
    context = pod.spec.get("securityContext", {})
    own = container.get("securityContext", {})
    args = ["--network", pod.network, "--hostname", pod.name]
    if user := context.get("runAsUser"):
        args += ["--user", f"{user}:{context.get('runAsGroup', user)}"]
    if group := context.get("fsGroup"):
        args += ["--group-add", str(group)]
    if own.get("readOnlyRootFilesystem"):
        args.append("--read-only")
    for capability in own.get("capabilities", {}).get("drop", []):
        args += ["--cap-drop", capability]
    if own.get("allowPrivilegeEscalation") is False:
        args += ["--security-opt", "no-new-privileges"]
    env = rendered.environment(container)
    for var in container.get("env", []):
        if var.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "metadata.name":
            env[var["name"]] = f"{pod.name}-0"
    for name, value in env.items():
        args += ["-e", f"{name}={value}"]
    args += volume_args(pod, container, rendered, scratch)
    command, rest = container.get("command"), container.get("args", [])
    if command:
        args += ["--entrypoint", command[0]]
        rest = [*command[1:], *rest]
    image = images.get(container["image"], container["image"])
    return [*args, image, *rest]


def build_images() -> None:
    """`make images`: docker's cache and the local bases' recipes make it seconds when built."""
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "deploy" / "images" / "build.py"),
            "--services",
            *SERVICES,
            "jobsctl",
        ],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, done.stderr


@pytest.fixture(scope="module")
def images() -> dict[str, str]:
    """The images the overlay names, built; the registry's NATS and Postgres replaced by the
    local ones where those are all there is."""
    require_docker()
    build_images()
    replaced: dict[str, str] = {}
    for official, local in (
        ("nats:2.11-alpine", LOCAL_NATS_IMAGE),
        ("postgres:17-alpine", LOCAL_POSTGRES_IMAGE),
    ):
        if not image_present(official):
            replaced[official] = local
    return replaced


@dataclass
class Cluster:
    pods: dict[str, Pod]
    network: str
    rendered: Rendered


def until(check: Any, what: str, within: float = 60.0, container: str | None = None) -> None:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            said = f":\n{logs(container)}" if container else ""
            pytest.fail(f"{what} not within {within} s{said}")
        time.sleep(0.2)


def logs(container: str) -> str:
    done = subprocess.run(
        ["docker", "logs", "--tail", "40", container], capture_output=True, text=True, check=False
    )
    return done.stdout + done.stderr


@pytest.fixture(scope="module")
def cluster(
    rendered: dict[str, Rendered], images: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    dev = rendered["dev"]
    scratch = tmp_path_factory.mktemp("containers")
    network = f"ai-jobs-test-{uuid.uuid4().hex[:8]}"
    docker("network", "create", network)
    pods: dict[str, Pod] = {}
    try:
        for name in WORKLOADS:
            workload = dev.find("Deployment", name) or dev.get("StatefulSet", name)
            pod = Pod(name, workload, network)
            pods[name] = pod
            aliases = [
                s["metadata"]["name"]
                for s in dev.of_kind("Service")
                if s["spec"].get("selector", {}).get("app.kubernetes.io/name") == name
            ]
            for init in pod.spec.get("initContainers", []):
                container = f"{network}-{name}-{init['name']}"
                pod.containers.append(container)
                args = run_args(pod, init, dev, scratch, images)
                done = subprocess.run(
                    ["docker", "run", "--name", container, *args],
                    capture_output=True,
                    text=True,
                    timeout=120,
                    check=False,
                )
                assert done.returncode == 0, (
                    f"{name} init {init['name']}: {done.stdout}{done.stderr}"
                )
            for spec in pod.spec["containers"]:
                if spec["name"] in SKIPPED_CONTAINERS:
                    continue
                container = f"{network}-{name}-{spec['name']}"
                pod.containers.append(container)
                alias_args = [a for alias in aliases for a in ("--network-alias", alias)]
                docker(
                    "run",
                    "-d",
                    "--name",
                    container,
                    *alias_args,
                    *run_args(pod, spec, dev, scratch, images),
                )
            main = pod.containers[-1]
            pod.ip = docker(
                "inspect",
                "-f",
                f'{{{{(index .NetworkSettings.Networks "{network}").IPAddress}}}}',
                main,
            )
            for kind in ("startupProbe", "readinessProbe"):
                if probe := pod.main.get(kind):
                    until(
                        lambda probe=probe, pod=pod: pod.probe(probe),
                        f"{name} {kind}",
                        container=main,
                    )
        yield Cluster(pods, network, dev)
    finally:
        for pod in pods.values():
            for container in pod.containers:
                subprocess.run(
                    ["docker", "rm", "-f", "-v", container], capture_output=True, check=False
                )
        subprocess.run(["docker", "network", "rm", network], capture_output=True, check=False)


def test_each_container_runs_as_its_manifest_says(cluster: Cluster) -> None:
    for name in SERVICES:
        pod = cluster.pods[name]
        (state,) = json.loads(docker("inspect", pod.containers[-1]))
        host = state["HostConfig"]
        assert host["ReadonlyRootfs"] is True, name
        assert host["CapDrop"] == ["ALL"], name
        assert state["Config"]["User"] == "10001:10001", name
        assert docker("exec", pod.containers[-1], "id", "-u") == "10001"
        for kind in ("livenessProbe", "readinessProbe"):
            assert pod.probe(pod.main[kind]), f"{name} {kind}"


def test_a_job_submitted_through_the_gateway_container_succeeds_through_the_simulator(
    cluster: Cluster,
) -> None:
    gateway = cluster.pods["gateway"]
    token = docker(
        "exec", gateway.containers[-1], "gateway", "dev-token", "--sub", "container-smoke"
    )
    base = f"http://{gateway.ip}:{gateway.port(gateway.main, 'http')}"
    with httpx.Client(
        base_url=base, headers={"authorization": f"Bearer {token}"}, timeout=10
    ) as client:
        submitted = client.post("/api/ideation/generate-script", json={"topic": "containers"})
        assert submitted.status_code == 202, submitted.text
        job_id = submitted.json()["jobId"]
        final: dict[str, Any] = {}

        def finished() -> bool:
            final.update(client.get(f"/api/jobs/{job_id}").json())
            return final["status"] in ("succeeded", "failed", "canceled")

        until(finished, f"job {job_id}", within=60)
        assert final["status"] == "succeeded", final
        assert final["output"].startswith("Simulated answer to: ")
    sim = cluster.pods["replicate-sim"]
    audit = httpx.get(
        f"http://{sim.ip}:{sim.port(sim.main, 'http')}/_sim/predictions", params={"job": job_id}
    ).json()
    (prediction,) = audit["results"]
    assert prediction["id"] == final["predictionId"]
    # The operator's command from its own image, as its own NATS user, restricted as a pod.
    report = json.loads(jobsctl(cluster, "--json", "job", job_id))
    assert report["job"]["status"] == "succeeded"
    assert [e["kind"] for e in report["events"]][:2] == ["requested", "submitted"]


def jobsctl(cluster: Cluster, *args: str) -> str:
    """`jobsctl` run once in the cluster's network, the way deploy/README.md runs it."""
    (users,) = [
        s
        for s in cluster.rendered.of_kind("Secret")
        if s["metadata"]["name"].startswith("nats-users")
    ]
    password = base64.b64decode(users["data"]["ops"]).decode()
    return docker(
        "run",
        "--rm",
        "--network",
        cluster.network,
        "--read-only",
        "--cap-drop",
        "ALL",
        "--security-opt",
        "no-new-privileges",
        "--user",
        "10001:10001",
        "-e",
        # As the dev overlay's pods: its NATS has no TLS, which prod refuses.
        "APP_ENV=dev",
        "-e",
        "NATS_URL=nats://nats:4222",
        "-e",
        "NATS_USER=ops",
        "-e",
        f"NATS_PASSWORD={password}",
        "ai-jobs/jobsctl:dev",
        *args,
        timeout=120,
    )


def test_sigterm_after_the_prestop_hook_ends_every_service_with_exit_code_0(
    cluster: Cluster,
) -> None:
    def stop(name: str) -> tuple[str, int, str]:
        pod = cluster.pods[name]
        container = pod.containers[-1]
        if hook := pod.main.get("lifecycle", {}).get("preStop"):
            docker("exec", container, *hook["exec"]["command"])
        docker("kill", "--signal", "TERM", container)
        code = int(
            docker(
                "wait", container, timeout=pod.spec.get("terminationGracePeriodSeconds", 30) + 10
            )
        )
        return name, code, logs(container)

    # Front door first, as the e2e suite stops them; each in its own thread as pods stop.
    with ThreadPoolExecutor(len(SERVICES)) as pool:
        results = list(pool.map(stop, SERVICES))
    for name, code, output in results:
        assert code == 0, f"{name} exited {code}:\n{output}"
