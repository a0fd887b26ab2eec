"""Nothing lost, nothing wrong: kills, corruption, locking, trust, hostile strings."""

from __future__ import annotations

import json
import os
import random
import signal
import stat
import subprocess
import sys
import time

import numpy as np
import pytest
from helpers import assert_same_results, iris, small_grid_experiment

from mempamal import Experiment, WorkdirError, WorkdirLockedError, load_results
from mempamal.runner import damaged_outputs, read_meta, verify
from mempamal.status import status_report
from mempamal.workflow import Workflow


def _attempts(wf):
    return {tid: (read_meta(wf.workdir, tid) or {}).get("attempt", 0) for tid in wf.tasks}


def _mempamal(*args, **kw):
    return [sys.executable, "-m", "mempamal", *map(str, args)]


SLEEPY_EXPERIMENT = """
from helpers import SleepyClassifier, iris
from mempamal import Experiment
X, y = iris()
# every fit sleeps 0.3 s: the run lasts ~18 s of wall time on 2 workers
# whatever the machine, so that 20 kills all land in the middle of it
experiment = Experiment(SleepyClassifier(delay=0.3),
                        param_grid={"C": [0.01, 0.1, 1.0, 10.0, 100.0]},
                        cv=3, inner_cv=4)
compile_options = {"chunk_size": 1}
"""


@pytest.mark.slow
def test_twenty_sigkills_at_random_moments(tmp_path):
    from helpers import SleepyClassifier
    from sklearn.model_selection import GridSearchCV, cross_validate

    exp_file = tmp_path / "exp.py"
    exp_file.write_text(SLEEPY_EXPERIMENT)
    work = tmp_path / "killed"
    compiled = subprocess.run(_mempamal("compile", exp_file, "--workdir", work),
                              capture_output=True, text=True)
    assert compiled.returncode == 0, compiled.stderr
    wf = Workflow.load(work)
    rng = random.Random(20261123)
    for kill in range(20):
        done_before = wf.done()
        assert len(done_before) < len(wf), f"the run finished before kill {kill}"
        attempts_before = _attempts(wf)
        proc = subprocess.Popen(_mempamal("resume", work, "-j", 2), start_new_session=True,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.5, 2.0))
        os.killpg(proc.pid, signal.SIGKILL)  # the whole group: no worker survives
        proc.wait()
        # nothing done before was recomputed; nothing damaged counts as done
        after = _attempts(wf)
        assert all(after[t] == attempts_before[t] for t in done_before)
        for tid in wf.done():
            assert damaged_outputs(wf.workdir, wf.tasks[tid]) == [], tid
    final = subprocess.run(_mempamal("resume", work, "-j", 2), capture_output=True, text=True)
    assert final.returncode == 0, final.stderr
    # identical to an uninterrupted run: scikit-learn's own (the sleep changes no number)
    X, y = iris()
    oracle = cross_validate(
        GridSearchCV(SleepyClassifier(), {"C": [0.01, 0.1, 1.0, 10.0, 100.0]}, cv=4), X, y,
        cv=3, return_estimator=True)
    res = load_results(work)
    assert res.best_params == [e.best_params_ for e in oracle["estimator"]]
    assert res.outer_scores["test_score"].tolist() == oracle["test_score"].tolist()
    assert not list(work.rglob(".tmp-*"))


def _completed(tmp_path, name="w"):
    X, y = iris()
    wf = small_grid_experiment().compile(tmp_path / name, X, y, chunk_size=1)
    wf.run("local", n_jobs=2, progress=False)
    return wf


def test_truncated_or_altered_output_is_recomputed_not_used(tmp_path):
    wf = _completed(tmp_path)
    ref = load_results(wf.workdir.root)
    attempts = _attempts(wf)
    truncated = wf.workdir.path(wf.tasks["fit-o0-i1-c2"].outputs[0])
    truncated.write_bytes(truncated.read_bytes()[:40])
    altered = wf.workdir.path(wf.tasks["fit-o1-i0-c0"].outputs[0])
    doc = json.loads(altered.read_text())
    doc["results"][0]["test_scores"]["score"] = 1.0  # still valid JSON, wrong number
    altered.write_text(json.dumps(doc))
    # their consumers must run again for the damage to matter
    for tid in ("select-o0", "select-o1", "aggregate"):
        for out in wf.tasks[tid].outputs:
            wf.workdir.path(out).unlink()
    wf.run("local", n_jobs=2, progress=False)
    after = _attempts(wf)
    recomputed = {t for t in wf.tasks if after[t] > attempts[t]}
    assert {"fit-o0-i1-c2", "fit-o1-i0-c0"} <= recomputed
    assert_same_results(ref, load_results(wf.workdir.root))


def test_verify_finds_and_deletes_damaged_outputs(tmp_path):
    wf = _completed(tmp_path)
    path = wf.workdir.path(wf.tasks["select-o2"].outputs[0])
    path.write_text(path.read_text().replace("0", "1", 1))
    found = verify(wf)
    assert list(found) == ["select-o2"]
    assert not path.exists()
    proc = subprocess.run(_mempamal("verify", wf.workdir.root), capture_output=True, text=True)
    assert proc.returncode == 0 and "0 task(s) to recompute" in proc.stdout


