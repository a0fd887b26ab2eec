"""mempamal: Means for EMbarrassingly PArallel MAchine Learning.

Compile a scikit-learn nested cross-validation into a DAG of file-producing
shell commands, run it locally, on SLURM, through Soma-Workflow or on Dask,
and read back results equal to scikit-learn's.
"""

from ._version import __version__
from .errors import (
    BackendError,
    MempamalError,
    TaskFailedError,
    ValidationError,
    WorkdirError,
    WorkdirLockedError,
)
from .experiment import Experiment
from .results import Results, load_results
from .workflow import Task, Workflow


def load_workflow(workdir) -> Workflow:
    """The workflow compiled in ``workdir``."""
    return Workflow.load(workdir)


__all__ = [
    "BackendError", "Experiment", "MempamalError", "Results", "Task", "TaskFailedError",
    "ValidationError", "Workflow", "WorkdirError", "WorkdirLockedError", "__version__",
    "load_results", "load_workflow",
]
