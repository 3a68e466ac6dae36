"""Progress of a run, for a person watching a terminal: which model, which inference case, how long.

The pipeline tells a RunProgress as each model and case starts; the base class ignores it (library use,
pipes, files, --quiet). The CLI shows rich's progress bar on stderr only when both stdout and stderr
are a terminal. The bar is transient: it is gone when the output is printed. A Hub look-up that waits
shows as the spinner and the elapsed time still moving on the current model.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


class RunProgress:
    """Told what the pipeline starts; does nothing."""

    def start_model(self, index: int, total: int, name: str) -> None:
        """Model `index` (from 0) of `total` starts."""

    def start_case(self, index: int, total: int, case: Any) -> None:
        """Inference case `index` (from 0) of `total` of the current model starts."""


class RichProgress(RunProgress):
    """A rich progress bar on stderr: one step per model, the current case in its description."""

    def __init__(self, progress: Any) -> None:
        self._progress = progress
        self._task = progress.add_task("starting", total=None)
        self._model = ""
        self._total = 0

    def start_model(self, index: int, total: int, name: str) -> None:
        self._model, self._total = name, total
        self._progress.update(self._task, total=total, completed=index, description=self._label(index, name))

    def start_case(self, index: int, total: int, case: Any) -> None:
        from .report.inference import case_label

        label = f"{self._model}: case {index + 1}/{total} ({case_label(case, True, True)})"
        self._progress.update(self._task, description=self._shorten(label))

    def finish(self) -> None:
        self._progress.update(self._task, completed=self._total)

    def _label(self, index: int, name: str) -> str:
        return self._shorten(f"model {index + 1}/{self._total}: {name}")

    @staticmethod
    def _shorten(text: str, limit: int = 60) -> str:
        return text if len(text) <= limit else text[: limit - 1] + "…"


@contextmanager
def run_progress(enabled: bool) -> Iterator[RunProgress]:
    """A RichProgress on stderr while the block runs, when `enabled`; else the silent RunProgress."""
    if not enabled:
        yield RunProgress()
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    columns = (SpinnerColumn(), TextColumn("{task.description}", markup=False), BarColumn(bar_width=20),
               MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True, refresh_per_second=8) as progress:
        bar = RichProgress(progress)
        yield bar
        bar.finish()
