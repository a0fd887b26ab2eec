"""A fit task does less of scikit-learn's protocol per candidate, with its numbers.

scikit-learn's ``clone``, ``set_params`` and each fit's validation read the
names from the class's ``__init__`` signature, 4 times per candidate;
:func:`mempamal.sklearn_compat.param_names_cached` keeps them for the
duration of a block. ``_fit_and_score`` cuts each candidate's train and test
rows through a type dispatch; :func:`mempamal.sklearn_compat.numpy_splits_direct`
cuts a NumPy array's rows directly. The oracle for the numbers is
scikit-learn's nested CV.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
from helpers import ScribblingClassifier, iris
from sklearn.base import BaseEstimator, clone
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, StratifiedKFold, cross_validate
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from mempamal import Experiment, load_results
from mempamal.runner import run_task
from mempamal.sklearn_compat import numpy_splits_direct, param_names_cached

OUTER, INNER = StratifiedKFold(3, shuffle=True, random_state=0), StratifiedKFold(3)
GRID = {"C": np.logspace(-2, 2, 12)}


def _own_method():
    return BaseEstimator.__dict__["_get_param_names"]


@pytest.fixture
def asked(monkeypatch):
    """The classes scikit-learn reads the signature of, one entry per reading."""
    seen = []
    inherited = _own_method().__func__

    def counting(cls):
        seen.append(cls)
        return inherited(cls)

    monkeypatch.setattr(BaseEstimator, "_get_param_names", classmethod(counting))
    return seen


def test_a_fit_task_reads_each_class_signature_once_and_gives_scikit_learns_numbers(
        tmp_path, asked):
    X, y = iris()
    est = LogisticRegression(max_iter=500)
    wf = Experiment(est, param_grid=GRID, cv=OUTER, inner_cv=INNER).compile(
        tmp_path / "w", X, y, chunk_size=6)
    fits = [t for t in wf.tasks if t.startswith("fit-")]
    assert len(fits) == 3 * 3 * 2
    asked.clear()
    for tid in fits:  # in this process, so that the readings can be counted
        assert run_task(tmp_path / "w", tid).ok
    # one reading per fit task (the first clone), where each of the 6
    # candidates made 4 before: clone (twice), set_params, the fit's checks
    assert asked == [LogisticRegression] * len(fits)
    assert _own_method().__func__.__name__ == "counting"  # the cache is gone again
    _assert_scikit_learns_numbers(wf, est, GRID, X, y)


def _assert_scikit_learns_numbers(wf, est, grid, X, y):
    """Finish ``wf`` locally; its results are ``cross_validate(GridSearchCV)``'s."""
    wf.run("local", n_jobs=2, progress=False)
    res = load_results(wf.workdir.root)
    oracle = cross_validate(GridSearchCV(est, grid, cv=INNER), X, y, cv=OUTER,
                            return_estimator=True)
    assert res.best_params == [e.best_params_ for e in oracle["estimator"]]
    np.testing.assert_allclose(res.outer_scores["test_score"].to_numpy(),
                               oracle["test_score"], rtol=0, atol=1e-12)
    for o, search in enumerate(oracle["estimator"]):
        ours = res.cv_results[res.cv_results.outer_split == o].reset_index(drop=True)
        for col in ("split0_test_score", "split2_test_score", "mean_test_score"):
            np.testing.assert_allclose(ours[col].to_numpy(), search.cv_results_[col],
                                       rtol=0, atol=1e-12, err_msg=col)


def test_checking_every_candidate_before_compiling_reads_the_signature_once(asked):
    readings = []
    for n in (12, 48):
        asked.clear()
        Experiment(LogisticRegression(), param_grid={"C": np.logspace(-2, 2, n)}, cv=OUTER,
                   inner_cv=INNER)
        readings.append(len(asked))
    # the same few readings (the first clone's, before the candidates) for
    # 12 candidates as for 48, where each made 5 more before
    assert readings[0] == readings[1] <= 3
    assert set(asked) == {LogisticRegression}


def test_each_class_of_a_pipeline_is_read_once_within_a_block(asked):
    pipe = make_pipeline(StandardScaler(), LogisticRegression())
    with param_names_cached():
        for _ in range(5):
            clone(pipe).set_params(logisticregression__C=2.0).get_params(deep=True)
    assert sorted(c.__name__ for c in asked) == ["LogisticRegression", "Pipeline",
                                                  "StandardScaler"]


