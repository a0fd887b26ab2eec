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
from sklearn import get_config
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


class _BlockPatch:
    """A change to scikit-learn that stands while at least one block needs it.

    Thread-safe and re-entrant (Dask runs tasks in threads): the first block
    in calls :meth:`install`, the last one out :meth:`remove`. Subclasses keep
    whatever they replace, so that a thread outside any block that looked the
    replacement up just before the last block ended can still call it.
    """

    def __init__(self):
        self.lock = threading.Lock()
        self.users = 0

    def install(self) -> None:
        raise NotImplementedError

    def remove(self) -> None:
        raise NotImplementedError

    @contextmanager
    def block(self):
        with self.lock:
            if self.users == 0:
                self.install()
            self.users += 1
        try:
            yield
        finally:
            with self.lock:
                self.users -= 1
                if self.users == 0:
                    self.remove()


class _ParamNames(_BlockPatch):
    """The state of :func:`param_names_cached`: who uses it, and what it knows.

    An instance, not class attributes: a classmethod stored on a class would
    come back bound to that class.
    """

    def __init__(self):
        super().__init__()
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

    def install(self) -> None:
        from sklearn.base import BaseEstimator

        own = BaseEstimator.__dict__.get("_get_param_names")
        if isinstance(own, classmethod):
            self.inherited, self.reads = own, own.__func__
            BaseEstimator._get_param_names = classmethod(_cached_param_names)

    def remove(self) -> None:
        from sklearn.base import BaseEstimator

        if self.inherited is not None:
            BaseEstimator._get_param_names = self.inherited
            self.inherited = None
            self.by_class.clear()


_param_names = _ParamNames()


def _cached_param_names(cls) -> list:
    return _param_names.names(cls)


def param_names_cached():
    """Within the block, scikit-learn reads each estimator class's parameter names once.

    ``clone``, ``set_params`` and every fit's parameter validation call
    ``BaseEstimator._get_param_names``, which runs ``inspect.signature`` on
    the class's ``__init__`` each time: 4 times per candidate, 130 us of a
    1.8 ms ``LogisticRegression`` fit and score (W2's fits). The names are a
    function of the class alone, and a class does not change while a task
    fits it, so a fit task asks the signature once per class. Every number
    stays scikit-learn's: the same names, in the same order.

    Thread-safe and re-entrant (see :class:`_BlockPatch`): the last block
    out puts scikit-learn's own classmethod back and forgets the classes. A
    release without a ``_get_param_names`` classmethod is left alone.
    """
    return _param_names.block()


class _NumpySplits(_BlockPatch):
    """The state of :func:`numpy_splits_direct`: scikit-learn's ``_safe_split``, kept."""

    def __init__(self):
        super().__init__()
        self.original = None  # kept after the last block, for the same race as above

    def split(self, estimator, X, y, indices, train_indices=None):
        if _rows_of_a_numpy_array(X, y, indices) and not is_pairwise(estimator):
            # what scikit-learn's _safe_indexing ends in for these inputs:
            # fancy indexing, so each call gets fresh arrays of its own
            return X[indices, ...], (None if y is None else y[indices, ...])
        return self.original(estimator, X, y, indices, train_indices)

    def install(self) -> None:
        from sklearn.model_selection import _validation

        own = _validation.__dict__.get("_safe_split")
        if own is not None:
            self.original = own
            _validation._safe_split = self.split

    def remove(self) -> None:
        from sklearn.model_selection import _validation

        if self.original is not None and _validation.__dict__.get("_safe_split") == self.split:
            _validation._safe_split = self.original


def _rows_of_a_numpy_array(X, y, indices) -> bool:
    return (isinstance(X, np.ndarray) and (y is None or isinstance(y, np.ndarray))
            and type(indices) is np.ndarray and indices.dtype.kind in "iu"
            and not get_config().get("array_api_dispatch", False))


_numpy_splits = _NumpySplits()


def numpy_splits_direct():
    """Within the block, ``_fit_and_score`` cuts a NumPy X's train and test rows directly.

    Its ``_safe_split`` goes through ``_safe_indexing``, which first finds out
    what X and y are (a DataFrame? a narwhals or pyarrow object? an array API
    namespace?): 27 us per call with scikit-learn 1.9, 4 calls per candidate,
    6 % of a 1.8 ms ``LogisticRegression`` fit and score (W2's fits). For a
    NumPy array X and y (a memmap included), integer indices, a non-pairwise
    estimator and array API dispatch off, it always ends in ``X[indices,
    ...]``; within the block that is done directly, as the same indexing, so
    every number stays scikit-learn's and each candidate gets fresh arrays
    (one that writes into its X changes nobody else's). Anything else (a
    DataFrame, a sparse matrix, a list, a precomputed kernel, boolean
    indices) goes to scikit-learn's own function.

    Thread-safe and re-entrant, as :func:`param_names_cached`; a release
    whose ``_fit_and_score`` module has no ``_safe_split`` is left alone.
    """
    return _numpy_splits.block()


def is_pairwise(estimator) -> bool:
    """Whether ``estimator`` takes a kernel or distances between samples, not features.

    scikit-learn >= 1.6 reads it from ``get_tags``; before, from the private
    ``_safe_tags`` (``_get_tags()``, or the defaults for an estimator that
    does not derive from ``BaseEstimator``), as ``_safe_split`` does.
    """
    try:
        from sklearn.utils import get_tags
    except ImportError:  # scikit-learn < 1.6: what its _safe_split reads
        from sklearn.utils._tags import _safe_tags

        return bool(_safe_tags(estimator, key="pairwise"))
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
