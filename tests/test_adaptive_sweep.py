"""Model-based search in rounds, as a sweep (issue 14).

The oracle is Optuna itself: one live study with the same sampler, driven
by ask/tell in the same rounds (candidates given to evaluate first are
enqueued, a trial that raises is told FAIL). mempamal's suggest tasks
rebuild a study from files each round, in other processes; the trial table
must hold exactly what the live study asked and was told.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import adaptive_funcs
import numpy as np
import pytest
from conftest import has_module, requires_or_fail
from scipy.stats import norm, randint, uniform

try:
    import optuna

    HAVE_OPTUNA = True
except ImportError:  # pragma: no cover - CI installs mempamal[all]
    HAVE_OPTUNA = False

pytestmark = requires_or_fail(HAVE_OPTUNA, "optuna is not installed (mempamal[optuna])")

from mempamal import Sweep, ValidationError, load_results  # noqa: E402
from mempamal.recipes.sweep.dag import suggest_output  # noqa: E402
from mempamal.workdir import Workdir, read_json  # noqa: E402

SPACE = {"x": uniform(-5, 15), "y": uniform(0, 15), "act": ["relu", "tanh"]}
#: the same space written in Optuna's terms by hand (not through mempamal's translation)
OPTUNA_SPACE = None if not HAVE_OPTUNA else {
    "x": optuna.distributions.FloatDistribution(-5.0, 10.0),
    "y": optuna.distributions.FloatDistribution(0.0, 15.0),
    "act": optuna.distributions.CategoricalDistribution(["relu", "tanh"]),
}
SAMPLERS = {
    "tpe": lambda seed: optuna.samplers.TPESampler(seed=seed, constant_liar=True),
    "qmc": lambda seed: optuna.samplers.QMCSampler(seed=seed, scramble=True),
    "cmaes": lambda seed: optuna.samplers.CmaEsSampler(seed=seed),
}


def oracle(search, n_iter, batch, seed, enqueued=(), killed=False):
    """Rows one live Optuna study asks and is told, in rounds of ``batch``.

    ``killed``: a candidate with ``x == KILL_X`` is told FAIL (its trial
    was killed), and its row holds what it computes when run again later.
    """
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="minimize", sampler=SAMPLERS[search](seed))
    for params in enqueued:
        study.enqueue_trial(params)
    rows = []
    for r, start in enumerate(range(0, n_iter, batch)):
        asked = [study.ask(OPTUNA_SPACE) for _ in range(min(batch, n_iter - start))]
        for trial in asked:
            try:
                loss = adaptive_funcs.branin(**trial.params)["loss"]
                if killed and trial.params["x"] == adaptive_funcs.KILL_X:
                    study.tell(trial, state=optuna.trial.TrialState.FAIL)
                    rows.append({"round": r, **{f"param_{k}": v for k, v in
                                                trial.params.items()},
                                 "loss": loss, "state": "done"})
                    continue
            except ValueError:
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
                loss, state = np.nan, "failed"
            else:
                study.tell(trial, loss)
                state = "done"
            rows.append({"round": r, **{f"param_{k}": v for k, v in trial.params.items()},
                         "loss": loss, "state": state})
    return rows


def _sweep(search="tpe", n_iter=16, batch_size=4, seed=0, func=adaptive_funcs.branin,
           **kw):
    return Sweep(func, param_distributions=SPACE, search=search, n_iter=n_iter,
                 batch_size=batch_size, random_state=seed, metric="loss", mode="min", **kw)


def _run(sweep, root, **options):
    wf = sweep.compile(root)
    wf.run("local", **{"n_jobs": 2, "progress": False, **options})
    return wf, load_results(root)


def _table(res):
    """What the trials computed (not where or when)."""
    cols = ["trial", "candidate", "round", "param_act", "param_x", "param_y", "seed",
            "loss", "state", "error", "attempt"]
    return res.trials[cols].reset_index(drop=True)


def _check_against_oracle(res, expected):
    got = res.trials
    assert len(got) == len(expected)
    assert list(got["trial"]) == list(range(len(expected)))
    for col in ("round", "param_x", "param_y", "param_act", "state"):
        assert list(got[col]) == [row[col] for row in expected], col
    np.testing.assert_array_equal(got["loss"].to_numpy(float),
                                  np.array([row["loss"] for row in expected], float))


# -- shape -------------------------------------------------------------------------
def test_workflow_is_static_suggest_rounds_then_aggregate(tmp_path):
    wf = _sweep(n_iter=40, batch_size=8).compile(tmp_path / "w")
    suggests = [t for t in wf.tasks.values() if t.kind == "suggest"]
    trials = [t for t in wf.tasks.values() if t.kind == "trial"]
    assert [t.id for t in suggests] == [f"suggest-r{r}" for r in range(5)]
    assert len(trials) == 40 and wf.meta["n_trials"] == 40
    assert suggests[0].deps == []
    for r, s in enumerate(suggests):
        assert s.outputs == [suggest_output(r)]
        mine = [t for t in trials if t.deps == [s.id]]
        assert [t.args["trials"] for t in mine] == [[k, k + 1] for k in range(8 * r, 8 * r + 8)]
        if r:  # every trial task of the previous round, then the previous suggest
            previous = [t.id for t in trials if t.deps == [f"suggest-r{r - 1}"]]
            assert s.deps == [*previous, f"suggest-r{r - 1}"]
    assert wf.tasks["aggregate"].deps == [t.id for t in trials]
    # an uneven last round, several trials per task that never cross a round
    wf = _sweep(n_iter=10, batch_size=4, repeats=2).compile(tmp_path / "w2",
                                                             trials_per_task=3)
    packs = {s: [t.args["trials"] for t in wf.tasks.values() if t.deps == [s]]
             for s in ("suggest-r0", "suggest-r1", "suggest-r2")}
    assert packs == {"suggest-r0": [[0, 3], [3, 6], [6, 8]],
                     "suggest-r1": [[8, 11], [11, 14], [14, 16]],
                     "suggest-r2": [[16, 19], [19, 20]]}


# -- oracle ------------------------------------------------------------------------
@pytest.mark.parametrize("search", ["tpe", "qmc", "cmaes"])
def test_trial_table_equals_a_live_optuna_study_in_the_same_rounds(tmp_path, search):
    _, res = _run(_sweep(search, seed=3), tmp_path / "w")
    _check_against_oracle(res, oracle(search, 16, 4, 3))
    assert (res.trials["attempt"] == 1).all()
    best = res.trials.loc[res.trials["loss"].idxmin()]
    assert res.best_params == {"x": best["param_x"], "y": best["param_y"],
                               "act": best["param_act"]}
    summary = read_json(tmp_path / "w" / Workdir.FINAL_SUMMARY)
    assert summary["n_done"] == 16 and summary["best_value"] == best["loss"]


def test_given_candidates_first_and_a_failing_trial_in_round_1_does_not_stop_the_search(
        tmp_path):
    # 6 candidates to evaluate first, rounds of 4: the 6th, in round 1, raises
    given = [{"x": float(x), "y": 2.0, "act": "relu"} for x in (-4, -2, 0, 2, 4)]
    given.append({"x": adaptive_funcs.FAIL_X, "y": 1.0, "act": "tanh"})
    _, res = _run(_sweep("tpe", seed=1, candidates=given), tmp_path / "w")
    expected = oracle("tpe", 16, 4, 1, enqueued=given)
    _check_against_oracle(res, expected)
    t = res.trials
    assert [t.loc[k, "param_x"] for k in range(6)] == [c["x"] for c in given]
    assert list(t.loc[t["state"] == "failed", "trial"]) == [5]
    assert t.loc[5, "round"] == 1 and "not allowed" in t.loc[5, "error"]
    assert list(t.loc[t["round"] >= 2, "state"]) == ["done"] * 8


def test_a_round_where_every_trial_failed_stops_the_search(tmp_path):
    from mempamal import TaskFailedError

    wf = _sweep(func=adaptive_funcs.always_fails, n_iter=8).compile(tmp_path / "w")
    with pytest.raises(TaskFailedError):
        wf.run("local", n_jobs=2, progress=False)
    stop = read_json(tmp_path / "w" / Workdir.SWEEP_STOP)
    assert "every trial of round 0 failed" in stop["message"]
    # round 0 ran; its suggest refused round 1, nothing after it ran
    assert wf.done() == {"suggest-r0", "trial-0", "trial-1", "trial-2", "trial-3"}
    res = load_results(tmp_path / "w", partial=True)
    assert list(res.trials["state"]) == ["failed"] * 4


def test_same_seed_same_table_other_seed_other_candidates(tmp_path):
    _, a = _run(_sweep(seed=5, n_iter=8), tmp_path / "a")
    _, b = _run(_sweep(seed=5, n_iter=8), tmp_path / "b", n_jobs=1)
    _, c = _run(_sweep(seed=6, n_iter=8), tmp_path / "c")
    assert _table(a).equals(_table(b))
    assert not np.array_equal(a.trials["param_x"], c.trials["param_x"])


def test_suggest_run_again_writes_the_same_file(tmp_path):
    from mempamal.runner import run_task

    wf, _ = _run(_sweep(n_iter=8), tmp_path / "w")
    path = tmp_path / "w" / suggest_output(1)
    before = path.read_bytes()
    os.unlink(path)  # as if its task died before the rename
    run_task(tmp_path / "w", "suggest-r1", force=True)
    assert path.read_bytes() == before


@pytest.mark.slow
def test_kill_then_resume_gives_the_uninterrupted_table(tmp_path):
    root = tmp_path / "w"
    sweep = _sweep(seed=2, func=adaptive_funcs.branin_slow)
    wf = sweep.compile(root)
    script = (f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
              "from mempamal import load_workflow\n"
              f"load_workflow({str(root)!r}).run('local', n_jobs=2, progress=False)\n")
    proc = subprocess.Popen([sys.executable, "-c", script], start_new_session=True)
    deadline = time.monotonic() + 120
    results = root / "out" / "trials"
    try:
        while len(list(results.glob("*.json"))) < 6:  # into round 1
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    done_before = len(list(results.glob("*.json")))
    assert 6 <= done_before < 16
    first_rounds = {r: (root / suggest_output(r)).read_bytes() for r in range(4)
                    if (root / suggest_output(r)).exists()}
    wf.run("local", n_jobs=2, progress=False)
    res = load_results(root)
    _check_against_oracle(res, oracle("tpe", 16, 4, 2))
    for r, content in first_rounds.items():
        assert (root / suggest_output(r)).read_bytes() == content


# -- a killed trial -----------------------------------------------------------------
#: 6 candidates first, rounds of 4: the 6th, in round 1, is killed
KILLED_GIVEN = [*({"x": float(x), "y": 2.0, "act": "relu"} for x in (-4, -2, 0, 2, 4)),
                {"x": adaptive_funcs.KILL_X, "y": 1.0, "act": "tanh"}]


def killed_trial_sweep():
    return _sweep("tpe", seed=1, n_iter=12, func=adaptive_funcs.branin_killed,
                  candidates=KILLED_GIVEN)


def check_killed_trial_then_resume(wf, backend, **options):
    """Run with trial 5 killed: the later rounds run; resume then runs it again.

    The search goes on after a trial killed without output: the next round's
    suggest runs once its round has ended (a soft dependency; SLURM's
    ``afterany``) and tells Optuna that trial failed; only the aggregate,
    which needs every trial, waits for a resume.
    """
    from mempamal import TaskFailedError

    root = wf.workdir.root
    (root / adaptive_funcs.KILL_FLAG).write_text("")
    with pytest.raises(TaskFailedError) as info:
        wf.run(backend, progress=False, **options)
    assert "trial-05" in str(info.value)
    done = wf.done()
    from mempamal.runner import read_meta

    assert {"suggest-r1", "suggest-r2"} <= done, (
        sorted(set(wf.tasks) - done), str(info.value),
        {t: (read_meta(wf.workdir, t) or {}).get("error") for t in ("suggest-r2", "trial-05")})
    assert set(wf.tasks) - done == {"trial-05", "aggregate"}
    partial = load_results(root, partial=True).trials
    assert 5 not in set(partial["trial"]) and len(partial) == 11
    (root / adaptive_funcs.KILL_FLAG).unlink()
    wf.run(backend, progress=False, **options)
    res = load_results(root)
    # what a live study is told when trial 5 fails in round 1; its row then
    # holds what it computed when run again
    _check_against_oracle(res, oracle("tpe", 12, 4, 1, enqueued=KILLED_GIVEN, killed=True))
    t = res.trials
    assert t.loc[5, "round"] == 1 and t.loc[5, "attempt"] > 1
    assert (t.drop(index=5)["attempt"] == 1).all()
    return res


def test_a_killed_trial_does_not_stop_the_search_and_resume_runs_it(tmp_path):
    # one worker: the local executor cannot tell which of the tasks running
    # when a worker died killed it, and counts the death against each
    wf = killed_trial_sweep().compile(tmp_path / "w")
    check_killed_trial_then_resume(wf, "local", n_jobs=1)


def test_soft_dependencies_are_kept_and_do_not_block(tmp_path):
    from mempamal.workflow import Workflow

    killed_trial_sweep().compile(tmp_path / "w")
    again = Workflow.load(tmp_path / "w")
    for r in (1, 2):
        s = again.tasks[f"suggest-r{r}"]
        trials = [t.id for t in again.tasks.values() if t.deps == [f"suggest-r{r - 1}"]]
        assert s.soft_deps == trials and s.hard_deps == [f"suggest-r{r - 1}"]
    assert again.tasks["aggregate"].soft_deps == []
    blocked = again.blocked_by(["trial-05"])
    assert blocked == {"trial-05", "aggregate"}
    # a suggest that fails blocks everything after it
    assert {"trial-08", "suggest-r2", "aggregate"} <= again.blocked_by(["suggest-r1"])


# -- backends ----------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.dask
@requires_or_fail(has_module("distributed"), "dask.distributed is not installed")
def test_dask_gives_the_local_table(tmp_path):
    _, local = _run(_sweep(seed=4, n_iter=8), tmp_path / "local")
    wf = _sweep(seed=4, n_iter=8).compile(tmp_path / "dask")
    wf.run("dask", n_jobs=2, progress=False)
    got = load_results(tmp_path / "dask")
    assert _table(got).equals(_table(local))
    _check_against_oracle(got, oracle("tpe", 8, 4, 4))


@pytest.mark.slow
@pytest.mark.dask
@requires_or_fail(has_module("distributed"), "dask.distributed is not installed")
def test_dask_a_killed_trial_does_not_stop_the_search(tmp_path):
    wf = killed_trial_sweep().compile(tmp_path / "w")
    # Dask gives the trial to a new worker a few times, then fails it (KilledWorker)
    check_killed_trial_then_resume(wf, "dask", n_jobs=2)


@pytest.mark.slow
@pytest.mark.soma
@requires_or_fail(has_module("soma_workflow"), "soma-workflow not installed")
def test_soma_a_killed_trial_job_does_not_stop_the_search(tmp_path, monkeypatch):
    """Soma-Workflow has no "after any": the next suggest runs in the driver's next round."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("SOMA_WORKFLOW_CONFIG", raising=False)
    wf = killed_trial_sweep().compile(tmp_path / "w")
    check_killed_trial_then_resume(wf, "soma", n_jobs=2, refreshment_interval=0.1)


