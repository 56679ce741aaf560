"""Finding, signalling and awaiting a process and its descendants through /proc.

Killing only the main pid would leave orphans holding shared memory or ports, so the local servers
work on the whole tree.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterable
from pathlib import Path

POLL_INTERVAL = 0.05


def proc_stat(pid: int) -> tuple[str, str, int] | None:
    """Return (command name, state, parent pid) from /proc, or None if the process is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name sits in parentheses and may itself contain spaces or parentheses.
    head, _, tail = raw.rpartition(")")
    fields = tail.split()
    return head.partition("(")[2], fields[0], int(fields[1])


def descendants(pid: int) -> list[int]:
    """Pids of every descendant of pid; empty where there is no /proc to read."""
    proc = Path("/proc")
    if not proc.is_dir():
        return []
    children: dict[int, list[int]] = {}
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        info = proc_stat(int(entry.name))
        if info is not None:
            children.setdefault(info[2], []).append(int(entry.name))
    found: list[int] = []
    pending = [pid]
    while pending:
        for child in children.get(pending.pop(), []):
            found.append(child)
            pending.append(child)
    return found


def send_signal(pids: Iterable[int], sig: signal.Signals) -> None:
    """Signal each pid, skipping those already gone."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def wait_gone(pids: Iterable[int], timeout: float) -> None:
    """Wait until orphans we killed have been reaped by init (a zombie counts as gone)."""
    deadline = time.monotonic() + timeout
    for pid in pids:
        while time.monotonic() < deadline:
            info = proc_stat(pid)
            if info is None or info[1] == "Z":
                break
            time.sleep(POLL_INTERVAL)
