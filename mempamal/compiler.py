"""Experiment + data -> working directory + workflow (the only writer of a new workdir)."""

from __future__ import annotations

import math
import os
import platform
import shutil
import sys
import warnings

import joblib
import numpy as np
import sklearn

from ._version import __version__
from .errors import ValidationError, WorkdirError
from .recipes.nested_cv import build_tasks
from .splits import compute_splits
from .validation import check_data, check_finite
from .workdir import Workdir, dump_pickle, save_npy, save_npz
from .workflow import Workflow, gc_paused, sha256_file

#: a fit task should last about this long, so that interpreter start-up on a
#: cluster (about one second to import scikit-learn) stays a small overhead
TARGET_TASK_SECONDS = 2.0

#: entries a workdir may hold before workflow.json exists (an interrupted compile)
_OWN_ENTRIES = {"data", "logs", "out", "experiment.pkl", "splits.npz", ".mempamal.lock"}


def compile_experiment(exp, workdir, X, y=None, groups=None, *, chunk_size=None,
                       python=None, resources=None) -> Workflow:
    """See :meth:`mempamal.Experiment.compile`."""
    check_data(X, y, groups)
    X, y, groups = (_as_array(a) for a in (X, y, groups))
    check_finite(exp.estimator, X)
    splits = compute_splits(exp.estimator, X, y, groups, exp.cv, exp.inner_cv)
    spec = exp.clone_spec()
    fingerprint = joblib.hash((spec, X, y, groups, splits.to_arrays()))
    wd = Workdir(workdir)
    existing = _existing_workflow(wd, fingerprint)
    if existing is not None:
        return existing
    _check_chunk_size(chunk_size)
    check_disk_space(wd, _needed_bytes(exp, spec, X, y, groups, splits))
    wd.create()
    meta_data = _write_data(wd, X, y, groups)
    dump_pickle(wd.experiment_file, spec)
    save_npz(wd.splits_file, splits.to_arrays())
    seconds_per_fit = None
    if chunk_size is None:
        chunk_size, seconds_per_fit = _auto_chunk_size(spec, X, y, splits)
    n_inner = [splits.n_inner(o) for o in range(splits.n_outer)]
    with gc_paused():
        tasks = build_tasks(n_inner, exp.n_candidates, chunk_size, python, resources)
    meta = {
        "fingerprint": fingerprint,
        "recipe": "nested_cv",
        "n_outer": splits.n_outer, "n_inner": n_inner,
        "n_candidates": exp.n_candidates, "chunk_size": chunk_size,
        # measured once at compile (None when chunk_size was given): lets
        # cluster backends pack tasks per job without timing anything again
        "seconds_per_fit": seconds_per_fit,
        "scorer_names": spec["scorer_names"], "data": meta_data,
        "digests": {f: sha256_file(wd.path(f)) for f in ("experiment.pkl", "splits.npz")},
        "versions": {"mempamal": __version__, "scikit-learn": sklearn.__version__,
                     "numpy": np.__version__, "python": platform.python_version()},
    }
    wf = Workflow(wd, tasks, meta)
    wf.save()  # last: its existence means the compile finished
    return wf


def _as_array(a):
    """Lists become arrays; arrays, DataFrames and sparse matrices stay as given."""
    if a is None or hasattr(a, "shape"):
        return a
    return np.asarray(a)


def _check_chunk_size(chunk_size) -> None:
    if chunk_size is not None and (not isinstance(chunk_size, int) or chunk_size < 1):
        raise ValidationError(f"chunk_size must be a positive int or None, got {chunk_size!r}")


def _existing_workflow(wd: Workdir, fingerprint: str):
    """The workflow already compiled in ``wd`` if it is this experiment."""
    if wd.workflow_file.exists():
        wf = Workflow.load(wd)
        if wf.meta.get("fingerprint") != fingerprint:
            raise WorkdirError(
                f"workdir {str(wd.root)!r} holds another experiment (fingerprint "
                f"{wf.meta.get('fingerprint')}, this one is {fingerprint}); "
                "use another workdir or delete that one"
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


def _write_data(wd: Workdir, X, y, groups) -> dict:
    """Numeric arrays as .npy (memory-mapped by tasks), anything else pickled."""
    formats = {}
    for name, arr in (("X", X), ("y", y), ("groups", groups)):
        if arr is None:
            continue
        if isinstance(arr, np.ndarray) and arr.dtype != object:
            save_npy(wd.data_file(name, "npy"), arr)
            formats[name] = "npy"
        else:
            dump_pickle(wd.data_file(name, "pkl"), arr)
            formats[name] = "pkl"
    return formats


def _auto_chunk_size(spec, X, y, splits) -> tuple[int, float | None]:
    """Candidates per task so that a fit task lasts about TARGET_TASK_SECONDS.

    Returns the size and the measured seconds of one fit (None if not timed).
    """
    from .tasks import fit_and_score

    n = len(spec["candidates"])
    if n == 1 or not spec["nested"]:
        return 1, None
    outer_train = splits.outer[0][0]
    train, test = (outer_train[idx] for idx in splits.inner[0][0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            res = fit_and_score(spec, X, y, train, test, spec["candidates"][0])
        except Exception:  # noqa: BLE001 - the run will report it with its context
            return 1, None
    seconds = max(res["fit_time"] + res["score_time"], 1e-3)
    size = max(1, min(n, math.floor(TARGET_TASK_SECONDS / seconds)))
    size = math.ceil(n / math.ceil(n / size))  # equal chunks: 12+12, not 19+5
    print(f"mempamal: one fit took {seconds:.3f}s; {size} candidate(s) per fit task",
          file=sys.stderr)
    return size, seconds


def _needed_bytes(exp, spec, X, y, groups, splits) -> int:
    """A generous estimate of what the run writes, to check against free space."""
    data = sum(_nbytes(a) for a in (X, y, groups))
    n_inner = sum(splits.n_inner(o) for o in range(splits.n_outer))
    n_fits = max(n_inner, splits.n_outer) * exp.n_candidates
    per_fit = 600 + 200 * len(spec["scorer_names"])  # JSON row, log and meta lines
    outputs = n_fits * per_fit + splits.n_outer * exp.n_candidates * 400
    models = 0
    if exp.return_estimator:
        import pickle

        # a fitted model is at least as large as its unfitted pickle; assume x4
        models = 4 * len(pickle.dumps(spec["estimator"])) * splits.n_outer + data
    splits_bytes = sum(a.nbytes for a in splits.to_arrays().values())
    return int(1.2 * (data + outputs + models + splits_bytes)) + (1 << 20)


def _nbytes(a) -> int:
    if a is None:
        return 0
    if hasattr(a, "nbytes"):
        return int(a.nbytes)
    if hasattr(a, "data") and hasattr(a.data, "nbytes"):  # sparse
        return int(a.data.nbytes) * 3
    if hasattr(a, "memory_usage"):  # DataFrame
        return int(a.memory_usage(deep=True).sum())
    return 0


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
