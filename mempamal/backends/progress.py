"""A progress bar (done / failed / total, ETA) shared by the backends that wait."""

from __future__ import annotations

import sys

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class RunProgress:
    """Context manager; call :meth:`advance` once per finished task.

    Parameters
    ----------
    total : int
        Tasks to run.
    enabled : bool or None
        None: only when standard error is a terminal.
    label : str
        Shown before the bar.
    """

    def __init__(self, total: int, enabled: bool | None = None, label: str = "tasks"):
        show = sys.stderr.isatty() if enabled is None else bool(enabled)
        self.failed = 0
        self.not_run = 0
        self._progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("[red]{task.fields[failed]} failed"),
            TextColumn("{task.fields[not_run]} not run"), TimeElapsedColumn(),
            TextColumn("ETA"), TimeRemainingColumn(),
            console=Console(stderr=True), disable=not show, transient=False,
        )
        self._task = self._progress.add_task(label, total=total, failed=0, not_run=0)

    def __enter__(self) -> RunProgress:
        self._progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._progress.__exit__(*exc)

    def add_total(self, n: int) -> None:
        """More tasks to run than planned (a corrupt output to recompute)."""
        self._progress.update(self._task, total=self._progress.tasks[0].total + n)

    def skip(self, n: int) -> None:
        """``n`` tasks will not run (something upstream failed)."""
        self.not_run += n
        self._progress.update(self._task, advance=n, not_run=self.not_run)

    def advance(self, ok: bool = True) -> None:
        if not ok:
            self.failed += 1
        self._progress.update(self._task, advance=1, failed=self.failed)
