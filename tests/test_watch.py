"""``mempamal watch``: snapshots as data, their rendering, the live loop, bad input."""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import time

import pytest
import sweep_funcs
from helpers import FailingClassifier, iris, small_grid_experiment
from rich.console import Console

from mempamal import Experiment, Sweep, TaskFailedError
from mempamal.backends.slurm import commands
from mempamal.errors import WorkdirError
from mempamal.recipes.nested_cv import build_tasks
from mempamal.watch import Watcher, render, watch, watch_snapshot
from mempamal.workdir import write_json
from mempamal.workflow import Workflow


def _text(snap) -> str:
    console = Console(file=io.StringIO(), width=160)
    console.print(render(snap))
    return console.file.getvalue()


def _running_meta(wf, tid, seconds_ago=5.0, **extra):
    """A meta record saying ``tid`` runs in this (live) process."""
    write_json(wf.workdir.meta_file(tid), {
        "task": tid, "state": "running", "host": socket.gethostname(), "pid": os.getpid(),
        "start": time.time() - seconds_ago, "attempt": 1, **extra})


def _bare_workflow(root) -> Workflow:
    """A nested-CV workflow without data: 2 outer x 2 inner x 3 candidates."""
    wf = Workflow(root, build_tasks([2, 2], 3, 1, python="python3"),
                  {"fingerprint": "0123456789abcdef"})
    wf.workdir.create()
    wf.save()
    return wf


def _finish(wf, tid):
    for o in wf.tasks[tid].outputs:
        wf.workdir.path(o).parent.mkdir(parents=True, exist_ok=True)
        wf.workdir.path(o).write_text("{}")


def test_snapshot_of_a_finished_run(tmp_path):
    X, y = iris()
    wf = small_grid_experiment(cv=2, inner_cv=2).compile(tmp_path / "w", X, y)
    wf.run("local", n_jobs=2, progress=False)
    snap = watch_snapshot(tmp_path / "w")
    assert snap["finished"] and not snap["active"] and snap["running"] == []
    assert snap["totals"] == {"done": len(wf)} and snap["eta_seconds"] == 0.0
    assert snap["counts"]["select"] == {"done": 2}
    assert snap["best"].startswith("test_score ") and snap["failures"] == []
    json.dumps(snap)  # plain data
    text = _text(snap)
    assert f"{len(wf)}/{len(wf)} tasks done (100.0 %), finished" in text
    assert "best: test_score" in text


def test_snapshot_of_a_running_run_lists_tasks_with_host_and_elapsed(tmp_path):
    wf = _bare_workflow(tmp_path / "w")
    fits = [t for t in wf.tasks if t.startswith("fit-")]
    for tid in fits[:4]:
        _finish(wf, tid)
    _running_meta(wf, fits[4], seconds_ago=90)
    _running_meta(wf, fits[5], seconds_ago=3)
    watcher = Watcher(tmp_path / "w")
    snap = watcher.snapshot()
    assert snap["active"] and not snap["finished"]
    assert snap["counts"]["fit"] == {"done": 4, "running": 2, "pending": len(fits) - 6}
    assert [r["task"] for r in snap["running"]] == [fits[4], fits[5]]  # longest first
    assert snap["running"][0]["host"] == socket.gethostname()
    assert 89 < snap["running"][0]["elapsed"] < 120
    assert snap["eta_seconds"] is None  # no progress seen yet, no run start known
    # progress between two refreshes gives a rate, hence an ETA
    time.sleep(0.2)
    _finish(wf, fits[6])
    snap = watcher.snapshot()
    assert snap["eta_seconds"] is not None and snap["eta_seconds"] > 0
    text = _text(snap)
    assert f"{fits[4]}" in text and "1 min 30 s" in text and "ETA" in text


def test_failures_show_first_error_line_and_an_existing_log(tmp_path):
    X, y = iris()
    exp = Experiment(FailingClassifier(), param_grid={"fail": [False, True]}, cv=2,
                     inner_cv=2, error_score="raise")
    wf = exp.compile(tmp_path / "w", X, y, chunk_size=1)
    with pytest.raises(TaskFailedError):
        wf.run("local", n_jobs=1, progress=False)
    snap = watch_snapshot(tmp_path / "w")
    (group,) = snap["failures"]
    assert group["error_line"] == "RuntimeError: FailingClassifier asked to fail (C=1.0)"
    assert group["count"] == 4 and group["root_cause"] and os.path.exists(group["log"])
    assert not snap["active"]  # nothing runs any more: the watch would end
    text = _text(snap)
    assert "4 failed with RuntimeError" in text and "FailingClassifier asked to fail" in text


