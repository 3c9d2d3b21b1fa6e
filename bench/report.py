"""Run every benchmark and write bench/RESULTS.md: the machine, the date and the commit,
each benchmark's own table as it printed it, and two plots (PNG, matplotlib: the `bench`
extra, `pip install -e ".[bench]"`):

- bench/latency.png: submission p50/p99 against concurrency, the gateway with every guard
  on beside the floor (bench/submit.py);
- bench/scale.png: each cost against the number of tasks in the tables (bench/scale.py).

    .venv/bin/python bench/report.py [--quick]

--quick runs the smaller sizes (scale to 10^5, 2,000 tasks in flight) for a try-out; the
committed RESULTS.md comes from a full run.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def benchmarks(quick: bool) -> list[tuple[str, list[str]]]:
    return [
        ("submit", ["--seconds", "5", "--rounds", "3", "--concurrency", "1,4,16,64"]),
        ("cpu", []),
        ("scale", ["--runs", "3", "--sizes", "1000,100000" if quick else "1000,100000,1000000"]),
        ("inflight", ["--tasks", "2000", "--processing-seconds", "30"] if quick else []),
        ("webhooks", []),
        ("replicas", ["--rounds", "2" if quick else "3"]),
        ("quotas", []),
        ("waiters", []),
        ("reports", []),
        ("list_images", []),
        ("archive", []),
    ]


def run(name: str, args: list[str]) -> tuple[str, float, int]:
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, str(HERE / f"{name}.py"), *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    output = done.stdout.strip() or done.stderr.strip()[-3000:]
    return output, time.monotonic() - started, done.returncode


def table_rows(text: str) -> list[list[str]]:
    """The cells of each markdown table row a benchmark printed (header rows included)."""
    return [
        [cell.strip() for cell in line.strip().strip("|").split("|")]
        for line in text.splitlines()
        if line.startswith("|") and not line.startswith("| ---")
    ]


def plot_latency(submit_output: str, path: Path) -> bool:
    """The lines "server conc req/s p50 p99 errors" of bench/submit.py's table."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series: dict[str, dict[int, tuple[float, float]]] = {}
    for match in re.finditer(
        r"^(\S+)\s+(\d+)\s+[\d.]+\s+([\d.]+)\s+([\d.]+)\s+\d+$", submit_output, re.M
    ):
        name, conc, p50, p99 = match.group(1), int(match.group(2)), *map(float, match.groups()[2:])
        series.setdefault(name, {})[conc] = (p50, p99)
    if not series:
        return False
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name in ("floor", "gateway", "limits"):
        points = sorted(series.get(name, {}).items())
        if points:
            xs = [c for c, _ in points]
            ax.plot(xs, [v[0] for _, v in points], marker="o", label=f"{name} p50")
            ax.plot(xs, [v[1] for _, v in points], marker="x", linestyle="--", label=f"{name} p99")
    ax.set_xscale("log", base=2)
    title = "POST /v1/tasks: gateway (limits = every guard on) against the floor"
    _save(fig, ax, path, "concurrent connections (wrk)", "latency (ms)", title)
    return True


def plot_scale(scale_output: str, path: Path) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = table_rows(scale_output)
    if len(rows) < 2:
        return False
    sizes = [int(cell.split()[0].replace(",", "")) for cell in rows[0][1:-1]]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for row in rows[1:]:
        values = [float(v) for v in row[1:-1]]
        ax.plot(sizes, values, marker="o", label=row[0])
    ax.set_xscale("log")
    ax.set_yscale("log")
    title = "Cost against table size (bench/scale.py)"
    _save(fig, ax, path, "tasks in the tables", "cost (ms, median)", title)
    return True


def _save(fig: Any, ax: Any, path: Path, xlabel: str, ylabel: str, title: str) -> None:
    import matplotlib.pyplot as plt

    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=7)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def earlier_sections(path: Path) -> dict[str, tuple[str, str]]:
    """The sections of an earlier RESULTS.md: name -> (its text, the benchmark's output)."""
    if not path.exists():
        return {}
    found = re.finditer(r"^## (\w+)\n\n.*?\n\n```\n(.*?)\n```\n", path.read_text(), re.M | re.S)
    return {m.group(1): (m.group(0), m.group(2)) for m in found}


# RESULTS.md from this line on is written by hand (the measurements behind docs/decisions/,
# runs on other machines): a new report keeps it as it is.
HAND_WRITTEN = "<!-- Written by hand from here on: bench/report.py keeps it as it is. -->"


def hand_written(path: Path) -> str:
    """An earlier RESULTS.md from HAND_WRITTEN on ("" when it has none)."""
    text = path.read_text() if path.exists() else ""
    at = text.find(HAND_WRITTEN)
    return "" if at < 0 else "\n" + text[at:]


def machine() -> str:
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    ).stdout.strip()
    cpu = platform.processor() or platform.machine()
    return (
        f"- date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC\n"
        f"- commit: {commit}{' (with uncommitted changes)' if dirty else ''}\n"
        f"- machine: {os.cpu_count()} cores ({cpu}), "
        f"{psutil.virtual_memory().total / 2**30:.0f} GiB, {platform.platform()}\n"
        f"- Python {platform.python_version()}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", help="comma-separated benchmark names")
    args = parser.parse_args()
    chosen = set(args.only.split(",")) if args.only else None
    earlier = earlier_sections(HERE / "RESULTS.md") if chosen else {}
    outputs: dict[str, str] = {}
    sections = []
    for name, bench_args in benchmarks(args.quick):
        if chosen and name not in chosen:
            if name in earlier:  # --only: the other benchmarks keep their last section
                sections.append(earlier[name][0])
                outputs[name] = earlier[name][1]
            continue
        print(f"running bench/{name}.py {' '.join(bench_args)}", file=sys.stderr, flush=True)
        output, seconds, status = run(name, bench_args)
        outputs[name] = output
        command = " ".join(["bench/" + name + ".py", *bench_args])
        failed = "" if status == 0 else f" (exit status {status})"
        sections.append(
            f"## {name}\n\n`.venv/bin/python {command}`, {seconds:.0f} s, "
            f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC{failed}\n\n```\n{output}\n```\n"
        )
    plots = []
    if "submit" in outputs and plot_latency(outputs["submit"], HERE / "latency.png"):
        plots.append("![latency against concurrency](latency.png)")
    if "scale" in outputs and plot_scale(outputs["scale"], HERE / "scale.png"):
        plots.append("![cost against table size](scale.png)")
    misses = sum(out.count("MISS") for out in outputs.values())
    passes = sum(out.count("PASS") for out in outputs.values())
    text = (
        "# Benchmark results\n\n"
        "Written by `bench/report.py`; every goal is a PASS/MISS line printed by its "
        "benchmark, measured against a floor in the same run where a ratio applies.\n\n"
        f"{machine()}\n- goals: {passes} PASS, {misses} MISS\n\n"
        + "\n\n".join(plots)
        + "\n\n"
        + "\n".join(sections)
        + hand_written(HERE / "RESULTS.md")
    )
    (HERE / "RESULTS.md").write_text(text)
    print(f"wrote {HERE / 'RESULTS.md'}: {passes} PASS, {misses} MISS")


if __name__ == "__main__":
    main()
