"""Scorers, resolved exactly as ``GridSearchCV`` and ``cross_validate`` do."""

from __future__ import annotations

from sklearn.metrics._scorer import _check_multimetric_scoring

from .errors import ValidationError
from .sklearn_compat import check_scoring


def scorer_names(estimator, scoring) -> list[str]:
    """Names of the metrics ``scoring`` produces (``["score"]`` if single)."""
    if is_multimetric(scoring):
        return list(_multi(estimator, scoring))
    return ["score"]


def is_multimetric(scoring) -> bool:
    """True for a list, tuple, set or dict of scorers."""
    return not (scoring is None or callable(scoring) or isinstance(scoring, str))


def resolve(estimator, scoring, error_score=float("nan")):
    """The scorer object scikit-learn's search would build from ``scoring``."""
    try:
        if callable(scoring):
            return scoring
        raise_exc = isinstance(error_score, str) and error_score == "raise"
        return check_scoring(estimator, scoring=scoring, raise_exc=raise_exc)
    except (TypeError, ValueError) as exc:
        raise ValidationError(f"invalid scoring {scoring!r}: {exc}") from exc


def _multi(estimator, scoring) -> dict:
    try:
        return _check_multimetric_scoring(estimator, scoring)
    except (TypeError, ValueError) as exc:
        raise ValidationError(f"invalid scoring {scoring!r}: {exc}") from exc


def as_dict(scores, names: list[str]) -> dict[str, float]:
    """Scores of one split as ``{name: value}`` for every name in ``names``.

    scikit-learn returns a bare float for a single metric, and for a failed
    fit may return one ``error_score`` for all metrics.
    """
    if isinstance(scores, dict):
        return {k: float(scores[k]) for k in names}
    return {k: float(scores) for k in names}
