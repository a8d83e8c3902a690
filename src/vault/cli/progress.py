"""Progress of long commands (``keys rewrap``, ``store copy``): a rich progress bar with
rate and ETA on a terminal, one plain line per step otherwise (logs, CI, pipes).

Only counts and table names are shown: never a value, token or key.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from types import TracebackType
from typing import Self, TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    ProgressColumn,
    Task,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)
from rich.progress import Progress as RichProgress
from rich.text import Text

__all__ = ["Progress", "plain_line"]


class _RateColumn(ProgressColumn):
    """Records a second (rich's own speed column counts bytes)."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("" if speed is None else f"{speed:,.0f} rows/s")


def _eta(seconds: float) -> str:
    seconds = int(seconds + 0.5)
    if seconds >= 3600:  # noqa: PLR2004 - an hour
        return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
    if seconds >= 60:  # noqa: PLR2004 - a minute
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds} s"


def plain_line(
    label: str, done: int, total: int, elapsed: float, detail: str = "", step: str = ""
) -> str:
    """``batch 2: rewrap to v3 2,000/10,000 rows (20%), 1,000 rows/s, ETA 8 s`` (``step``
    first when given, else ``label:``)."""
    percent = 100 if total <= 0 else min(100, done * 100 // total)
    rate = done / elapsed if elapsed > 0 else 0.0
    head = f"{step}: {label}" if step else f"{label}:"
    parts = [f"{head} {done:,}/{total:,} rows ({percent}%)"]
    if rate > 0:
        parts.append(f"{rate:,.0f} rows/s")
        if done < total:
            parts.append(f"ETA {_eta((total - done) / rate)}")
    if detail:
        parts.append(detail)
    return ", ".join(parts)


class Progress:
    """``with Progress(label) as p: p.update(done, total)``; a bar on a TTY, lines else.

    ``stream`` and ``clock`` are injectable so the plain lines can be tested."""

    def __init__(
        self,
        label: str,
        *,
        stream: TextIO | None = None,
        tty: bool | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._label = label
        self._stream = stream or sys.stdout
        self._tty = self._stream.isatty() if tty is None else tty
        self._clock = clock
        self._start = clock()
        self._bar: RichProgress | None = None
        self._task: TaskID | None = None

    def __enter__(self) -> Self:
        self._start = self._clock()
        if self._tty:
            console = Console(file=self._stream, force_terminal=True)
            self._bar = RichProgress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TaskProgressColumn(),
                _RateColumn(),
                TimeRemainingColumn(),
                console=console,
                transient=False,
            )
            self._bar.start()
            self._task = self._bar.add_task(self._label, total=None)
        return self

    def update(
        self,
        done: int,
        total: int,
        detail: str = "",
        label: str | None = None,
        step: str = "",
    ) -> None:
        """``done`` of ``total`` rows so far; ``label`` renames the bar, ``step`` (a batch
        number) starts the plain line."""
        if label is not None:
            self._label = label
        if self._bar is not None and self._task is not None:
            self._bar.update(self._task, completed=done, total=total, description=self._label)
            return
        elapsed = self._clock() - self._start
        line = plain_line(self._label, done, total, elapsed, detail, step)
        print(line, file=self._stream, flush=True)

    def restart(self, label: str) -> None:
        """A new step (the next table): its own count, rate and ETA."""
        self._label = label
        self._start = self._clock()
        if self._bar is not None:
            if self._task is not None:
                self._bar.stop_task(self._task)
            self._task = self._bar.add_task(label, total=None)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._bar is not None:
            self._bar.stop()
