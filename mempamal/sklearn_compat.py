"""The one place that touches scikit-learn's private API, across its releases.

Tasks call scikit-learn's own private ``_fit_and_score`` (what ``GridSearchCV``
and ``cross_validate`` call) so that every number is scikit-learn's; its
signature has changed between releases. CI runs the test suite against the
oldest scikit-learn ``pyproject.toml`` allows and the newest.
"""

from __future__ import annotations

import inspect
from functools import lru_cache

import numpy as np
from sklearn.model_selection._validation import _fit_and_score


@lru_cache(maxsize=1)
def _fit_and_score_parameters() -> frozenset:
    return frozenset(inspect.signature(_fit_and_score).parameters)


def fit_and_score(estimator, X, y, *, scorer, train, test, parameters, fit_params=None,
                  score_params=None, return_train_score=False, return_estimator=False,
                  error_score=np.nan) -> dict:
    """``sklearn.model_selection._validation._fit_and_score``, any supported release.

    Returns its result dict (``test_scores``, ``fit_time``, ``score_time``,
    ``fit_error``, and ``train_scores`` / ``estimator`` when asked).
    """
    kwargs = dict(scorer=scorer, train=train, test=test, verbose=0, parameters=parameters,
                  fit_params=fit_params, score_params=score_params,
                  return_train_score=return_train_score, return_times=True,
                  return_estimator=return_estimator, error_score=error_score)
    accepted = _fit_and_score_parameters()
    if "score_params" not in accepted:  # releases before metadata routing of scorers
        kwargs.pop("score_params")
    return _fit_and_score(estimator, X, y, **kwargs)


def param_columns(candidates: list[dict]) -> dict:
    """The ``param_<name>`` masked arrays of ``cv_results_``, as scikit-learn builds them."""
    try:
        from sklearn.model_selection._search import _yield_masked_array_for_each_param
    except ImportError:  # pragma: no cover - releases that build them inline
        return _param_columns_inline(candidates)
    return dict(_yield_masked_array_for_each_param(candidates))


def _param_columns_inline(candidates: list[dict]) -> dict:
    n = len(candidates)
    out = {}
    for name in sorted({k for c in candidates for k in c}):
        arr = np.ma.MaskedArray(np.empty(n, dtype=object), mask=True)
        for i, cand in enumerate(candidates):
            if name in cand:
                arr[i] = cand[name]
        out[f"param_{name}"] = arr
    return out


def search_routed_params(search, params: dict) -> dict:
    """What ``search.fit(X, y, **params)`` gives its candidates' fit and its scorer.

    ``{"fit": {...}, "score": {...}}``, from the search's own
    ``_get_routed_params_for_fit`` (releases differ: some forward
    ``sample_weight`` to the scorer without metadata routing, some do not).
    """
    routed = search._get_routed_params_for_fit(dict(params))
    return {"fit": dict(routed.estimator.fit), "score": dict(routed.scorer.score)}


def refit_on_all(estimator, parameters: dict, X, y, fit_params: dict):
    """``GridSearchCV``'s refit: the best parameters, fitted on all of X (a copy).

    X is read through scikit-learn's own ``_safe_split`` (a kernel matrix is
    sliced on both axes) and the fit parameters through
    ``_check_method_params``, as ``_fit_and_score`` reads a train set.
    """
    from sklearn.base import clone
    from sklearn.utils.metaestimators import _safe_split
    from sklearn.utils.validation import _check_method_params, _num_samples

    everything = np.arange(_num_samples(X))
    estimator = estimator.set_params(**clone(parameters, safe=False))
    X_all, y_all = _safe_split(estimator, X, y, everything)
    params = _check_method_params(X, params=fit_params or {}, indices=everything)
    if y_all is None:
        return estimator.fit(X_all, **params)
    return estimator.fit(X_all, y_all, **params)
