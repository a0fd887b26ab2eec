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
    from .sklearn_compat import param_names_cached

    with param_names_cached():  # 5 signature readings per candidate otherwise
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


def non_finite(X) -> tuple[int, int, tuple, np.ndarray] | None:
    """``(n_nan, n_inf, first position, rows)`` of the NaN/inf in X, or None if none.

    Looks at numeric arrays and at the numeric columns of a DataFrame.
    """
    if hasattr(X, "select_dtypes"):  # DataFrame: its numeric columns
        values = X.select_dtypes(include="number").to_numpy(dtype=float)
    elif isinstance(X, np.ndarray) and X.dtype.kind in "fc":
        values = X
    else:
        return None
    nan, inf = np.isnan(values), np.isinf(values)
    if not (nan.any() or inf.any()):
        return None
    bad = nan | inf
    pos = tuple(int(p) for p in np.argwhere(bad)[0])
    rows = np.flatnonzero(bad.reshape(len(bad), -1).any(axis=1))
    return int(nan.sum()), int(inf.sum()), pos, rows


def check_non_finite(X, probe) -> None:
    """Refuse NaN/inf in X only when the estimator itself fails on them.

    scikit-learn's ``allow_nan`` tag is False for Pipeline whatever its steps
    (an imputer first makes NaN fine), so the estimator is asked instead:
    ``probe(rows)`` fits it once, on the first split's train set plus the
    ``rows`` holding such values, and raises what it raises.
    Its own error is reported, with the count and first position of the
    values, before anything is written.
    """
    found = non_finite(X)
    if found is None:
        return
    n_nan, n_inf, pos, rows = found
    try:
        probe(rows)
    except Exception as exc:  # noqa: BLE001 - only the estimator's verdict matters
        text = str(exc)
        if not any(w in text.lower() for w in ("nan", "infinity", "missing value", "finite")):
            return  # another problem: the run reports it in its context
        where = f"row {pos[0]}" + (f", column {pos[1]}" if len(pos) > 1 else "")
        what = " and ".join(f"{n} {kind} value(s)" for n, kind in
                            ((n_nan, "NaN"), (n_inf, "infinite")) if n)
        raise ValidationError(
            f"X holds {what} (first at {where}) and the estimator fails on them when "
            f"fitted on them: {type(exc).__name__}: {text.splitlines()[0]}; "
            "impute them (e.g. a SimpleImputer step in a Pipeline) or drop them"
        ) from exc


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


#: resource hints a task may carry, and what each must be
_RESOURCES = {"cpus": "a positive int", "mem_mb": "a positive number of MiB",
              "time_min": "a positive number of minutes", "gpus": "a non-negative int"}


def check_resources(resources) -> dict:
    """Refuse unknown or malformed resource hints, naming the key and what was expected."""
    import numbers

    if resources is None:
        return {}
    if not isinstance(resources, dict):
        raise ValidationError(f"resources must be a dict such as {{'cpus': 1, 'gpus': 1}}, "
                              f"got {resources!r}")
    for key, value in resources.items():
        if key not in _RESOURCES:
            raise ValidationError(f"resources[{key!r}] is not a resource hint; expected one "
                                  f"of {sorted(_RESOURCES)}")
        integral = key in ("cpus", "gpus")
        ok = (isinstance(value, numbers.Integral if integral else numbers.Real)
              and not isinstance(value, bool)
              and (value >= 0 if key == "gpus" else value > 0))
        if not ok:
            raise ValidationError(f"resources[{key!r}]={value!r}: expected "
                                  f"{_RESOURCES[key]}")
    return dict(resources)
