"""The one place that touches scikit-learn's private API, across its releases.

Tasks call scikit-learn's own private ``_fit_and_score`` (what ``GridSearchCV``
and ``cross_validate`` call) so that every number is scikit-learn's; its
signature has changed between releases. CI runs the test suite against the
oldest scikit-learn ``pyproject.toml`` allows and the newest.
"""

from __future__ import annotations

import inspect
import threading
from contextlib import contextmanager
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


class _ParamNames:
    """The state of :func:`param_names_cached`: who uses it, and what it knows.

    An instance, not class attributes: a classmethod stored on a class would
    come back bound to that class.
    """

    def __init__(self):
        self.lock = threading.Lock()
        self.users = 0
        self.inherited = None  # BaseEstimator's own classmethod, while ours stands in
        # its function, kept: a thread outside any block may have looked ours
        # up just before the last block put scikit-learn's back
        self.reads = None
        self.by_class: dict = {}

    def names(self, cls) -> list:
        names = self.by_class.get(cls)
        if names is None:  # an error (varargs ``__init__``) is raised every time, as before
            names = self.by_class[cls] = self.reads(cls)
        return list(names)  # a list of its own for each caller, as scikit-learn gives


_param_names = _ParamNames()


def _cached_param_names(cls) -> list:
    return _param_names.names(cls)


@contextmanager
def param_names_cached():
    """Within the block, scikit-learn reads each estimator class's parameter names once.

    ``clone``, ``set_params`` and every fit's parameter validation call
    ``BaseEstimator._get_param_names``, which runs ``inspect.signature`` on
    the class's ``__init__`` each time: 4 times per candidate, 130 us of a
    1.8 ms ``LogisticRegression`` fit and score (W2's fits). The names are a
    function of the class alone, and a class does not change while a task
    fits it, so a fit task asks the signature once per class. Every number
    stays scikit-learn's: the same names, in the same order.

    Thread-safe and re-entrant (Dask runs tasks in threads): the first block
    in puts the cache on ``BaseEstimator``, the last one out takes it away
    and forgets the classes. A release without a ``_get_param_names``
    classmethod is left alone.
    """
    from sklearn.base import BaseEstimator

    state = _param_names
    with state.lock:
        if state.users == 0:
            own = BaseEstimator.__dict__.get("_get_param_names")
            if isinstance(own, classmethod):
                state.inherited, state.reads = own, own.__func__
                BaseEstimator._get_param_names = classmethod(_cached_param_names)
        state.users += 1
    try:
        yield
    finally:
        with state.lock:
            state.users -= 1
            if state.users == 0 and state.inherited is not None:
                BaseEstimator._get_param_names = state.inherited
                state.inherited = None
                state.by_class.clear()


def is_pairwise(estimator) -> bool:
    """Whether ``estimator`` takes a kernel or distances between samples, not features.

    scikit-learn >= 1.6 reads it from ``get_tags``; before, from the private
    ``_get_tags()``.
    """
    try:
        from sklearn.utils import get_tags
    except ImportError:  # scikit-learn < 1.6
        return bool(estimator._get_tags().get("pairwise", False))
    return bool(get_tags(estimator).input_tags.pairwise)


def check_scoring(estimator, scoring, *, raise_exc: bool = True):
    """The scorer ``GridSearchCV`` and ``cross_validate`` build from ``scoring``.

    A list, tuple, set or dict gives one ``_MultimetricScorer`` that raises a
    metric's error when ``raise_exc`` (``error_score="raise"``) and otherwise
    records it as that metric's score. scikit-learn >= 1.6 builds it in
    ``check_scoring(..., raise_exc=)``; 1.5's ``check_scoring`` has no
    ``raise_exc`` and its search builds the multimetric scorer inline.
    """
    from sklearn.metrics import check_scoring as _check_scoring

    if "raise_exc" in inspect.signature(_check_scoring).parameters:
        return _check_scoring(estimator, scoring=scoring, raise_exc=raise_exc)
    if isinstance(scoring, (list, tuple, set, dict)):
        from sklearn.metrics._scorer import _check_multimetric_scoring, _MultimetricScorer

        scorers = _check_multimetric_scoring(estimator, scoring=scoring)
        return _MultimetricScorer(scorers=scorers, raise_exc=raise_exc)
    return _check_scoring(estimator, scoring=scoring)


def param_columns(candidates: list[dict]) -> dict:
    """The ``param_<name>`` masked arrays of ``cv_results_``, as scikit-learn builds them."""
    try:
        from sklearn.model_selection._search import _yield_masked_array_for_each_param
    except ImportError:  # pragma: no cover - releases that build them inline
        return _param_columns_inline(candidates)
    return dict(_yield_masked_array_for_each_param(candidates))


def _param_columns_inline(candidates: list[dict]) -> dict:
    # scikit-learn 1.5's BaseSearchCV._format_results, line for line: a
    # column gets the candidates' common numpy dtype, object if they have none
    from collections import defaultdict

    n_candidates = len(candidates)
    param_results = defaultdict(dict)
    for cand_idx, params in enumerate(candidates):
        for name, value in params.items():
            param_results[f"param_{name}"][cand_idx] = value
    out = {}
    for key, param_result in param_results.items():
        param_list = list(param_result.values())
        try:
            arr_dtype = np.result_type(*param_list)
        except TypeError:
            arr_dtype = object
        if len(param_list) == n_candidates and np.dtype(arr_dtype) != np.dtype(object):
            out[key] = np.ma.MaskedArray(param_list, mask=False, dtype=arr_dtype)
        else:
            ma = np.ma.MaskedArray(np.empty(n_candidates), mask=True, dtype=arr_dtype)
            for index, value in param_result.items():
                ma[index] = value
            out[key] = ma
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
