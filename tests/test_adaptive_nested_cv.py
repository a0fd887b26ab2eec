"""Nested CV with a model-based search in each outer split (issue 14).

Oracle: for each outer split, one live Optuna study (TPE, same seed) driven
by ask/tell in the same rounds, told the mean inner score that
scikit-learn's GridSearchCV computes on the same inner splits for the
candidates it asked; then GridSearchCV's choice among all of them, refitted
on outer-train and scored on outer-test.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import has_module, requires_or_fail
from scipy.stats import loguniform
from sklearn.datasets import load_diabetes
from sklearn.linear_model import Ridge
from sklearn.model_selection import GridSearchCV, KFold

try:
    import optuna

    HAVE_OPTUNA = True
except ImportError:  # pragma: no cover - CI installs mempamal[all]
    HAVE_OPTUNA = False

pytestmark = requires_or_fail(HAVE_OPTUNA, "optuna is not installed (mempamal[optuna])")

from mempamal import Experiment, ValidationError, load_results  # noqa: E402

OUTER, INNER = KFold(3, shuffle=True, random_state=0), KFold(3, shuffle=True, random_state=1)
SPACE = {"alpha": loguniform(1e-4, 1e3), "fit_intercept": [True, False]}


def _data():
    X, y = load_diabetes(return_X_y=True)
    return X[:150], y[:150]


def _experiment(**kw):
    args = {"param_distributions": SPACE, "search": "tpe", "n_iter": 8, "batch_size": 4,
            "random_state": 0, "cv": OUTER, "inner_cv": INNER, **kw}
    return Experiment(Ridge(), **args)


def oracle(X, y, n_iter=8, batch=4, seed=0):
    """Per outer split: asked candidates, their inner means, best params, outer score."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = {"alpha": optuna.distributions.FloatDistribution(1e-4, 1e3, log=True),
             "fit_intercept": optuna.distributions.CategoricalDistribution([True, False])}
    out = []
    everything = (np.arange(len(y)), None)  # the final model's search: all the data
    for train, test in [*OUTER.split(X, y), everything]:
        study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(
            seed=seed, constant_liar=True))
        asked = []
        for _ in range(n_iter // batch):
            trials = [study.ask(space) for _ in range(batch)]
            cands = [dict(t.params) for t in trials]
            gs = GridSearchCV(Ridge(), [{k: [v] for k, v in c.items()} for c in cands],
                              cv=INNER, refit=False).fit(X[train], y[train])
            for t, mean in zip(trials, gs.cv_results_["mean_test_score"]):
                study.tell(t, float(mean))
            asked += cands
        gs = GridSearchCV(Ridge(), [{k: [v] for k, v in c.items()} for c in asked],
                          cv=INNER).fit(X[train], y[train])
        out.append({"candidates": asked, "means": gs.cv_results_["mean_test_score"],
                    "best": gs.best_params_, "estimator": gs.best_estimator_,
                    "outer": None if test is None else gs.score(X[test], y[test])})
    return out


def _check_outer_splits(res, expected) -> None:
    """Each outer split's candidates, inner means, best params and outer score."""
    cv = res.cv_results
    for o, exp in enumerate(expected):
        mine = cv[cv["outer_split"] == o]
        assert list(mine["params"]) == exp["candidates"]
        np.testing.assert_allclose(mine["mean_test_score"], exp["means"], rtol=1e-12)
        assert res.best_params[o] == exp["best"]
        assert res.outer_scores.loc[o, "test_score"] == pytest.approx(exp["outer"], rel=1e-12)


def test_each_outer_split_searches_on_its_inner_cv_as_optuna_and_gridsearchcv_do(tmp_path):
    X, y = _data()
    wf = _experiment(final_model=True).compile(tmp_path / "w", X, y)
    kinds = [t.kind for t in wf.tasks.values()]
    # 3 outer splits and the final model's search, 2 rounds each
    assert kinds.count("suggest") == 4 * 2 and kinds.count("select") == 4
    assert wf.tasks["suggest-final-r1"].deps == [f"fit-final-i{i}-c0" for i in range(3)] + [
        "suggest-final-r0"]
    # no barrier between outer splits: a select waits for its own split only
    assert all(d.startswith("fit-o1-") for d in wf.tasks["select-o1"].deps)
    assert wf.tasks["suggest-o2-r1"].deps == [f"fit-o2-i{i}-c0" for i in range(3)] + [
        "suggest-o2-r0"]
    wf.run("local", n_jobs=2, progress=False)
    res = load_results(tmp_path / "w")
    expected = oracle(X, y)
    final = expected.pop()
    assert list(res.final_cv_results["params"]) == final["candidates"]
    np.testing.assert_allclose(res.final_cv_results["mean_test_score"], final["means"],
                               rtol=1e-12)
    assert res.final_params == final["best"]
    np.testing.assert_allclose(res.final_estimator.coef_, final["estimator"].coef_, rtol=1e-12)
    _check_outer_splits(res, expected)


def test_bad_input_is_refused():
    with pytest.raises(ValidationError, match="inner_cv=None"):
        Experiment(Ridge(), param_distributions=SPACE, search="tpe", n_iter=8, inner_cv=None)
    with pytest.raises(ValidationError, match="batch_size=9"):
        Experiment(Ridge(), param_distributions=SPACE, search="tpe", n_iter=8, batch_size=9)
    with pytest.raises(ValidationError, match="not param_grid"):
        Experiment(Ridge(), param_grid={"alpha": [1.0]}, search="tpe")
    with pytest.raises(ValidationError, match="alhpa"):
        Experiment(Ridge(), param_distributions={"alhpa": loguniform(1e-3, 1)}, search="tpe",
                   n_iter=4)




@pytest.fixture(scope="module")
def local_results(tmp_path_factory):
    X, y = _data()
    root = tmp_path_factory.mktemp("local") / "w"
    _experiment().compile(root, X, y).run("local", n_jobs=2, progress=False)
    return load_results(root)


BACKENDS = {
    "dask": ({"n_jobs": 2, "progress": False},
             [pytest.mark.dask, requires_or_fail(has_module("distributed"),
                                                 "dask.distributed is not installed")]),
}
# real SLURM: tests/backends/test_adaptive_backends.py. Soma-Workflow and the
# local subprocess mode start an interpreter per task: a smaller search below


@pytest.mark.slow
@pytest.mark.parametrize("backend", [pytest.param(b, marks=m) for b, (_, m) in BACKENDS.items()])
def test_other_backends_give_the_local_results(tmp_path, local_results, backend):
    X, y = _data()
    wf = _experiment().compile(tmp_path / "w", X, y)
    wf.run(backend.split("-")[0], **BACKENDS[backend][0])
    got, expected = load_results(tmp_path / "w"), local_results
    drop = ["mean_fit_time", "std_fit_time", "mean_score_time", "std_score_time"]
    assert got.cv_results.drop(columns=drop).equals(expected.cv_results.drop(columns=drop))
    assert got.best_params == expected.best_params
    assert list(got.test_scores()) == list(expected.test_scores())



@pytest.mark.slow
@pytest.mark.parametrize("backend", [
    pytest.param("soma", marks=[pytest.mark.soma, requires_or_fail(
        has_module("soma_workflow"), "soma-workflow not installed")]),
    "local-subprocess"])
def test_soma_and_subprocess_search_as_optuna_and_gridsearchcv_do(tmp_path, monkeypatch,
                                                                  backend):
    """A fresh interpreter per task (line): rounds of 2, 4 candidates, to keep it short."""
    X, y = _data()
    options = {"n_jobs": 2, "progress": False}
    if backend == "soma":
        home = tmp_path / "home"  # soma writes its configuration in HOME
        home.mkdir()
        monkeypatch.setenv("HOME", str(home))
        monkeypatch.delenv("SOMA_WORKFLOW_CONFIG", raising=False)
        options["refreshment_interval"] = 0.1
    else:
        options["subprocess"] = True
    wf = _experiment(n_iter=4, batch_size=2).compile(tmp_path / "w", X, y)
    wf.run(backend.split("-")[0], **options)
    res = load_results(tmp_path / "w")
    expected = oracle(X, y, n_iter=4, batch=2)[:-1]  # no final model here
    _check_outer_splits(res, expected)
