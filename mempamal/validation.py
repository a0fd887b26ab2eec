"""Pre-flight checks: everything that can be caught before a file is written."""

from __future__ import annotations

import pickle

import numpy as np
from sklearn.base import BaseEstimator, clone
from sklearn.utils.validation import _num_samples

from .errors import ValidationError


def check_estimator_and_candidates(estimator, candidates) -> None:
    """Clone and pickle the estimator; apply every candidate to a clone.

    A misspelt parameter name or a value of the wrong type or range fails here,
    naming the candidate and the parameter, rather than in every fit task.
    """
    if not hasattr(estimator, "fit"):
        raise ValidationError(
            f"estimator {estimator!r} has no fit method; expected a scikit-learn estimator"
        )
    try:
        base = clone(estimator)
    except Exception as exc:  # noqa: BLE001 - any clone failure is the user's
        raise ValidationError(f"estimator {estimator!r} cannot be cloned: {exc}") from exc
    try:
        pickle.dumps(base)
    except Exception as exc:  # noqa: BLE001
        raise ValidationError(
            f"estimator {estimator!r} cannot be pickled (tasks load it from a file): {exc}"
        ) from exc
    for k, cand in enumerate(candidates):
        est = clone(base)
        try:
            est.set_params(**clone(cand, safe=False))
        except ValueError as exc:
            raise ValidationError(f"candidate {k} {cand!r}: {exc}") from exc
        _check_param_values(est, k, cand)


def _check_param_values(est, k: int, cand: dict) -> None:
    """Run scikit-learn's own parameter constraints on every sub-estimator."""
    parts = [est] + [v for v in est.get_params(deep=True).values()
                     if isinstance(v, BaseEstimator)]
    for part in parts:
        # only estimators that declare constraints (scikit-learn's own) can be checked
        validate = getattr(part, "_validate_params", None)
        if validate is None or not hasattr(part, "_parameter_constraints"):
            continue
        try:
            validate()
        except (ValueError, TypeError) as exc:
            raise ValidationError(f"candidate {k} {cand!r}: {exc}") from exc


def check_data(X, y, groups) -> None:
    """Check that X, y and groups have matching lengths and usable dtypes."""
    if X is None:
        raise ValidationError("X is None; expected an array-like of shape (n_samples, n_features)")
    try:
        n = _num_samples(X)
    except TypeError as exc:
        raise ValidationError(f"X of type {type(X).__name__} is not array-like: {exc}") from exc
    if n == 0:
        raise ValidationError("X has 0 samples; expected at least one")
    for name, arr in (("y", y), ("groups", groups)):
        if arr is None:
            continue
        try:
            m = _num_samples(arr)
        except TypeError as exc:
            raise ValidationError(f"{name} of type {type(arr).__name__} is not array-like") from exc
        if m != n:
            raise ValidationError(f"{name} has {m} samples but X has {n}; expected equal lengths")
    if isinstance(X, np.ndarray) and X.dtype == object:
        raise ValidationError(
            "X is a numpy array of dtype object; expected a numeric dtype "
            "(convert it, or pass a pandas DataFrame for mixed column types)"
        )
