"""A Pipeline's first steps, set by no candidate, are fitted once per fit task.

The oracle is scikit-learn: ``cross_validate(GridSearchCV(...))`` on the same
splits gives the same best parameters, outer scores and inner ``cv_results_``
whether or not the steps were shared (see mempamal.recipes.nested_cv.prefix).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from helpers import CountingScaler
from sklearn.datasets import load_digits, make_classification
from sklearn.decomposition import PCA
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, StratifiedKFold, cross_validate
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler, TargetEncoder
from sklearn.svm import SVC, LinearSVC

from mempamal import Experiment, load_results
from mempamal.recipes.nested_cv.prefix import SharedPrefix, shared_steps
from mempamal.recipes.nested_cv.tasks import _with_shared_prefix

OUTER = StratifiedKFold(3, shuffle=True, random_state=0)
INNER = StratifiedKFold(3)


def _nested(est, grid, X, y, tmp_path, **kw):
    """mempamal's results and scikit-learn's, on the same splits."""
    exp = Experiment(est, param_grid=grid, cv=OUTER, inner_cv=INNER, **kw)
    wf = exp.compile(tmp_path / "w", X, y, chunk_size=3)
    wf.run("local", n_jobs=2, progress=False)
    oracle = cross_validate(GridSearchCV(est, grid, cv=INNER, **kw), X, y, cv=OUTER,
                            return_estimator=True)
    return wf, load_results(tmp_path / "w"), oracle


def _check_equal(res, oracle):
    assert res.best_params == [e.best_params_ for e in oracle["estimator"]]
    np.testing.assert_allclose(res.outer_scores["test_score"].to_numpy(),
                               oracle["test_score"], rtol=0, atol=1e-12)
    for o, est in enumerate(oracle["estimator"]):
        ours = res.cv_results[res.cv_results.outer_split == o].reset_index(drop=True)
        for col in ("mean_test_score", "split0_test_score", "split2_test_score",
                    "rank_test_score"):
            np.testing.assert_allclose(ours[col].to_numpy(), est.cv_results_[col],
                                       rtol=0, atol=1e-12, err_msg=col)


def _fits_logged(path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def test_unchanged_steps_are_fitted_once_per_fit_task_with_sklearn_numbers(tmp_path):
    X, y = load_digits(return_X_y=True)
    X, y = X[:450], y[:450]
    log = tmp_path / "fits.log"
    est = make_pipeline(CountingScaler(log_file=str(log)), PCA(20, random_state=0), SVC())
    grid = {"svc__C": [0.1, 1, 10], "svc__gamma": [1e-3, 1e-2]}
    wf, res, oracle = _nested(est, grid, X, y, tmp_path)
    _check_equal(res, oracle)
    fit_tasks = [t for t in wf.tasks if t.startswith("fit-")]
    by_sklearn = 3 * 3 * 6 + 3  # every candidate of every inner split, then 3 refits
    ours = _fits_logged(log) - by_sklearn
    # one prefix fit per fit task (2 per split of 6 candidates), one refit per outer split
    assert ours == len(fit_tasks) + 3 == 9 * 2 + 3


def test_a_grid_over_a_first_step_fits_everything_for_every_candidate(tmp_path):
    X, y = make_classification(240, 8, random_state=0)
    log = tmp_path / "fits.log"
    est = make_pipeline(CountingScaler(log_file=str(log)), LogisticRegression())
    grid = {"countingscaler__scale": [1.0, 2.0], "logisticregression__C": [0.1, 1.0, 10.0]}
    wf, res, oracle = _nested(est, grid, X, y, tmp_path)
    _check_equal(res, oracle)
    assert _fits_logged(log) == 2 * (3 * 3 * 6 + 3)  # ours as many as scikit-learn's


def test_dataframes_out_of_the_shared_steps(tmp_path):
    X, y = make_classification(300, 6, random_state=2)
    X = pd.DataFrame(X, columns=[f"f{k}" for k in range(6)])
    est = make_pipeline(StandardScaler(), LogisticRegression()).set_output(transform="pandas")
    _, res, oracle = _nested(est, {"logisticregression__C": [0.01, 0.1, 1.0]}, X, y, tmp_path)
    _check_equal(res, oracle)


def test_sparse_text_features_out_of_the_shared_steps(tmp_path):
    rng = np.random.default_rng(0)
    words = [f"w{k}" for k in range(40)]
    y = rng.integers(0, 2, 240)
    docs = [" ".join(rng.choice(words[:25] if c else words[15:], 12)) for c in y]
    est = make_pipeline(TfidfVectorizer(), LinearSVC())
    _, res, oracle = _nested(est, {"linearsvc__C": [0.01, 0.1, 1.0]}, docs, y, tmp_path)
    _check_equal(res, oracle)


@pytest.mark.filterwarnings("ignore:.*TargetEncoder.shuffle:FutureWarning")
def test_a_step_whose_fit_transform_is_not_its_transform(tmp_path):
    """TargetEncoder cross-fits its train rows: test scores still equal scikit-learn's."""
    rng = np.random.default_rng(1)
    X = rng.integers(0, 6, (300, 3))
    y = (X[:, 0] + rng.integers(0, 3, 300) > 4).astype(int)
    est = make_pipeline(TargetEncoder(random_state=0), LogisticRegression())
    _, res, oracle = _nested(est, {"logisticregression__C": [0.01, 1.0, 100.0]}, X, y,
                             tmp_path)
    _check_equal(res, oracle)


