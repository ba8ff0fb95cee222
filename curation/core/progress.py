"""Progress a person can follow where no progress bar draws: a line per stage every few seconds
(shards done / planned, documents/s, elapsed, ETA), and the same reading for a run in progress
from its receipts (`curate status RUN` in another shell). The phases of a stage's resolve report
through ``curation.core.phases``."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any


def clock_text(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


@dataclass
class Progress:
    shards_done: int
    shards_planned: int
    documents: int  # documents read by the shards done in this run
    elapsed: float

    @property
    def rate(self) -> float:
        return self.documents / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def eta(self) -> float | None:
        """Seconds left, from the time per shard so far (None before the first shard)."""
        if self.shards_done == 0:
            return None
        return self.elapsed / self.shards_done * (self.shards_planned - self.shards_done)

    def line(self) -> str:
        eta = "?" if self.eta is None else clock_text(self.eta)
        return (f"{self.shards_done}/{self.shards_planned} shards, {self.documents:,} docs, {self.rate:,.0f} docs/s, "
                f"elapsed {clock_text(self.elapsed)}, ETA {eta}")


class StageProgress:
    """Counts a running stage's shards as their receipts arrive; while active, a daemon thread
    echoes ``[stage] progress: ...`` every ``interval`` seconds."""

    def __init__(self, stage: str, planned: int, echo, interval: float, active: bool):
        self.stage, self.planned, self.echo, self.interval, self.active = stage, planned, echo, interval, active
        self.done, self.documents = 0, 0
        self.started = time.monotonic()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def shard_done(self, docs_in: int) -> None:
        with self._lock:
            self.done += 1
            self.documents += docs_in

    def snapshot(self) -> Progress:
        with self._lock:
            return Progress(self.done, self.planned, self.documents, time.monotonic() - self.started)

    def _report(self) -> None:
        while not self._stop.wait(self.interval):
            self.echo(f"[{self.stage}] progress: {self.snapshot().line()}")

    def __enter__(self) -> StageProgress:
        if self.active and self.planned:
            self._thread = threading.Thread(target=self._report, name=f"progress-{self.stage}", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


def stage_status(stage, storage) -> str:
    """One line for a stage of a run, finished or in progress (``stage`` is a ``stats.StageInfo``):
    a stage under way reads as its progress line, from the receipts its latest attempt committed,
    the attempt's start time and its list of shards to run (the same for a killed attempt: its
    elapsed time keeps growing)."""
    import json

    from curation.core import io as fio
    from curation.core.layout import finished_phases, receipt_path

    if stage.manifest is not None:
        shards = len(stage.manifest["shards"])
        totals = stage.manifest.get("totals", {})
        return f"done      {shards}/{shards} shards, {totals.get('docs_in', 0):,} docs in, {totals.get('docs_out', 0):,} out"
    if stage.plan is None:  # not started, or resolving over the whole corpus before its first shard
        finished = finished_phases(stage.directory, storage)
        if finished is None:
            return "pending"
        return f"resolving (phases finished: {', '.join(finished) or 'none yet'})"
    to_run = set(stage.plan.get("to_run", stage.plan["shards"]))
    done, documents = 0, 0
    for shard in stage.receipts:
        try:
            receipt = json.loads(fio.read_bytes(receipt_path(stage.directory, shard), storage))
        except (FileNotFoundError, ValueError):
            continue  # being written, or removed by a rerun
        if receipt.get("key") == stage.plan["key"] and receipt.get("shard") in to_run:
            done += 1
            documents += int(receipt["stats"].get("docs_in", 0))
    started = stage.plan.get("started_at")
    committed = len(stage.plan["shards"]) - len(to_run)
    if started is None:
        return f"partial   {done + committed}/{len(stage.plan['shards'])} shards committed"
    progress = Progress(done, len(to_run), documents, max(time.time() - started, 1e-9))
    earlier = f" (+{committed} committed before)" if committed else ""
    return f"partial   {progress.line()}{earlier}"
