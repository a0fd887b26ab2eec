"""The fit the compile times to size the tasks is kept: its task does not make it again."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import iris
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, cross_validate
from sklearn.svm import SVC

from mempamal import Experiment, load_results
from mempamal.errors import TaskFailedError
from mempamal.recipes.nested_cv import tasks as nested_tasks
from mempamal.runner import run_task
from mempamal.workdir import Workdir

GRID = {"C": [0.1, 1.0, 10.0, 100.0]}


def _compiled(tmp_path, estimator=None, **compile_kw):
    X, y = iris()
    exp = Experiment(estimator or SVC(), param_grid=GRID, cv=3, inner_cv=3)
    return exp.compile(tmp_path / "w", X, y, **compile_kw), X, y


def test_the_timed_fit_is_candidate_0s_row_and_the_results_are_scikit_learns(tmp_path):
    wf, X, y = _compiled(tmp_path)
    assert wf.meta["timed_fit"] == {"o": 0, "i": 0, "candidate": 0}
    kept = json.loads(wf.workdir.path(Workdir.TIMED_FIT).read_text())
    wf.run("local", n_jobs=2, progress=False)
    first = wf.tasks["fit-o0-i0-c0"]
    assert 0 in first.args["candidates"]
    doc = json.loads(wf.workdir.path(first.outputs[0]).read_text())
    assert doc["results"][doc["candidates"].index(0)] == kept["row"]
    assert "the fit the compile timed, not made again" in \
        wf.workdir.log_file("fit-o0-i0-c0").read_text()
    # the oracle: scikit-learn's nested CV on the same splits, split by split
    oracle = cross_validate(GridSearchCV(SVC(), GRID, cv=3), X, y, cv=3, return_estimator=True)
    res = load_results(wf.workdir.root)
    assert res.best_params == [e.best_params_ for e in oracle["estimator"]]
    np.testing.assert_array_equal(res.outer_scores["test_score"], oracle["test_score"])
    inner = oracle["estimator"][0].cv_results_
    ours = res.cv_results[res.cv_results["outer_split"] == 0]
    np.testing.assert_array_equal(ours["split0_test_score"], inner["split0_test_score"])


def test_the_task_fits_every_candidate_but_the_kept_one(tmp_path, monkeypatch):
    wf, _, _ = _compiled(tmp_path)
    calls = []
    real = nested_tasks.fit_and_score
    monkeypatch.setattr(nested_tasks, "fit_and_score",
                        lambda *a, **k: calls.append(a[5]) or real(*a, **k))
    assert run_task(wf.workdir.root, "fit-o0-i0-c0").ok
    chunk = wf.tasks["fit-o0-i0-c0"].args["candidates"]
    assert calls == [{"C": GRID["C"][c]} for c in chunk if c != 0]
    calls.clear()
    assert run_task(wf.workdir.root, "fit-o0-i1-c0").ok  # another split: all fitted
    assert len(calls) == len(wf.tasks["fit-o0-i1-c0"].args["candidates"])


def test_the_kept_fits_warnings_go_to_its_tasks_log(tmp_path):
    wf, _, _ = _compiled(tmp_path, LogisticRegression(max_iter=1))
    assert run_task(wf.workdir.root, "fit-o0-i0-c0").ok
    log = wf.workdir.log_file("fit-o0-i0-c0").read_text()
    assert "warning (at compile): ConvergenceWarning" in log


def test_a_changed_timed_fit_file_fails_its_task_by_name(tmp_path):
    wf, _, _ = _compiled(tmp_path)
    path = wf.workdir.path(Workdir.TIMED_FIT)
    kept = json.loads(path.read_text())
    kept["row"]["test_scores"]["score"] = 1.0
    path.write_text(json.dumps(kept))
    with pytest.raises(TaskFailedError) as info:
        wf.run("local", n_jobs=2, progress=False)
    assert set(info.value.report.failures) == {"fit-o0-i0-c0"}
    assert "timed_fit.json" in info.value.report.failures["fit-o0-i0-c0"]


def test_a_removed_timed_fit_file_is_fitted_again(tmp_path):
    wf, X, y = _compiled(tmp_path)
    wf.workdir.path(Workdir.TIMED_FIT).unlink()
    wf.run("local", n_jobs=2, progress=False)
    log = wf.workdir.log_file("fit-o0-i0-c0").read_text()
    assert "timed_fit.json is gone: fitting candidate 0 again" in log
    oracle = cross_validate(GridSearchCV(SVC(), GRID, cv=3), X, y, cv=3, return_estimator=True)
    inner = oracle["estimator"][0].cv_results_
    res = load_results(wf.workdir.root)
    ours = res.cv_results[res.cv_results["outer_split"] == 0]
    np.testing.assert_array_equal(ours["split0_test_score"], inner["split0_test_score"])


def test_nothing_is_kept_when_the_chunk_size_is_given(tmp_path):
    wf, _, _ = _compiled(tmp_path, chunk_size=2)
    assert wf.meta["timed_fit"] is None
    assert not wf.workdir.path(Workdir.TIMED_FIT).exists()


def test_fits_with_routed_sample_weights_do_not_take_the_unweighted_timed_fit(tmp_path):
    X, y = iris()
    weights = np.random.RandomState(0).uniform(0.5, 2.0, len(y))
    exp = Experiment(LogisticRegression(max_iter=500), param_grid=GRID, cv=3, inner_cv=3)
    wf = exp.compile(tmp_path / "w", X, y, params={"sample_weight": weights})
    wf.run("local", n_jobs=2, progress=False)
    assert "not made again" not in wf.workdir.log_file("fit-o0-i0-c0").read_text()
    est = GridSearchCV(LogisticRegression(max_iter=500), GRID, cv=3)
    oracle = cross_validate(est, X, y, cv=3, params={"sample_weight": weights},
                            return_estimator=True)
    res = load_results(wf.workdir.root)
    assert res.best_params == [e.best_params_ for e in oracle["estimator"]]
    np.testing.assert_allclose(res.outer_scores["test_score"], oracle["test_score"])
