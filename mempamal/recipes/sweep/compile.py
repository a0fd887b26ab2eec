"""Sweep -> working directory + workflow (the only writer of a new sweep workdir)."""

from __future__ import annotations

import numbers

from ...compiler import check_disk_space, existing_workflow, versions
from ...errors import ValidationError
from ...pickling import dump_pickle, fingerprint
from ...validation import check_resources
from ...workdir import TRIAL_DIRS, Workdir
from ...workflow import Workflow, gc_paused
from .dag import build_tasks, default_trials_per_task, name_width
from .reuse import TrialIndex, as_sweep_workdirs, function_key

#: what one trial leaves at least: its result, a journal line, a log line (bytes)
_BYTES_PER_TRIAL = 2000


def compile_sweep(sweep, workdir, *, resources=None, trials_per_task=None,
                  python=None, reuse=None) -> Workflow:
    """See :meth:`mempamal.Sweep.compile`."""
    resources = check_resources(resources)
    n_trials = sweep.n_trials
    adaptive = sweep.adaptive
    batch_size = None if adaptive is None else adaptive["batch_size"]
    if trials_per_task is None:
        # trial tasks never cross a round: a round is what can run at once
        trials_per_task = default_trials_per_task(
            n_trials if batch_size is None else batch_size * sweep.repeats)
    elif (not isinstance(trials_per_task, numbers.Integral) or isinstance(trials_per_task, bool)
          or trials_per_task < 1):
        raise ValidationError(f"trials_per_task must be a positive int or None, got "
                              f"{trials_per_task!r}")
    spec = sweep.spec()
    # a function given by reference is fingerprinted by its name and, for a
    # file, by the file's content: editing train.py makes another sweep
    described = {k: v for k, v in spec.items() if k not in ("func", "adaptive")}
    if adaptive is not None:  # scipy.stats objects hash unstably: their Optuna form
        described["adaptive"] = {k: v for k, v in adaptive.items()
                                 if k != "param_distributions"}
    fp = fingerprint(described | {
        "func": spec["func"] if spec["func"] is not None else spec["source"]})
    wd = Workdir(workdir)
    existing = existing_workflow(wd, fp)
    if existing is not None:
        return existing
    func_key = function_key(spec)
    earlier = as_sweep_workdirs(reuse)
    if earlier and adaptive is not None:
        raise ValidationError(f"reuse= with search={sweep.search!r}: a model-based search "
                              "asks its candidates from its own rounds' results, so earlier "
                              "trials cannot stand in for them; reuse works with grid, "
                              "random and explicit candidates")
    index = TrialIndex(earlier, func_key, _describe(sweep)) if earlier else None
    check_disk_space(wd, n_trials * _BYTES_PER_TRIAL + (1 << 20))
    wd.create()
    for sub in TRIAL_DIRS:
        wd.path(sub).mkdir(mode=0o755, parents=True, exist_ok=True)
    if adaptive is not None:
        wd.path("out/suggest").mkdir(mode=0o755, parents=True, exist_ok=True)
    digests = {"experiment.pkl": dump_pickle(wd.experiment_file, spec)}
    with gc_paused():
        tasks = build_tasks(n_trials, int(trials_per_task), python, resources,
                            batch_size=batch_size, repeats=sweep.repeats)
    width = name_width(n_trials)
    reused = 0 if index is None else index.write_reused(wd, func_key, sweep.candidates,
                                                        sweep.repeats, width)
    meta = {
        "fingerprint": fp,
        "recipe": "sweep",
        # what the trials' results depend on but their parameters: reuse= matches it
        "function_key": func_key,
        "reused": {"from": index.sources, "trials": reused} if index else None,
        "n_candidates": sweep.n_candidates, "repeats": sweep.repeats, "n_trials": n_trials,
        "trials_per_task": int(trials_per_task), "trial_name_width": width,
        "metric": sweep.metric, "mode": sweep.mode, "on_error": sweep.on_error,
        "function": _describe(sweep), "seconds_per_trial": None,
        "search": sweep.search, "batch_size": batch_size,
        "early_stopping": sweep.early_stopping,
        "digests": digests,
        "versions": versions(),
    }
    wf = Workflow(wd, tasks, meta)
    wf.save()  # last: its existence means the compile finished
    return wf


def _describe(sweep) -> str:
    src = sweep.source
    if src["kind"] == "file":
        return f"{src['path']}:{src['name']}"
    if src["kind"] == "module":
        return f"{src['module']}:{src['name']}"
    f = sweep.func
    return f"{getattr(f, '__module__', '?')}:{getattr(f, '__qualname__', repr(f))}"