def test_after_the_block_scikit_learn_has_its_own_method_and_block_after_block_works():
    own = _own_method()
    names = LogisticRegression._get_param_names()
    for _ in range(3):  # a persistent worker runs task after task
        with param_names_cached():
            assert _own_method() is not own
            assert LogisticRegression._get_param_names() == names
            assert clone(LogisticRegression(C=3.0)).get_params()["C"] == 3.0
        assert _own_method() is own  # the very object: not a copy bound to another class
    assert LogisticRegression._get_param_names() == names


def test_each_caller_gets_a_list_of_its_own():
    with param_names_cached():
        first = LogisticRegression._get_param_names()
        first.append("not a parameter")
        assert "not a parameter" not in LogisticRegression._get_param_names()


def test_nested_and_threaded_blocks_leave_the_method_once_the_last_ends():
    own = _own_method()
    inside, release, errors = threading.Barrier(5), threading.Event(), []

    def task(c):
        try:
            with param_names_cached():
                inside.wait(timeout=10)
                release.wait(timeout=10)
                assert clone(LogisticRegression(C=c)).get_params()["C"] == c
        except Exception as exc:  # noqa: BLE001 - reported to the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=task, args=(float(c),)) for c in range(4)]
    with param_names_cached():
        for t in threads:
            t.start()
        inside.wait(timeout=10)  # all four are in their blocks
        with param_names_cached():  # re-entered in the same thread
            pass
        assert _own_method() is not own  # three blocks still open
        release.set()
        for t in threads:
            t.join(timeout=10)
        assert _own_method() is not own  # ours is still open
    assert not errors
    assert _own_method() is own


def test_a_varargs_init_is_refused_every_time_as_scikit_learn_refuses_it():
    class Bad(BaseEstimator):
        def __init__(self, *args):
            self.args = args

    with pytest.raises(RuntimeError) as plain:
        Bad().get_params()
    with param_names_cached():
        for _ in range(2):
            with pytest.raises(RuntimeError) as cached:
                Bad().get_params()
            assert str(cached.value) == str(plain.value)


def test_a_class_defined_again_between_blocks_gets_its_new_names():
    def define(name):
        ns = {"BaseEstimator": BaseEstimator}
        exec(f"class Model(BaseEstimator):\n def __init__(self, {name}=1):\n"
             f"  self.{name} = {name}\n", ns)
        return ns["Model"]

    with param_names_cached():
        assert define("alpha")().get_params() == {"alpha": 1}
    with param_names_cached():
        assert define("beta")().get_params() == {"beta": 1}
        assert define("gamma")().get_params() == {"gamma": 1}  # within one block too


def test_a_lookup_made_inside_a_block_still_works_after_it():
    """A thread outside any block may take ours just before the last block ends."""
    with param_names_cached():
        taken = LogisticRegression._get_param_names  # bound to the cache
    assert taken() == LogisticRegression._get_param_names()


# -- numpy_splits_direct ------------------------------------------------------
@pytest.fixture
def dispatched(monkeypatch):
    """The calls that reach scikit-learn's own ``_safe_split``, one entry per call."""
    from sklearn.model_selection import _validation

    seen = []
    own = _validation._safe_split

    def counting(estimator, X, y, indices, train_indices=None):
        seen.append(type(X).__name__)
        return own(estimator, X, y, indices, train_indices)

    monkeypatch.setattr(_validation, "_safe_split", counting)
    return seen


def _split_in_block(*args):
    from sklearn.model_selection import _validation

    with numpy_splits_direct():
        return _validation._safe_split(*args)


def test_a_numpy_arrays_rows_are_cut_directly_as_scikit_learn_cuts_them(tmp_path, dispatched):
    from sklearn.utils.metaestimators import _safe_split

    X, y = iris()
    np.save(tmp_path / "X.npy", X)
    memmap = np.load(tmp_path / "X.npy", mmap_mode="r")  # how a task reads X
    train, test = np.arange(0, 150, 2), np.arange(1, 150, 2)
    est = LogisticRegression()
    for data in (X, memmap, X.astype(np.float32), np.asfortranarray(X)):
        for args in ((train,), (test, train)):
            ours = _split_in_block(est, data, y, *args)
            theirs = _safe_split(est, data, y, *args)
            for a, b in zip(ours, theirs):
                assert type(a) is type(b) is np.ndarray
                assert a.dtype == b.dtype and a.strides == b.strides
                np.testing.assert_array_equal(a, b)
            assert not np.shares_memory(ours[0], data) and ours[0].flags.writeable
    Xo, yo = _split_in_block(est, X, None, train)
    assert yo is None and Xo.shape == (75, 4)
    assert dispatched == []  # none of them went through the type dispatch


