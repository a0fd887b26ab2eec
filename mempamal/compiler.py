"""What every recipe's compile shares: the workdir check, disk space, versions, data.

A recipe's compile (``mempamal.recipes.<name>.compile``) validates its
description, then uses these helpers to open the workdir, write its files
and, last, ``workflow.json`` -- whose existence means the compile finished.
"""

from __future__ import annotations

import os
import platform
import shutil
from pathlib import Path

from .errors import ValidationError, WorkdirError
from .workdir import Workdir, read_json, save_npy
from .workflow import Workflow

#: entries a workdir may hold before workflow.json exists (an interrupted compile)
_OWN_ENTRIES = {"data", "logs", "out", "trials", "experiment.pkl", "splits.npz",
                ".mempamal.lock"}


def existing_workflow(wd: Workdir, fingerprint: str):
    """The workflow already compiled in ``wd`` if it is this experiment, else None.

    Raises
    ------
    WorkdirError
        If ``wd`` holds another experiment, or files that are not a workdir's.
    """
    if wd.workflow_file.exists():
        wf = Workflow.load(wd)
        if wf.meta.get("fingerprint") != fingerprint:
            raise WorkdirError(
                f"workdir {str(wd.root)!r} holds another experiment (fingerprint "
                f"{wf.meta.get('fingerprint')}, this one is {fingerprint}); "
                "compile it into another workdir, with reuse=[this one] to keep the "
                "results that still apply, or delete this one"
            )
        return wf
    if wd.root.exists():
        if not wd.root.is_dir():
            raise WorkdirError(f"workdir {str(wd.root)!r} exists and is not a directory")
        foreign = sorted(set(os.listdir(wd.root)) - _OWN_ENTRIES)
        foreign = [f for f in foreign if not f.startswith(".tmp-")]
        if foreign:
            raise WorkdirError(
                f"workdir {str(wd.root)!r} is not empty and is not a mempamal workdir "
                f"(it holds {foreign[:5]}); use an empty or new directory"
            )
        if not os.access(wd.root, os.W_OK):
            raise WorkdirError(f"workdir {str(wd.root)!r} is not writable")
    return None


def versions(**more) -> dict:
    """Versions of what computes the results, recorded in workflow.json."""
    import numpy as np

    from ._version import __version__

    out = {"mempamal": __version__, "numpy": np.__version__,
           "python": platform.python_version()}
    out.update(more)
    return out


def write_arrays(wd: Workdir, arrays: dict) -> tuple[dict, dict]:
    """Numeric arrays as .npy (memory-mapped by tasks), anything else pickled.

    Returns ``({name: "npy" | "pkl"}, {relative path: sha256 of each pickle})``.
    """
    import numpy as np

    from .pickling import dump_pickle

    formats, digests = {}, {}
    for name, arr in arrays.items():
        if arr is None:
            continue
        if isinstance(arr, np.ndarray) and arr.dtype != object:
            save_npy(wd.data_file(name, "npy"), arr)
            formats[name] = "npy"
        else:
            path = wd.data_file(name, "pkl")
            digests[str(path.relative_to(wd.root))] = dump_pickle(path, arr)
            formats[name] = "pkl"
    return formats, digests


def check_disk_space(wd: Workdir, needed: int) -> None:
    """Refuse to start a run that cannot fit on the workdir's file system."""
    probe = wd.root
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if needed > free:
        raise WorkdirError(
            f"not enough disk space for workdir {str(wd.root)!r}: the run needs about "
            f"{needed / 2**20:.1f} MiB (data, splits, outputs and any kept models) "
            f"but {str(probe)!r} has {free / 2**20:.1f} MiB free"
        )


def nbytes(a) -> int:
    """Bytes an array, sparse matrix or DataFrame holds (0 if unknown)."""
    if a is None:
        return 0
    if hasattr(a, "nbytes"):
        return int(a.nbytes)
    if hasattr(a, "data") and hasattr(a.data, "nbytes"):  # sparse
        return int(a.data.nbytes) * 3
    if hasattr(a, "memory_usage"):  # DataFrame
        return int(a.memory_usage(deep=True).sum())
    return 0


def reuse_workdirs(reuse, recipe: str, what: str) -> list[Workdir]:
    """``reuse=`` as a list of workdirs, each checked to hold a ``recipe`` workflow.

    Parameters
    ----------
    reuse : str, path-like, Workdir, list of them or None
        What the user gave.
    recipe : str
        The recipe the workdirs must hold (``"nested_cv"``, ``"sweep"``).
    what : str
        How the message names that recipe ("a nested cross-validation").
    """
    if reuse is None:
        return []
    items = [reuse] if isinstance(reuse, (str, Path, Workdir)) else list(reuse)
    out = []
    for item in items:
        wd = item if isinstance(item, Workdir) else Workdir(item)
        if not wd.workflow_file.is_file():
            raise ValidationError(f"reuse={str(wd.root)!r} is not a mempamal workdir (no "
                                  "workflow.json); expected a workdir compiled before")
        found = read_json(wd.workflow_file).get("recipe", "nested_cv")
        if found != recipe:
            raise ValidationError(f"reuse={str(wd.root)!r} holds a {found!r} workflow; "
                                  f"only {what} can be reused here")
        out.append(wd)
    return out
