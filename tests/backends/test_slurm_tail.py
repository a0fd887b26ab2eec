"""The element that ends last runs the downstream plain job's line (no cluster needed).

See mempamal.backends.slurm.tail. The real-cluster test is in
test_slurm_cluster.py (test_last_fit_element_runs_the_selects_and_their_job_finds_them_done).
"""

from __future__ import annotations

import json

import pytest
from filelock import FileLock
from helpers import iris
from sklearn.svm import SVC

from mempamal import Experiment
from mempamal.backends.slurm import SlurmBackend, tail
from mempamal.backends.slurm.commands import Record, parse_squeue
from mempamal.backends.slurm.plan import Job
from mempamal.backends.slurm.states import assignments, task_states
from mempamal.runner import run_tasks_main

#: squeue --format=%A|%F|%K|%j|%T|%r: a fit element running, the select job waiting on it
ROWS = parse_squeue("21|20|1|mp-run-fit-o0|RUNNING|None\n"
                    "22|22|N/A|mp-run-select-o0|PENDING|Dependency\n")


@pytest.fixture
def workdir(tmp_path):
    """2 outer x 2 inner splits, 2 candidates, one fit per task; scripts written."""
    X, y = iris()
    exp = Experiment(SVC(), param_grid={"C": [0.1, 1.0]}, cv=2, inner_cv=2)
    wf = exp.compile(tmp_path / "w", X, y, chunk_size=1)
    SlurmBackend(tasks_per_job=1).write(wf)
    return wf


def _fits(wf, outer=None):
    return [t for t in wf.tasks if t.startswith(f"fit-o{'' if outer is None else outer}")]


def _run_line(wf, ran):
    def run_line(ids):
        ran.append(list(ids))
        return run_tasks_main(wf.workdir.root, ids)
    return run_line


def _tails(wf):
    return [str(wf.workdir.backend_dir("slurm") / f"{s}.tasks")
            for s in ("select-o0", "aggregate")]


def _meta(wf, tid):
    return json.loads(wf.workdir.meta_file(tid).read_text())


def test_tails_are_plain_downstream_jobs_asking_for_the_same_resources():
    jobs = [Job("fit-o0", [["a"], ["b"]]), Job("fit-o1", [["c"]], array=False),
            Job("select-o0", [["s0"]], ["fit-o0"], array=False),
            Job("select-o1", [["s1"]], ["fit-o1"], array=False),
            Job("gpu", [["g"]], ["fit-o1"], array=False),
            Job("more", [["m"], ["n"]], ["select-o1"]),
            Job("aggregate", [["agg"]], ["select-o0", "select-o1"], array=False)]
    directives = {j.stem: [f"--job-name=mp-{j.stem}", "--output=logs/x", f"--time={k + 1}",
                           "--mem=1G"] for k, j in enumerate(jobs)}
    directives["gpu"].append("--gres=gpu:1")  # not what a fit element was given
    tails = tail.tail_jobs(jobs, directives.get)
    assert tails == {"fit-o0": ["select-o0", "aggregate"],
                     "fit-o1": ["select-o1", "aggregate"],
                     "select-o0": ["aggregate"], "select-o1": ["aggregate"],
                     "gpu": [], "more": [], "aggregate": []}


def test_written_scripts_name_their_tails(workdir):
    out = workdir.workdir.backend_dir("slurm")
    assert "--then slurm/select-o0.tasks --then slurm/aggregate.tasks --task-file " \
           "slurm/fit-o0.tasks" in (out / "fit-o0.sbatch").read_text()
    assert "--then" not in (out / "aggregate.sbatch").read_text()


@pytest.mark.parametrize("text, seconds", [
    ("UNLIMITED", float("inf")), ("NOT_SET", float("inf")), ("0:42", 42.0),
    ("59:59", 3599.0), ("1:00:05", 3605.0), ("2-03:04:05", ((2 * 24 + 3) * 60 + 4) * 60 + 5.0),
    ("", None), ("INVALID", None)])
