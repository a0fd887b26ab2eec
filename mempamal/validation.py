"""Pre-flight checks: everything that can be caught before a file is written."""

from __future__ import annotations

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
    from .pickling import check_storable

    check_storable({"estimator": base})
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
    if isinstance(y, np.ndarray) and y.dtype.kind == "f" and not np.isfinite(y).all():
        bad = np.flatnonzero(~np.isfinite(y))
        raise ValidationError(
            f"y has {bad.size} NaN or infinite value(s) (first at index {bad[0]}); "
            "expected finite targets"
        )
    if isinstance(X, np.ndarray) and X.dtype == object:
        raise ValidationError(
            "X is a numpy array of dtype object; expected a numeric dtype "
            "(convert it, or pass a pandas DataFrame for mixed column types)"
        )


def check_finite(estimator, X) -> None:
    """Refuse NaN in X for an estimator that cannot take it, and inf always.

    Named by count and first position, so the user can find them.
    """
    if not (isinstance(X, np.ndarray) and X.dtype.kind in "fc"):
        return
    nan = np.isnan(X)
    inf = np.isinf(X)
    if inf.any():
        pos = np.argwhere(inf)[0]
        raise ValidationError(
            f"X holds {int(inf.sum())} infinite value(s) (first at row {pos[0]}"
            f"{', column ' + str(pos[1]) if len(pos) > 1 else ''}); expected finite values"
        )
    if nan.any() and not _allows_nan(estimator):
        pos = np.argwhere(nan)[0]
        raise ValidationError(
            f"X holds {int(nan.sum())} NaN value(s) (first at row {pos[0]}"
            f"{', column ' + str(pos[1]) if len(pos) > 1 else ''}) but "
            f"{type(estimator).__name__} does not accept missing values; impute them "
            "(e.g. a SimpleImputer step in a Pipeline) or drop them"
        )


def _allows_nan(estimator) -> bool:
    try:
        from sklearn.utils import get_tags

        return bool(get_tags(estimator).input_tags.allow_nan)
    except Exception:  # noqa: BLE001 - unknown estimators: let the fit decide
        return True


def as_cv(cv, name: str):
    """Check a CV argument's kind; a one-shot iterable of splits becomes a list.

    A generator would otherwise be consumed by the first look at it.
    """
    import numbers

    from sklearn.model_selection import check_cv

    if cv is None:
        return None
    if isinstance(cv, numbers.Integral) and not isinstance(cv, bool):
        if cv < 2:
            raise ValidationError(f"{name}={cv!r}: an int number of splits must be >= 2")
        return int(cv)
    if hasattr(cv, "split") and hasattr(cv, "get_n_splits"):
        return cv
    if isinstance(cv, (str, bytes, dict)) or not hasattr(cv, "__iter__"):
        raise ValidationError(
            f"{name}={cv!r}: expected an int, a scikit-learn splitter (KFold(...)) or an "
            "iterable of (train, test) index arrays"
        )
    splits = list(cv)
    try:
        check_cv(splits)
    except (TypeError, ValueError) as exc:
        raise ValidationError(f"{name}: invalid iterable of splits: {exc}") from exc
    return splits
