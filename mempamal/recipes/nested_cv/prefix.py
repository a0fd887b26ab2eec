"""Fit a Pipeline's first steps once per fit task when no candidate changes them.

``GridSearchCV`` fits the whole Pipeline for every candidate: with a grid
over the final step only (``svc__C``, ``svc__gamma``), a scaler, a PCA or a
text vectoriser is fitted again on the same rows for each candidate, to the
same result. A fit task scores its candidates on one split, so it can fit
those leading steps once, transform the split's train and test rows, and
hand each candidate a Pipeline whose leading steps are ``"passthrough"``
with the transformed rows. The final steps then see exactly the arrays they
would have seen: the same scores, by scikit-learn's own ``_fit_and_score``.

It is only done when that equality holds, else every candidate fits the
whole Pipeline as before:

- the shared steps get no parameter from any candidate and no fit or score
  parameters (metadata routing could send them some);
- none of them draws from the global random state (``random_state=None``):
  scikit-learn's own fits would each draw different numbers;
- no train scores (a step's ``fit_transform`` on the train rows may differ
  from its ``transform``, as ``TargetEncoder``'s does), no kept estimator,
  no ``memory`` (the user caches already), no pairwise estimator (its test
  rows are a kernel against the train rows);
- fitting or transforming with the shared steps raises: the candidates then
  go the usual way, so ``error_score`` decides as scikit-learn would.

Each candidate's ``fit_time`` and ``score_time`` carry an equal share of the
time the shared steps took, so the times still add up to the work done.
"""

from __future__ import annotations

import time

import numpy as np

from ...sklearn_compat import is_pairwise

__all__ = ["SharedPrefix", "shared_steps"]


def shared_steps(estimator, candidates: list[dict]) -> int:
    """How many leading steps of ``estimator`` no candidate sets (0: nothing to share).

    The last step never counts: it is what the candidates fit.
    """
    from sklearn.pipeline import Pipeline

    if not isinstance(estimator, Pipeline) or estimator.memory is not None or len(candidates) < 2:
        return 0
    names = [name for name, _ in estimator.steps]
    touched = set()
    for params in candidates:
        for key in params:
            head = key.split("__", 1)[0]
            if head not in names:  # a Pipeline parameter: steps, memory, verbose...
                return 0
            touched.add(head)
    n = 0
    for name in names[:-1]:
        if name in touched:
            break
        n += 1
    # pairwise: the final step's test rows would be a kernel against its train rows
    if (n == 0 or _draws_global_randomness(estimator[:n]) or is_pairwise(estimator)
            or is_pairwise(estimator.steps[-1][1])):
        return 0
    return n


def _draws_global_randomness(prefix) -> bool:
    return any(key.split("__")[-1] == "random_state" and value is None
               for key, value in prefix.get_params(deep=True).items())


class SharedPrefix:
    """The first ``n`` steps of a Pipeline fitted once on one split's train rows.

    Attributes
    ----------
    estimator : Pipeline
        The Pipeline with those steps set to ``"passthrough"``: clone and fit
        it, with a candidate's parameters, on ``X``, ``y``, ``train``, ``test``.
    X, y : array-like
        The transformed train rows followed by the transformed test rows.
    train, test : ndarray
        Their positions in ``X`` and ``y``.
    fit_seconds, transform_seconds : float
        What fitting on the train rows and transforming the test rows took.
    """

    def __init__(self, estimator, n: int, X, y, train, test) -> None:
        from sklearn.base import clone
        from sklearn.utils import _safe_indexing

        t0 = time.perf_counter()
        prefix = clone(estimator[:n])
        X_train = prefix.fit_transform(_safe_indexing(X, train), _safe_indexing(y, train))
        t1 = time.perf_counter()
        X_test = prefix.transform(_safe_indexing(X, test))
        self.fit_seconds, self.transform_seconds = t1 - t0, time.perf_counter() - t1
        self.X = _stack(X_train, X_test)
        self.y = None if y is None else _stack(_safe_indexing(y, train),
                                               _safe_indexing(y, test))
        self.train = np.arange(len(train))
        self.test = np.arange(len(train), len(train) + len(test))
        self.estimator = clone(estimator).set_params(
            **{name: "passthrough" for name, _ in estimator.steps[:n]})

    def charge(self, row: dict, n_candidates: int) -> dict:
        """``row`` with its share of the shared steps' time added."""
        row["fit_time"] += self.fit_seconds / n_candidates
        row["score_time"] += self.transform_seconds / n_candidates
        return row


def _stack(first, second):
    """Rows of ``first`` then ``second``: arrays, sparse matrices or pandas objects."""
    import scipy.sparse as sp

    if sp.issparse(first):
        return sp.vstack([first, second], format=first.format)
    if hasattr(first, "iloc"):
        import pandas as pd

        return pd.concat([first, second], axis=0)
    return np.concatenate([np.asarray(first), np.asarray(second)], axis=0)
