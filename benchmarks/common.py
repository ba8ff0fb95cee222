"""Helpers shared by the benchmarks: fixture location, timing with medians, result tables."""

from __future__ import annotations

import os
import statistics
import threading
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


class MemorySampler(threading.Thread):
    """Peak of the machine's used memory above its level at start, sampled every 0.2 s, overall and
    per ``label`` (set it as work moves on), and of the size of a folder on disk (``disk``), every 2 s."""

    def __init__(self, disk: Path | None = None):
        import psutil

        super().__init__(daemon=True)
        self.stop = threading.Event()
        self.baseline = psutil.virtual_memory().used
        self.peak_gb = 0.0
        self.label: str | None = None
        self.peak_by_label: dict[str, float] = {}
        self.disk, self.peak_disk_gb = disk, 0.0

    def run(self) -> None:
        import psutil

        ticks = 0
        while not self.stop.is_set():
            used = (psutil.virtual_memory().used - self.baseline) / 1e9
            self.peak_gb = max(self.peak_gb, used)
            if self.label is not None:
                self.peak_by_label[self.label] = max(self.peak_by_label.get(self.label, 0.0), used)
            if self.disk is not None and ticks % 10 == 0:
                try:
                    size = sum(f.stat().st_size for f in self.disk.rglob("*") if f.is_file())
                except FileNotFoundError:  # the tables are being written or removed meanwhile
                    size = 0
                self.peak_disk_gb = max(self.peak_disk_gb, size / 1e9)
            ticks += 1
            time.sleep(0.2)

    def finish(self) -> None:
        self.stop.set()
        self.join()
