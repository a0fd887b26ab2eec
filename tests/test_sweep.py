"""Sweep: any Python function as a workflow (issue 13).

The oracle is the function called directly on the same candidates.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sweep_funcs
from scipy.stats import loguniform, randint
from sklearn.model_selection import ParameterGrid, ParameterSampler

from mempamal import Sweep, TaskFailedError, ValidationError, WorkdirError, load_results
from mempamal.recipes.sweep.dag import MAX_TRIAL_TASKS, build_tasks, default_trials_per_task
from mempamal.workdir import Workdir, read_json

FUNCS_FILE = Path(sweep_funcs.__file__)


def _run(sweep, root, **kw):
    wf = sweep.compile(root, **kw)
    wf.run("local", n_jobs=2, progress=False)
    return load_results(root)


def _direct(candidates, repeats=1):
    """The oracle: trial table rows computed by calling the function directly."""
    rows = []
    for c, params in enumerate(candidates):
        for seed in range(repeats):
            trial = type("T", (), {"seed": seed})()
            out = sweep_funcs.quadratic(**params, trial=trial)
            rows.append({"trial": c * repeats + seed, "candidate": c, "seed": seed, **out,
                         **{f"param_{k}": v for k, v in params.items()}})
    return pd.DataFrame(rows)


def _check_against(res, candidates, repeats=1):
    expected = _direct(candidates, repeats)
    got = res.trials
    assert list(got["state"]) == ["done"] * len(expected)
    for col in expected.columns:
        np.testing.assert_array_equal(got[col].to_numpy(), expected[col].to_numpy(),
                                      err_msg=col)


# -- oracle ------------------------------------------------------------------------
def test_grid_with_repeats_equals_direct_evaluation(tmp_path):
    grid = {"x": [0.0, 1.5, 2.0, 3.0], "y": [0.0, 1.0]}
    res = _run(Sweep(sweep_funcs.quadratic, param_grid=grid, repeats=3, metric="loss",
                     mode="min"), tmp_path / "w")
    cands = list(ParameterGrid(grid))
    _check_against(res, cands, repeats=3)
    expected = _direct(cands, 3)
    means = expected.groupby("candidate")["loss"].mean()
    assert res.best_params == cands[int(means.idxmin())]
    np.testing.assert_allclose(res.summary["mean_loss"], means.to_numpy())
    np.testing.assert_allclose(res.summary["std_loss"],
                               expected.groupby("candidate")["loss"].std(ddof=0))
    best = res.best
    assert best["candidate"] == int(means.idxmin()) and best["seed"] == 0
    # written by the aggregate task
    csv = pd.read_csv(tmp_path / "w" / Workdir.FINAL_TRIALS)
    np.testing.assert_allclose(csv["loss"], expected["loss"])
    summary = read_json(tmp_path / "w" / Workdir.FINAL_SUMMARY)
    assert summary["best_params"] == res.best_params and summary["n_done"] == 24


def test_explicit_candidates_and_mode_max(tmp_path):
    cands = [{"x": 5.0}, {"x": -1.0, "y": 2.0}, {"x": 0.5}]
    res = _run(Sweep(sweep_funcs.quadratic, candidates=cands, metric="score", mode="max"),
               tmp_path / "w", trials_per_task=2)
    expected = _direct(cands)
    np.testing.assert_array_equal(res.trials["score"], expected["score"])
    assert res.best_params == cands[int(expected["score"].idxmax())]
    assert list(res.trials["param_y"].isna()) == [True, False, True]


def test_random_search_draws_what_parameter_sampler_draws(tmp_path):
    space = {"x": loguniform(1e-2, 1e1), "y": [0.0, 1.0, 2.0]}
    res = _run(Sweep(sweep_funcs.quadratic, param_distributions=space, n_iter=7,
                     random_state=3, metric="loss", mode="min"), tmp_path / "w")
    _check_against(res, list(ParameterSampler(space, 7, random_state=3)))


def test_bare_number_stored_under_metric_and_no_trial_parameter(tmp_path):
    res = _run(Sweep(sweep_funcs.plain, param_grid={"x": [1, 2, 3]}, metric="err",
                     mode="min"), tmp_path / "w")
    assert list(res.trials["err"]) == [1, 0, 1]
    assert res.best_params == {"x": 2}


@pytest.mark.parametrize("how", ["file", "module"])
def test_function_by_reference_gives_the_same_table(tmp_path, how):
    ref = f"{FUNCS_FILE}:quadratic" if how == "file" else "sweep_funcs:quadratic"
    grid = {"x": randint(0, 5)}
    res = _run(Sweep(ref, param_distributions=grid, n_iter=4, random_state=0,
                     metric="loss", mode="min"), tmp_path / "w")
    _check_against(res, list(ParameterSampler(grid, 4, random_state=0)))


def test_edited_function_file_is_another_sweep(tmp_path):
    src = tmp_path / "train.py"
    src.write_text("def train(x):\n    return x\n")
    sweep = Sweep(f"{src}:train", param_grid={"x": [1, 2]}, metric="v", mode="min")
    wf = sweep.compile(tmp_path / "w")
    src.write_text("def train(x):\n    return 2 * x\n")
    # a task refuses the edited file: its trials would mix two versions
    with pytest.raises(TaskFailedError):
        wf.run("local", n_jobs=1, progress=False)
    meta = read_json(Workdir(tmp_path / "w").meta_file("trial-0"))
    assert "changed since the sweep" in meta["error"]
    edited = Sweep(f"{src}:train", param_grid={"x": [1, 2]}, metric="v", mode="min")
    with pytest.raises(WorkdirError, match="another experiment"):
        edited.compile(tmp_path / "w")
    assert list(_run(edited, tmp_path / "w2").trials["v"]) == [2, 4]


# -- bad input, refused before anything is written ------------------------------------
def _holds_a_lock():
    lock = threading.Lock()

    def f(x):
        return x if lock else 0

    return f


BAD = {
    "no file": (dict(func="nowhere/train.py:train", param_grid={"x": [1]}),
                "nowhere/train.py"),
    "no attribute": (dict(func=f"{FUNCS_FILE}:nope", param_grid={"x": [1]}), "'nope'"),
    "no module": (dict(func="no_such_module_xyz:f", param_grid={"x": [1]}),
                  "no_such_module_xyz"),
    "not a reference": (dict(func="quadratic", param_grid={"x": [1]}), "'quadratic'"),
    "unstorable": (dict(func=_holds_a_lock(), param_grid={"x": [1]}), "cannot be stored"),
    "unknown parameter": (dict(func=sweep_funcs.quadratic, param_grid={"z": [1]}),
                          "['z']"),
    "missing parameter": (dict(func=sweep_funcs.quadratic, param_grid={"y": [1]}),
                          "requires parameter(s) ['x']"),
    "trial as parameter": (dict(func=sweep_funcs.quadratic,
                                candidates=[{"x": 1, "trial": 2}]), "'trial'"),
    "mode": (dict(func=sweep_funcs.quadratic, param_grid={"x": [1]}, mode="minimize"),
             "'minimize'"),
    "no mode": (dict(func=sweep_funcs.quadratic, param_grid={"x": [1]}, mode=None),
                "mode must be"),
    "no metric": (dict(func=sweep_funcs.quadratic, param_grid={"x": [1]}, metric=None),
                  "metric must be"),
    "empty grid": (dict(func=sweep_funcs.quadratic, param_grid={}), "empty search space"),
    "empty values": (dict(func=sweep_funcs.quadratic, param_grid={"x": []}), "'x'"),
    "empty list": (dict(func=sweep_funcs.quadratic, candidates=[]), "empty list"),
    "empty distributions": (dict(func=sweep_funcs.quadratic, param_distributions=[{}]),
                            "empty search space"),
    "repeats": (dict(func=sweep_funcs.quadratic, param_grid={"x": [1]}, repeats=0),
                "repeats must be"),
    "on_error": (dict(func=sweep_funcs.quadratic, param_grid={"x": [1]}, on_error="skip"),
                 "'skip'"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_refused_naming_the_value(tmp_path, case):
    kw, expected = BAD[case]
    kw = {"metric": "loss", "mode": "min", **kw}
    func = kw.pop("func")
    with pytest.raises(ValidationError) as info:
        Sweep(func, **kw).compile(tmp_path / "w")
    assert expected in str(info.value)
    assert not (tmp_path / "w").exists()


def test_unknown_parameter_lists_the_accepted_ones():
    with pytest.raises(ValidationError, match=r"it accepts \['x', 'y'\]"):
        Sweep(sweep_funcs.quadratic, param_grid={"lr": [1]}, metric="loss", mode="min")


def test_bad_trials_per_task_and_resources_refused(tmp_path):
    sweep = Sweep(sweep_funcs.plain, param_grid={"x": [1]}, metric="v", mode="min")
    with pytest.raises(ValidationError, match="trials_per_task"):
        sweep.compile(tmp_path / "w", trials_per_task=0)
    with pytest.raises(ValidationError, match="'gpu'"):
        sweep.compile(tmp_path / "w", resources={"gpu": 1})
    assert not (tmp_path / "w").exists()


# -- failures -------------------------------------------------------------------------
def test_failed_trial_recorded_and_the_sweep_goes_on_nan_ranked_last(tmp_path):
    calls = tmp_path / "calls"
    res = _run(Sweep(sweep_funcs.counted, candidates=[
        {"x": x, "calls": str(calls), "fail_at": 2} for x in (-1, 3, 2, 1)],
        metric="loss", mode="min"), tmp_path / "w")
    t = res.trials
    assert list(t["state"]) == ["done", "done", "failed", "done"]
    assert t.loc[2, "error"] == "ValueError: x=2 is not allowed"
    assert np.isnan(t.loc[0, "loss"])
    assert list(res.ranked()["trial"]) == [3, 1, 0, 2]  # NaN after numbers, failed last
    assert res.best_params["x"] == 1
    log = (tmp_path / "w" / "logs" / "trial-2.log").read_text()
    assert "Traceback" in log and "x=2 is not allowed" in log


def test_on_error_raise_fails_the_task(tmp_path):
    sweep = Sweep(sweep_funcs.counted, candidates=[
        {"x": x, "calls": str(tmp_path / "c"), "fail_at": 2} for x in (1, 2)],
        metric="loss", mode="min", on_error="raise")
    wf = sweep.compile(tmp_path / "w", trials_per_task=2)
    with pytest.raises(TaskFailedError):
        wf.run("local", n_jobs=1, progress=False)
    assert wf.done() == set()
    assert (tmp_path / "w" / Workdir.trial_output("0")).exists()
    assert not (tmp_path / "w" / Workdir.trial_output("1")).exists()
    assert "ValueError: x=2" in read_json(wf.workdir.meta_file("trial-0-1"))["error"]


def test_missing_metric_stops_the_run_at_the_first_finished_trial(tmp_path):
    calls = tmp_path / "calls"
    sweep = Sweep(sweep_funcs.counted, candidates=[
        {"x": x, "calls": str(calls)} for x in range(12)], metric="accuracy", mode="max")
    wf = sweep.compile(tmp_path / "w", trials_per_task=2)
    with pytest.raises(TaskFailedError):
        wf.run("local", n_jobs=1, progress=False)
    assert len(os.listdir(calls)) == 1  # one trial ran, then nothing else
    stop = read_json(wf.workdir.path(Workdir.SWEEP_STOP))
    assert "not metric='accuracy'" in stop["message"] and "['loss']" in stop["message"]
    errors = {read_json(wf.workdir.meta_file(t))["error"] for t in wf.tasks
              if wf.workdir.meta_file(t).exists()}
    assert all("accuracy" in e for e in errors) and len(errors) >= 2
    with pytest.raises(TaskFailedError):  # a resume refuses too
        wf.run("local", n_jobs=1, progress=False)
    assert len(os.listdir(calls)) == 1


# -- the trial context ----------------------------------------------------------------
def test_trial_context_dir_report_history(tmp_path):
    log = tmp_path / "log.jsonl"
    sweep = Sweep(sweep_funcs.checkpointed, candidates=[
        {"x": x, "n_steps": 3, "log": str(log), "step_seconds": 0} for x in (1, 2)],
        metric="loss", mode="min")
    res = _run(sweep, tmp_path / "w")
    h = res.history
    assert list(h.columns) == ["trial", "step", "loss"]
    assert list(h["trial"]) == [0, 0, 0, 1, 1, 1] and list(h["step"]) == [0, 1, 2] * 2
    assert list(res.trials["steps"]) == [3, 3]
    assert (tmp_path / "w" / "trials" / "0" / "checkpoint.json").exists()
    assert list(res.trials["attempt"]) == [1, 1]


def test_each_trial_measures_its_own_peak_memory(tmp_path):
    res = _run(Sweep(sweep_funcs.allocates, candidates=[{"mb": 1}, {"mb": 300}, {"mb": 1}],
                     metric="loss", mode="min"), tmp_path / "w", trials_per_task=3)
    peak = res.trials["peak_rss_mb"].to_numpy()
    assert peak[1] > peak[0] + 250 and peak[1] > peak[2] + 250
    task_peak = read_json(Workdir(tmp_path / "w").meta_file("trial-0-2"))["peak_rss_mb"]
    assert task_peak >= peak[1]  # the task's own peak still covers all its trials


def test_default_packing_rule():
    assert default_trials_per_task(1) == 1
    assert default_trials_per_task(MAX_TRIAL_TASKS) == 1
    assert default_trials_per_task(10_000) == 40
    tasks = build_tasks(10_000, default_trials_per_task(10_000),
                        resources={"time_min": 2, "mem_mb": 500})
    trials = [t for t in tasks if t.kind == "trial"]
    assert len(trials) == 250 and all(len(t.outputs) == 40 for t in trials)
    assert trials[0].resources == {"time_min": 80, "mem_mb": 500, "cpus": 1}
    assert trials[0].id == "trial-0000-0039" and tasks[-1].deps == [t.id for t in trials]
    few = build_tasks(5, default_trials_per_task(5))
    assert [t.id for t in few] == [f"trial-{k}" for k in range(5)] + ["aggregate"]


# -- kill -9, resume -------------------------------------------------------------------
def _background_run(root, n_jobs=1):
    return subprocess.Popen(
        [sys.executable, "-m", "mempamal", "resume", str(root), "-j", str(n_jobs),
         "-o", "progress=false"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True)


def _wait_for(cond, timeout=60.0):
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def _kill(proc):
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


@pytest.mark.slow
def test_kill_then_resume_runs_no_finished_trial_again(tmp_path):
    calls = tmp_path / "calls"
    sweep = Sweep(sweep_funcs.counted, candidates=[
        {"x": x, "calls": str(calls), "delay": 0.15} for x in range(12)],
        metric="loss", mode="min")
    wf = sweep.compile(tmp_path / "w", trials_per_task=6)
    outs = [wf.workdir.path(Workdir.trial_output(f"{t:02d}")) for t in range(12)]
    proc = _background_run(wf.workdir.root)
    _wait_for(lambda: sum(p.exists() for p in outs) >= 3)
    _kill(proc)
    finished = {t for t, p in enumerate(outs) if p.exists()}
    assert 3 <= len(finished) < 12
    wf.run("local", n_jobs=2, progress=False)
    per_trial = {}
    for name in os.listdir(calls):
        t = int(name.split("-")[0])
        per_trial[t] = per_trial.get(t, 0) + 1
    assert all(per_trial[t] == 1 for t in finished)
    assert sorted(per_trial) == list(range(12))
    assert sum(n - 1 for n in per_trial.values()) <= 1  # only the trial killed mid-way
    res = load_results(wf.workdir.root)
    assert list(res.trials["state"]) == ["done"] * 12
    again = [t for t, n in per_trial.items() if n == 2]
    assert list(res.trials.loc[res.trials["trial"].isin(again), "attempt"]) == [2] * len(again)


@pytest.mark.slow
def test_checkpointing_function_resumes_attempt_two_from_its_saved_step(tmp_path):
    log = tmp_path / "starts.jsonl"
    sweep = Sweep(sweep_funcs.checkpointed, candidates=[
        {"x": 1.0, "n_steps": 40, "log": str(log), "step_seconds": 0.05}],
        metric="loss", mode="min")
    wf = sweep.compile(tmp_path / "w")
    ckpt = wf.workdir.trial_dir("0") / "checkpoint.json"
    proc = _background_run(wf.workdir.root)
    _wait_for(lambda: ckpt.exists() and json.loads(ckpt.read_text() or "{}").get("step", 0) >= 4)
    _kill(proc)
    saved = json.loads(ckpt.read_text())["step"]
    wf.run("local", n_jobs=1, progress=False)
    starts = [json.loads(line) for line in log.read_text().splitlines()]
    assert [s["attempt"] for s in starts] == [1, 2]
    assert starts[0]["first_step"] == 0 and starts[1]["first_step"] == saved + 1
    res = load_results(wf.workdir.root)
    assert res.trials.loc[0, "attempt"] == 2 and res.trials.loc[0, "steps"] == 40
    expected = 1.0 / (1 + sum(range(40)))
    assert res.trials.loc[0, "loss"] == pytest.approx(expected)
    assert list(res.history["step"]) == list(range(40))  # steps reported twice kept once


def test_reported_metrics_are_readable_while_the_trial_runs(tmp_path):
    release = tmp_path / "release"
    sweep = Sweep(sweep_funcs.waits_for_release, candidates=[
        {"x": 4.0, "release": str(release)}], metric="loss", mode="min")
    wf = sweep.compile(tmp_path / "w")
    proc = _background_run(wf.workdir.root)
    try:
        metrics = wf.workdir.trial_metrics_file("0")
        _wait_for(lambda: metrics.exists() and metrics.read_text().endswith("\n"))
        assert not wf.workdir.path(Workdir.trial_output("0")).exists()  # still running
        line = json.loads(metrics.read_text().splitlines()[0])
        assert line["step"] == 0 and line["loss"] == 4.0
        with pytest.raises(WorkdirError, match="0 of 1 trials done"):
            load_results(wf.workdir.root)
        release.touch()
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            _kill(proc)
    res = load_results(wf.workdir.root)
    assert list(res.history["loss"]) == [4.0, 2.0] and res.trials.loc[0, "loss"] == 2.0


# -- command line -----------------------------------------------------------------------
def test_cli_runs_a_sweep_file(tmp_path):
    f = tmp_path / "my sweep.py"
    f.write_text(
        "from mempamal import Sweep\n"
        "def train(lr, trial):\n"
        "    trial.report(0, loss=lr)\n"
        "    return {'loss': (lr - 0.1) ** 2}\n"
        "sweep = Sweep(train, param_grid={'lr': [0.01, 0.1, 1.0]}, metric='loss', "
        "mode='min')\n")
    w = tmp_path / "w"
    run = subprocess.run([sys.executable, "-m", "mempamal", "run", str(f), "-w", str(w),
                          "-j", "2"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "best params: {'lr': 0.1}" in run.stdout
    out = subprocess.run([sys.executable, "-m", "mempamal", "results", str(w)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "3 of 3 trials: 3 done" in out.stdout
    status = subprocess.run([sys.executable, "-m", "mempamal", "status", str(w), "--json"],
                            capture_output=True, text=True, timeout=60)
    counts = json.loads(status.stdout)["counts"]
    assert counts == {"trial": {"done": 3}, "aggregate": {"done": 1}}


def test_example_file_defines_a_sweep():
    from mempamal.experiment_file import load_experiment_file

    example = Path(__file__).parent.parent / "examples" / "sweep_mlp.py"
    sweep, data, options = load_experiment_file(example)
    assert data is None and isinstance(sweep, Sweep)
    assert sweep.n_trials == 16 and sweep.takes_trial and sweep.metric == "val_loss"
    assert options == {"resources": {"cpus": 1, "mem_mb": 1000, "time_min": 10}}


def test_partial_summary_of_a_sweep_whose_last_candidates_have_not_run(tmp_path):
    """Candidates without a finished trial yet: counted 0, mean NaN, ranked last."""
    sweep = Sweep(sweep_funcs.quadratic, param_grid={"x": [0.0, 1.0, 2.0, 3.0]}, repeats=2,
                  metric="loss", mode="min")
    wf = sweep.compile(tmp_path / "w", trials_per_task=2)
    from mempamal.runner import run_task

    for tid in [t for t in wf.tasks if t.startswith("trial-")][:2]:
        run_task(wf.workdir.root, tid)
    summary = load_results(tmp_path / "w", partial=True).summary
    assert summary["n_trials"].tolist() == [2, 2, 0, 0]
    assert summary["n_done"].tolist() == [2, 2, 0, 0]
    expected = _direct([{"x": 0.0}, {"x": 1.0}], repeats=2).groupby("candidate")["loss"]
    np.testing.assert_allclose(summary["mean_loss"][:2], expected.mean())
    np.testing.assert_allclose(summary["std_loss"][:2], expected.std(ddof=0))
    assert summary["mean_loss"][2:].isna().all()
    assert summary["rank_loss"].tolist() == [2, 1, 3, 3]


def test_a_program_a_trial_starts_is_told_the_threads_of_its_cpus_hint(tmp_path,
                                                                      monkeypatch):
    """A child process (or a library loaded late) reads OMP_NUM_THREADS & co.

    Task after task in the same persistent worker, each its own ``cpus``; and
    the variables are the caller's again once a task ends.
    """
    monkeypatch.setenv("OMP_NUM_THREADS", "7")  # the caller's: restored after a task
    for cpus in (1, 2, 3):
        sweep = Sweep(sweep_funcs.child_threads, param_grid={"x": [0, 1]}, metric="omp",
                      mode="min")
        wf = sweep.compile(tmp_path / f"w{cpus}", resources={"cpus": cpus},
                           trials_per_task=1)
        wf.run("local", n_jobs=1, progress=False)
        trials = load_results(wf.workdir.root).trials
        assert trials["omp"].tolist() == [cpus] * 2
        assert trials["openblas"].tolist() == [cpus] * 2
    from mempamal.runner import THREAD_VARIABLES, run_task

    before = {v: os.environ.get(v) for v in THREAD_VARIABLES}
    task = next(t for t in wf.tasks if t.startswith("trial"))
    assert run_task(wf.workdir.root, task, force=True).ok  # in this very process
    assert {v: os.environ.get(v) for v in THREAD_VARIABLES} == before
    assert load_results(wf.workdir.root).trials["omp"].tolist() == [3, 3]  # not the 7


def test_the_cpus_hint_replaces_thread_variables_already_set(tmp_path, monkeypatch):
    """OMP_NUM_THREADS=1 left by distributed (or exported) does not cap a 2-CPU task."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "5")
    sweep = Sweep(sweep_funcs.child_threads, param_grid={"x": [0, 1]}, metric="omp",
                  mode="min")
    wf = sweep.compile(tmp_path / "w", resources={"cpus": 2}, trials_per_task=1)
    # each task in a fresh `mempamal run-task`, which inherits this environment
    wf.run("local", n_jobs=2, subprocess=True, progress=False)
    trials = load_results(wf.workdir.root).trials
    assert trials["omp"].tolist() == [2, 2]
    assert trials["openblas"].tolist() == [2, 2]


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs 2 cores to tell 1 from many")
def test_each_task_runs_with_the_blas_threads_of_its_cpus_hint(tmp_path):
    """Task after task in the same persistent worker, the limit is the task's own."""
    for cpus in (1, 2):
        sweep = Sweep(sweep_funcs.blas_threads, param_grid={"x": list(range(6))},
                      metric="threads", mode="min")
        wf = sweep.compile(tmp_path / f"w{cpus}", resources={"cpus": cpus},
                           trials_per_task=1)
        wf.run("local", n_jobs=1, progress=False)
        assert load_results(wf.workdir.root).trials["threads"].tolist() == [cpus] * 6
