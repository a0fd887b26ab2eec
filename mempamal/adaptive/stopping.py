"""Early stopping across processes: Optuna's median rule, read from the trials' files.

A running trial asks ``trial.should_stop()``; the answer compares what it
reported with what the *finished* trials reported at the same step, read
from their metrics files (``logs/trials/NAME.jsonl``) and result files
(``out/trials/NAME.json``) on the shared file system. No server, no lock:
a finished trial's files never change again, so each is read once per
process.
"""

from __future__ import annotations

import json
import math
import os
import warnings

import numpy as np


def median_rule(own: dict, completed: list[dict], mode: str, warmup_steps: int,
                min_trials: int) -> bool:
    """Whether Optuna's ``MedianPruner`` would prune a trial that reported ``own``.

    The rule of ``optuna.pruners.MedianPruner(n_startup_trials=min_trials,
    n_warmup_steps=warmup_steps)`` (interval 1, one value at least): with at
    least ``min_trials`` finished trials, from step ``warmup_steps`` on, a
    trial is pruned when its best value so far is worse than the median of
    the finished trials' values at its latest step.

    Parameters
    ----------
    own : dict
        ``{step: value}`` the trial reported (its latest step is the largest).
    completed : list of dict
        ``{step: value}`` of each finished (``done``) trial.
    mode : {"min", "max"}
        Whether smaller or larger values are better.
    warmup_steps : int
        Steps before which a trial is never stopped.
    min_trials : int
        Finished trials needed before any trial is stopped.
    """
    if not completed or len(completed) < min_trials or not own:
        return False
    step = max(own)
    if step < warmup_steps:
        return False
    values = np.asarray(list(own.values()), dtype=float)
    with warnings.catch_warnings():  # all NaN: Optuna prunes, numpy warns
        warnings.simplefilter("ignore", RuntimeWarning)
        best = np.nanmax(values) if mode == "max" else np.nanmin(values)
        if math.isnan(best):
            return True
        others = [c[step] for c in completed if step in c]
        if not others:
            return False
        median = float(np.nanpercentile(np.asarray(others, dtype=float), 50))
    if math.isnan(median):
        return False
    return bool(best < median) if mode == "max" else bool(best > median)


def read_history(path, metric: str) -> dict:
    """``{step: value}`` of ``metric`` in a metrics file (the last line of a step wins)."""
    out = {}
    try:
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                try:
                    rec = json.loads(line)
                    value = rec[metric]
                    step = int(rec["step"])
                except (ValueError, KeyError, TypeError):
                    continue  # the line being written, or another metric's report
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    out[step] = float(value)
    except FileNotFoundError:
        pass
    return out


#: (results folder, trial file name) -> its history, or None when it did not finish done
_FINISHED: dict = {}


class MedianStopper:
    """``should_stop`` of one trial: the median rule against the finished trials.

    Parameters
    ----------
    workdir : Workdir
        The sweep's working directory.
    rule : dict
        The sweep's ``early_stopping`` (``metric``, ``mode``, ``warmup_steps``,
        ``min_trials``).
    """

    def __init__(self, workdir, rule: dict) -> None:
        self.workdir = workdir
        self.rule = rule

    def completed(self) -> list[dict]:
        """Histories of every trial finished ``done`` so far (one listing a call)."""
        results = self.workdir.path("out/trials")
        metric = self.rule["metric"]
        out = []
        try:
            entries = sorted(e.name for e in os.scandir(results)
                             if e.name.endswith(".json") and not e.name.startswith("."))
        except FileNotFoundError:
            return out
        for name in entries:
            key = (str(results), name, metric)
            if key not in _FINISHED:
                try:
                    with open(results / name, encoding="utf-8") as fh:
                        doc = json.load(fh)
                except (OSError, ValueError):
                    continue  # a temporary or cut file: not finished
                _FINISHED[key] = None if doc.get("state") != "done" else read_history(
                    self.workdir.trial_metrics_file(name[:-len(".json")]), metric)
            if _FINISHED[key] is not None:
                out.append(_FINISHED[key])
        return out

    def __call__(self, own: dict) -> bool:
        r = self.rule
        if not own:
            return False
        return median_rule(own, self.completed(), r["mode"], r["warmup_steps"],
                           r["min_trials"])
