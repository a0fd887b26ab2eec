"""Importable helpers for tests (tasks unpickle these in other processes)."""

from __future__ import annotations

import os

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, TransformerMixin
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression


class FailingClassifier(ClassifierMixin, BaseEstimator):
    """A classifier whose fit raises when ``fail`` is true (or ``fail_file`` exists).

    ``fail_file`` lets a test remove the cause between two runs.
    """

    def __init__(self, C=1.0, fail=False, fail_file=None):
        self.C = C
        self.fail = fail
        self.fail_file = fail_file

    def fit(self, X, y):
        if self.fail or (self.fail_file and os.path.exists(self.fail_file)):
            raise RuntimeError(f"FailingClassifier asked to fail (C={self.C})")
        self.model_ = LogisticRegression(C=self.C, max_iter=200).fit(X, y)
        self.classes_ = self.model_.classes_
        return self

    def predict(self, X):
        return self.model_.predict(X)


class CrashingClassifier(FailingClassifier):
    """Kills its own process in fit (a segfault/OOM stand-in) when ``fail_file`` exists."""

    def fit(self, X, y):
        if self.fail_file and os.path.exists(self.fail_file):
            os._exit(13)
        return super().fit(X, y)


def iris():
    X, y = load_iris(return_X_y=True)
    return X, y


def small_grid_experiment(**kw):
    """A fast experiment: SVC on iris, 3 candidates, 3x3 nested CV."""
    from sklearn.svm import SVC

    from mempamal import Experiment

    kw.setdefault("cv", 3)
    kw.setdefault("inner_cv", 3)
    return Experiment(SVC(), param_grid={"C": [0.1, 1.0, 10.0]}, **kw)


def assert_same_results(a, b):
    """Two Results objects hold identical numbers and choices."""
    import pandas as pd

    assert a.best_params == b.best_params
    cols = [c for c in a.outer_scores.columns if c.startswith(("test_", "train_"))]
    pd.testing.assert_frame_equal(a.outer_scores[cols], b.outer_scores[cols])
    ca, cb = a.cv_results, b.cv_results
    keep = [c for c in ca.columns if "time" not in c]
    pd.testing.assert_frame_equal(ca[keep], cb[keep])
    np.testing.assert_array_equal(a.best_index, b.best_index)


# --- Dask backend tests (added by the Dask helper) ----------------------------
class SleepyClassifier(FailingClassifier):
    """A FailingClassifier whose fit first sleeps ``delay`` seconds (to kill it mid-task)."""

    def __init__(self, C=1.0, delay=0.0, fail=False, fail_file=None):
        super().__init__(C=C, fail=fail, fail_file=fail_file)
        self.delay = delay

    def fit(self, X, y):
        import time

        time.sleep(self.delay)
        return super().fit(X, y)


class CountingClassifier(FailingClassifier):
    """Appends ``C n_train`` to ``log_file`` at each fit: counts fits across processes."""

    def __init__(self, C=1.0, log_file=None):
        super().__init__(C=C)
        self.log_file = log_file

    def fit(self, X, y):
        with open(self.log_file, "a", encoding="utf-8") as fh:
            fh.write(f"{self.C} {len(X)}\n")
        return super().fit(X, y)


class MemoryHungryClassifier(FailingClassifier):
    """Holds ``alloc_mb`` MiB of touched memory during fit (per-task peak memory tests).

    ``hold``: seconds the memory is held, when there is some. A limit
    enforced by sampling (SLURM's gatherer, once a second) must see it.
    """

    def __init__(self, C=1.0, alloc_mb=0, hold=0.0):
        super().__init__(C=C)
        self.alloc_mb = alloc_mb
        self.hold = hold

    def fit(self, X, y):
        import time

        block = np.ones(int(self.alloc_mb) * 2**20 // 8)  # written: really resident
        if self.alloc_mb and self.hold:
            time.sleep(self.hold)
        super().fit(X, y)
        self.held_ = float(block[:1].sum())
        return self


class DeviceRecordingClassifier(FailingClassifier):
    """Records ``CUDA_VISIBLE_DEVICES``, start and end of each fit in ``log_dir``."""

    def __init__(self, C=1.0, log_dir=None, delay=0.2):
        super().__init__(C=C)
        self.log_dir = log_dir
        self.delay = delay

    def fit(self, X, y):
        import time
        import uuid

        start = time.time()
        time.sleep(self.delay)
        super().fit(X, y)
        with open(os.path.join(self.log_dir, uuid.uuid4().hex), "w") as fh:
            fh.write(f"{os.environ.get('CUDA_VISIBLE_DEVICES')} {start} {time.time()}\n")
        return self


def half_failing_workflow(root, inner_cv=2):
    """Iris, one candidate that fails (``error_score="raise"``): half its fit tasks fail."""
    from mempamal import Experiment

    X, y = iris()
    exp = Experiment(FailingClassifier(), param_grid={"fail": [False, True]}, cv=2,
                     inner_cv=inner_cv, error_score="raise")
    return exp.compile(root, X, y, chunk_size=1)


class CountingScaler(TransformerMixin, BaseEstimator):
    """StandardScaler that appends a line to ``log_file`` at each fit (across processes).

    ``fail`` makes its fit raise; ``scale`` is a parameter a grid may set.
    """

    def __init__(self, log_file=None, fail=False, scale=1.0):
        self.log_file = log_file
        self.fail = fail
        self.scale = scale

    def fit(self, X, y=None):
        if self.fail:
            raise RuntimeError("CountingScaler asked to fail")
        if self.log_file:
            with open(self.log_file, "a", encoding="utf-8") as fh:
                fh.write(f"{len(X)}\n")
        X = np.asarray(X, dtype=float)
        self.mean_, self.std_ = X.mean(axis=0), X.std(axis=0) + 1e-12
        return self

    def transform(self, X):
        return self.scale * (np.asarray(X, dtype=float) - self.mean_) / self.std_


class ScribblingClassifier(ClassifierMixin, BaseEstimator):
    """A logistic regression whose fit writes into the X it is given, as ``copy=False`` does.

    Harmless when each fit gets rows of its own (scikit-learn copies them);
    a view into the data, or rows shared between candidates, would show.
    """

    def __init__(self, C=1.0):
        self.C = C

    def fit(self, X, y):
        self.model_ = LogisticRegression(C=self.C, max_iter=500).fit(X, y)
        self.classes_ = self.model_.classes_
        X *= -1.0  # raises on a read-only view; changes the next fit on a shared copy
        return self

    def predict(self, X):
        return self.model_.predict(X)
