"""The Soma-Workflow backend against the real soma-workflow (no mocks)."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import requires_or_fail
from helpers import FailingClassifier, assert_same_results, iris, small_grid_experiment

from mempamal import Experiment, load_results
from mempamal.errors import TaskFailedError, ValidationError
from mempamal.workdir import read_json

HAVE_SOMA = importlib.util.find_spec("soma_workflow") is not None
pytestmark = [pytest.mark.soma, requires_or_fail(HAVE_SOMA, "soma-workflow not installed")]

#: the user's real home, read before any fixture replaces HOME
TRUE_HOME = Path.home()
#: fast soma engine loop: tests wait less per dependency level
FAST = {"refreshment_interval": 0.1, "n_jobs": 2, "progress": False}


def _files(root: Path) -> set:
    return {str(p.relative_to(root)) for p in root.rglob("*")} if root.exists() else set()


def _soma_dotfiles(home: Path) -> set:
    return {p.name for p in home.glob(".soma-workflow*")} | (
        {"soma-workflow"} if (home / "soma-workflow").exists() else set())


@pytest.fixture
def fake_home(tmp_path, monkeypatch):
    """The test's HOME: soma-workflow must not write anything there."""
    home = tmp_path / "home"
    home.mkdir()
    (home / "keep.txt").write_text("untouched")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("SOMA_WORKFLOW_CONFIG", raising=False)
    return home


def _small(**kw):
    kw.setdefault("cv", 2)
    kw.setdefault("inner_cv", 2)
    return small_grid_experiment(**kw)


# -- write: the serialized soma workflow ------------------------------------------
def test_write_round_trips_jobs_names_dependencies_and_groups(tmp_path, fake_home):
    from soma_workflow.client import Group, Helper

    X, y = iris()
    wf = _small().compile(tmp_path / "w", X, y, chunk_size=2)
    paths = wf.write("soma")
    assert paths == [wf.workdir.root / "soma" / "workflow.json"]

    back = Helper.unserialize(str(paths[0]))
    by_name = {j.name: j for j in back.jobs}
    assert sorted(by_name) == sorted(wf.tasks)
    for tid, task in wf.tasks.items():
        job = by_name[tid]
        assert list(job.command) == task.command()
        assert job.working_directory == str(wf.workdir.root)
    deps = {(a.name, b.name) for a, b in back.dependencies}
    assert deps == {(d, t.id) for t in wf.tasks.values() for d in t.deps}

    groups = [g for g in back.root_group if isinstance(g, Group)]
    assert [g.name for g in groups] == ["outer split 0", "outer split 1"]
    inner = groups[0].elements[0]
    assert inner.name == "inner split 0"
    assert {j.name for j in inner.elements} == {"fit-o0-i0-c0", "fit-o0-i0-c1"}
    assert groups[0].elements[-1].name == "select-o0"
    assert back.root_group[-1].name == "aggregate"
    assert _soma_dotfiles(fake_home) == set()


def test_write_spells_resource_hints_for_slurm(tmp_path, fake_home):
    from soma_workflow.client import Helper

    X, y = iris()
    wf = _small().compile(tmp_path / "w", X, y, chunk_size=3,
                          resources={"cpus": 2, "mem_mb": 1500, "time_min": 30})
    [path] = wf.write("soma", scheduler_type="slurm")
    for job in Helper.unserialize(str(path)).jobs:
        assert job.native_specification == ["--mem=1500M", "--time=30"]
        assert job.parallel_job_info == {"config_name": "native", "nodes_number": 1,
                                         "cpu_per_node": 2}
    [path] = wf.write("soma", native_specification="--account=abc")
    assert {j.native_specification for j in Helper.unserialize(str(path)).jobs} \
        == {"--account=abc"}