# -- bad input ---------------------------------------------------------------------
@pytest.mark.parametrize(("kwargs", "message"), [
    ({"search": "bayes"}, "search='bayes' is not a search"),
    ({"batch_size": 0}, "batch_size=0"),
    ({"batch_size": 17}, "batch_size=17"),
    ({"batch_size": 2.5}, "batch_size=2.5"),
    ({"search": "tpe", "param_distributions": None, "param_grid": {"x": [1.0]}},
     "not param_grid"),
    ({"param_distributions": {"x": norm(0, 1), "y": [1.0], "act": ["relu"]}},
     "param_distributions['x'] is a scipy.stats 'norm'"),
    ({"candidates": [{"x": 1.0}]}, "must set exactly the parameters"),
    ({"random_state": "zero"}, "random_state must be an int"),
    ({"search": "grid", "batch_size": 4, "param_distributions": None,
      "param_grid": {"x": [1.0], "y": [1.0]}}, "batch_size=4 is for a model-based"),
    ({"param_distributions": {"x": uniform(0, 1), "y": uniform(0, 1), "z": randint(1, 3)}},
     "does not accept parameter(s) ['z']"),
])
def test_bad_input_is_refused_naming_the_value(tmp_path, kwargs, message):
    args = {"param_distributions": SPACE, "search": "tpe", "n_iter": 16, "batch_size": 4,
            "random_state": 0, "metric": "loss", "mode": "min", **kwargs}
    with pytest.raises(ValidationError) as err:
        Sweep(adaptive_funcs.branin, **args)
    assert message in str(err.value)
    assert not (tmp_path / "w").exists()


