"""py-spy profiles of the services while the end-to-end load runs: where each one spends its CPU,
summarised as the frames with the most samples of their own and in total. A profiler that
fails is recorded as that service's error, never as a failed benchmark."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TOP = 8
# Lines within a function split its samples; the function and its file are what a reader acts on.
_LINE = re.compile(r":\d+\)$")


@dataclass
class Running:
    """py-spy processes sampling, one per service, and where each writes."""

    processes: dict[str, tuple[subprocess.Popen[bytes], Path]]
    errors: dict[str, str]


def _py_spy() -> str | None:
    found = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
    return found


def start(pids: Mapping[str, int], duration_s: float, workdir: Path) -> Running:
    """One `py-spy record` per service, sampling without pausing it (`--nonblocking`: a
    stopped process would be a slower one)."""
    running = Running({}, {})
    binary = _py_spy()
    for name, pid in pids.items():
        if binary is None:
            running.errors[name] = "py-spy not found"
            continue
        out = workdir / f"profile-{name}.txt"
        argv = [
            binary,
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(max(1, round(duration_s))),
            "--format",
            "raw",
            "--nonblocking",
            "--output",
            str(out),
        ]
        try:
            process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        except OSError as exc:
            running.errors[name] = f"py-spy did not start: {exc}"
            continue
        running.processes[name] = (process, out)
    return running


def finish(running: Running, timeout_s: float) -> dict[str, dict[str, Any]]:
    """Each service's summary, or the error its profiler met."""
    profiles: dict[str, dict[str, Any]] = {n: {"error": e} for n, e in running.errors.items()}
    for name, (process, out) in running.processes.items():
        try:
            _, err = process.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
            profiles[name] = {"error": f"py-spy still running after {timeout_s:.0f} s"}
            continue
        if process.returncode != 0 or not out.exists():
            tail = err.decode(errors="replace").strip()[-300:]
            profiles[name] = {"error": f"py-spy exited {process.returncode}: {tail}"}
            continue
        profiles[name] = summarise(out.read_text())
    return profiles


def _frame(raw: str) -> str:
    frame = _LINE.sub(")", raw.strip())
    # Only the last two parts of a path: `site-packages/httpcore/_async/...` reads as noise.
    match = re.match(r"^(.*) \((.*)\)$", frame)
    if match is None:
        return frame
    function, path = match.groups()
    return f"{function} ({'/'.join(path.split('/')[-2:])})"


def summarise(raw: str) -> dict[str, Any]:
    """From py-spy's collapsed stacks (`frame;frame;... count` a line): samples in all, and the
    top frames by samples of their own (the leaf) and in total (anywhere on the stack)."""
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        samples += n
        frames = [_frame(f) for f in stack.split(";") if f]
        if not frames:
            continue
        own[frames[-1]] += n
        for frame in set(frames):
            total[frame] += n
    return {
        "samples": samples,
        "byOwn": [[f, n, total[f]] for f, n in own.most_common(TOP)],
        "byTotal": [[f, n] for f, n in total.most_common(TOP)],
    }


def describe(profiles: Mapping[str, Mapping[str, Any]]) -> str:
    """The summaries as text, printed after the table."""
    lines = ["profiles (py-spy, under the end-to-end load; own / total samples):"]
    for name, profile in profiles.items():
        if "error" in profile:
            lines.append(f"  {name}: {profile['error']}")
            continue
        samples = max(1, profile["samples"])
        lines.append(f"  {name}: {profile['samples']} samples")
        for frame, mine, all_of in profile["byOwn"]:
            lines.append(
                f"    {100 * mine / samples:5.1f}% {100 * all_of / samples:5.1f}%  {frame}"
            )
    return "\n".join(lines)
