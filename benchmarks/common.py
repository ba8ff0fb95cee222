"""Helpers shared by the benchmarks: fixture location, timing with medians, result tables."""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def shared_data() -> Path:
    path = Path(os.environ.get("CURATION_DATA", REPO.parent / "shared" / "data")).resolve()
    if not (path / "MANIFEST.md").is_file():
        raise SystemExit(f"fixture data not found at {path}; set CURATION_DATA")
    return path


def median_seconds(run: Callable[[], object], repeats: int) -> tuple[float, object]:
    """Median wall time over ``repeats`` runs, and the last run's result."""
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def print_table(title: str, rows: list[tuple[str, float, str]], unit: str) -> None:
    print(f"\n{title}")
    width = max(len(r[0]) for r in rows)
    for name, value, note in rows:
        print(f"  {name:<{width}}  {value:>12,.1f} {unit}  {note}")
