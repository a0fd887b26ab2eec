"""Experiment + data -> working directory + workflow (the only writer of a new workdir)."""

from __future__ import annotations

import math
import os
import sys
import warnings

import numpy as np
import sklearn
from sklearn.utils.validation import _num_samples

from ...compiler import check_disk_space, existing_workflow, nbytes, versions, write_arrays
from ...errors import ValidationError
from ...pickling import dump_pickle, dumps, fingerprint
from ...splits import compute_splits
from ...validation import check_data, check_non_finite, check_resources
from ...workdir import Workdir, save_npz
from ...workflow import Workflow, gc_paused, sha256_file
from .dag import build_adaptive_tasks, build_tasks
from .fit_params import check_params, route
from .reuse import ReuseIndex, as_workdirs

#: a fit task should last about this long, so that interpreter start-up on a
#: cluster (about one second to import scikit-learn) stays a small overhead
TARGET_TASK_SECONDS = 2.0


def compile_experiment(exp, workdir, X, y=None, groups=None, *, params=None,
                       chunk_size=None, python=None, resources=None, reuse=None) -> Workflow:
    """See :meth:`mempamal.Experiment.compile`."""
    check_data(X, y, groups)
    resources = check_resources(resources)
    X, y, groups = (_as_array(a) for a in (X, y, groups))
    n_samples = _num_samples(X)
    params = check_params(params, exp.estimator, n_samples)
    splits = compute_splits(exp.estimator, X, y, groups, exp.cv, exp.inner_cv,
                            final=exp.final_model)
    spec = exp.clone_spec()
    spec["params"], per_sample = route(exp, params, n_samples)
    adaptive = spec["adaptive"]
    # what is fitted once here: a model-based search's first candidate is not known yet
    probe = spec if adaptive is None else {**spec, "candidates": exp.probe_candidates()}
    check_non_finite(X, lambda rows: _quiet_first_fit(probe, X, y, splits, add_rows=rows))
    described = spec
    if adaptive is not None:  # scipy.stats objects hash unstably: their Optuna form
        if reuse is not None:
            raise ValidationError(f"reuse= grows a grid; search={adaptive['search']!r} asks "
                                  "its candidates as it goes: compile without reuse")
        described = {**spec, "adaptive": {k: v for k, v in adaptive.items()
                                          if k != "param_distributions"}}
    fp = fingerprint((described, X, y, groups, per_sample, splits.to_arrays()))
    wd = Workdir(workdir)
    existing = existing_workflow(wd, fp)
    if existing is not None:
        return existing
    _check_chunk_size(chunk_size)
    earlier = as_workdirs(reuse)
    index = ReuseIndex(spec, X, y, per_sample, splits, earlier) if earlier else None
    check_disk_space(wd, _needed_bytes(exp, spec, X, y, groups, splits))
    wd.create()
    data_formats, digests = write_arrays(wd, {"X": X, "y": y, "groups": groups,
                                              **per_sample})
    digests["experiment.pkl"] = dump_pickle(wd.experiment_file, spec)
    save_npz(wd.splits_file, splits.to_arrays())
    digests["splits.npz"] = sha256_file(wd.splits_file)
    seconds_per_fit, fit_peak_mb = None, None
    n_inner = [splits.n_inner(o) for o in range(splits.n_outer)]
    if adaptive is not None:
        wd.path("out/suggest").mkdir(mode=0o755, parents=True, exist_ok=True)
        if chunk_size is None:  # one fit task per inner split and round
            chunk_size = adaptive["batch_size"]
        with gc_paused():
            tasks = build_adaptive_tasks(n_inner, exp.n_candidates, adaptive["batch_size"],
                                         chunk_size, python, resources,
                                         final_inner=len(splits.final))
        return _save(wd, tasks, {
            "fingerprint": fp, "recipe": "nested_cv",
            "n_outer": splits.n_outer, "n_inner": n_inner,
            "n_inner_final": len(splits.final),
            "n_candidates": exp.n_candidates, "chunk_size": chunk_size,
            "search": adaptive["search"], "batch_size": adaptive["batch_size"],
            "seconds_per_fit": None, "fit_peak_mb": None,
            "scorer_names": spec["scorer_names"], "data": data_formats, "reused": None,
            "digests": digests,
            "versions": versions(**{"scikit-learn": sklearn.__version__}),
        })
    timed = None
    if chunk_size is None:
        chunk_size, seconds_per_fit, fit_peak_mb, timed = _auto_chunk_size(
            spec, X, y, splits, int(resources.get("cpus", 1)))
    if timed is not None:  # a real fit of the run: its task takes the row (see write_timed_fit)
        digests[Workdir.TIMED_FIT] = write_timed_fit(wd, timed)
    cand_chunks = None
    if index is not None:  # reused candidates in chunks of their own: written now
        old = sorted(index.reusable_candidates())
        new = [c for c in range(exp.n_candidates) if c not in set(old)]
        cand_chunks = _chunked(old, chunk_size) + _chunked(new, chunk_size)
    with gc_paused():
        tasks = build_tasks(n_inner, exp.n_candidates, chunk_size, python, resources,
                            final_inner=len(splits.final), cand_chunks=cand_chunks)
    reused = [] if index is None else index.write_outputs(wd, tasks, exp.return_estimator)
    meta = {
        "fingerprint": fp,
        "recipe": "nested_cv",
        "n_outer": splits.n_outer, "n_inner": n_inner, "n_inner_final": len(splits.final),
        "n_candidates": exp.n_candidates, "chunk_size": chunk_size,
        # measured once at compile (None when chunk_size was given): lets
        # cluster backends pack tasks per job without timing anything again
        "seconds_per_fit": seconds_per_fit,
        # the compile process's peak memory while it fitted (SLURM mem="auto")
        "fit_peak_mb": fit_peak_mb,
        # the fit timed above, kept (None: none): which task's candidate it is
        "timed_fit": None if timed is None else dict(FIRST_FIT),
        "scorer_names": spec["scorer_names"], "data": data_formats,
        "reused": {"from": index.sources, "tasks": len(reused)} if index else None,
        "digests": digests,
        "versions": versions(**{"scikit-learn": sklearn.__version__}),
    }
    return _save(wd, tasks, meta)


