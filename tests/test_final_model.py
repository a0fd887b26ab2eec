"""The final model: the same search on all the data, refitted, as GridSearchCV.fit gives it."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from mempamal import Experiment, ValidationError, WorkdirError, load_results


def _inner():
    return StratifiedKFold(3, shuffle=True, random_state=np.random.RandomState(4))


@pytest.mark.parametrize("with_weights", [False, True])
def test_final_model_equals_gridsearchcv_fit(tmp_path, with_weights):
    X, y = load_iris(return_X_y=True)
    est = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500))
    grid = {"logisticregression__C": [0.01, 0.1, 1.0, 10.0]}
    params = {"logisticregression__sample_weight":
              np.random.RandomState(0).uniform(0.1, 2, len(y))} if with_weights else {}
    exp = Experiment(est, param_grid=grid, cv=StratifiedKFold(3, shuffle=True, random_state=0),
                     inner_cv=_inner(), scoring="balanced_accuracy", final_model=True)
    wf = exp.compile(tmp_path / "w", X, y, params=params, chunk_size=2)
    assert {"select-final", "fit-final-i0-c0", "fit-final-i2-c1"} <= set(wf.tasks)
    assert "select-final" in wf.tasks["aggregate"].deps
    assert not wf.tasks["select-final"].deps[0].startswith("select")  # parallel to the outer
    wf.run("local", n_jobs=2, progress=False)
    res = load_results(tmp_path / "w")
    oracle = GridSearchCV(est, grid, cv=_inner(), scoring="balanced_accuracy").fit(
        X, y, **params)
    assert res.final_params == oracle.best_params_
    np.testing.assert_array_equal(res.final_estimator.predict(X),
                                  oracle.best_estimator_.predict(X))
    np.testing.assert_allclose(res.final_estimator.predict_proba(X),
                               oracle.best_estimator_.predict_proba(X), rtol=0, atol=1e-12)
    for key in ("mean_test_score", "std_test_score", "rank_test_score"):
        np.testing.assert_allclose(res.final_cv_results[key].to_numpy(dtype=float),
                                   oracle.cv_results_[key], rtol=0, atol=1e-12)
    assert res.final_versions["scikit-learn"]
    # the outer splits are still the nested CV's
    assert len(res.outer_scores) == 3


def test_final_model_is_refused_without_inner_cv():
    with pytest.raises(ValidationError, match="final_model=True .* inner_cv=None"):
        Experiment(SVC(), cv=3, inner_cv=None, final_model=True)


def test_no_final_model_unless_asked(tmp_path):
    X, y = load_iris(return_X_y=True)
    exp = Experiment(SVC(), param_grid={"C": [1.0, 2.0]}, cv=2, inner_cv=2)
    wf = exp.compile(tmp_path / "w", X, y)
    assert "select-final" not in wf.tasks
    wf.run("local", n_jobs=2, progress=False)
    with pytest.raises(WorkdirError, match="no final model"):
        load_results(tmp_path / "w").final_estimator  # noqa: B018
