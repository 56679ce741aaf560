"""CPU time and resident memory of whole process trees, read from `/proc`, so a benchmark can
say what each process (NATS, Postgres and its backends, every service) spent per job."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from jobs_testkit.servers.proctree import descendants

_TICKS_PER_S = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def _stat_fields(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            raw = stat.read().decode()
    except OSError:
        return None
    # The command name may hold spaces and parentheses: fields start after the last ")".
    return raw[raw.rindex(")") + 2 :].split()


def process_cpu_s(pid: int, *, reaped_children: bool) -> float:
    """User + system seconds of one process; with `reaped_children`, also those of children it
    has waited for (Postgres backends that exited count on the postmaster)."""
    fields = _stat_fields(pid)
    if fields is None:
        return 0.0
    # After the pid: state(0) ppid(1) ... utime(11) stime(12) cutime(13) cstime(14).
    ticks = int(fields[11]) + int(fields[12])
    if reaped_children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / _TICKS_PER_S


def tree_cpu_s(root: int) -> float:
    """CPU seconds of a process tree: the root with its reaped children, plus live descendants."""
    total = process_cpu_s(root, reaped_children=True)
    for pid in descendants(root):
        total += process_cpu_s(pid, reaped_children=False)
    return total


def tree_rss_bytes(root: int) -> int:
    """Resident memory of a process tree (shared pages counted once per process)."""
    total = 0
    for pid in (root, *descendants(root)):
        try:
            with open(f"/proc/{pid}/statm") as statm:
                total += int(statm.read().split()[1]) * _PAGE
        except OSError:
            continue
    return total


@dataclass(frozen=True)
class CpuSample:
    """CPU seconds per named process tree at one moment."""

    seconds: Mapping[str, float]

    def minus(self, earlier: CpuSample) -> dict[str, float]:
        return {name: s - earlier.seconds.get(name, 0.0) for name, s in self.seconds.items()}


def sample_cpu(roots: Mapping[str, int]) -> CpuSample:
    return CpuSample({name: tree_cpu_s(pid) for name, pid in roots.items()})


def sample_rss(roots: Mapping[str, int]) -> dict[str, int]:
    return {name: tree_rss_bytes(pid) for name, pid in roots.items()}


def machine_description() -> dict[str, object]:
    """What the figures were measured on, for the JSON report."""
    model = "unknown"
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    memory_kib = 0
    try:
        with open("/proc/meminfo") as meminfo:
            memory_kib = int(meminfo.readline().split()[1])
    except (OSError, ValueError, IndexError):
        pass
    uname = os.uname()
    return {
        "cpus": os.cpu_count(),
        "cpuModel": model,
        "memoryGiB": round(memory_kib / 2**20, 1),
        "kernel": f"{uname.sysname} {uname.release}",
        "python": ".".join(map(str, __import__("sys").version_info[:3])),
    }