def _save(wd, tasks, meta) -> Workflow:
    wf = Workflow(wd, tasks, meta)
    wf.save()  # last: its existence means the compile finished
    return wf


def _chunked(indices: list[int], size: int) -> list[list[int]]:
    return [indices[s:s + size] for s in range(0, len(indices), size)]


def _as_array(a):
    """Lists become arrays; arrays, DataFrames and sparse matrices stay as given."""
    if a is None or hasattr(a, "shape"):
        return a
    return np.asarray(a)


def _check_chunk_size(chunk_size) -> None:
    if chunk_size is not None and (not isinstance(chunk_size, int) or chunk_size < 1):
        raise ValidationError(f"chunk_size must be a positive int or None, got {chunk_size!r}")


def _auto_chunk_size(spec, X, y, splits, cpus: int) -> tuple:
    """Candidates per task so that a fit task lasts about TARGET_TASK_SECONDS.

    Returns the size, the measured seconds of one fit, the peak memory (MB)
    of this process while fitting it (None, None if not timed) and the
    timed fit to keep (see :func:`write_timed_fit`; None: none). The fit is
    timed as a task runs it: BLAS limited to the task's ``cpus``.
    """
    from ...measure import TaskUsage

    n = len(spec["candidates"])
    if n == 1 or not spec["nested"]:
        return 1, None, None, None
    usage = TaskUsage.start()
    try:
        res, caught = _task_like_first_fit(spec, X, y, splits, cpus)
    except Exception:  # noqa: BLE001 - the run will report it with its context
        return 1, None, None, None
    peak = usage.stop()["peak_rss_mb"]
    seconds = max(res["fit_time"] + res["score_time"], 1e-3)
    size = _size_for(seconds, n)
    if seconds < RETIME_BELOW_SECONDS and size < n:
        # a first fit pays one-time costs (lazy imports, BLAS start-up, page
        # faults on the data) that made W2's fits look 0.16 s instead of 2 ms
        # and the chunk size swing from run to run: time a warm one as well
        # (one fit more among the hundreds the run makes). Not when every
        # candidate already fits in one task: a faster fit cannot change
        # that, and W3's second 0.36 s fit left a core idle at compile
        again, caught_again = _task_like_first_fit(spec, X, y, splits, cpus)
        if again["fit_time"] + again["score_time"] < seconds:  # keep the warm one
            res, caught = again, caught_again
        seconds = max(res["fit_time"] + res["score_time"], 1e-3)
        size = _size_for(seconds, n)
    n_splits = sum(splits.n_inner(o) for o in range(splits.n_outer)) + len(splits.final)
    size = balanced_chunk_size(n, size, n_splits, _cores())
    print(f"mempamal: one fit took {seconds:.3f}s; {size} candidate(s) per fit task",
          file=sys.stderr)
    timed = None
    if res.get("fit_error") is None:
        timed = {"row": res, "warnings": caught}
    return size, seconds, peak, timed


def write_timed_fit(wd: Workdir, timed: dict) -> str:
    """Keep the fit the compile timed for the task that would make it again.

    It is :data:`FIRST_FIT`'s candidate and split, fitted and scored by the
    same function a fit task calls, BLAS limited as in a task: the task
    takes its row instead of fitting it again (a long fit, W3's 0.4 s forest
    or an hour-long network, is not paid twice). Its warnings go to that
    task's log. Returns the file's sha256 (the task checks it).
    """
    from ...workdir import write_json

    path = wd.path(Workdir.TIMED_FIT)
    write_json(path, timed, indent=None)
    return sha256_file(path)


