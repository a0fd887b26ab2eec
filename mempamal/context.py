"""What a task reads from its workdir: experiment, data, splits (cached per process).

A persistent worker runs many tasks of the same workdir; loading the pickled
experiment and memory-mapping the data once per process, not once per task,
is what keeps tiny tasks cheap.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache

import joblib
import numpy as np

from .errors import WorkdirError
from .splits import Splits
from .workdir import Workdir
from .workflow import Workflow, sha256_file


@dataclass
class TaskContext:
    """Everything a task of one workdir needs."""

    workdir: Workdir
    workflow: Workflow
    spec: dict
    X: object
    y: object
    groups: object
    splits: Splits


def load_context(root) -> TaskContext:
    """The context of the workdir at ``root``.

    Cached while workflow.json, experiment.pkl and splits.npz are unchanged:
    a change to any of them is loaded (and its digest verified) again.
    """
    wd = Workdir(root)
    try:
        stamp = tuple(os.stat(f).st_mtime_ns for f in
                      (wd.workflow_file, wd.experiment_file, wd.splits_file))
    except FileNotFoundError as exc:
        raise WorkdirError(f"{str(wd.root)!r} is not a complete workdir: {exc}") from None
    return _load(str(wd.root), stamp)


@lru_cache(maxsize=4)
def _load(root: str, _stamp: tuple) -> TaskContext:
    wd = Workdir(root)
    wf = Workflow.load(wd)
    _check_digest(wf, "experiment.pkl")
    _check_digest(wf, "splits.npz")
    spec = joblib.load(wd.experiment_file)
    data = {}
    for name, fmt in wf.meta["data"].items():
        path = wd.data_file(name, fmt)
        # memory-mapped: every task of every worker shares the page cache
        data[name] = np.load(path, mmap_mode="r") if fmt == "npy" else joblib.load(path)
    with np.load(wd.splits_file) as npz:
        splits = Splits.from_arrays({k: npz[k] for k in npz.files})
    return TaskContext(wd, wf, spec, data["X"], data.get("y"), data.get("groups"), splits)


def _check_digest(wf: Workflow, name: str) -> None:
    """Refuse to unpickle a file that is not the one compiled (trust boundary)."""
    expected = wf.file_digest(name)
    actual = sha256_file(wf.workdir.path(name))
    if expected != actual:
        raise WorkdirError(
            f"{name} in {str(wf.workdir.root)!r} does not match workflow.json "
            f"(sha256 {actual[:12]}..., expected {str(expected)[:12]}...); "
            "refusing to load it"
        )