def test_parse_time_left(text, seconds):
    assert tail.parse_time_left(text) == seconds


def test_an_element_that_is_not_the_last_leaves_the_tail(workdir, monkeypatch):
    monkeypatch.setattr(tail, "time_left", lambda job: float("inf"))
    fits = _fits(workdir, 0)
    assert run_tasks_main(workdir.workdir.root, fits[:-1]) == 0
    ran = []
    tail.run_tails(workdir.workdir.root, _tails(workdir), _run_line(workdir, ran))
    assert ran == [] and workdir.status()["select-o0"] == "pending"


def test_the_last_element_runs_its_select_then_the_aggregate_once_all_is_done(
        workdir, monkeypatch):
    monkeypatch.setattr(tail, "time_left", lambda job: float("inf"))
    root = workdir.workdir.root
    assert run_tasks_main(root, _fits(workdir, 0)) == 0
    ran = []
    tail.run_tails(root, _tails(workdir), _run_line(workdir, ran))
    # its split's select, not the aggregate (split 1 is not done)
    assert ran == [["select-o0"]]
    assert run_tasks_main(root, _fits(workdir, 1) + ["select-o1"]) == 0
    tail.run_tails(root, _tails(workdir), _run_line(workdir, ran))
    assert ran == [["select-o0"], ["aggregate"]]  # select-o0 is done: not run again
    assert set(workdir.status().values()) == {"done"}


def test_a_held_lock_means_another_element_runs_it(workdir, monkeypatch):
    monkeypatch.setattr(tail, "time_left", lambda job: float("inf"))
    root = workdir.workdir.root
    assert run_tasks_main(root, _fits(workdir, 0)) == 0
    ran = []
    with FileLock(_tails(workdir)[0] + ".lock"):
        tail.run_tails(root, _tails(workdir), _run_line(workdir, ran))
    assert ran == []


@pytest.mark.parametrize("left", [None, 599.0])
def test_too_little_or_unknown_time_left_leaves_the_tail_to_its_job(
        workdir, monkeypatch, capsys, left):
    # compiled with chunk_size: nothing timed, so a tail needs UNTIMED_SECONDS
    monkeypatch.setattr(tail, "time_left", lambda job: left)
    monkeypatch.setenv("SLURM_JOB_ID", "21")
    root = workdir.workdir.root
    assert run_tasks_main(root, _fits(workdir, 0)) == 0
    ran = []
    tail.run_tails(root, _tails(workdir), _run_line(workdir, ran))
    assert ran == []
    assert "left to their own job" in capsys.readouterr().err


def test_time_left_asks_squeue_for_this_job(tmp_path, monkeypatch):
    fake = tmp_path / "squeue"
    fake.write_text('#!/bin/sh\necho "$@" > "$(dirname "$0")/argv"\n'
                    'printf " 1:02:03\\n1:02:04\\n"\n')
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    assert tail.time_left("123") == 3723.0
    assert (tmp_path / "argv").read_text().split() == [
        "--noheader", "--jobs", "123", "--format=%L"]
    assert tail.time_left(None) is None
    # an element: ARRAY_INDEX (the array's own id is also an element's, and lists all)
    monkeypatch.setenv("SLURM_JOB_ID", "125")
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "123")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "2")
    assert tail.this_job() == "123_2"
    monkeypatch.delenv("SLURM_ARRAY_JOB_ID")
    assert tail.this_job() == "125"


