"""The gateways' rolling restart under SSE load, as the Deployment's rollout does it (maxSurge
1, maxUnavailable 0): for each gateway in turn a new one starts and is ready, the old one
leaves the front's rotation (its endpoint removed), waits out the preStop pause, gets SIGTERM
and must exit 0 within what `terminationGracePeriodSeconds` leaves after preStop; the budget
is read from deploy/base/gateway.yaml, so the test follows the manifest."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml  # type: ignore[import-untyped]

from jobs_chaos.audit import Exit
from jobs_chaos.scenarios import Context, Scenario, Size
from jobs_chaos.system import Replica, sum_family
from jobs_testkit.servers import free_port

MANIFEST = Path(__file__).resolve().parents[3] / "deploy" / "base" / "gateway.yaml"
# What the runtime logs when a service's work is cancelled because the shutdown grace ran out.
GRACE_RAN_OUT = "after the grace period"
OPEN_STREAMS = "gateway_event_streams_open"


@dataclass(frozen=True)
class Budget:
    """A pod's shutdown budget: `terminationGracePeriodSeconds` counts from the pod's
    deletion, so preStop's pause comes out of it before SIGTERM is even sent."""

    grace_s: float
    pre_stop_s: float

    @property
    def after_sigterm_s(self) -> float:
        return self.grace_s - self.pre_stop_s


def manifest_budget(path: Path = MANIFEST, name: str = "gateway") -> Budget:
    """The Deployment `name`'s budget: its grace period (Kubernetes' default 30 s when unset)
    and its container's preStop pause, an `exec` of `sleep N` or the `sleep` action."""
    for doc in yaml.safe_load_all(path.read_text()):
        if not doc or doc.get("kind") != "Deployment" or doc["metadata"]["name"] != name:
            continue
        pod = doc["spec"]["template"]["spec"]
        container = next(c for c in pod["containers"] if c["name"] == name)
        return Budget(
            float(pod.get("terminationGracePeriodSeconds", 30)),
            _pre_stop_s(container.get("lifecycle", {}).get("preStop", {})),
        )
    raise LookupError(f"no Deployment {name} in {path}")


def _pre_stop_s(hook: dict[str, Any]) -> float:
    if "sleep" in hook:
        return float(hook["sleep"]["seconds"])
    command = hook.get("exec", {}).get("command", [])
    if len(command) == 2 and command[0] == "sleep":
        return float(command[1])
    if command:
        raise ValueError(f"a preStop hook this scenario does not model: {command}")
    return 0.0


def _successor(old: Replica) -> Replica:
    """A new pod for `old`'s place: its own ports (a new pod IP), name and log."""
    new = Replica(
        old.service,
        old.index,
        free_port(),
        free_port(),
        dict(old.env),
        old.log_path,
        generation=old.generation + 1,
    )
    new.log_path = old.log_path.parent / f"{new.name}.log"
    return new


def _open_streams(replica: Replica) -> int:
    """The streams the replica holds now, from its own gauge."""
    assert replica.metrics_url is not None
    try:
        text = httpx.get(replica.metrics_url, timeout=5).text
    except httpx.HTTPError:
        return -1
    return int(sum_family(text, OPEN_STREAMS))


def _stop(old: Replica, budget: Budget) -> Exit:
    """SIGTERM, and the exit within the budget (killed after it, as the kubelet does)."""
    assert old.process is not None
    streams = _open_streams(old)
    at = time.time()
    started = time.monotonic()
    code = old.process.terminate(timeout=budget.after_sigterm_s + 1.0)
    seconds = time.monotonic() - started
    ran_out = GRACE_RAN_OUT in old.log_path.read_text(errors="replace")
    return Exit(
        old.name, code, round(seconds, 2), budget.after_sigterm_s, ran_out, streams, round(at, 3)
    )


async def roll_gateways(ctx: Context) -> None:
    """Each gateway replaced in turn, while the load's clients reach them through the front."""
    front = ctx.front
    assert front is not None, "the rollout runs with the clients behind a front"
    budget = manifest_budget()
    pre_stop_s = budget.pre_stop_s if ctx.size.pre_stop_s is None else ctx.size.pre_stop_s
    await ctx.until_fault()
    gateways = ctx.system.replicas["gateway"]
    for i, old in enumerate(list(gateways)):
        new = _successor(old)
        await asyncio.to_thread(new.start)
        front.admit(("127.0.0.1", _port(new)))
        gateways[i] = new
        # The pod is terminating: out of the Service's endpoints at once, SIGTERM after preStop.
        front.withdraw(("127.0.0.1", _port(old)))
        await asyncio.sleep(pre_stop_s)
        ctx.exits.append(await asyncio.to_thread(_stop, old, budget))


def _port(replica: Replica) -> int:
    assert replica.http_port is not None
    return replica.http_port


def _long_jobs(size: Size) -> Size:
    """Jobs that outlive the rollout, so that each gateway is stopped under open streams: in
    the short size, a load longer than two restarts (so that both successors admit some),
    with predictions of several seconds."""
    if size.latency_s is not None:
        return size
    return dataclasses.replace(
        size, rate_per_s=2.0, load_s=12.0, fault_at=0.05, latency_s=(6.0, 12.0)
    )


ROLLOUT = Scenario(
    "gateway rolling restart under SSE load",
    roll_gateways,
    sized=_long_jobs,
    through_front=True,
)
ROLLOUT_SCENARIOS: tuple[Scenario, ...] = (ROLLOUT,)
