"""The Soma-Workflow backend against the real soma-workflow (no mocks)."""

from __future__ import annotations

import importlib.util
import os
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


def test_bad_options_are_refused_before_anything_is_written(tmp_path, fake_home):
    X, y = iris()
    wf = _small().compile(tmp_path / "w", X, y)
    with pytest.raises(ValidationError, match="valid options"):
        wf.write("soma", n_job=2)
    with pytest.raises(ValidationError, match="n_jobs"):
        wf.write("soma", n_jobs=0)
    with pytest.raises(ValidationError, match="refreshment_interval"):
        wf.write("soma", refreshment_interval="fast")
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