def test_missing_optuna_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "optuna", None)  # `import optuna` raises ImportError
    with pytest.raises(ValidationError, match=r"mempamal\[optuna\]"):
        _sweep()
    # a static search never needs it
    Sweep(adaptive_funcs.branin, param_distributions=SPACE, n_iter=3, random_state=0,
          metric="loss", mode="min")


def test_suggest_file_is_the_candidates_the_trials_ran(tmp_path):
    _, res = _run(_sweep(n_iter=8), tmp_path / "w")
    asked = [t["params"] for r in range(2)
             for t in json.loads((tmp_path / "w" / suggest_output(r)).read_text())["trials"]]
    assert asked == [{"x": x, "y": y, "act": a} for x, y, a in
                     zip(res.trials["param_x"], res.trials["param_y"],
                         res.trials["param_act"])]


def test_pruned_trials_are_told_to_optuna_as_pruned(tmp_path):
    # which trials are pruned depends on timing; given what mempamal recorded
    # (states, reported steps), a live study told the same asks the same
    sweep = Sweep(adaptive_funcs.branin_curve, param_distributions=SPACE, search="tpe",
                  n_iter=12, batch_size=4, random_state=7, metric="loss", mode="min",
                  early_stopping={"rule": "median", "min_trials": 2, "warmup_steps": 1})
    _, res = _run(sweep, tmp_path / "w")
    t, hist = res.trials, res.history
    # pruned before the last round: later suggests were told of it
    assert (t.loc[t["round"] < 2, "state"] == "pruned").any(), "nothing pruned early"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="minimize", sampler=SAMPLERS["tpe"](7))
    for r in range(3):
        asked = [study.ask(OPTUNA_SPACE) for _ in range(4)]
        for k, trial in enumerate(asked):
            row = t.loc[4 * r + k]
            assert trial.params == {"x": row["param_x"], "y": row["param_y"],
                                    "act": row["param_act"]}, (r, k)
            for _, h in hist[hist["trial"] == row["trial"]].iterrows():
                trial.report(h["loss"], int(h["step"]))
            if row["state"] == "pruned":
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            else:
                study.tell(trial, row["loss"])


