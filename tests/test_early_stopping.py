"""Early stopping across processes: Optuna's median rule, read from the trials' files (issue 14).

The oracle of the rule is Optuna's ``MedianPruner`` itself, asked through
``trial.should_prune()`` on the same histories. In a sweep, trials run in
separate processes and learn of each other only through their files.
"""

from __future__ import annotations

import adaptive_funcs
import numpy as np
import pytest
from conftest import requires_or_fail

from mempamal import Sweep, TrialStopped, ValidationError, load_results
from mempamal.adaptive.stopping import median_rule

try:
    import optuna

    HAVE_OPTUNA = True
except ImportError:  # pragma: no cover - CI installs mempamal[all]
    HAVE_OPTUNA = False


def _random_history(rng, n_steps, nan_rate=0.0):
    steps = sorted(rng.choice(n_steps, size=rng.integers(1, n_steps + 1), replace=False))
    return {int(s): (float("nan") if rng.random() < nan_rate else float(rng.normal()))
            for s in steps}


@requires_or_fail(HAVE_OPTUNA, "optuna is not installed (mempamal[optuna])")
@pytest.mark.parametrize("mode", ["min", "max"])
def test_rule_says_what_optunas_median_pruner_says(mode):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    rng = np.random.default_rng(0)
    agree = {True: 0, False: 0}
    for case in range(300):
        warmup, min_trials = int(rng.integers(0, 4)), int(rng.integers(0, 5))
        completed = [_random_history(rng, 8, nan_rate=0.05) for _ in range(rng.integers(0, 7))]
        own = _random_history(rng, 8, nan_rate=0.1 if case % 10 == 0 else 0.0)
        pruner = optuna.pruners.MedianPruner(n_startup_trials=min_trials,
                                             n_warmup_steps=warmup)
        study = optuna.create_study(direction="minimize" if mode == "min" else "maximize",
                                    pruner=pruner)
        for hist in completed:
            study.add_trial(optuna.trial.create_trial(value=0.0, intermediate_values=hist))
        trial = study.ask()
        for step, value in own.items():
            trial.report(value, step)
        expected = trial.should_prune()
        assert median_rule(own, completed, mode, warmup, min_trials) == expected, case
        agree[expected] += 1
    assert min(agree.values()) >= 20  # both answers were exercised


def _sweep(candidates, **kw):
    return Sweep(adaptive_funcs.curve, candidates=candidates, metric="loss", mode="min",
                 **kw)


GOOD = [{"level": 0.0, "name": n} for n in "abc"]


@pytest.mark.parametrize("raise_on_stop", [False, True])
def test_bad_trials_are_pruned_good_ones_run_to_the_end_in_separate_processes(
        tmp_path, raise_on_stop):
    # the good trials (first, quick) finish while the bad ones (slow) still run;
    # all good curves are equal: none is worse than the median of the others
    bad = [{"level": 1.0, "name": n, "step_seconds": 0.15, "raise_on_stop": raise_on_stop}
           for n in "de"]
    sweep = _sweep(GOOD + bad, early_stopping={"rule": "median", "warmup_steps": 3,
                                                "min_trials": 2})
    wf = sweep.compile(tmp_path / "w")
    wf.run("local", n_jobs=2, subprocess=True, progress=False)
    res = load_results(tmp_path / "w")
    t = res.trials
    assert list(t["state"]) == ["done"] * 3 + ["pruned"] * 2
    steps = res.history.groupby("trial")["step"].max()
    assert list(steps[:3]) == [11] * 3
    assert all(3 <= s < 11 for s in steps[3:]), steps
    # a pruned trial keeps its last values
    for k in (3, 4):
        assert t.loc[k, "loss"] == pytest.approx(1.0 + 1.0 / (steps[k] + 1))
    summary = res.summary_dict()
    assert summary["n_pruned"] == 2 and summary["best_params"]["level"] == 0.0


def test_no_rule_never_stops(tmp_path):
    bad = [{"level": 1.0, "name": "d"}]
    wf = _sweep(GOOD + bad).compile(tmp_path / "w")
    wf.run("local", n_jobs=1, progress=False)
    res = load_results(tmp_path / "w")
    assert list(res.trials["state"]) == ["done"] * 4
    assert list(res.history.groupby("trial")["step"].max()) == [11] * 4


def test_too_few_finished_trials_never_stop(tmp_path):
    # min_trials=5 (the default) is never reached by 3 good trials
    bad = [{"level": 1.0, "name": "d"}]
    wf = _sweep(GOOD + bad, early_stopping="median").compile(tmp_path / "w")
    wf.run("local", n_jobs=1, progress=False)
    assert list(load_results(tmp_path / "w").trials["state"]) == ["done"] * 4


def test_trial_stopped_is_exported():
    import mempamal

    assert mempamal.TrialStopped is TrialStopped and "TrialStopped" in mempamal.__all__


@pytest.mark.parametrize(("value", "message"), [
    ("mean", "early_stopping='mean'"),
    ({"rule": "median", "patience": 3}, "unknown key(s) ['patience']"),
    ({"rule": "median", "warmup_steps": -1}, "warmup_steps must be an int >= 0"),
    ({"rule": "median", "mode": "lower"}, "mode must be 'min' or 'max'"),
])
def test_bad_early_stopping_is_refused(value, message):
    with pytest.raises(ValidationError) as err:
        _sweep(GOOD, early_stopping=value)
    assert message in str(err.value)


def test_early_stopping_needs_a_trial_parameter():
    with pytest.raises(ValidationError, match="has no 'trial' parameter"):
        Sweep(adaptive_funcs.branin, candidates=[{"x": 1.0, "y": 1.0}], metric="loss",
              mode="min", early_stopping="median")
