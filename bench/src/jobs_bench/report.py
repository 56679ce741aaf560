"""The benchmark's output: one table on stdout, the same rows as JSON with the machine's
description, and a PNG plot, under `bench/results/`."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from jobs_bench.accounting import machine_description


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if math.isnan(value):
            return "n/a"
        return f"{value:,.2f}" if abs(value) < 100 else f"{value:,.0f}"
    return str(value)


def table(rows: list[dict[str, Any]]) -> str:
    header = ("scenario", "figure", "value", "unit", "baseline", "ratio", "target", "met")
    lines = [header]
    for r in rows:
        met = {True: "yes", False: "NO", None: ""}[r["met"]]
        lines.append(
            (
                r["scenario"],
                r["figure"],
                _fmt(r["value"]),
                r["unit"],
                _fmt(r["baseline"]),
                _fmt(r["ratio"]),
                r["target"],
                met,
            )
        )
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(header))]
    out = [" | ".join(str(c).ljust(w) for c, w in zip(line, widths, strict=True)) for line in lines]
    out.insert(1, "-+-".join("-" * w for w in widths))
    notes = [f"  {r['scenario']} / {r['figure']}: {r['note']}" for r in rows if r["note"]]
    return "\n".join(out + (["", "notes:", *notes] if notes else []))


def write(
    rows: list[dict[str, Any]], size: str, results: Path, extras: dict[str, Any] | None = None
) -> tuple[Path, Path]:
    """`extras`: what the JSON carries besides rows (the py-spy profiles, the run's length)."""
    results.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    document = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "size": size,
        "machine": machine_description(),
        "rows": [
            {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()}
            for r in rows
        ],
        **(extras or {}),
    }
    json_path = results / f"bench-{size}-{stamp}.json"
    json_path.write_text(json.dumps(document, indent=2) + "\n")
    png_path = results / f"bench-{size}-{stamp}.png"
    plot(rows, png_path, f"make bench ({size}), {document['date']}")
    return json_path, png_path


def plot(rows: list[dict[str, Any]], path: Path, title: str) -> None:
    """Each figure that has a baseline, as its ratio to that baseline (1.0: the baseline)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    compared = [r for r in rows if r["ratio"] is not None]
    labels = [f"{r['scenario']}: {r['figure']}" for r in compared]
    ratios = [r["ratio"] for r in compared]
    figure, axes = plt.subplots(figsize=(10, 1 + 0.45 * max(1, len(compared))))
    axes.barh(labels, ratios, color=["#3b7" if r["met"] is not False else "#d54" for r in compared])
    axes.axvline(1.0, color="black", linewidth=0.8)
    axes.set_xlabel("ratio to the baseline measured in the same run")
    axes.set_title(title)
    axes.invert_yaxis()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
