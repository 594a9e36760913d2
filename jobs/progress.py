"""What a person sees while a long command runs: one progress bar per stage, then a short report.

On a terminal each stage is a tqdm bar with its rate and time left. Elsewhere (a log file, CI, a pipe) bars would
be pages of carriage returns, so a stage prints a plain line at each tenth of its way instead, and one when it
ends. Ray's and the libraries' own log lines are kept out of the terminal by jobs/runtime.py.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO

from tqdm import tqdm

from jobs.job_metrics import JobMetrics


class Bar:
    """One stage's progress: `update(n)` and an optional `note` shown beside the count."""

    def __init__(self, name: str, total: int | None, unit: str, stream: TextIO, interactive: bool,
                 lines: bool, metrics: JobMetrics | None = None) -> None:
        self.name, self.total, self.unit, self.stream, self.lines = name, total, unit, stream, lines
        self.metrics = metrics
        self.done, self.note, self.started = 0, "", time.perf_counter()
        self._next_line = 0.1
        self._bar = tqdm(total=total, desc=name, unit=unit, file=stream, dynamic_ncols=True, leave=True,
                         disable=not interactive, smoothing=0.1)

    def update(self, n: int = 1, note: str | None = None) -> None:
        self.done += n
        if self.metrics is not None:
            self.metrics.advanced(self.name, n)
        if note is not None:
            self.note = note
            self._bar.set_postfix_str(note, refresh=False)
        self._bar.update(n)
        if self.lines and self._bar.disable and self.total and self.done / self.total >= self._next_line:
            self._next_line = (int(10 * self.done / self.total) + 1) / 10
            self._line(f"{self.done}/{self.total} {self.unit}")

    def skips(self, n: int) -> None:
        """How many items the job has skipped so far, for its metrics (the report says which and why)."""
        if self.metrics is not None:
            self.metrics.skips(n)

    def set(self, done: int, total: int | None = None, note: str | None = None) -> None:
        """Jump to an absolute position (progress reported by a remote worker)."""
        if total is not None and total != self.total:
            self.total = self._bar.total = total
            if self.metrics is not None:
                self.metrics.stage(self.name, total)
        self.update(done - self.done, note)

    def _line(self, text: str) -> None:
        rate = self.done / max(time.perf_counter() - self.started, 1e-9)
        note = f", {self.note}" if self.note else ""
        print(f"{self.name}: {text}{note} ({rate:.1f} {self.unit}/s)", file=self.stream, flush=True)

    def close(self) -> None:
        self._bar.close()

    def show_training(self, state: dict) -> None:
        """trainer.ray_loop.fit's on_progress: rank 0's steps, epoch and loss on this bar."""
        self.set(state["step"], state["steps"], f"epoch {state['epoch']}/{state['epochs']} loss {state['loss']:.2f}")


class Console:
    """A run's terminal: announces stages, draws their bars and keeps each stage's wall time for the report."""

    def __init__(self, stream: TextIO | None = None, interactive: bool | None = None, quiet: bool = False,
                 metrics: JobMetrics | None = None) -> None:
        self.stream = stream or sys.stderr
        self.interactive = self.stream.isatty() if interactive is None else interactive
        self.quiet = quiet
        self.metrics = metrics  # the job's Prometheus metrics (jobs/job_metrics.py), when asked for
        self.times: dict[str, float] = {}

    def say(self, text: str) -> None:
        if not self.quiet:
            print(text, file=self.stream, flush=True)

    @contextmanager
    def stage(self, name: str, total: int | None = None, unit: str = "img", *, bar: bool = True) -> Iterator[Bar]:
        started = time.perf_counter()
        shown = bar and self.interactive and not self.quiet
        bar = Bar(name, total, unit, self.stream, shown, lines=bar and not self.quiet, metrics=self.metrics)
        if self.metrics is not None:
            self.metrics.stage(name, total)
        try:
            yield bar
        finally:
            bar.close()
            self.times[name] = time.perf_counter() - started
            if self.metrics is not None:
                self.metrics.stage_ended(name, self.times[name])

    def finish(self, summary=None, outcome: str = "ok") -> None:
        """The job is done: its final counts go to its metrics (ok, or partial when it skipped some)."""
        if self.metrics is not None:
            self.metrics.finish(summary, outcome)

    @contextmanager
    def job(self) -> Iterator[Console]:
        """Around a whole job: a job that raises is finished as failed; the metrics endpoint closes at the end."""
        try:
            yield self
        except BaseException:
            self.finish(outcome="failed")
            raise
        finally:
            if self.metrics is not None:
                self.metrics.close()

    def timed(self, name: str):
        """A stage without a count: no bar, only its wall time is kept."""
        return self.stage(name, None, bar=False)


def silent() -> Console:
    """A console that shows nothing (library use, tests) but still times its stages."""
    return Console(quiet=True, interactive=False)
