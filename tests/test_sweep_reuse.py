"""Sweep(...).compile(W2, reuse=W1): the finished trials of W1 are not run again.

The oracle is direct evaluation of the function; calls are counted across
processes by the function itself (it appends to a log file).
"""

from __future__ import annotations

import functools
import json

import numpy as np
import pytest
import sweep_funcs
from conftest import import_or_fail
from helpers import iris
from scipy.stats import uniform
from sklearn.model_selection import ParameterSampler
from sklearn.svm import SVC

from mempamal import Experiment, Sweep, ValidationError, load_results


def _calls(log):
    try:
        return [json.loads(line) for line in open(log, encoding="utf-8")]
    except FileNotFoundError:
        return []


def _func(tmp_path, n_steps=2):
    return functools.partial(sweep_funcs.checkpointed, n_steps=n_steps,
                             log=str(tmp_path / "calls.jsonl"), step_seconds=0.0)


def _direct(x, n_steps=2):
    total = 0.0
    for step in range(n_steps):
        total += x * step
    return 1.0 / (1 + total)


def _run(sweep, root, **kw):
    wf = sweep.compile(root, **kw)
    wf.run("local", n_jobs=2, progress=False)
    return wf, load_results(root)


def test_more_candidates_and_repeats_run_only_the_new_trials(tmp_path):
    func = _func(tmp_path)
    _run(Sweep(func, param_grid={"x": [0.0, 1.0, 2.0]}, repeats=2, metric="loss",
               mode="min"), tmp_path / "w1", trials_per_task=2)
    assert len(_calls(tmp_path / "calls.jsonl")) == 6
    grown = Sweep(func, param_grid={"x": [0.0, 1.0, 2.0, 3.0, 4.0]}, repeats=3,
                  metric="loss", mode="min")
    wf, res = _run(grown, tmp_path / "w2", reuse=tmp_path / "w1", trials_per_task=2)
    calls = _calls(tmp_path / "calls.jsonl")[6:]
    # 15 trials, 6 of them (x in 0, 1, 2 with seeds 0 and 1) computed before
    assert len(calls) == 15 - 6
    assert wf.meta["reused"] == {"from": [str(tmp_path / "w1")], "trials": 6}
    trials = res.trials
    assert len(trials) == 15 and (trials["state"] == "done").all()
    np.testing.assert_allclose(trials["loss"], [_direct(x) for x in trials["param_x"]])
    assert res.best_params == {"x": 4.0}
    # the reported history and the trial folders came along
    assert sorted(res.history.groupby("trial").size().unique()) == [2]
    for t in range(15):
        assert (tmp_path / "w2" / "trials" / f"{t:02d}" / "checkpoint.json").exists()


def test_a_longer_random_search_reuses_its_first_draws(tmp_path):
    func = _func(tmp_path)
    space = {"x": uniform(0, 5)}
    _run(Sweep(func, param_distributions=space, n_iter=4, random_state=0, metric="loss",
               mode="min"), tmp_path / "w1")
    wf, res = _run(Sweep(func, param_distributions=space, n_iter=8, random_state=0,
                         metric="loss", mode="min"), tmp_path / "w2", reuse=[tmp_path / "w1"])
    assert len(_calls(tmp_path / "calls.jsonl")) == 4 + 4
    drawn = [p["x"] for p in ParameterSampler(space, 8, random_state=0)]
    np.testing.assert_allclose(res.trials["param_x"], drawn)
    np.testing.assert_allclose(res.trials["loss"], [_direct(x) for x in drawn])


def test_failed_trials_run_again(tmp_path):
    calls = tmp_path / "calls"
    func = functools.partial(sweep_funcs.counted, calls=str(calls), fail_at=1.0)
    _run(Sweep(func, param_grid={"x": [0.0, 1.0]}, metric="loss", mode="min"),
         tmp_path / "w1")
    fixed = functools.partial(sweep_funcs.counted, calls=str(calls), fail_at=1.0)
    wf, res = _run(Sweep(fixed, param_grid={"x": [0.0, 1.0]}, metric="loss", mode="min"),
                   tmp_path / "w2", reuse=tmp_path / "w1")
    assert wf.meta["reused"]["trials"] == 1  # the done one; the failed one ran again
    assert len(list(calls.iterdir())) == 2 + 1


def test_reuse_refused_for_another_function_an_adaptive_search_or_a_nested_cv(tmp_path):
    import_or_fail("optuna")
    _run(Sweep(_func(tmp_path), param_grid={"x": [0.0]}, metric="loss", mode="min"),
         tmp_path / "w1")
    other = Sweep(_func(tmp_path, n_steps=3), param_grid={"x": [0.0]}, metric="loss",
                  mode="min")
    with pytest.raises(ValidationError, match="swept .*checkpointed.* cannot be reused"):
        other.compile(tmp_path / "w2", reuse=tmp_path / "w1")
    assert not (tmp_path / "w2" / "workflow.json").exists()
    tpe = Sweep(_func(tmp_path), param_distributions={"x": uniform(0, 5)}, n_iter=4,
                search="tpe", batch_size=2, random_state=0, metric="loss", mode="min")
    with pytest.raises(ValidationError, match="reuse= with search='tpe'"):
        tpe.compile(tmp_path / "w3", reuse=tmp_path / "w1")
    X, y = iris()
    Experiment(SVC(), param_grid={"C": [1.0]}, cv=2, inner_cv=2).compile(tmp_path / "cv", X, y)
    with pytest.raises(ValidationError, match="holds a 'nested_cv' workflow; only a sweep"):
        Sweep(_func(tmp_path), param_grid={"x": [0.0]}, metric="loss", mode="min").compile(
            tmp_path / "w4", reuse=tmp_path / "cv")
    with pytest.raises(ValidationError, match="is not a mempamal workdir"):
        Sweep(_func(tmp_path), param_grid={"x": [0.0]}, metric="loss", mode="min").compile(
            tmp_path / "w5", reuse=tmp_path / "nothing")