def test_mode_max_with_repeats_tells_optuna_the_mean_over_repeats(tmp_path):
    sweep = Sweep(adaptive_funcs.neg_branin, param_distributions=SPACE, search="tpe",
                  n_iter=16, batch_size=4, random_state=9, repeats=2, metric="score",
                  mode="max")  # TPE samples at random up to 10 trials: 2 rounds after
    _, res = _run(sweep, tmp_path / "w")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=SAMPLERS["tpe"](9))
    t = res.trials
    assert list(t["seed"]) == [0, 1] * 16
    assert list(t["round"]) == [r for r in range(4) for _ in range(8)]
    for _round in range(4):
        for trial in [study.ask(OPTUNA_SPACE) for _ in range(4)]:
            scores = [adaptive_funcs.neg_branin(**trial.params,
                                                trial=type("T", (), {"seed": s}))["score"]
                      for s in range(2)]
            study.tell(trial, sum(scores) / 2)
    expected = [dict(tr.params) for tr in study.trials]
    got = [{"x": row.param_x, "y": row.param_y, "act": row.param_act}
           for row in t[t["seed"] == 0].itertuples()]
    assert got == expected
    def mean(p):
        return sum(adaptive_funcs.neg_branin(**p, trial=type("T", (), {"seed": s}))["score"]
                   for s in range(2)) / 2

    assert res.best_params == max(expected, key=mean)  # the best mean over repeats


def test_compiling_again_resumes_and_another_search_is_refused(tmp_path):
    from mempamal import WorkdirError

    first = _sweep().compile(tmp_path / "w")
    np.random.uniform()  # scipy.stats draws from numpy's global state: it must not matter
    again = _sweep().compile(tmp_path / "w")
    assert again.meta["fingerprint"] == first.meta["fingerprint"]
    with pytest.raises(WorkdirError):
        _sweep(n_iter=12).compile(tmp_path / "w")
    with pytest.raises(WorkdirError):
        Sweep(adaptive_funcs.branin, param_distributions={**SPACE, "x": uniform(-5, 14)},
              search="tpe", n_iter=16, batch_size=4, random_state=0, metric="loss",
              mode="min").compile(tmp_path / "w")