def test_sweep_best_so_far_and_latest_metrics_of_running_trials(tmp_path):
    sweep = Sweep(sweep_funcs.quadratic, param_grid={"x": [0, 1, 2, 3]}, metric="loss",
                  mode="min")
    wf = sweep.compile(tmp_path / "w", trials_per_task=1)
    wd = wf.workdir
    for t, loss in ((0, 4.0), (1, 1.0)):
        write_json(wd.path(f"out/trials/{t}.json"),
                   {"trial": t, "candidate": t, "seed": 0, "state": "done",
                    "metrics": {"loss": loss}})
    write_json(wd.path("out/trials/3.json"),
               {"trial": 3, "candidate": 3, "seed": 0, "state": "failed", "metrics": {}})
    _running_meta(wf, "trial-2")
    wd.trial_journal("trial-2").write_text(json.dumps({"trial": 2, "attempt": 1}) + "\n")
    metrics = wd.trial_metrics_file("2")
    metrics.parent.mkdir(parents=True, exist_ok=True)
    metrics.write_text('{"step": 0, "attempt": 1, "time": 1, "loss": 9.5}\n'
                       '{"step": 1, "attempt": 1, "time": 2, "loss": 0.25}\n{"step": 2, "lo')
    sw = watch_snapshot(tmp_path / "w")["sweep"]
    assert sw["best"] == {"trial": 1, "value": 1.0, "params": {"x": 1}}
    assert sw["n_done"] == 2 and sw["n_failed"] == 1 and sw["mode"] == "min"
    assert sw["running"] == [{"trial": 2, "task": "trial-2", "step": 1,
                              "metrics": {"loss": 0.25}}]
    text = _text(watch_snapshot(tmp_path / "w"))
    assert "best so far: min loss = 1 (trial 1, {'x': 1})" in text and "running trials" in text


def test_slurm_queue_states_come_from_one_squeue_call_per_refresh(tmp_path, monkeypatch):
    wf = _bare_workflow(tmp_path / "w")
    write_json(wf.workdir.last_backend_file, {"backend": "slurm"})
    lines = "".join(f"{t}\n" for t in wf.tasks if t.startswith("fit-o0"))
    (wf.workdir.backend_dir("slurm")).mkdir()
    (wf.workdir.backend_dir("slurm") / "fit-o0.tasks").write_text(lines)
    (wf.workdir.backend_dir("slurm") / "jobs.tsv").write_text("7\tfit-o0\t0-5\n")
    calls = []
    rows = [{"job": str(8 + k), "array_job": "7", "index": k, "name": "mempamal-x-fit-o0",
             "state": "PENDING" if k > 1 else "RUNNING",
             "reason": ("Priority" if k > 3 else "Resources") if k > 1 else None}
            for k in range(6)]

    def fake_squeue(ids):
        calls.append(set(ids))
        return rows

    monkeypatch.setattr(commands, "squeue", fake_squeue)
    watcher = Watcher(tmp_path / "w")
    for _ in range(3):
        snap = watcher.snapshot()
    assert len(calls) == 3  # one call a refresh, whatever the number of tasks
    assert snap["queue"] == {"states": {"RUNNING": 2, "PENDING": 4},
                             "pending_reasons": {"Resources": 2, "Priority": 2}}
    assert snap["counts"]["fit"]["queued"] == 4 and snap["active"]
    assert "SLURM: 4 PENDING, 2 RUNNING (pending: 2 Priority, 2 Resources)" in _text(snap)


def test_without_squeue_here_the_states_come_from_the_files(tmp_path, monkeypatch):
    wf = _bare_workflow(tmp_path / "w")
    write_json(wf.workdir.last_backend_file, {"backend": "slurm"})
    wf.workdir.backend_dir("slurm").mkdir()
    (wf.workdir.backend_dir("slurm") / "jobs.tsv").write_text("7\tfit-o0\t0-5\n")
    _finish(wf, "fit-o0-i0-c0")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    snap = watch_snapshot(tmp_path / "w")
    assert "states from the files only" in snap["note"] and "squeue" in snap["note"]
    assert snap["counts"]["fit"]["done"] == 1 and snap["queue"] == {
        "states": {}, "pending_reasons": {}}
    assert "states from the files only" in _text(snap)


def test_a_backend_not_installed_here_leaves_the_files(tmp_path, monkeypatch):
    from mempamal.backends import base

    monkeypatch.setitem(base._REGISTRY, "elsewhere", "no_such_module_here:Backend")
    wf = _bare_workflow(tmp_path / "w")
    write_json(wf.workdir.last_backend_file, {"backend": "elsewhere"})
    _running_meta(wf, "fit-o0-i0-c0")
    snap = watch_snapshot(tmp_path / "w")
    assert "backend 'elsewhere' is not available" in snap["note"]
    assert snap["counts"]["fit"]["running"] == 1 and snap["queue"] is None


@pytest.mark.slow
def test_live_watch_follows_a_background_run_until_it_ends(tmp_path):
    X, y = iris()
    wf = small_grid_experiment(cv=2, inner_cv=2).compile(tmp_path / "w", X, y)
    proc = wf.submit("local", n_jobs=2)
    try:
        deadline = time.monotonic() + 60
        while not Watcher(tmp_path / "w").snapshot()["active"]:
            assert time.monotonic() < deadline and proc.poll() is None, "the run did not start"
            time.sleep(0.05)
        console = Console(file=io.StringIO(), width=160)
        snap = watch(tmp_path / "w", interval=0.2, console=console)
    finally:
        proc.wait(timeout=120)
    assert snap["finished"] and not snap["active"]
    assert f"{len(wf)}/{len(wf)} tasks done" in console.file.getvalue()


def test_watch_refuses_a_directory_that_is_not_a_workdir(tmp_path):
    with pytest.raises(WorkdirError, match="is not a mempamal workdir"):
        watch_snapshot(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "mempamal", "watch", str(tmp_path)],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert f"{str(tmp_path)!r} is not a mempamal workdir" in proc.stderr
