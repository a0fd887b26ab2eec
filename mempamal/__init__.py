"""mempamal: Means for EMbarrassingly PArallel MAchine Learning.

Compile a scikit-learn nested cross-validation into a DAG of file-producing
shell commands, run it locally, on SLURM, through Soma-Workflow or on Dask,
and read back results equal to scikit-learn's.
"""

from importlib import import_module

from ._version import __version__
from .errors import (
    BackendError,
    MempamalError,
    TaskFailedError,
    ValidationError,
    WorkdirError,
    WorkdirLockedError,
)

# imported on first use, so that `mempamal status` does not pay for
# scikit-learn and pandas, which it does not need
_LAZY = {"Experiment": "experiment", "Results": "results", "load_results": "results",
         "Task": "workflow", "Workflow": "workflow", "Sweep": "sweep",
         "TrialStopped": "trial"}


def __getattr__(name):
    if name in _LAZY:
        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'mempamal' has no attribute {name!r}")


def load_workflow(workdir):
    """The :class:`~mempamal.workflow.Workflow` compiled in ``workdir``."""
    from .workflow import Workflow

    return Workflow.load(workdir)


__all__ = [
    "BackendError", "Experiment", "MempamalError", "Results", "Sweep", "Task",
    "TaskFailedError", "TrialStopped",
    "ValidationError", "Workflow", "WorkdirError", "WorkdirLockedError", "__version__",
    "load_results", "load_workflow",
]