def test_second_run_on_a_live_workdir_is_refused(tmp_path):
    exp_file = tmp_path / "exp.py"
    exp_file.write_text(SLEEPY_EXPERIMENT)  # lasts long enough to be caught live
    work = tmp_path / "w"
    proc = subprocess.Popen(_mempamal("run", exp_file, "--workdir", work, "-j", 1),
                            start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        holder = work / ".mempamal.lock.holder"
        deadline = time.time() + 60
        while not holder.exists() and time.time() < deadline:
            time.sleep(0.05)
        assert holder.exists()
        wf = Workflow.load(work)
        with pytest.raises(WorkdirLockedError, match=f"pid {proc.pid}"):
            wf.run("local", n_jobs=1, progress=False)
        cli = subprocess.run(_mempamal("resume", work), capture_output=True, text=True)
        assert cli.returncode == 2 and "in use by another run" in cli.stderr
        assert status_report(work)["total"] == len(wf)  # status works alongside
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    # the holder died: the lock is free again
    Workflow.load(work).run("local", n_jobs=2, progress=False)


def test_tampered_pickle_is_never_loaded(tmp_path):
    wf = _completed(tmp_path)
    pkl = wf.workdir.experiment_file
    pkl.write_bytes(pkl.read_bytes() + b"\x00")
    from mempamal import context

    context._load.cache_clear()
    with pytest.raises(WorkdirError, match="experiment.pkl does not match the sha256 "
                                           "recorded in workflow.json"):
        load_results(wf.workdir.root)
    for out in wf.tasks["aggregate"].outputs:
        wf.workdir.path(out).unlink()
    from mempamal import TaskFailedError

    with pytest.raises(TaskFailedError, match="refusing to load it"):
        wf.run("local", n_jobs=1, progress=False)


def test_workdir_has_no_group_or_world_write(tmp_path):
    old = os.umask(0)  # even with a permissive umask
    try:
        wf = _completed(tmp_path)
    finally:
        os.umask(old)
    for dirpath, dirnames, filenames in os.walk(wf.workdir.root):
        for name in dirnames + filenames:
            mode = os.stat(os.path.join(dirpath, name)).st_mode
            assert not mode & (stat.S_IWGRP | stat.S_IWOTH), os.path.join(dirpath, name)


def test_hostile_paths_and_values_run_as_written(hostile_dir, tmp_path, monkeypatch):
    """Quotes, $(...), backticks, ; and newlines in paths and values execute nothing."""
    from helpers import FailingClassifier

    X, y = iris()
    evil = ["x'; touch PWNED; echo \"$(touch PWNED2)\" `touch PWNED3`\n é",
            "$(touch PWNED4) ; rm -rf ~ # \\ \t ü"]
    # hostile strings as parameter values: they reach the estimator (as a path
    # that does not exist, so the fits succeed) through pickles, never a shell
    exp = Experiment(FailingClassifier(),
                     candidates=[{"C": 1.0, "fail_file": str(tmp_path / evil[0])},
                                 {"C": 0.5, "fail_file": str(tmp_path / evil[1])}],
                     cv=2, inner_cv=2)
    work = hostile_dir / evil[0].replace("\n", " ").replace("/", "_")
    monkeypatch.chdir(tmp_path)
    wf = exp.compile(work, X, y, chunk_size=1)
    wf.run("local", n_jobs=2, subprocess=True, progress=False)
    res = load_results(work)
    assert {p["fail_file"] for p in res.best_params} <= {str(tmp_path / e) for e in evil}
    assert not list(tmp_path.rglob("PWNED*"))
    assert not os.path.exists("PWNED")


# -- one trust rule for every pickle (issue 12, point 3) --------------------------
def _tamper(path):
    path.write_bytes(path.read_bytes() + b"\x00")


def _fresh_context():
    from mempamal import context

    context._load.cache_clear()


@pytest.fixture
def pickled_workdir(tmp_path):
    """A finished run whose X, y and a fit parameter are pickles, with kept estimators."""
    import pandas as pd
    from sklearn.linear_model import LogisticRegression

    X, y = iris()
    df = pd.DataFrame(X, columns=list("abcd"))
    labels = np.array([f"class {v}" for v in y], dtype=object)  # a pickle, not .npy
    exp = Experiment(LogisticRegression(max_iter=300), param_grid={"C": [0.1, 1.0]},
                     cv=2, inner_cv=2, return_estimator=True)
    wf = exp.compile(tmp_path / "w", df, labels, chunk_size=2)
    wf.run("local", n_jobs=2, progress=False)
    _fresh_context()
    return wf


@pytest.mark.parametrize("name", ["data/X.pkl", "data/y.pkl", "experiment.pkl"])
def test_every_compiled_pickle_is_checked_before_loading(pickled_workdir, name):
    wf = pickled_workdir
    assert wf.file_digest(name), f"no digest recorded for {name}"
    load_results(wf.workdir.root)  # loads them all while they are intact
    _tamper(wf.workdir.path(name))
    _fresh_context()
    with pytest.raises(WorkdirError, match=f"{name} does not match the sha256 recorded in "
                                           "workflow.json.*refusing to load it"):
        load_results(wf.workdir.root)


def test_kept_estimators_are_checked_before_loading(pickled_workdir):
    wf = pickled_workdir
    res = load_results(wf.workdir.root)
    assert len(res.estimators) == 2  # intact: they load
    _tamper(wf.workdir.path("out/select/o1-estimator.pkl"))
    with pytest.raises(WorkdirError, match="the estimator of outer split 1 does not match "
                                           "the sha256 recorded by the task that fitted it"):
        load_results(wf.workdir.root).estimators  # noqa: B018


def test_a_task_refuses_a_tampered_data_pickle(pickled_workdir):
    from mempamal import TaskFailedError

    wf = pickled_workdir
    _tamper(wf.workdir.path("data/X.pkl"))
    _fresh_context()
    for out in wf.tasks["select-o0"].outputs + wf.tasks["aggregate"].outputs:
        wf.workdir.path(out).unlink()
    with pytest.raises(TaskFailedError, match="data/X.pkl does not match"):
        wf.run("local", n_jobs=1, progress=False)
