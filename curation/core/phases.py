"""The phases of a stage's resolve: the corpus-wide work before its first shard (dedup's signatures,
buckets and components; BFF's hashing and ordered pass), which runs for many minutes on a crawl.

A ``PhaseClock`` times each phase for the stage's run line, echoes a progress line while a phase's
Ray tasks run (under ``reporting_resolve``, which the runner sets), and keeps a checkpoint in the
stage's work folder: each finished phase's result, under the stage's key. A resolve killed part-way
(a lost driver, a pre-empted node) resumes after its last finished phase, reusing the tables the
phases left in the work folder; a work folder of another key is removed first. A phase's tasks
write their tables deterministically, so rerunning a phase that was cut short overwrites whatever
part of it was written.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import numpy as np

from curation.core import io as fio
from curation.core.layout import CHECKPOINT
from curation.core.progress import clock_text

# Fault injection for kill-and-resume tests: the driver kills itself (SIGKILL) once this phase is
# checkpointed, as a lost driver would stop
KILL_AFTER_PHASE = "CURATION_KILL_AFTER_PHASE"


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


def _plain(value: Any) -> Any:
    """A phase's result as JSON holds it (numpy arrays and scalars become lists and numbers)."""
    if isinstance(value, np.ndarray | np.generic):
        return value.tolist()
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


class PhaseClock:
    """Times, reports and (given a work folder) checkpoints the phases of one resolve."""

    def __init__(self, work: str | None = None, key: str | None = None, storage: fio.Storage | None = None) -> None:
        self.seconds: dict[str, float | None] = {}  # None: the phase was finished by an earlier attempt
        self.notes: dict[str, str] = {}
        self._last = time.perf_counter()
        self._reporter = _RESOLVE_REPORTER.get()
        self._storage = storage or fio.Storage()
        self._checkpoint = fio.join(work, CHECKPOINT) if work else None
        self._key = key
        self.finished: dict[str, Any] = {}
        self.remembered: dict[str, Any] = {}
        if work is None:
            return
        try:
            saved = json.loads(fio.read_bytes(self._checkpoint, self._storage))
        except (FileNotFoundError, ValueError):
            saved = None
        if saved is not None and saved.get("key") == key:
            self.finished, self.remembered = saved.get("finished", {}), saved.get("remembered", {})
        else:  # another key's tables (or none): start clean
            fio.remove(work, self._storage, recursive=True)
            self._save()

    def remember(self, name: str, value: Any) -> Any:
        """``value``, or what the attempt being resumed chose (e.g. a partition count that depends
        on the cluster's size, which the tables already written are split by)."""
        if name not in self.remembered:
            self.remembered[name] = _plain(value)
            self._save()
        return self.remembered[name]

    def _time(self, phase: str) -> None:
        now = time.perf_counter()
        self.seconds[phase] = round(now - self._last, 2)
        self._last = now

    def step(self, phase: str, run: Callable[[], Any]) -> Any:
        """``run()`` as the phase ``phase``, or its result from the attempt being resumed."""
        if phase in self.finished:
            return self._resumed(phase)
        return self._finish(phase, run())

    def gather(self, phase: str, submit: Callable[[], list], count: Callable[[], tuple[int, int, str]] | None = None) -> list:
        """``ray.get(submit())`` as the phase ``phase`` (or its result from the attempt being
        resumed, without submitting anything). ``count`` gives the progress to report when finished
        tasks do not tell it (units done, units in all, their name): a phase of one long task, such
        as BFF's ordered pass, counts the shards it has written."""
        import ray

        if phase in self.finished:
            return self._resumed(phase)
        refs = submit()
        remaining, reporter = list(refs), self._reporter
        if reporter is not None:
            started = time.monotonic()
            next_line = started + reporter.interval
            while remaining:
                _, remaining = ray.wait(remaining, num_returns=len(remaining),
                                        timeout=max(0.0, next_line - time.monotonic()))
                if remaining and time.monotonic() >= next_line:
                    done, total, unit = count() if count else (len(refs) - len(remaining), len(refs), "tasks")
                    reporter.echo(f"[{reporter.stage}] {phase}: "
                                  f"{phase_progress(done, total, unit, time.monotonic() - started)}")
                    next_line += reporter.interval
        return self._finish(phase, ray.get(list(refs)))

    def release_tables(self) -> None:
        """Remove the phases' tables from the work folder, keeping the checkpoint: an attempt killed
        while the stage's shards run then resumes with every phase finished (their results are
        outside the work folder). The runner removes the folder once the stage is committed."""
        if self._checkpoint is None:
            return
        fs, checkpoint = fio.filesystem(self._checkpoint, self._storage)
        folder = checkpoint.rsplit("/", 1)[0]
        fs.invalidate_cache(folder)
        for entry in fs.ls(folder, detail=False):
            if entry.rstrip("/").rsplit("/", 1)[-1] != CHECKPOINT:
                fs.rm(entry, recursive=True)

    def note(self) -> str:
        """`` (signatures 2s, buckets 0s)`` for the run line; a phase an earlier attempt finished
        reads ``resumed``."""
        if not self.seconds:
            return ""
        parts = [f"{phase} resumed" if s is None else f"{phase} {s:.0f}s" + (f" ({self.notes[phase]})" if phase in self.notes else "")
                 for phase, s in self.seconds.items()]
        return " (" + ", ".join(parts) + ")"

    def _resumed(self, phase: str) -> Any:
        self.seconds[phase] = None
        self._last = time.perf_counter()
        return self.finished[phase]

    def _finish(self, phase: str, result: Any) -> Any:
        self._time(phase)
        if self._checkpoint is not None:
            self.finished[phase] = _plain(result)
            self._save()
            if os.environ.get(KILL_AFTER_PHASE) == phase:
                os.kill(os.getpid(), signal.SIGKILL)
        return result

    def _save(self) -> None:
        if self._checkpoint is not None:
            blob = json.dumps({"key": self._key, "finished": self.finished, "remembered": self.remembered}, sort_keys=True)
            fio.write_atomic(self._checkpoint, blob.encode(), self._storage)


def phase_progress(done: int, total: int, unit: str, elapsed: float) -> str:
    """``3/8 tasks, elapsed 1:02, ETA 1:43`` (the ETA from the time per unit so far)."""
    eta = clock_text(elapsed / done * (total - done)) if done else "?"
    return f"{done:,}/{total:,} {unit}, elapsed {clock_text(elapsed)}, ETA {eta}"