def _size_for(seconds: float, n_candidates: int) -> int:
    """Candidates per task making a task last about TARGET_TASK_SECONDS (1 to all)."""
    return max(1, min(n_candidates, math.floor(TARGET_TASK_SECONDS / seconds)))


#: a first fit shorter than this is timed again, warm (see _auto_chunk_size)
RETIME_BELOW_SECONDS = 10.0

#: the last wave of fit tasks may leave this fraction of the cores idle at most
MAX_IDLE_FRACTION = 0.02


def balanced_chunk_size(n_candidates: int, size: int, n_splits: int, workers: int) -> int:
    """A chunk size no larger than ``size`` whose fit tasks fill ``workers`` cores.

    Equal fit tasks on W workers take ``ceil(N / W)`` waves: 9 tasks on 2
    cores leave one core idle for the whole last wave (11 % of the run). The
    chunk is made smaller (more tasks) until the last wave idles at most
    :data:`MAX_IDLE_FRACTION` of the cores, trying up to four times as many
    tasks. Smaller chunks cost little: the local executor's workers do not
    start an interpreter per task, and cluster backends pack tasks into jobs
    themselves.

    Parameters
    ----------
    n_candidates : int
        Candidates of the search.
    size : int
        Candidates per task that make a task last about
        :data:`TARGET_TASK_SECONDS` (the upper bound).
    n_splits : int
        Inner splits fitted (over every outer split, and the final search).
    workers : int
        Cores the run is expected to use (this machine's).

    Returns
    -------
    int
        Candidates per fit task; chunks are as equal as possible.
    """

    def equal(chunks):  # the size giving ``chunks`` equal chunks, and how many it gives
        size = math.ceil(n_candidates / chunks)
        return size, math.ceil(n_candidates / size)

    def idle(chunks):
        n_tasks = n_splits * chunks
        return math.ceil(n_tasks / workers) * workers / n_tasks - 1

    first = math.ceil(n_candidates / max(1, size))
    options = [equal(c) for c in range(first, min(n_candidates, 4 * first) + 1)]
    for size, chunks in options:
        if idle(chunks) <= MAX_IDLE_FRACTION:
            return size
    return min(options, key=lambda sc: (round(idle(sc[1]), 9), -sc[0]))[0]


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _quiet_first_fit(spec, X, y, splits, add_rows=None) -> dict:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _first_fit(spec, X, y, splits, add_rows=add_rows)


def _task_like_first_fit(spec, X, y, splits, cpus: int) -> tuple[dict, list[str]]:
    """:func:`_first_fit` as a fit task runs it, and its warnings as lines."""
    from ...runner import thread_limits
    from ...sklearn_compat import numpy_splits_direct, param_names_cached

    with thread_limits(cpus), param_names_cached(), numpy_splits_direct(), \
            warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")  # as a task does (see run_task)
        res = _first_fit(spec, X, y, splits)
    return res, [f"{w.category.__name__}: {w.message}" for w in caught]


#: what _first_fit fits: the first candidate on outer split 0's first inner split
FIRST_FIT = {"o": 0, "i": 0, "candidate": 0}


def _first_fit(spec, X, y, splits, add_rows=None) -> dict:
    """Fit and score the first candidate on the first inner split (or outer split).

    ``add_rows``: rows added to the train set (NaN/inf ones, to ask the
    estimator whether it takes them); errors are then raised, not scored.
    """
    from .tasks import fit_and_score

    outer_train, outer_test = splits.outer[0]
    if spec["nested"]:
        train, test = (outer_train[idx] for idx in splits.inner[0][0])
    else:
        train, test = outer_train, outer_test
    if add_rows is not None:
        train = np.union1d(train, add_rows[:100])
        test = np.setdiff1d(test, train) if len(np.setdiff1d(test, train)) else test
        spec = dict(spec, error_score="raise")
    return fit_and_score(spec, X, y, train, test, spec["candidates"][0])


def _needed_bytes(exp, spec, X, y, groups, splits) -> int:
    """A generous estimate of what the run writes, to check against free space."""
    data = sum(nbytes(a) for a in (X, y, groups))
    n_inner = sum(splits.n_inner(o) for o in range(splits.n_outer))
    n_fits = max(n_inner, splits.n_outer) * exp.n_candidates
    per_fit = 600 + 200 * len(spec["scorer_names"])  # JSON row, log and meta lines
    outputs = n_fits * per_fit + splits.n_outer * exp.n_candidates * 400
    models = 0
    if exp.return_estimator:
        # a fitted model is at least as large as its unfitted pickle; assume x4
        models = 4 * len(dumps(spec["estimator"])) * splits.n_outer + data
    splits_bytes = sum(a.nbytes for a in splits.to_arrays().values())
    return int(1.2 * (data + outputs + models + splits_bytes)) + (1 << 20)
