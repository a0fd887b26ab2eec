"""Exceptions raised by mempamal.

Every error a user can cause derives from :class:`MempamalError`, so one
``except MempamalError`` catches them all. Messages name the offending value,
what was expected and where it came from.
"""

from __future__ import annotations


class MempamalError(Exception):
    """Base class of every error mempamal raises on purpose."""


class ValidationError(MempamalError, ValueError):
    """An experiment, its data or an option is not what mempamal expects."""


class WorkdirError(MempamalError):
    """A working directory cannot be used (another experiment, locked, ...)."""


class WorkdirLockedError(WorkdirError):
    """Another live run holds the working directory."""


class CorruptOutputError(WorkdirError):
    """A task output on disk is truncated or altered; it was deleted for a rerun."""


class MissingInputError(WorkdirError):
    """A task was started before the tasks it depends on were done."""


class BackendError(MempamalError):
    """A backend cannot do what was asked (missing tool, refused job...)."""


class ExternalCommandError(BackendError):
    """An external command (sbatch, squeue...) failed.

    Parameters
    ----------
    argv : list of str
        The command that ran.
    returncode : int
        Its exit status.
    stderr : str
        What it wrote on standard error.
    """

    def __init__(self, argv: list[str], returncode: int, stderr: str) -> None:
        self.argv = list(argv)
        self.returncode = returncode
        self.stderr = stderr
        super().__init__(
            f"command {' '.join(self.argv)!r} failed with exit status "
            f"{returncode}: {stderr.strip() or '(no stderr)'}"
        )


class TaskFailedError(MempamalError):
    """One or more tasks of a run failed.

    Parameters
    ----------
    failures : dict
        ``{task_id: short reason}`` of each failed task.
    """

    def __init__(self, failures: dict[str, str]) -> None:
        self.failures = dict(failures)
        lines = [f"  {tid}: {why}" for tid, why in sorted(self.failures.items())]
        super().__init__(
            f"{len(self.failures)} task(s) failed:\n" + "\n".join(lines[:20])
            + ("\n  ..." if len(lines) > 20 else "")
        )
