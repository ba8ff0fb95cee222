"""Progress a person can follow where no progress bar draws: a line per stage every few seconds
(shards done / planned, documents/s, elapsed, ETA), the same for the phases of a stage's resolve
(a corpus-wide dedup runs for many minutes before its first shard), and the same reading for a run
in progress from its receipts (`curate status RUN` in another shell)."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any


def _clock(seconds: float) -> str:
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
        eta = "?" if self.eta is None else _clock(self.eta)
        return (f"{self.shards_done}/{self.shards_planned} shards, {self.documents:,} docs, {self.rate:,.0f} docs/s, "
                f"elapsed {_clock(self.elapsed)}, ETA {eta}")


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


@dataclass(frozen=True)
class _Reporter:
    stage: str
    echo: Callable[[str], Any]
    interval: float


_RESOLVE_REPORTER: ContextVar[_Reporter | None] = ContextVar("resolve_reporter", default=None)


@contextlib.contextmanager
def reporting_resolve(stage: str, echo: Callable[[str], Any], interval: float) -> Iterator[None]:
    """While a stage resolves, its ``PhaseClock`` echoes ``[stage] phase: ...`` every ``interval`` seconds."""
    token = _RESOLVE_REPORTER.set(_Reporter(stage, echo, interval))
    try:
        yield
    finally:
        _RESOLVE_REPORTER.reset(token)


class PhaseClock:
    """Wall seconds of each phase of a stage's resolve, for its run line. Under ``reporting_resolve``
    (the runner), a phase whose Ray tasks run longer than the interval gets progress lines."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._last = time.perf_counter()
        self._reporter = _RESOLVE_REPORTER.get()

    def done(self, phase: str) -> None:
        now = time.perf_counter()
        self.seconds[phase] = round(now - self._last, 2)
        self._last = now

    def gather(self, phase: str, refs: list, count: Callable[[], tuple[int, int, str]] | None = None) -> list:
        """``ray.get(refs)`` as the phase ``phase``. ``count`` gives the progress to report when
        finished tasks do not tell it (units done, units in all, their name): a phase of one long
        task, such as BFF's ordered pass, counts the shards it has written."""
        import ray

        reporter, remaining = self._reporter, list(refs)
        if reporter is not None:
            started = time.monotonic()
            next_line = started + reporter.interval
            while remaining:
                _, remaining = ray.wait(remaining, num_returns=len(remaining),
                                        timeout=max(0.0, next_line - time.monotonic()))
                if remaining and time.monotonic() >= next_line:
                    done, total, unit = count() if count else (len(refs) - len(remaining), len(refs), "tasks")
                    reporter.echo(f"[{reporter.stage}] {phase}: {phase_progress(done, total, unit, time.monotonic() - started)}")
                    next_line += reporter.interval
        results = ray.get(list(refs))
        self.done(phase)
        return results


def phase_progress(done: int, total: int, unit: str, elapsed: float) -> str:
    """``3/8 tasks, elapsed 1:02, ETA 1:43`` (the ETA from the time per unit so far)."""
    eta = _clock(elapsed / done * (total - done)) if done else "?"
    return f"{done:,}/{total:,} {unit}, elapsed {_clock(elapsed)}, ETA {eta}"


def phase_note(seconds: dict[str, float] | None) -> str:
    """`` (signatures 2s, buckets 0s)`` for a run line; empty when resolve did not run here."""
    return " (" + ", ".join(f"{k} {v:.0f}s" for k, v in seconds.items()) + ")" if seconds else ""


def stage_status(stage, storage) -> str:
    """One line for a stage of a run, finished or in progress (``stage`` is a ``stats.StageInfo``):
    a stage under way reads as its progress line, from the receipts its latest attempt committed,
    the attempt's start time and its list of shards to run (the same for a killed attempt: its
    elapsed time keeps growing)."""
    import json

    from curation.core import io as fio
    from curation.core.layout import receipt_path

    if stage.manifest is not None:
        shards = len(stage.manifest["shards"])
        totals = stage.manifest.get("totals", {})
        return f"done      {shards}/{shards} shards, {totals.get('docs_in', 0):,} docs in, {totals.get('docs_out', 0):,} out"
    if stage.plan is None:
        return "pending"
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
