"""What runs inside a Dask worker: one mempamal task, its failure as an exception."""

from __future__ import annotations

import threading

from ...runner import run_task
from ...workdir import Workdir

#: at most this many characters of a failed task's traceback go in the report
MAX_TRACEBACK = 4000


class TaskFailed(Exception):
    """Raised in the worker when a task fails; Dask hands it to every dependent.

    Parameters
    ----------
    task_id : str
        The task that failed.
    error : str
        ``"ExceptionType: message"``.
    error_type : str
        The exception's type name.
    traceback : str
        The traceback the task printed in its log ("" when there is none).
    """

    def __init__(self, task_id: str, error: str, error_type: str, traceback: str) -> None:
        # the arguments go to Exception so that the exception pickles back as is
        super().__init__(task_id, error, error_type, traceback)
        self.task_id, self.error, self.error_type, self.traceback = (
            task_id, error, error_type, traceback)

    def __str__(self) -> str:
        return f"task {self.task_id} failed: {self.error}"

    def reason(self) -> str:
        """The error, then the traceback, for :class:`RunReport`."""
        if not self.traceback:
            return self.error
        return f"{self.error}\n" + indent(self.traceback)


# run_task redirects sys.stdout/err and limits BLAS threads for the whole
# process: two tasks in two threads of one worker would mix their logs, so a
# worker process runs one mempamal task at a time whatever its thread count
_ONE_TASK_AT_A_TIME = threading.Lock()


def run_on_worker(root: str, task_id: str, *upstream):
    """Run one task in a Dask worker; raise :class:`TaskFailed` if it fails.

    Parameters
    ----------
    root : str
        The workdir.
    task_id : str
        The task to run.
    *upstream : TaskOutcome
        Outcomes of the dependencies run in this same run. They are not used:
        passing their futures is what makes Dask wait for them.

    Returns
    -------
    TaskOutcome
    """
    with _ONE_TASK_AT_A_TIME:
        outcome = run_task(root, task_id)
    if not outcome.ok:
        raise TaskFailed(task_id, outcome.error or "failed", outcome.error_type or "",
                         log_traceback(Workdir(root), task_id))
    return outcome


def log_traceback(wd: Workdir, task_id: str) -> str:
    """The traceback of the task's last attempt, from its log."""
    try:
        with open(wd.log_file(task_id), encoding="utf-8", errors="replace") as fh:
            text = fh.read()
    except OSError:
        return ""
    last = text.rpartition("=== mempamal task ")[2]
    start = last.find("Traceback (most recent call last)")
    if start < 0:
        return ""
    tb = last[start:].split("\n=== FAILED", 1)[0].rstrip()
    return tb if len(tb) <= MAX_TRACEBACK else "...\n" + tb[-MAX_TRACEBACK:]


def indent(text: str) -> str:
    return "\n".join("    " + line for line in text.splitlines())