def test_a_failed_tail_task_leaves_the_element_exit_status_alone(workdir, monkeypatch):
    from click.testing import CliRunner

    from mempamal.cli import cli

    monkeypatch.setattr(tail, "time_left", lambda job: float("inf"))
    root = workdir.workdir.root
    calls = []
    real = tail.run_tails

    def failing_select(root_, files, run_line):
        calls.append(files)
        return real(root_, files, lambda ids: run_line(["no-such-task"]))

    monkeypatch.setattr(tail, "run_tails", failing_select)
    fits = _fits(workdir, 0)
    result = CliRunner().invoke(cli, ["run-task", str(root), *fits, "--then",
                                      _tails(workdir)[0]])
    assert result.exit_code == 0, result.output
    assert calls == [(_tails(workdir)[0],)]
    assert workdir.status()["select-o0"] == "pending"  # its own job runs it


def test_status_of_a_tail_running_in_the_upstream_element():
    records = [Record("20", "fit-o0", "0-1"), Record("22", "select-o0", "-")]
    lines = {"fit-o0": [["a"], ["b"]], "select-o0": [["s"]]}
    assigned = assignments(records, lambda stem: lines[stem])
    metas = {"a": {"state": "done"}, "b": {"state": "done"},
             "s": {"state": "running", "slurm_job": "21"}}
    file_states = {"a": "done", "b": "done", "s": "running"}
    states, updates = task_states(file_states, assigned, ROWS, metas, lambda s: f"mp-run-{s}")
    assert states["s"] == "running" and updates == {}
    # the element was killed while it ran the tail: failed, with that element's log
    killed = parse_squeue("21|20|1|mp-run-fit-o0|TIMEOUT|None\n"
                          "22|22|N/A|mp-run-select-o0|PENDING|DependencyNeverSatisfied\n")
    states, updates = task_states(file_states, assigned, killed, metas,
                                  lambda s: f"mp-run-{s}")
    assert states["s"] == "failed"
    assert updates["s"]["error_type"] == "TIMEOUT"
    assert updates["s"]["scheduler_log"] == "logs/mp-run-fit-o0-20_1.out"


def test_whatever_goes_wrong_in_a_tail_leaves_the_element_exit_status_alone(
        workdir, monkeypatch):
    """A file system without locks, a vanished task file...: the job runs them."""
    from click.testing import CliRunner

    from mempamal.cli import cli

    def broken(*args):
        raise OSError(37, "No locks available")

    monkeypatch.setattr(tail, "run_tails", broken)
    result = CliRunner().invoke(cli, ["run-task", str(workdir.workdir.root),
                                      *_fits(workdir, 0), "--then", _tails(workdir)[0]])
    assert result.exit_code == 0, result.output
    assert "left to their own job: OSError" in result.output
    assert workdir.status()["select-o0"] == "pending"


def test_a_rewrite_removes_the_locks_of_jobs_no_longer_planned(workdir):
    out = workdir.workdir.backend_dir("slurm")
    (out / "select-o0.tasks.lock").touch()  # as an element that ran a tail leaves it
    (out / "gone.tasks.lock").touch()
    SlurmBackend(tasks_per_job=1).write(workdir)
    assert (out / "select-o0.tasks.lock").exists() and not (out / "gone.tasks.lock").exists()


def test_a_job_whose_line_is_done_exits_without_importing_scikit_learn(workdir):
    """The downstream job after a tail: it starts, sees its outputs and ends at once."""
    import subprocess
    import sys

    root = workdir.workdir.root
    assert run_tasks_main(root, list(workdir.tasks)) == 0
    argv = [sys.executable, "-X", "importtime", "-m", "mempamal", "run-task", str(root),
            "--task-file", str(workdir.workdir.backend_dir("slurm") / "select-o0.tasks"),
            "--index", "0"]
    done = subprocess.run(argv, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    imported = [line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines()]
    assert "mempamal.runner" in imported and "sklearn" not in imported
    # one task of the line not done: the line runs (and imports what it needs)
    workdir.workdir.path(workdir.tasks["select-o0"].outputs[0]).unlink()
    again = subprocess.run(argv, capture_output=True, text=True)
    assert again.returncode == 0 and "sklearn" in again.stderr
    assert workdir.status()["select-o0"] == "done"
