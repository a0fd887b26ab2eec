"""The trial context a sweep's function receives when it has a ``trial`` parameter.

Three calls fit any training loop (scikit-learn, PyTorch, Keras...)::

    def train(lr, layers, trial):
        state = load_checkpoint(trial.dir)          # None on the first attempt
        for epoch in range(state.epoch + 1 if state else 0, 50):
            loss = one_epoch(...)
            trial.report(epoch, loss=loss)          # one JSON line, readable at once
            save_checkpoint(trial.dir, ...)         # survives a kill: attempt 2 resumes
            if trial.should_stop():                 # Sweep(early_stopping="median")
                break                               # (or raise mempamal.TrialStopped)
        return {"loss": loss}
"""

from __future__ import annotations

import json
import math
import numbers
import time
from pathlib import Path


class TrialStopped(Exception):
    """Raised by a sweep's function to stop its trial early (recorded ``pruned``).

    The trial keeps the values it reported last. Returning after
    ``trial.should_stop()`` said True does the same with the returned values.
    """


class Trial:
    """One call of a sweep's function: its identity, its folder, its reports.

    Attributes
    ----------
    id : int
        The trial's number in the sweep (candidate-major: candidate ``c``,
        repeat ``r`` is trial ``c * repeats + r``).
    params : dict
        The candidate's parameters.
    seed : int
        The repeat index, 0 to ``repeats - 1``: seed your randomness with it.
    attempt : int
        1, then 2 if the trial is run again after its process was killed.
    """

    def __init__(self, id: int, params: dict, seed: int, attempt: int, dir, metrics_file,
                 stopper=None) -> None:
        self.id = id
        self.params = dict(params)
        self.seed = seed
        self.attempt = attempt
        self._dir = Path(dir)
        self._metrics_file = Path(metrics_file)
        self._fh = None
        #: the stopping rule, a callable on {step: value} (None: never stop)
        self._stopper = stopper
        self._history: dict = {}
        if stopper is not None:
            from .adaptive.stopping import read_history

            # an earlier attempt's reports count: the trial resumes them
            self._history = read_history(self._metrics_file, stopper.rule["metric"])
        #: the values of the latest report (a pruned trial keeps them)
        self.last_values: dict = {}
        #: whether should_stop() said True
        self.stopped = False

    def __repr__(self) -> str:
        return (f"Trial(id={self.id}, params={self.params!r}, seed={self.seed}, "
                f"attempt={self.attempt})")

    @property
    def dir(self) -> Path:
        """The trial's own folder, kept across attempts (checkpoints, artefacts).

        Created on first use, so that quick trials that never ask for it do
        not leave thousands of empty folders.
        """
        self._dir.mkdir(mode=0o755, parents=True, exist_ok=True)
        return self._dir

    def report(self, step, **metrics) -> None:
        """Record ``metrics`` at ``step``: one JSON line, flushed at once.

        The line goes to the trial's metrics file, which ``status``,
        ``load_results(W, partial=True).history`` (and other trials) read
        while this one runs.

        Parameters
        ----------
        step : int
            The epoch, iteration... (a number that grows).
        **metrics : number
            Values at this step (numpy scalars are fine).
        """
        if not isinstance(step, numbers.Integral) or isinstance(step, bool):
            raise TypeError(f"trial.report: step must be an int, got {step!r}")
        if not metrics:
            raise TypeError("trial.report: give at least one metric, e.g. "
                            "trial.report(step, loss=0.3)")
        line = {"step": int(step), "attempt": self.attempt, "time": time.time()}
        for name, value in metrics.items():
            if name in line:
                raise TypeError(f"trial.report: {name!r} is a reserved name; rename "
                                "that metric")
            line[name] = as_number(value, f"trial.report: metric {name!r}")
        if self._fh is None:
            self._metrics_file.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
            self._fh = open(self._metrics_file, "a", encoding="utf-8")  # noqa: SIM115
        self._fh.write(json.dumps(line, allow_nan=True) + "\n")
        self._fh.flush()
        self.last_values = {k: v for k, v in line.items() if k in metrics}
        if self._stopper is not None and self._stopper.rule["metric"] in metrics:
            self._history[int(step)] = float(line[self._stopper.rule["metric"]])

    def should_stop(self) -> bool:
        """Whether the sweep's stopping rule asks this trial to stop now.

        Always False without ``early_stopping``. With ``"median"``: True
        when this trial's best reported value so far is worse than the
        median of the finished trials' values at its latest step (Optuna's
        ``MedianPruner``), read from their files. Call it after each
        ``report``; when True, return (or raise
        :class:`~mempamal.TrialStopped`): the trial is recorded ``pruned``.
        """
        if self._stopper is None:
            return False
        if self._stopper(self._history):
            self.stopped = True
        return self.stopped

    def close(self) -> None:
        """Close the metrics file (the task does it when the function returns)."""
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def as_number(value, what: str):
    """``value`` as a plain int or float (numpy scalars too); TypeError otherwise."""
    if hasattr(value, "item") and getattr(value, "ndim", 0) == 0:
        value = value.item()  # numpy scalar or 0-d array
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    raise TypeError(f"{what} must be a number, got {value!r}")


def is_nan(value) -> bool:
    return isinstance(value, float) and math.isnan(value)
