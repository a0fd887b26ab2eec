"""The local executor: resume, kill, failures, Ctrl-C, worker death."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from helpers import (
    CrashingClassifier,
    FailingClassifier,
    assert_same_results,
    iris,
    small_grid_experiment,
)

from mempamal import Experiment, TaskFailedError, load_results
from mempamal.runner import read_meta
from mempamal.workflow import Workflow


def _attempts(wf):
    return {tid: (read_meta(wf.workdir, tid) or {}).get("attempt", 0) for tid in wf.tasks}


def test_resume_recomputes_exactly_the_deleted_outputs(tmp_path):
    X, y = iris()
    wf = small_grid_experiment().compile(tmp_path / "w", X, y, chunk_size=1)
    wf.run("local", n_jobs=2, progress=False)
    before = load_results(wf.workdir.root)
    attempts = _attempts(wf)
    deleted = ["fit-o1-i2-c0", "fit-o2-i0-c2", "select-o0"]
    for tid in deleted:
        for out in wf.tasks[tid].outputs:
            wf.workdir.path(out).unlink()
    # aggregate's outputs exist: it is not recomputed unless deleted too
    report = wf.run("local", n_jobs=2, progress=False)
    assert sorted(report.executed) == sorted(deleted)
    after = _attempts(wf)
    assert {t for t in wf.tasks if after[t] != attempts[t]} == set(deleted)
    assert_same_results(before, load_results(wf.workdir.root))
    # a third run has nothing to do
    assert wf.run("local", n_jobs=2, progress=False).executed == []


def test_recompiling_same_experiment_resumes(tmp_path):
    X, y = iris()
    exp = small_grid_experiment()
    wf = exp.compile(tmp_path / "w", X, y, chunk_size=2)
    wf2 = small_grid_experiment().compile(tmp_path / "w", X, y)
    assert wf2.meta["fingerprint"] == wf.meta["fingerprint"]
    assert list(wf2.tasks) == list(wf.tasks)  # the existing workflow, not a new one


def test_other_experiment_in_workdir_is_refused(tmp_path):
    from mempamal import WorkdirError

    X, y = iris()
    small_grid_experiment().compile(tmp_path / "w", X, y, chunk_size=2)
    before = sorted(p.name for p in (tmp_path / "w").rglob("*"))
    other = Experiment(FailingClassifier(), param_grid={"C": [1, 2]}, cv=3, inner_cv=3)
    with pytest.raises(WorkdirError, match="holds another experiment"):
        other.compile(tmp_path / "w", X, y)
    assert sorted(p.name for p in (tmp_path / "w").rglob("*")) == before
    # different data is another experiment too
    with pytest.raises(WorkdirError, match="holds another experiment"):
        small_grid_experiment().compile(tmp_path / "w", X + 1, y)


def test_non_mempamal_directory_is_refused(tmp_path):
    from mempamal import WorkdirError

    X, y = iris()
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "thesis.tex").write_text("precious")
    with pytest.raises(WorkdirError, match="not a mempamal workdir"):
        small_grid_experiment().compile(tmp_path / "w", X, y)
    assert os.listdir(tmp_path / "w") == ["thesis.tex"]


def test_fit_error_is_recorded_with_error_score(tmp_path):
    """A fit that raises gets error_score and its traceback, as in GridSearchCV."""
    from sklearn.model_selection import GridSearchCV, cross_validate

    X, y = iris()
    grid = {"C": [0.5, 1.0], "fail": [False, True]}
    exp = Experiment(FailingClassifier(), param_grid=grid, cv=3, inner_cv=3,
                     error_score=-1.0)
    wf = exp.compile(tmp_path / "w", X, y, chunk_size=4)
    wf.run("local", n_jobs=2, progress=False)
    assert "FitFailedWarning: 6 fits failed out of a total of 12" in \
        wf.workdir.log_file("select-o0").read_text()
    res = load_results(wf.workdir.root)
    failed = res.cv_results[res.cv_results["param_fail"] == True]  # noqa: E712
    assert (failed["mean_test_score"] == -1.0).all()
    doc = json.loads(wf.workdir.path(wf.tasks["fit-o0-i0-c0"].outputs[0]).read_text())
    errors = [r["fit_error"] for r in doc["results"]]
    assert any(e and "asked to fail" in e for e in errors)
    oracle = cross_validate(GridSearchCV(FailingClassifier(), grid, cv=3, error_score=-1.0),
                            X, y, cv=3, return_estimator=True)
    assert res.best_params == [e.best_params_ for e in oracle["estimator"]]
    np.testing.assert_allclose(res.outer_scores["test_score"], oracle["test_score"])


def test_task_crash_is_reported_and_independent_branches_finish(tmp_path):
    X, y = iris()
    flag = tmp_path / "fail-now"
    flag.touch()
    est = FailingClassifier(fail_file=str(flag))
    # error_score="raise": the fit error fails the task itself
    exp = Experiment(est, param_grid={"C": [1.0, 2.0]}, cv=3, inner_cv=2,
                     error_score="raise")
    wf = exp.compile(tmp_path / "w", X, y, chunk_size=2)
    with pytest.raises(TaskFailedError) as info:
        wf.run("local", n_jobs=2, progress=False)
    report = info.value.report
    assert set(report.failures) == {f"fit-o{o}-i{i}-c0" for o in range(3) for i in range(2)}
    assert set(report.not_run) == {"select-o0", "select-o1", "select-o2", "aggregate"}
    log = wf.workdir.log_file("fit-o0-i0-c0").read_text()
    assert "RuntimeError: FailingClassifier asked to fail" in log
    assert read_meta(wf.workdir, "fit-o0-i0-c0")["state"] == "failed"
    assert wf.status()["fit-o0-i0-c0"] == "failed"
    # cause removed: the rerun completes
    flag.unlink()
    wf.run("local", n_jobs=2, progress=False)
    assert wf.status()["aggregate"] == "done"


def test_cli_exit_status_and_status_command(tmp_path):
    X, y = iris()
    flag = tmp_path / "fail-now"
    flag.touch()
    exp = Experiment(FailingClassifier(fail_file=str(flag)), param_grid={"C": [1.0, 2.0]},
                     cv=2, inner_cv=2, error_score="raise")
    wf = exp.compile(tmp_path / "w", X, y, chunk_size=2)
    root = str(wf.workdir.root)
    proc = subprocess.run([sys.executable, "-m", "mempamal", "resume", root, "-j", "2"],
                          capture_output=True, text=True)
    assert proc.returncode == 1
    assert "4 task(s) failed" in proc.stderr
    assert "3 task(s) not run because a task they depend on failed" in proc.stderr
    st = subprocess.run([sys.executable, "-m", "mempamal", "status", root, "--json"],
                        capture_output=True, text=True)
    report = json.loads(st.stdout)
    assert report["counts"]["fit"] == {"failed": 4}
    (group,) = report["failure_groups"]
    assert group["error_type"] == "RuntimeError" and group["count"] == 4
    assert "asked to fail" in group["example"]
    assert all(os.path.exists(p) for p in group["logs"])


def test_worker_death_is_retried_then_failed(tmp_path):
    """A worker killed mid-task (OOM, segfault) does not take the run down."""
    X, y = iris()
    flag = tmp_path / "crash-now"
    flag.touch()
    exp = Experiment(CrashingClassifier(fail_file=str(flag)), cv=2, inner_cv=None)
    wf = exp.compile(tmp_path / "w", X, y)
    with pytest.raises(TaskFailedError, match="worker process died"):
        wf.run("local", n_jobs=1, progress=False)
    flag.unlink()
    wf.run("local", n_jobs=1, progress=False)
    assert wf.status()["aggregate"] == "done"


SLOW_EXPERIMENT = """
from sklearn.datasets import load_digits
from sklearn.svm import SVC
from mempamal import Experiment
X, y = load_digits(return_X_y=True)
experiment = Experiment(SVC(), param_grid={"C": [0.1, 1, 10, 100], "gamma": [1e-4, 1e-3]},
                        cv=3, inner_cv=3)
