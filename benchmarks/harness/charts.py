"""PNG charts of a run (matplotlib, Agg): overhead vs rate, RPS vs connections, peak memory."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from benchmarks.harness.scenarios import OVERHEAD, THROUGHPUT
from benchmarks.harness.variants import VARIANTS


def _series(doc: dict[str, Any], scenario: str, field: str, sub: str | None) -> dict[str, tuple[list, list]]:
    out = {}
    for name, t in doc["targets"].items():
        xs, ys = [], []
        for lv in t.get("levels", []):
            if lv["scenario"] != scenario or "skipped" in lv:
                continue
            value = lv.get(field)
            if sub is not None:
                value = (value or {}).get(sub)
            if value is None:
                continue
            xs.append(lv["value"])
            ys.append(value)
        if xs:
            out[name] = (xs, ys)
    return out


def draw(doc: dict[str, Any], out_dir: Path, stem: str, latest: bool) -> dict[str, str]:
    """Write the charts; returns {title: file name relative to out_dir}."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files: dict[str, str] = {}
    title = f"{doc['machine']['host']} · {doc['started'][:10]} · per gateway core"

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, pct in zip(axes, ("p50", "p99"), strict=True):
        for name, (xs, ys) in _series(doc, OVERHEAD, "overhead_ms", pct).items():
            ax.plot(xs, ys, marker="o", label=name)
        # Linear within ±1 ms (where noise makes some overheads slightly negative), log beyond.
        ax.set_yscale("symlog", linthresh=1.0)
        ax.axhline(0, color="black", linewidth=0.6)
        ax.set_xlabel("offered rate (RPS, open loop)")
        ax.set_ylabel(f"{pct} overhead over direct (ms, symlog)")
        ax.grid(True, which="both", alpha=0.3)
    if axes[0].get_legend_handles_labels()[0]:
        axes[0].legend(fontsize=8)
    fig.suptitle(f"Overhead vs rate — {title}", fontsize=10)
    files["overhead vs rate"] = _save(fig, out_dir, f"{stem}-overhead.png")

    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    for name, (xs, ys) in _series(doc, THROUGHPUT, "rps", None).items():
        ax.plot(xs, ys, marker="o", label=name)
    ax.set_xscale("log")
    ax.set_xticks([50, 150, 300, 1000], labels=["50", "150", "300", "1000"])
    ax.set_yscale("log")
    ax.set_xlabel("connections (closed loop)")
    ax.set_ylabel("successful requests / s (log)")
    ax.grid(True, which="both", alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    ax.set_title(f"Throughput vs connections — {title}", fontsize=10)
    files["RPS vs connections"] = _save(fig, out_dir, f"{stem}-throughput.png")

    names: list[str] = []
    peaks: list[float] = []
    largest: list[float] = []
    for name, t in doc["targets"].items():
        # The variants' peaks cover one short level, not the whole run: not comparable here.
        if t.get("peak_rss_mb") is not None and name not in VARIANTS:
            names.append(name)
            peaks.append(t["peak_rss_mb"])
            largest.append(t.get("peak_rss_process_mb") or 0)
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    positions = list(range(len(names)))
    ax.bar([x - 0.2 for x in positions], peaks, width=0.4, label="all processes")
    ax.bar([x + 0.2 for x in positions], largest, width=0.4, label="largest process")
    ax.set_xticks(positions, labels=names, rotation=20, fontsize=8)
    ax.set_ylabel("peak RSS (MB)")
    ax.legend(fontsize=8)
    ax.set_title(f"Peak memory over the run — {doc['machine']['host']} · {doc['started'][:10]}", fontsize=10)
    files["memory"] = _save(fig, out_dir, f"{stem}-memory.png")
    plt.close("all")

    if latest:
        for kind in ("overhead", "throughput", "memory"):
            shutil.copyfile(out_dir / f"{stem}-{kind}.png", out_dir / f"latest-{kind}.png")
    return files


def _save(fig: Any, out_dir: Path, name: str) -> str:
    fig.tight_layout()
    fig.savefig(out_dir / name, dpi=110)
    return name
