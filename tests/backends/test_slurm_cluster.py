"""The SLURM backend against a real SLURM cluster (start one: .ci/slurm/start-local-slurm.sh).

Skipped without sbatch or an answering controller, except under CI=true where
that is a failure. The local backend is the oracle for every result.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import requires_or_fail, slurm_answers
from helpers import FailingClassifier, SleepyClassifier, assert_same_results, iris
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from mempamal import Experiment, TaskFailedError, load_results
from mempamal.backends.slurm import SlurmBackend, run_id
from mempamal.backends.slurm.commands import ACTIVE_STATES, read_records, squeue
from mempamal.errors import ExternalCommandError

pytestmark = [pytest.mark.slurm,
              requires_or_fail(slurm_answers(), "no SLURM cluster answers (sbatch/squeue)")]

#: fast polling for short test jobs (the default, 5 s, suits real clusters)
FAST = {"poll_interval": 0.5, "progress": False}


def _local(exp, root, X, y, **kw):
    wf = exp.compile(root, X, y, **kw)
    wf.run("local", n_jobs=2, progress=False)
    return load_results(root)


def _metas(wf) -> dict:
    return {tid: json.loads(wf.workdir.meta_file(tid).read_text()) for tid in wf.tasks
            if wf.workdir.meta_file(tid).exists()}


def _wait_idle(wf, timeout=120) -> None:
    ids = {r.job for r in read_records(wf.workdir.backend_dir("slurm") / "jobs.tsv")}
    deadline = time.monotonic() + timeout
    while any(r["state"] in ACTIVE_STATES for r in squeue(ids)):
        assert time.monotonic() < deadline, "SLURM jobs did not end"
        time.sleep(1)


def test_readme_example_equals_local_backend(tmp_path):
    X, y = iris()
    exp = Experiment(
        make_pipeline(StandardScaler(), SVC()),
        param_grid={"svc__C": [0.1, 1, 10], "svc__gamma": [1e-3, 1e-2]},
        cv=StratifiedKFold(5, shuffle=True, random_state=0), inner_cv=StratifiedKFold(3),
        scoring="accuracy")
    wf = exp.compile(tmp_path / "slurm", X, y, chunk_size=3)
    report = wf.run("slurm", tasks_per_job=6, **FAST)  # one element per split
    assert sorted(report.executed) == sorted(wf.tasks) and not report.failures
    assert wf.status("slurm") == {tid: "done" for tid in wf.tasks}
    assert_same_results(load_results(tmp_path / "slurm"),
                        _local(exp, tmp_path / "local", X, y, chunk_size=3))
    # every job of the run carries its id; SLURM logs are named after job and array ids
    logs = sorted(p.name for p in wf.workdir.logs_dir.glob("*.out"))
    assert logs and all(n.startswith(f"mempamal-{run_id(wf)}-") for n in logs)
    assert any(n.startswith(f"mempamal-{run_id(wf)}-fit-o4-") for n in logs)
    assert all(m["slurm_job"] for m in _metas(wf).values())


def _run_failing_candidate_1(wf, **opts):
    """Run a 2x2 workflow whose candidate 1 fails: check the report, return the
    failed fits and the states SLURM gives."""
    with pytest.raises(TaskFailedError) as info:
        wf.run("slurm", **(opts or FAST))
    failing = {t for t in wf.tasks if t.startswith("fit-") and t.endswith("-c1")}
    assert set(info.value.failures) == failing
    assert sorted(info.value.report.not_run) == ["aggregate", "select-o0", "select-o1"]
    states = wf.status("slurm")
    assert {t for t, s in states.items() if s == "failed"} == failing
    return failing, states


def test_failed_task_cancels_dependents_and_resume_runs_only_what_is_missing(tmp_path):
    X, y = iris()
    fail = tmp_path / "fail-now"
    fail.touch()
    # chunk_size=1: candidate 1 fails in every split, candidate 0 succeeds
    exp = Experiment(FailingClassifier(), param_grid={"fail_file": [None, str(fail)]},
                     cv=2, inner_cv=2, error_score="raise")
    wf = exp.compile(tmp_path / "w", X, y, chunk_size=1)
    failing, states = _run_failing_candidate_1(wf)
    assert {t for t, s in states.items() if s == "cancelled"} == {
        "aggregate", "select-o0", "select-o1"}
    from mempamal.status import status_report

    report = status_report(wf.workdir.root, "slurm")
    assert {f["task"] for f in report["failures"]} == failing
    for f in report["failures"]:
        assert "FailingClassifier asked to fail" in f["error"]
        assert f["scheduler_state"] == "FAILED (NonZeroExitCode)"
        assert "FailingClassifier asked to fail" in Path(f["log"]).read_text()
    cli = subprocess.run([sys.executable, "-m", "mempamal", "status", str(wf.workdir.root),
                          "--backend", "slurm", "--json"], capture_output=True, text=True)
    assert {f["task"] for f in json.loads(cli.stdout)["failures"]} == failing
    # remove the cause, resume: only the failed fits and what depends on them run
    fail.unlink()
    before = _metas(wf)
    wf.run("slurm", **FAST)
    after = _metas(wf)
    for tid in wf.tasks:
        if tid in failing:
            assert after[tid]["attempt"] == 2, tid
        elif tid.startswith("fit-"):
            assert after[tid] == before[tid], f"{tid} was recomputed"
        else:
            assert after[tid]["attempt"] == 1, tid
    resume = read_records(wf.workdir.backend_dir("slurm") / "jobs.tsv")[-5:]
    assert [(r.stem, r.array.partition("%")[0]) for r in resume] == [
        ("fit-o0", "1,3"), ("select-o0", "-"), ("fit-o1", "1,3"),
        ("select-o1", "-"), ("aggregate", "-")]
    assert_same_results(load_results(tmp_path / "w"), _local(exp, tmp_path / "local", X, y,
                                                               chunk_size=1))


def test_auto_packing_runs_each_select_after_its_fits_in_one_job(tmp_path, monkeypatch):
    """tasks_per_job="auto" on the real cluster: packed plain jobs, chains fused.

    With 2 CPUs (sinfo; max_parallel=2 holds it there on a bigger node) and ~1 s
    per fit task, each outer split's fits fill one
    job and its select runs in the same job, after them. A failing fit stops
    its split only; resume reruns what is missing, in the same jobs.
    """
    import mempamal.backends.slurm as slurm_backend

    monkeypatch.setattr(slurm_backend, "MIN_JOB_SECONDS", 1.0)
    X, y = iris()
    fail = tmp_path / "fail-now"
    fail.touch()
    exp = Experiment(SleepyClassifier(delay=0.1),
                     param_grid={"fail_file": [None, str(fail)]}, cv=2, inner_cv=2,
                     error_score="raise")
    wf = exp.compile(tmp_path / "w", X, y, chunk_size=1)
    wf.meta["seconds_per_fit"] = 1.0  # as if timed at compile: 8 s of fits, 4 s of selects
    opts = {**FAST, "max_parallel": 2}
    jobs = SlurmBackend(**opts).plan(wf)
    assert [(j.stem, j.array, j.deps) for j in jobs] == [
        ("fit-o0", False, []), ("fit-o1", False, []),
        ("aggregate", False, ["fit-o0", "fit-o1"])]
    assert jobs[0].lines == [[t for t in wf.tasks if t.startswith("fit-o0-")] + ["select-o0"]]
    failing, states = _run_failing_candidate_1(wf, **opts)
    assert {t for t, s in states.items() if s == "done"} == {
        t for t in wf.tasks if t.startswith("fit-") and t.endswith("-c0")}
    assert states["aggregate"] == "cancelled"
    assert {states["select-o0"], states["select-o1"]} == {"pending"}  # never started
    fail.unlink()
    before = _metas(wf)
    wf.run("slurm", **opts)  # returns once the aggregate's outputs exist
    # at once again: nothing to do, even if SLURM still shows the last job completing
    again = wf.run("slurm", **opts)
    assert (again.executed, again.failures, again.not_run) == ([], {}, [])
    after = _metas(wf)
    for tid in wf.tasks:
        if tid.startswith("fit-") and tid not in failing:
            assert after[tid] == before[tid], f"{tid} was recomputed"
    assert [r.stem for r in read_records(wf.workdir.backend_dir("slurm") / "jobs.tsv")] == [
        "fit-o0", "fit-o1", "aggregate"] * 2
    assert_same_results(load_results(tmp_path / "w"), _local(exp, tmp_path / "local", X, y,
                                                               chunk_size=1))


def test_scancel_midway_then_resume_recomputes_nothing_done(tmp_path):
    X, y = iris()
    exp = Experiment(SleepyClassifier(delay=0.7), param_grid={"C": [0.1, 10.0]},
                     cv=2, inner_cv=2)
    wf = exp.compile(tmp_path / "w", X, y, chunk_size=1)
    records = wf.submit("slurm", max_parallel=1, **FAST)
    deadline = time.monotonic() + 120
    while not any(t.startswith("fit-") for t in wf.done()):
        assert time.monotonic() < deadline, "no fit finished"
        time.sleep(0.5)
    subprocess.run(["scancel", *[r.job for r in records]], check=True)
    _wait_idle(wf)
    done = wf.done()
    assert done and "aggregate" not in done
    states = wf.status("slurm")
    assert "cancelled" in states.values() and "running" not in states.values()
    done_metas = {t: m for t, m in _metas(wf).items() if t in done}
    wf.run("slurm", **FAST)
    assert wf.done() == set(wf.tasks)
    after = _metas(wf)
    for tid, meta in done_metas.items():
        assert after[tid] == meta, f"{tid} was recomputed"
        assert wf.workdir.log_file(tid).read_text().count("=== mempamal task") == 1
    assert_same_results(load_results(tmp_path / "w"), _local(exp, tmp_path / "local", X, y,
                                                               chunk_size=1))


def test_small_max_array_size_splits_arrays_and_max_parallel_holds(tmp_path):
    X, y = iris()
    exp = Experiment(SVC(), param_grid={"C": [0.1, 10.0]}, cv=2, inner_cv=2)
    wf = exp.compile(tmp_path / "w", X, y, chunk_size=1)  # 4 fits per outer split
    wf.run("slurm", max_array_size=3, max_parallel=1, tasks_per_job=1, **FAST)
    records = read_records(wf.workdir.backend_dir("slurm") / "jobs.tsv")
    assert [(r.stem, r.array) for r in records] == [
        ("fit-o0.0", "0-2%1"), ("fit-o0.1", "0%1"), ("select-o0", "-"),
        ("fit-o1.0", "0-2%1"), ("fit-o1.1", "0%1"), ("select-o1", "-"), ("aggregate", "-")]
    metas = _metas(wf)
    for stem in ("fit-o0.0", "fit-o1.0"):
        ids = (wf.workdir.backend_dir("slurm") / f"{stem}.tasks").read_text().split()
        spans = sorted((metas[t]["start"], metas[t]["end"]) for t in ids)
        for (_, end), (start, _) in zip(spans, spans[1:]):
            assert start >= end, f"two elements of {stem} ran at once: {spans}"
    assert_same_results(load_results(tmp_path / "w"), _local(exp, tmp_path / "local", X, y,
                                                               chunk_size=1))


def test_last_fit_element_runs_the_selects_and_their_job_finds_them_done(tmp_path):
    """No scheduler round trip and no fresh interpreter between the fits and the selects.

    The selects and the aggregate run in the fit element that ends last; their
    job still starts and finds them done. With
    too little of the time limit left, they are left to their own jobs.
    """
    X, y = iris()
    exp = Experiment(SVC(), param_grid={"C": [0.1, 10.0]}, cv=2, inner_cv=2)
    wf = exp.compile(tmp_path / "w", X, y, chunk_size=1)  # untimed: a tail needs 10 min
    wf.run("slurm", tasks_per_job=2, time=30, **FAST)
    _wait_idle(wf)  # the select and aggregate jobs start, find nothing to do and end
    records = {r.stem: r.job for r in read_records(wf.workdir.backend_dir("slurm") / "jobs.tsv")}
    # fits: one array per split; the selects and the aggregate: one plain job
    assert set(records) == {"fit-o0", "fit-o1", "select"}
    metas = _metas(wf)
    elements = {m["slurm_job"] for t, m in metas.items() if t.startswith("fit-")}
    for tid in ("select-o0", "select-o1", "aggregate"):
        assert metas[tid]["slurm_job"] in elements, tid
        assert metas[tid]["attempt"] == 1
        assert wf.workdir.log_file(tid).read_text().count("=== mempamal task") == 1
    assert {r["state"] for r in squeue(records.values())} == {"COMPLETED"}
    assert wf.status("slurm") == {tid: "done" for tid in wf.tasks}
    assert_same_results(load_results(tmp_path / "w"),
                        _local(exp, tmp_path / "local", X, y, chunk_size=1))

    short = exp.compile(tmp_path / "short", X, y, chunk_size=1)
    short.run("slurm", tasks_per_job=2, time=5, **FAST)  # 5 min left < 10 min needed
    records = {r.stem: r.job for r in read_records(short.workdir.backend_dir("slurm")
                                                   / "jobs.tsv")}
    metas = _metas(short)
    for tid in ("select-o0", "select-o1", "aggregate"):
        assert metas[tid]["slurm_job"] == records["select"], tid
    # said by the fit element that ended last, in its SLURM log
    fit_logs = "".join(p.read_text() for p in short.workdir.logs_dir.glob("*-fit-o*.out"))
    assert "3 downstream task(s) left to their own job (time left: " in fit_logs
    assert_same_results(load_results(tmp_path / "short"), load_results(tmp_path / "w"))


def test_hostile_workdir_runs_through_submit_sh(hostile_dir, tmp_path):
    X, y = iris()
    exp = Experiment(SVC(), param_grid={"C": [0.1, 10.0]}, cv=2, inner_cv=2)
    wf = exp.compile(hostile_dir / "w", X, y, chunk_size=1)
    wf.write("slurm", tasks_per_job=4)
    subprocess.run(["bash", str(hostile_dir / "w" / "slurm" / "submit.sh")], check=True,
                   cwd=tmp_path, capture_output=True)
    _wait_idle(wf)
    assert SlurmBackend().status(wf) == {tid: "done" for tid in wf.tasks}
    assert not list(tmp_path.rglob("PWNED")) and not list(hostile_dir.rglob("PWNED"))
    assert_same_results(load_results(hostile_dir / "w"),
                        _local(exp, tmp_path / "local", X, y, chunk_size=1))


def test_sbatch_refusal_shows_its_stderr(tmp_path):
    X, y = iris()
    exp = Experiment(SVC(), param_grid={"C": [1.0]}, cv=2)
    wf = exp.compile(tmp_path / "w", X, y)
    with pytest.raises(ExternalCommandError, match="sbatch") as info:
        wf.submit("slurm", mem=10**9)  # a petabyte: beyond any partition's limit
    assert info.value.stderr.strip()
    assert not read_records(wf.workdir.backend_dir("slurm") / "jobs.tsv")


@pytest.mark.slow
def test_time_limit_is_reported_as_timeout_with_its_log(tmp_path):
    """A real TIMEOUT (not recorded text): SLURM's reason reaches status and the report."""
    from mempamal.status import status_report

    X, y = iris()
    # fits that sleep far beyond the 1-minute limit; SLURM checks limits about
    # every 30 s, so this test costs 1-2 minutes
    exp = Experiment(SleepyClassifier(delay=900.0), cv=2, inner_cv=None)
    wf = exp.compile(tmp_path / "w", X, y)
    with pytest.raises(TaskFailedError) as info:
        wf.run("slurm", time=1, **FAST)
    report = info.value.report
    assert set(report.failures) == {"fit-o0", "fit-o1"}
    assert all("TIMEOUT" in why for why in report.failures.values()), report.failures
    assert wf.status("slurm")["aggregate"] in ("cancelled", "pending")
    triage = status_report(wf.workdir.root, "slurm")
    assert {f["task"] for f in triage["failures"]} == {"fit-o0", "fit-o1"}
    assert all(f["scheduler_state"].startswith("TIMEOUT") for f in triage["failures"])
    (group,) = triage["failure_groups"]
    assert group["count"] == 2
    assert all(Path(log).exists() for log in group["logs"])