compile_options = {"chunk_size": 1}
"""


def test_sigkill_midway_then_resume_gives_identical_results(tmp_path):
    exp_file = tmp_path / "exp.py"
    exp_file.write_text(SLOW_EXPERIMENT)
    cmd = [sys.executable, "-m", "mempamal", "run", str(exp_file), "--workdir"]
    ref = subprocess.run(cmd + [str(tmp_path / "ref"), "-j", "2"], capture_output=True)
    assert ref.returncode == 0, ref.stderr
    work = tmp_path / "killed"
    proc = subprocess.Popen(cmd + [str(work), "-j", "2"], start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # kill when some but not all fit outputs exist
    deadline = time.time() + 120
    while time.time() < deadline:
        fits = list((work / "out" / "fit").glob("*.json")) if (work / "out").exists() else []
        if len(fits) >= 10:
            break
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the whole group: no worker survives
    proc.wait()
    wf = Workflow.load(work)
    done_before = wf.done()
    assert 0 < len(done_before) < len(wf)
    attempts = _attempts(wf)
    # every file that looks done parses (nothing half-written counted as done)
    for tid in done_before:
        for out in wf.tasks[tid].outputs:
            if out.endswith(".json"):
                json.loads(wf.workdir.path(out).read_text())
    rerun = subprocess.run([sys.executable, "-m", "mempamal", "resume", str(work), "-j", "2"],
                           capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    after = _attempts(wf)
    assert all(after[t] == attempts[t] for t in done_before)  # nothing done recomputed
    assert not list(work.rglob(".tmp-*"))
    assert_same_results(load_results(tmp_path / "ref"), load_results(work))


def test_ctrl_c_stops_cleanly_and_resumes(tmp_path):
    exp_file = tmp_path / "exp.py"
    exp_file.write_text(SLOW_EXPERIMENT)
    work = tmp_path / "w"
    proc = subprocess.Popen([sys.executable, "-m", "mempamal", "run", str(exp_file),
                             "--workdir", str(work), "-j", "2"], start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not list(work.glob("out/fit/*.json")):
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal sends
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "rerun to resume" in err
    rerun = subprocess.run([sys.executable, "-m", "mempamal", "resume", str(work), "-j", "2"],
                           capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    assert not list(work.rglob(".tmp-*"))


def test_bad_backend_option_on_the_command_line_writes_nothing(tmp_path):
    exp_file = tmp_path / "exp.py"
    exp_file.write_text(SLOW_EXPERIMENT)
    for argv in (["run", str(exp_file), "-w", str(tmp_path / "w"), "-o", "nope=1"],
                 ["compile", str(exp_file), "-w", str(tmp_path / "w"), "-b", "local",
                  "-o", "nope=1"]):
        proc = subprocess.run([sys.executable, "-m", "mempamal", *argv],
                              capture_output=True, text=True)
        assert proc.returncode == 2 and "unknown option(s) ['nope']" in proc.stderr
        assert not (tmp_path / "w").exists()


def test_status_asks_the_backend_that_ran_last(tmp_path):
    X, y = iris()
    wf = small_grid_experiment().compile(tmp_path / "w", X, y, chunk_size=3)
    assert wf.last_backend() == "local"
    wf.run("local", n_jobs=1, progress=False)
    assert wf.last_backend() == "local"
    (wf.workdir.last_backend_file).write_text('{"backend": "nope"}')
    from mempamal import ValidationError

    with pytest.raises(ValidationError, match="unknown backend 'nope'"):
        wf.status()


def test_submit_returns_at_once_and_runs_in_the_background(tmp_path):
    X, y = iris()
    wf = small_grid_experiment().compile(tmp_path / "w", X, y, chunk_size=3)
    proc = wf.submit("local", n_jobs=2)
    assert proc.poll() is None or proc.returncode == 0  # returned before the run ended
    assert proc.wait(timeout=120) == 0, (wf.workdir.root / "local" / "run.log").read_text()
    assert wf.status()["aggregate"] == "done"
    assert "tasks to run on local" in (wf.workdir.root / "local" / "run.log").read_text()


def test_the_submit_command_says_where_the_background_run_goes_on(tmp_path):
    import psutil

    X, y = iris()
    wf = small_grid_experiment().compile(tmp_path / "w", X, y, chunk_size=3)
    out = subprocess.run([sys.executable, "-m", "mempamal", "submit", str(wf.workdir.root),
                          "--backend", "local", "-j", "2"], capture_output=True, text=True,
                         check=True).stdout
    log = wf.workdir.root / "local" / "run.log"
    pid = int(out.split("(process ")[1].split(",")[0])
    assert f"log {log})" in out and f"mempamal watch {wf.workdir.root}" in out, out
    assert "Popen" not in out
    with contextlib.suppress(psutil.NoSuchProcess):
        psutil.Process(pid).wait(timeout=120)  # the process the message names runs it
    assert wf.status()["aggregate"] == "done", log.read_text()


def test_task_started_before_its_dependencies_is_not_run_not_failed(tmp_path):
    from mempamal.runner import EXIT_NOT_READY

    X, y = iris()
    wf = small_grid_experiment().compile(tmp_path / "w", X, y, chunk_size=3)
    proc = subprocess.run([sys.executable, "-m", "mempamal", "run-task",
                           str(wf.workdir.root), "select-o0"], capture_output=True, text=True)
    assert proc.returncode == EXIT_NOT_READY
    assert "not run" in proc.stderr and "dependencies not done" in proc.stderr
    assert read_meta(wf.workdir, "select-o0") is None  # no failure recorded
    assert wf.status()["select-o0"] == "pending"


def test_scikit_learn_n_jobs_still_works_after_a_run(tmp_path):
    """mempamal's worker pool is its own: the caller's joblib pool is untouched."""
    from sklearn.model_selection import GridSearchCV, cross_validate
    from sklearn.svm import SVC

    X, y = iris()
    wf = small_grid_experiment().compile(tmp_path / "w", X, y, chunk_size=3)
    wf.run("local", n_jobs=2, progress=False)
    out = cross_validate(GridSearchCV(SVC(), {"C": [1, 10]}, cv=3, n_jobs=2), X, y, cv=3,
                         n_jobs=2)
    assert len(out["test_score"]) == 3
    # and a second run of ours after sklearn's still works
    for out_rel in wf.tasks["aggregate"].outputs:
        wf.workdir.path(out_rel).unlink()
    assert wf.run("local", n_jobs=2, progress=False).executed == ["aggregate"]


def test_results_command_prints_outer_scores_and_summary(tmp_path):
    X, y = iris()
    wf = small_grid_experiment().compile(tmp_path / "w", X, y, chunk_size=3)
    root = str(wf.workdir.root)
    early = subprocess.run([sys.executable, "-m", "mempamal", "results", root],
                           capture_output=True, text=True)
    assert early.returncode == 2 and "not finished: 0 of 3 outer splits" in early.stderr
    wf.run("local", n_jobs=2, progress=False)
    proc = subprocess.run([sys.executable, "-m", "mempamal", "results", root],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    res = load_results(root)
    lines = proc.stdout.splitlines()
    assert lines[0].split()[:2] == ["outer_split", "test_score"]
    assert len([ln for ln in lines if ln.strip().startswith(("0 ", "1 ", "2 "))]) == 3
    mean = res.summary.loc["test_score", "mean"]
    assert any(ln.startswith("test_score") and f"{mean:.6f}" in ln for ln in lines)


def test_status_names_a_load_failure_with_a_log_that_exists(tmp_path):
    """A task that cannot load its workdir (before its own code runs) still leaves a
    log and a meta record, and status groups the failures by their first error line."""
    from mempamal.status import status_report

    X, y = iris()
    wf = small_grid_experiment().compile(tmp_path / "w", X, y, chunk_size=3)
    pkl = wf.workdir.experiment_file
    pkl.write_bytes(pkl.read_bytes() + b"\x00")
    with pytest.raises(TaskFailedError):
        wf.run("local", n_jobs=2, subprocess=True, progress=False)
    report = status_report(wf.workdir.root)
    (group,) = report["failure_groups"]
    assert group["count"] == len([t for t in wf.tasks.values() if t.kind == "fit"])
    assert "experiment.pkl does not match the sha256" in group["error_line"]
    assert group["root_cause"] and group["logs"]
    assert all(os.path.exists(p) for p in group["logs"])
    assert "refusing to load it" in group["example"]


def test_status_lists_root_causes_before_what_failed_because_of_them(tmp_path):
    from mempamal.status import status_report
    from mempamal.workdir import write_json

    X, y = iris()
    wf = small_grid_experiment().compile(tmp_path / "w", X, y, chunk_size=3)
    for tid, err in (("select-o0", "CorruptOutputError: output of fit-o0-i0-c0 is corrupt"),
                     ("aggregate", "CorruptOutputError: output of fit-o0-i0-c0 is corrupt"),
                     ("fit-o0-i0-c0", "MemoryError: out of memory")):
        write_json(wf.workdir.meta_file(tid), {"task": tid, "state": "failed", "error": err,
                                               "error_type": err.split(":")[0]})
    groups = status_report(wf.workdir.root)["failure_groups"]
    # the bigger group comes second: it failed because of the first
    assert [g["error_type"] for g in groups] == ["MemoryError", "CorruptOutputError"]
    assert [g["root_cause"] for g in groups] == [True, False]
    assert groups[0]["error_line"] == "MemoryError: out of memory"


def test_failures_differing_only_by_job_ids_and_times_form_one_group(tmp_path):
    from mempamal.status import status_report
    from mempamal.workdir import write_json

    X, y = iris()
    wf = small_grid_experiment().compile(tmp_path / "w", X, y, chunk_size=3)
    for tid, job, at in (("fit-o0-i0-c0", 17, "10:02:07"), ("fit-o0-i1-c0", 18, "10:02:39")):
        err = f"slurmstepd: error: *** JOB {job} ON vm CANCELLED AT {at} DUE TO TIME LIMIT ***"
        write_json(wf.workdir.meta_file(tid), {"task": tid, "state": "failed", "error": err,
                                               "error_type": "SchedulerError",
                                               "scheduler_state": f"TIMEOUT ({job})"})
    write_json(wf.workdir.meta_file("fit-o1-i0-c0"),
               {"task": "fit-o1-i0-c0", "state": "failed", "error": "ValueError: bad C",
                "error_type": "ValueError"})
    groups = status_report(wf.workdir.root)["failure_groups"]
    assert sorted(g["count"] for g in groups) == [1, 2]
    (timeouts,) = [g for g in groups if g["count"] == 2]
    assert "JOB 17" in timeouts["error_line"]