def test_anything_else_goes_to_scikit_learns_own_split(dispatched, monkeypatch):
    import pandas as pd
    import scipy.sparse as sp
    import sklearn
    from sklearn.svm import SVC

    X, y = iris()
    rows = np.arange(0, 150, 3)
    est = LogisticRegression()
    df = _split_in_block(est, pd.DataFrame(X), y, rows)[0]
    assert isinstance(df, pd.DataFrame) and list(df.index) == list(rows)
    assert sp.issparse(_split_in_block(est, sp.csr_matrix(X), y, rows)[0])
    assert _split_in_block(est, X, list(y), rows)[1] == list(y[rows])
    assert _split_in_block(est, X, y, np.isin(np.arange(150), rows))[0].shape == (50, 4)
    kernel = X @ X.T  # a precomputed kernel is cut on both axes
    assert _split_in_block(SVC(kernel="precomputed"), kernel, y, rows)[0].shape == (50, 50)
    assert _split_in_block(SVC(kernel="precomputed"), kernel, y, rows[:5], rows)[0].shape \
        == (5, 50)
    import mempamal.sklearn_compat as compat

    config = sklearn.get_config()
    monkeypatch.setattr(compat, "get_config", lambda: {**config, "array_api_dispatch": True})
    _split_in_block(est, X, y, rows)  # an array API namespace decides there
    assert dispatched == ["DataFrame", "csr_matrix", "ndarray", "ndarray", "ndarray",
                          "ndarray", "ndarray"]


class _Duck:
    """An estimator by its methods alone, not a ``BaseEstimator``."""

    def fit(self, X, y):
        return self

    def get_params(self, deep=True):
        return {}

    def set_params(self, **params):
        return self


def test_an_estimator_that_is_not_a_base_estimator_is_cut_as_scikit_learn_cuts_it():
    from sklearn.utils.metaestimators import _safe_split

    X, y = iris()
    rows = np.arange(0, 150, 5)
    outcomes = []
    for split in (_safe_split, lambda *args: _split_in_block(*args)):
        try:
            outcomes.append(split(_Duck(), X, y, rows))
        except Exception as exc:  # noqa: BLE001 - a release may refuse it: both must
            outcomes.append(type(exc))
    theirs, ours = outcomes
    if isinstance(theirs, type):
        assert ours is theirs
    else:
        for a, b in zip(ours, theirs):
            np.testing.assert_array_equal(a, b)


def test_after_the_blocks_scikit_learn_has_its_own_split_again():
    from sklearn.model_selection import _validation

    own = _validation._safe_split
    for _ in range(2):
        with numpy_splits_direct():
            with numpy_splits_direct():
                assert _validation._safe_split is not own
            assert _validation._safe_split is not own
            taken = _validation._safe_split  # a lookup made just before the end
        assert _validation._safe_split is own
    X, y = iris()
    np.testing.assert_array_equal(taken(LogisticRegression(), X, y, np.arange(3))[0], X[:3])


def test_fits_that_write_into_their_x_give_scikit_learns_numbers(tmp_path, dispatched):
    """Each candidate's rows are its own: not a view of the data, not shared."""
    X, y = iris()
    est, grid = ScribblingClassifier(), {"C": [0.01, 0.1, 1.0, 10.0]}
    wf = Experiment(est, param_grid=grid, cv=OUTER, inner_cv=INNER).compile(
        tmp_path / "w", X, y, chunk_size=4)
    for tid in [t for t in wf.tasks if t.startswith("fit-")]:  # here, to see the dispatch
        assert run_task(tmp_path / "w", tid).ok
    assert dispatched == []  # every candidate's rows were cut directly
    _assert_scikit_learns_numbers(wf, est, grid, X, y)