@pytest.mark.parametrize("est, candidates, n", [
    (make_pipeline(StandardScaler(), PCA(5, random_state=0), SVC()),
     [{"svc__C": 1}, {"svc__C": 2}], 2),
    (make_pipeline(StandardScaler(), PCA(5, random_state=0), SVC()),
     [{"pca__n_components": 3}, {"svc__C": 2}], 1),
    (make_pipeline(StandardScaler(), SVC()), [{"svc__C": 1}], 0),  # one candidate
    (make_pipeline(StandardScaler(), SVC()), [{"standardscaler": "passthrough"},
                                              {"svc__C": 2}], 0),
    (make_pipeline(StandardScaler(), SVC()), [{"verbose": True}, {"svc__C": 2}], 0),
    (make_pipeline(StandardScaler(), SVC(), memory="cache"), [{"svc__C": 1}, {"svc__C": 2}], 0),
    (make_pipeline(PCA(5), SVC()), [{"svc__C": 1}, {"svc__C": 2}], 0),  # random_state=None
    (make_pipeline(StandardScaler(), SVC(kernel="precomputed")),
     [{"svc__C": 1}, {"svc__C": 2}], 0),  # pairwise
    (SVC(), [{"C": 1}, {"C": 2}], 0),
])
def test_shared_steps(est, candidates, n):
    assert shared_steps(est, candidates) == n


def _spec(est):
    return {"estimator": est, "scoring": None, "error_score": np.nan,
            "return_train_score": False, "scorer_names": ["score"]}


def test_a_shared_step_that_fails_leaves_each_candidate_to_fail_on_its_own():
    from mempamal import scoring

    X, y = make_classification(60, 4, random_state=0)
    train, test = np.arange(40), np.arange(40, 60)
    cands = [{"logisticregression__C": 1.0}, {"logisticregression__C": 2.0}]
    est = make_pipeline(CountingScaler(fail=True), LogisticRegression())
    scorer = scoring.resolve(est, None, np.nan)
    assert _with_shared_prefix(_spec(est), X, y, train, test, cands, scorer, False) is None
    est = make_pipeline(CountingScaler(), LogisticRegression())
    rows = _with_shared_prefix(_spec(est), X, y, train, test, cands, scorer, False)
    assert [r["fit_error"] for r in rows] == [None, None]
    # fit or score parameters, or a kept estimator: not shared
    assert _with_shared_prefix(_spec(est), X, y, train, test, cands, scorer, True) is None


def test_each_candidate_is_charged_its_share_of_the_shared_steps():
    X, y = make_classification(60, 4, random_state=0)
    shared = SharedPrefix(make_pipeline(StandardScaler(), LogisticRegression()), 1, X, y,
                          np.arange(40), np.arange(40, 60))
    assert shared.X.shape == (60, 4) and list(shared.test) == list(range(40, 60))
    np.testing.assert_allclose(shared.X[40:], StandardScaler().fit(X[:40]).transform(X[40:]))
    row = shared.charge({"fit_time": 1.0, "score_time": 0.5}, 4)
    assert row == {"fit_time": 1.0 + shared.fit_seconds / 4,
                   "score_time": 0.5 + shared.transform_seconds / 4}
