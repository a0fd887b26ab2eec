"""Grow the grid: results of an earlier workdir are reused, by content, not refitted."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import CountingClassifier, iris
from sklearn.model_selection import GridSearchCV, KFold, StratifiedKFold, cross_validate

from mempamal import Experiment, ValidationError, WorkdirError, load_results


def _fits(log) -> list[tuple[float, int]]:
    if not log.exists():
        return []
    return [(float(c), int(n)) for c, n in (ln.split() for ln in log.read_text().splitlines())]


def _exp(log, grid, outer_seed=0):
    return Experiment(CountingClassifier(log_file=str(log)), param_grid={"C": grid},
                      cv=StratifiedKFold(3, shuffle=True, random_state=outer_seed),
                      inner_cv=3, scoring="accuracy")


def test_growing_the_grid_fits_only_the_new_candidates(tmp_path):
    X, y = iris()
    log = tmp_path / "fits.log"
    _exp(log, [0.01, 0.1, 1.0]).compile(tmp_path / "w1", X, y, chunk_size=2).run(
        "local", n_jobs=2, progress=False)
    first = _fits(log)
    inner_size = 66  # 150 -> outer train 100 -> inner train 66 or 67
    assert len([f for f in first if f[1] <= inner_size + 1]) == 3 * 3 * 3
    log.unlink()

    grid = [0.001, 0.01, 0.1, 1.0, 10.0]  # the best C sat on the edge: widen both ways
    wf = _exp(log, grid).compile(tmp_path / "w2", X, y, chunk_size=2, reuse=tmp_path / "w1")
    assert wf.meta["reused"]["tasks"] > 0
    wf.run("local", n_jobs=2, progress=False)
    inner_fits = [f for f in _fits(log) if f[1] <= inner_size + 1]
    # every inner fit of this run is of a new candidate: 2 new x 3 outer x 3 inner
    assert sorted({c for c, _ in inner_fits}) == [0.001, 10.0]
    assert len(inner_fits) == 2 * 3 * 3

    res = load_results(tmp_path / "w2")
    search = GridSearchCV(CountingClassifier(log_file=str(tmp_path / "oracle.log")),
                          {"C": grid}, cv=3, scoring="accuracy")
    oracle = cross_validate(search, X, y, cv=StratifiedKFold(3, shuffle=True, random_state=0),
                            scoring="accuracy", return_estimator=True)
    assert res.best_params == [e.best_params_ for e in oracle["estimator"]]
    np.testing.assert_allclose(res.outer_scores["test_score"], oracle["test_score"],
                               rtol=0, atol=1e-12)
    for o, est in enumerate(oracle["estimator"]):
        ours = res.cv_results[res.cv_results.outer_split == o]
        for key in ("mean_test_score", "std_test_score", "rank_test_score"):
            np.testing.assert_allclose(ours[key].to_numpy(dtype=float), est.cv_results_[key],
                                       rtol=0, atol=1e-12)


def test_reuse_is_refused_when_data_or_splits_differ(tmp_path):
    X, y = iris()
    log = tmp_path / "fits.log"
    _exp(log, [0.1, 1.0]).compile(tmp_path / "w1", X, y).run("local", n_jobs=2,
                                                              progress=False)
    X2 = X.copy()
    X2[0, 0] += 1
    with pytest.raises(ValidationError, match="its data differ"):
        _exp(log, [0.1, 1.0, 10.0]).compile(tmp_path / "w2", X2, y, reuse=tmp_path / "w1")
    with pytest.raises(ValidationError, match="its splits differ"):
        _exp(log, [0.1, 10.0], outer_seed=7).compile(tmp_path / "w3", X, y,
                                                     reuse=[tmp_path / "w1"])
    other = Experiment(CountingClassifier(log_file=str(log)), param_grid={"C": [1.0, 2.0]},
                       cv=KFold(3), inner_cv=3, scoring="balanced_accuracy")
    with pytest.raises(ValidationError, match="its scoring differ"):
        other.compile(tmp_path / "w4", X, y, reuse=tmp_path / "w1")
    with pytest.raises(ValidationError, match="is not a mempamal workdir"):
        _exp(log, [1.0]).compile(tmp_path / "w5", X, y, reuse=tmp_path / "nowhere")
    for name in ("w2", "w3", "w4", "w5"):
        assert not (tmp_path / name).exists(), "nothing is written before the refusal"


def test_a_changed_experiment_in_the_same_workdir_points_to_reuse(tmp_path):
    X, y = iris()
    log = tmp_path / "fits.log"
    _exp(log, [0.1, 1.0]).compile(tmp_path / "w", X, y)
    with pytest.raises(WorkdirError, match=r"holds another experiment.*reuse="):
        _exp(log, [0.1, 1.0, 10.0]).compile(tmp_path / "w", X, y)
