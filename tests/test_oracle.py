"""mempamal's nested CV equals scikit-learn's, number for number.

The oracle is ``cross_validate(GridSearchCV(...), cv=outer, return_estimator=True)``
on the same splits: best params from the returned estimators, outer test
scores, and the inner ``cv_results_`` of each outer split.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import loguniform
from sklearn.datasets import load_digits, load_iris, make_classification
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import (
    GridSearchCV,
    GroupKFold,
    KFold,
    RandomizedSearchCV,
    StratifiedKFold,
    cross_validate,
)
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from mempamal import Experiment, load_results


def _digits(n=400):
    X, y = load_digits(return_X_y=True)
    return X[:n], y[:n]


def _run(exp, tmp_path, X, y, groups=None, **compile_kw):
    compile_kw.setdefault("chunk_size", 2)
    wf = exp.compile(tmp_path / "work", X, y, groups, **compile_kw)
    wf.run("local", n_jobs=2, progress=False)
    return load_results(tmp_path / "work")


def _oracle(search, X, y, outer, scoring, groups=None, **kw):
    params = {"groups": groups} if groups is not None else None
    return cross_validate(search, X, y, groups=groups, cv=outer, scoring=scoring,
                          return_estimator=True, params=params, **kw)


def _check(res, oracle, scorer_names, multimetric):
    assert res.best_params == [est.best_params_ for est in oracle["estimator"]]
    for name in scorer_names:
        key = f"test_{name}" if multimetric else "test_score"
        np.testing.assert_allclose(res.outer_scores[key].to_numpy(), oracle[key],
                                   rtol=0, atol=1e-12)


CASES = {
    "pipeline-multiclass": dict(
        data=lambda: _digits(),
        est=lambda: make_pipeline(StandardScaler(), SVC()),
        grid={"svc__C": [0.1, 1, 10], "svc__gamma": [1e-3, 1e-2]},
        outer=StratifiedKFold(4, shuffle=True, random_state=0), inner=StratifiedKFold(3),
        scoring="accuracy", refit=True),
    "multimetric-refit-named": dict(
        data=lambda: make_classification(300, 10, random_state=1),
        est=lambda: LogisticRegression(max_iter=500),
        grid={"C": [0.01, 0.1, 1, 10]},
        outer=StratifiedKFold(3, shuffle=True, random_state=2), inner=3,
        scoring={"acc": "accuracy", "bal": "balanced_accuracy", "auc": "roc_auc"},
        refit="bal"),
    "shuffled-kfold": dict(
        data=lambda: load_iris(return_X_y=True),
        est=lambda: SVC(),
        grid={"C": [0.1, 1, 10], "kernel": ["rbf", "linear"]},
        outer=KFold(5, shuffle=True, random_state=42), inner=KFold(3, shuffle=True,
                                                                     random_state=7),
        scoring="f1_macro", refit=True),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_grid_search_equals_sklearn(case, tmp_path):
    c = CASES[case]
    X, y = c["data"]()
    exp = Experiment(c["est"](), param_grid=c["grid"], cv=c["outer"], inner_cv=c["inner"],
                     scoring=c["scoring"], refit=c["refit"])
    res = _run(exp, tmp_path, X, y)
    search = GridSearchCV(c["est"](), c["grid"], cv=c["inner"], scoring=c["scoring"],
                          refit=c["refit"])
    oracle = _oracle(search, X, y, c["outer"], c["scoring"])
    multi = isinstance(c["scoring"], dict)
    _check(res, oracle, exp.scorer_names, multi)
    # inner cv_results of every outer split equal GridSearchCV's cv_results_
    for o, est in enumerate(oracle["estimator"]):
        ours = res.cv_results[res.cv_results.outer_split == o].reset_index(drop=True)
        for name in exp.scorer_names:
            for col in (f"mean_test_{name}", f"std_test_{name}", f"rank_test_{name}",
                        f"split0_test_{name}"):
                np.testing.assert_allclose(ours[col].to_numpy(), est.cv_results_[col],
                                           rtol=0, atol=1e-12, err_msg=col)
        assert list(ours["params"]) == est.cv_results_["params"]


def test_group_kfold_with_groups(tmp_path):
    X, y = make_classification(240, 8, random_state=3)
    groups = np.repeat(np.arange(24), 10)
    grid = {"C": [0.1, 1, 10]}
    exp = Experiment(LogisticRegression(max_iter=500), param_grid=grid, cv=GroupKFold(4),
                     inner_cv=GroupKFold(3), scoring="accuracy")
    res = _run(exp, tmp_path, X, y, groups)
    search = GridSearchCV(LogisticRegression(max_iter=500), grid, cv=GroupKFold(3),
                          scoring="accuracy")
    oracle = _oracle(search, X, y, GroupKFold(4), "accuracy", groups=groups)
    _check(res, oracle, ["score"], False)


def test_random_search_equals_randomized_search_cv(tmp_path):
    X, y = load_iris(return_X_y=True)
    dist = {"C": loguniform(1e-2, 1e2), "gamma": loguniform(1e-3, 1)}
    exp = Experiment(SVC(), param_distributions=dist, n_iter=6, random_state=0,
                     cv=StratifiedKFold(3, shuffle=True, random_state=0), inner_cv=3)
    res = _run(exp, tmp_path, X, y)
    search = RandomizedSearchCV(SVC(), dist, n_iter=6, random_state=0, cv=3)
    oracle = _oracle(search, X, y, StratifiedKFold(3, shuffle=True, random_state=0), None)
    _check(res, oracle, ["score"], False)
    assert exp.candidates == oracle["estimator"][0].cv_results_["params"]


def test_no_inner_cv_equals_cross_validate(tmp_path):
    X, y = load_iris(return_X_y=True)
    est = make_pipeline(StandardScaler(), LogisticRegression(max_iter=300))
    outer = StratifiedKFold(5, shuffle=True, random_state=1)
    exp = Experiment(est, cv=outer, inner_cv=None, scoring=["accuracy", "f1_macro"],
                     refit="accuracy", return_train_score=True)
    res = _run(exp, tmp_path, X, y)
    oracle = cross_validate(est, X, y, cv=outer, scoring=["accuracy", "f1_macro"],
                            return_train_score=True)
    for key in ("test_accuracy", "test_f1_macro", "train_accuracy", "train_f1_macro"):
        np.testing.assert_allclose(res.outer_scores[key].to_numpy(), oracle[key],
                                   rtol=0, atol=1e-12)
    assert res.cv_results.empty


def test_explicit_candidates_and_train_scores(tmp_path):
    X, y = load_iris(return_X_y=True)
    cands = [{"C": 10.0, "kernel": "linear"}, {"C": 0.5}]
    exp = Experiment(SVC(), candidates=cands, cv=3, inner_cv=3, return_train_score=True)
    res = _run(exp, tmp_path, X, y)
    search = GridSearchCV(SVC(), [{k: [v] for k, v in c.items()} for c in cands], cv=3,
                          return_train_score=True)
    oracle = _oracle(search, X, y, 3, None, return_train_score=True)
    _check(res, oracle, ["score"], False)
    np.testing.assert_allclose(res.outer_scores["train_score"], oracle["train_score"],
                               rtol=0, atol=1e-12)
    ours = res.cv_results[res.cv_results.outer_split == 0]
    np.testing.assert_allclose(ours["mean_train_score"],
                               oracle["estimator"][0].cv_results_["mean_train_score"],
                               rtol=0, atol=1e-12)


def test_subprocess_mode_gives_identical_results(tmp_path):
    """Each task as its real shell command (what a cluster runs) = persistent workers."""
    X, y = load_iris(return_X_y=True)
    exp = Experiment(SVC(), param_grid={"C": [0.1, 1, 10]}, cv=3, inner_cv=2)
    a = exp.compile(tmp_path / "a", X, y, chunk_size=3)
    a.run("local", n_jobs=2, progress=False)
    b = exp.compile(tmp_path / "b", X, y, chunk_size=3)
    b.run("local", n_jobs=2, subprocess=True, progress=False)
    from helpers import assert_same_results

    assert_same_results(load_results(tmp_path / "a"), load_results(tmp_path / "b"))