def test_native_spec_spellings():
    from mempamal.backends.soma_jobs import native_spec

    hints = {"cpus": 4, "mem_mb": 2048, "time_min": 125, "gpus": 1}
    assert native_spec(hints, "slurm") == ["--mem=2048M", "--time=125", "--gres=gpu:1"]
    assert native_spec(hints, "pbspro") == "-l mem=2048mb,walltime=02:05:00,ngpus=1"
    assert native_spec(hints, "local_basic") is None
    assert native_spec({"cpus": 1}, "slurm") is None


def _line_jobs(path):
    """``[(name, task ids)]`` of a serialized soma workflow, and its dependencies by name."""
    from soma_workflow.client import Helper

    back = Helper.unserialize(str(path))
    jobs = []
    for job in back.jobs:
        argv = list(job.command)
        jobs.append((job.name, argv[argv.index("run-task") + 2:]))
    return jobs, {(a.name, b.name) for a, b in back.dependencies}, back


def test_write_packs_lines_with_the_slurm_planner(tmp_path, fake_home):
    from soma_workflow.client import Group

    from mempamal.backends.slurm.plan import plan_jobs

    X, y = iris()
    wf = _small(cv=3, inner_cv=2).compile(tmp_path / "w", X, y, chunk_size=1)
    tasks = wf.tasks
    # explicit lines: the same lines as the SLURM backend's elements
    [path] = wf.write("soma", tasks_per_job=2)
    jobs, deps, _ = _line_jobs(path)
    slurm_lines = [line for job in plan_jobs(wf, 1000, tasks_per_job=2) for line in job.lines]
    assert sorted(ids for _, ids in jobs) == sorted(slurm_lines)
    assert len(jobs) < len(tasks)

    # auto with nothing timed (chunk_size given): UNTIMED_WAVES lines per slot by count
    from mempamal.backends.packing import UNTIMED_WAVES

    [path] = wf.write("soma", n_jobs=1)
    jobs, _, _ = _line_jobs(path)
    fits = [ids for _, ids in jobs if ids[0].startswith("fit-")]
    assert len(fits) == UNTIMED_WAVES and sorted(t for ids in fits for t in ids) == sorted(
        t for t in tasks if t.startswith("fit-"))
    assert {len(ids) for ids in fits} == {18 // UNTIMED_WAVES, 18 // UNTIMED_WAVES + 1}

    # auto: each level's estimated work balanced over n_jobs lines
    wf.meta["seconds_per_fit"] = 2.0  # 18 fits of 3 candidates: 108 s of fits
    [path] = wf.write("soma", n_jobs=3)
    jobs, deps, back = _line_jobs(path)
    names = [name for name, _ in jobs]
    assert len(set(names)) == len(names)
    ran = [tid for _, ids in jobs for tid in ids]
    assert sorted(ran) == sorted(tasks)  # every task exactly once
    # one line per outer split (its fits balance the level exactly), each
    # followed by its select (a chain), then the aggregate after all three
    lines = {name: ids for name, ids in jobs}
    for o in range(3):
        ids = lines[f"fit-o{o}-i0-c0 .. select-o{o} (7 tasks)"]
        assert ids == [t for t in tasks if t.startswith((f"fit-o{o}-", f"select-o{o}"))]
    assert lines["aggregate"] == ["aggregate"]
    assert deps == {(n, "aggregate") for n in names if n != "aggregate"}
    # a job whose tasks share an outer split stays in that split's group
    groups = [g for g in back.root_group if isinstance(g, Group)]
    assert [(g.name, len(g.elements)) for g in groups] == [
        ("outer split 0", 1), ("outer split 1", 1), ("outer split 2", 1)]

    # more CPUs than outer splits: fit lines span splits, and are grouped by kind
    [path] = wf.write("soma", n_jobs=4)
    jobs, deps, back = _line_jobs(path)
    fit_lines = [ids for _, ids in jobs if ids[0].startswith("fit-")]
    assert len(fit_lines) == 4 and sorted(t for ids in fit_lines for t in ids) == sorted(
        t for t in tasks if t.startswith("fit-"))
    groups = {g.name: g for g in back.root_group if isinstance(g, Group)}
    spanning = {name for name, ids in jobs if ids in fit_lines
                and len({t.split("-")[1] for t in ids}) > 1}
    assert spanning and {j.name for j in groups["fit jobs"].elements} == spanning

    # tasks_per_job=1: one job per task, named after it, as before packing
    [path] = wf.write("soma", tasks_per_job=1)
    jobs, deps, _ = _line_jobs(path)
    assert [(n, ids) for n, ids in jobs] == [(t, [t]) for t in tasks]
    assert deps == {(d, t.id) for t in tasks.values() for d in t.deps}


def test_bad_options_are_refused_before_anything_is_written(tmp_path, fake_home):
    X, y = iris()
    wf = _small().compile(tmp_path / "w", X, y)
    with pytest.raises(ValidationError, match="valid options"):
        wf.write("soma", n_job=2)
    with pytest.raises(ValidationError, match="n_jobs"):
        wf.write("soma", n_jobs=0)
    with pytest.raises(ValidationError, match="refreshment_interval"):
        wf.write("soma", refreshment_interval="fast")
    for bad in (0, -2, "many", 1.5, True, None):
        with pytest.raises(ValidationError, match=rf"tasks_per_job .*got {re.escape(repr(bad))}"):
            wf.write("soma", tasks_per_job=bad)
    cfg = tmp_path / "swf.cfg"
    cfg.write_text("[cluster]\nSCHEDULER_TYPE = slurm\nLIGHT_MODE = 1\n")
    os.environ["SOMA_WORKFLOW_CONFIG"] = str(cfg)
    try:
        with pytest.raises(ValidationError, match=r"'nowhere'.*\['cluster'\]"):
            wf.run("soma", resource="nowhere")
        # a known resource: its SCHEDULER_TYPE decides the native specification
        from soma_workflow.client import Helper

        [path] = wf.write("soma", resource="cluster")
        assert Helper.unserialize(str(path)).jobs[0].native_specification is None
    finally:
        del os.environ["SOMA_WORKFLOW_CONFIG"]
    assert not (wf.workdir.root / "soma" / "runs").exists()


# -- run: light mode inside the workdir ---------------------------------------------
@pytest.mark.slow
def test_light_mode_equals_local_and_keeps_home_untouched(tmp_path, hostile_dir, fake_home):
    true_before = _soma_dotfiles(TRUE_HOME)
    home_before = _files(fake_home)
    X, y = iris()
    exp = _small()
    wf = exp.compile(hostile_dir / "w", X, y, chunk_size=2)
    report = wf.run("soma", **FAST)
    assert report.ok and sorted(report.executed) == sorted(wf.tasks)
    assert report.not_run == []

    ref = exp.compile(tmp_path / "ref", X, y, chunk_size=2)
    ref.run("local", n_jobs=2)
    assert_same_results(load_results(wf.workdir.root), load_results(ref.workdir.root))

    assert _files(fake_home) == home_before
    assert _soma_dotfiles(TRUE_HOME) == true_before
    [run_dir] = (wf.workdir.root / "soma" / "runs").iterdir()
    # every piece of soma state lives in the run directory
    assert list((run_dir / "state").glob("soma_workflow*.db"))
    assert (run_dir / "home" / ".soma-workflow-scheduler.cfg").is_file()
    assert (run_dir / "jobs" / "aggregate.err").is_file()
    # nothing to do: nothing submitted
    assert wf.run("soma", **FAST).executed == []
    assert len(list((wf.workdir.root / "soma" / "runs").iterdir())) == 1


@pytest.mark.slow
def test_failure_is_reported_then_a_rerun_computes_only_what_is_missing(tmp_path, fake_home):
    X, y = iris()
    flag = tmp_path / "fail-now"
    flag.touch()
    # only the candidate that carries the flag fails: its fit tasks, not the others
    exp = Experiment(FailingClassifier(), cv=2, inner_cv=2, error_score="raise",
                     param_grid=[{"C": [0.1, 1.0]}, {"C": [10.0], "fail_file": [str(flag)]}])
    # chunks of 2 candidates: c0 = the two that succeed, c1 = the failing one
    wf = exp.compile(tmp_path / "w", X, y, chunk_size=2)
    failing = {t for t in wf.tasks if t.startswith("fit-") and t.endswith("-c1")}
    assert len(failing) == 4

    # through the CLI: non-zero exit and the task's error on stderr
    proc = subprocess.run(
        [sys.executable, "-m", "mempamal", "resume", str(wf.workdir.root), "--backend",
         "soma", "-j", "2", "-o", "refreshment_interval=0.1"],
        capture_output=True, text=True, check=False)
    assert proc.returncode == 1, proc.stderr
    assert "FailingClassifier asked to fail (C=10.0)" in proc.stderr
    assert all(t in proc.stderr for t in failing)

    with pytest.raises(TaskFailedError) as info:
        wf.run("soma", **FAST)
    report = info.value.report
    assert set(report.failures) == failing
    assert all("exit status 1" in why and "stderr: " in why and "C=10.0" in why
               for why in report.failures.values())
    # dependents not run, only the failed ones were resubmitted
    assert set(report.not_run) == {"select-o0", "select-o1", "aggregate"}
    assert set(report.executed) == failing
    status = wf.status("soma")
    assert {t for t, s in status.items() if s == "failed"} == failing
    assert {t for t, s in status.items() if s == "pending"} == set(report.not_run)

    flag.unlink()
    handle = wf.submit("soma", n_jobs=1, refreshment_interval=0.1)
    assert handle.wait(timeout=300) == 0
    assert wf.pending() == []
    metas = {t: read_json(wf.workdir.meta_file(t)) for t in wf.tasks}
    assert {t: m["attempt"] for t, m in metas.items()} \
        == {t: (3 if t in failing else 1) for t in wf.tasks}
    # n_jobs=1 reached soma's local scheduler: the tasks of this run never overlapped
    spans = sorted((m["start"], m["end"]) for t, m in metas.items()
                   if t in failing or not t.startswith("fit-"))
    assert all(end <= next_start for (_, end), (next_start, _) in zip(spans, spans[1:]))

    ref = exp.compile(tmp_path / "ref", X, y, chunk_size=2)
    ref.run("local", n_jobs=2)
    assert_same_results(load_results(wf.workdir.root), load_results(ref.workdir.root))
    assert {p.name for p in fake_home.iterdir()} == {"keep.txt"}


@pytest.mark.slow
def test_interrupt_stops_the_jobs_instead_of_orphaning_them(tmp_path, fake_home):
    import psutil
    from helpers import SleepyClassifier

    from mempamal import Experiment
    from mempamal.runner import read_meta

    X, y = iris()
    # fits that sleep 1 s: a task stays "running" long enough to be seen (an
    # iris fit alone lasts ~50 ms and could start and end between two polls)
    exp = Experiment(SleepyClassifier(delay=1.0), param_grid={"C": [0.1, 1.0]}, cv=2,
                     inner_cv=2)
    wf = exp.compile(tmp_path / "w", X, y, chunk_size=2)
    handle = wf.submit("soma", n_jobs=2, refreshment_interval=0.1)
    running = []
    for _ in range(1200):  # until a job is running (at most about 2 minutes)
        running = [m for m in (read_meta(wf.workdir, t) for t in wf.tasks)
                   if m and m["state"] == "running"]
        if running or handle.poll() is not None:
            break
        time.sleep(0.1)
    assert running, "no task started"
    handle.send_signal(signal.SIGINT)
    assert handle.wait(timeout=120) == 130

    def alive(pid):
        try:
            return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False

    assert not any(alive(m["pid"]) for m in running)
    started = {t for t in wf.tasks if read_meta(wf.workdir, t)}
    time.sleep(2)  # nothing of this run keeps starting tasks
    assert {t for t in wf.tasks if read_meta(wf.workdir, t)} == started
    assert "running" not in wf.status("soma").values()
    assert wf.pending()


LEFTOVER = """
import importlib.util, json, subprocess, sys, time
spec = importlib.util.spec_from_file_location("driver", sys.argv[1])
driver = importlib.util.module_from_spec(spec)
spec.loader.exec_module(driver)
subprocess.Popen(["bash", "-c", "sleep 60 & wait"])  # a job, and a child of its own
time.sleep(0.5)
print(json.dumps(driver.kill_leftover_jobs()))
"""


def test_the_driver_kills_a_job_soma_started_while_it_stopped():
    """soma's scheduler can start a job stop_workflow did not see: the driver kills it."""
    import psutil

    import mempamal.backends.soma_driver as driver

    out = subprocess.run([sys.executable, "-c", LEFTOVER, driver.__file__], check=True,
                         capture_output=True, text=True, timeout=60).stdout
    pids = json.loads(out)
    assert len(pids) == 2  # bash and its sleep

    def running(pid):
        try:
            return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False

    assert [p for p in pids if running(p)] == []


# -- packing: lines of tasks per soma job ---------------------------------------------
def _oracle_check(root, estimator, grid, X, y, outer, inner):
    """mempamal's results equal cross_validate(GridSearchCV) on the same splits."""
    import numpy as np
    from sklearn.model_selection import GridSearchCV, cross_validate

    res = load_results(root)
    oracle = cross_validate(GridSearchCV(estimator, grid, cv=inner), X, y, cv=outer,
                            return_estimator=True)
    assert res.best_params == [est.best_params_ for est in oracle["estimator"]]
    np.testing.assert_allclose(res.outer_scores["test_score"].to_numpy(),
                               oracle["test_score"], rtol=0, atol=1e-12)


def _soma_jobs_of_runs(root: Path) -> list[list]:
    """Task ids of each soma job of each round, oldest round first."""
    runs = sorted((root / "soma" / "runs").iterdir())
    return [[ids for _, ids in _line_jobs(r / "workflow.json")[0]] for r in runs]


@pytest.mark.slow
def test_packed_run_equals_scikit_learn_in_fewer_jobs_than_tasks(tmp_path, fake_home):
    from sklearn.svm import SVC

    X, y = iris()
    grid = {"C": [0.1, 1.0, 10.0]}
    exp = _small()
    wf = exp.compile(tmp_path / "w", X, y, chunk_size=1)
    # estimates as if each fit took 2 s: each outer split's fits fill one of
    # the two CPUs (the tasks themselves are not affected)
    wf.meta["seconds_per_fit"] = 2.0
    report = wf.run("soma", **FAST)
    assert report.ok and sorted(report.executed) == sorted(wf.tasks)
    [jobs] = _soma_jobs_of_runs(wf.workdir.root)
    assert len(jobs) == 3 < len(wf.tasks)
    assert sorted(t for ids in jobs for t in ids) == sorted(wf.tasks)
    assert wf.pending() == []
    _oracle_check(wf.workdir.root, SVC(), grid, X, y, 2, 2)
    # every task ran once; a line's tasks share one interpreter
    metas = {t: read_json(wf.workdir.meta_file(t)) for t in wf.tasks}
    assert {m["attempt"] for m in metas.values()} == {1}
    assert all(len({metas[t]["pid"] for t in ids}) == 1 for ids in jobs)

    # tasks_per_job=1: one soma job (one interpreter) per task, as before
    # (3 candidates per fit task: 7 tasks)
    one = exp.compile(tmp_path / "one", X, y, chunk_size=3)
    one.meta["seconds_per_fit"] = 2.0
    assert one.run("soma", tasks_per_job=1, **FAST).ok
    [jobs] = _soma_jobs_of_runs(one.workdir.root)
    assert jobs == [[t] for t in one.tasks]
    _oracle_check(one.workdir.root, SVC(), grid, X, y, 2, 2)


def _unequal_outer_splits(y):
    """Two outer splits: training sets of 100 and 40 samples (inner: 50 and 20)."""
    import numpy as np

    perm = np.random.RandomState(0).permutation(len(y))
    return [(np.sort(perm[:100]), np.sort(perm[100:])), (np.sort(perm[:40]), np.sort(perm[40:]))]


@pytest.mark.slow
def test_a_failure_in_a_line_spares_its_line_mates_and_independent_branches(
        tmp_path, fake_home):
    from sklearn.neighbors import KNeighborsClassifier

    from mempamal.status import status_report

    X, y = iris()
    outer = _unequal_outer_splits(y)
    # 30 neighbours cannot be asked of the 20 samples of outer split 1's inner
    # fits: those two fit tasks fail; everything of outer split 0 succeeds
    grid = {"n_neighbors": [1, 30]}
    exp = Experiment(KNeighborsClassifier(), param_grid=grid, cv=outer, inner_cv=2,
                     error_score="raise")
    wf = exp.compile(tmp_path / "w", X, y, chunk_size=1)
    failing = {"fit-o1-i0-c1", "fit-o1-i1-c1"}
    with pytest.raises(TaskFailedError) as info:
        wf.run("soma", tasks_per_job=4, **FAST)
    report = info.value.report
    # the reasons in the message: select-o0 was booked failed once in CI
    # (2026-11-30, not reproduced in 7 runs, under load or not)
    assert set(report.failures) == failing, report.failures
    line = "fit-o1-i0-c0 .. fit-o1-i1-c1 (4 tasks)"
    for tid, why in report.failures.items():
        assert "n_neighbors" in why and f"soma job {line!r}" in why, why
        assert f"task {tid} failed" in why  # the line's stderr, about this task
    # the line-mates of the failures ran, and so did select-o0 (in a second
    # round: soma did not start the line of selects, which waits for both
    # lines of fits); only what reads from a failure is left
    assert set(report.not_run) == {"select-o1", "aggregate"}
    assert wf.done() == set(wf.tasks) - failing - set(report.not_run)
    rounds = _soma_jobs_of_runs(wf.workdir.root)
    assert rounds[0] == [[t for t in wf.tasks if t.startswith("fit-o0")],
                         [t for t in wf.tasks if t.startswith("fit-o1")],
                         ["select-o0", "select-o1", "aggregate"]]
    assert rounds[1] == [["select-o0"]]

    status = status_report(wf.workdir.root, "soma")
    assert {f["task"] for f in status["failures"]} == failing
    for f in status["failures"]:
        assert "n_neighbors" in f["error"]
        log = Path(f["log"]) if Path(f["log"]).is_absolute() else wf.workdir.root / f["log"]
        assert "Traceback" in log.read_text() and "n_neighbors" in log.read_text()
    assert {t for t, s in wf.status("soma").items() if s == "pending"} == set(report.not_run)


@pytest.mark.slow
def test_a_killed_packed_run_resumes_to_the_same_results(tmp_path, fake_home):
    from helpers import SleepyClassifier

    from mempamal.runner import read_meta

    X, y = iris()
    grid = {"C": [0.1, 1.0]}
    # fits of 0.5 s: the run is killed while a line is half done
    exp = Experiment(SleepyClassifier(delay=0.5), param_grid=grid, cv=2, inner_cv=2)
    wf = exp.compile(tmp_path / "w", X, y, chunk_size=1)
    handle = wf.submit("soma", n_jobs=2, refreshment_interval=0.1, tasks_per_job=4)
    for _ in range(1200):  # until some task is done (at most about 2 minutes)
        if wf.done() or handle.poll() is not None:
            break
        time.sleep(0.1)
    assert wf.done() and handle.poll() is None, "no task ended before the run did"
    handle.kill()  # no clean-up in the run: its driver sees it gone and stops soma
    handle.wait(timeout=60)
    for _ in range(600):  # the driver stops the jobs it started
        if "running" not in wf.status("soma").values():
            break
        time.sleep(0.1)
    assert "running" not in wf.status("soma").values()
    done_before = wf.done()
    assert wf.pending()

    report = wf.run("soma", tasks_per_job=4, **FAST)
    assert report.ok and wf.pending() == []
    # what was done was not redone
    assert set(report.executed) == set(wf.tasks) - done_before
    assert all(read_meta(wf.workdir, t)["attempt"] == 1 for t in done_before)
    ref = exp.compile(tmp_path / "ref", X, y, chunk_size=1)
    ref.run("local", n_jobs=2, progress=False)
    assert_same_results(load_results(wf.workdir.root), load_results(ref.workdir.root))


@pytest.mark.slow
def test_a_task_that_kills_its_line_loses_none_of_the_later_ones(tmp_path, fake_home):
    from helpers import CrashingClassifier

    X, y = iris()
    flag = tmp_path / "crash-now"
    flag.touch()
    # the third candidate kills the interpreter of its line (a segfault or
    # OOM kill stand-in): the tasks after it in the line never start there
    exp = Experiment(CrashingClassifier(), cv=2, inner_cv=2, error_score="raise",
                     param_grid=[{"C": [0.1, 1.0]}, {"C": [10.0], "fail_file": [str(flag)]}])
    wf = exp.compile(tmp_path / "w", X, y, chunk_size=1)
    crashing = {t for t in wf.tasks if t.startswith("fit-") and t.endswith("-c2")}
    with pytest.raises(TaskFailedError) as info:
        wf.run("soma", tasks_per_job=6, **FAST)
    report = info.value.report
    assert set(report.failures) == crashing
    assert all("killed while it ran: exit status 13" in why for why in report.failures.values())
    # the fits after each crash ran in a later round
    assert wf.done() == {t for t in wf.tasks if t.startswith("fit-")} - crashing
    assert set(report.not_run) == {"select-o0", "select-o1", "aggregate"}
    rounds = _soma_jobs_of_runs(wf.workdir.root)
    assert rounds[0][0] == [t for t in wf.tasks if t.startswith("fit-o0")]
    # nothing they feed is in the second round: one line of six, killed
    # again at fit-o0-i1-c2, and a third round for outer split 1's last three
    assert rounds[1] == [[f"fit-o{o}-i1-c{c}" for o in range(2) for c in range(3)]]
    assert rounds[2] == [[f"fit-o1-i1-c{c}" for c in range(3)]]
    assert {t for t, s in wf.status("soma").items() if s == "failed"} == crashing


def test_a_job_soma_never_ran_after_a_failed_soft_dependency_is_not_a_failure(tmp_path):
    """Soma runs a job only after its dependencies succeeded, soft ones too.

    When trial-05 of a search was killed, soma does not start suggest-r2 (it
    runs in the driver's next round); an event soma sends for that job must
    not book it as failed, which would block the rest of the search.
    """
    import sweep_funcs
    from scipy.stats import uniform

    from mempamal import Sweep
    from mempamal.backends.base import RunReport
    from mempamal.backends.soma import SomaBackend
    from mempamal.backends.soma_jobs import Line

    wf = Sweep(f"{sweep_funcs.__file__}:quadratic", param_distributions={"x": uniform(0, 1)},
               search="qmc", n_iter=12, batch_size=4, random_state=0, metric="loss",
               mode="min").compile(tmp_path / "w")
    wd = wf.workdir
    for tid in ("suggest-r0", "suggest-r1", *(f"trial-0{k}" for k in (0, 1, 2, 3, 4, 6, 7))):
        for rel in wf.tasks[tid].outputs:  # everything before suggest-r2 done but trial-05
            wd.path(rel).parent.mkdir(parents=True, exist_ok=True)
            wd.path(rel).write_text("{}")
    assert wf.tasks["suggest-r2"].soft_deps and "trial-05" not in wf.done()
    line = Line("suggest-r2", "suggest-r2", ["suggest-r2"], [])
    report = RunReport()
    for status in ("failed", "done"):
        ev = {"event": "job", "task": "suggest-r2", "status": status, "exit_value": None,
              "exit_status": "exit_abnormally"}
        booked = SomaBackend()._record(wf, ev, line, {}, tmp_path, report)
        assert booked == [] and not report.failures and not report.executed
