"""``mempamal ls``: one row per workdir under ROOT, from small files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
import sweep_funcs
from helpers import FailingClassifier, iris, small_grid_experiment

from mempamal import Experiment, Sweep, TaskFailedError
from mempamal.errors import ValidationError
from mempamal.ls import find_workdirs, list_workdirs, read_head, workdir_row
from mempamal.workdir import Workdir, write_json
from mempamal.workflow import Workflow


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """done/ (nested CV), runs/failed/ (one level deeper), new/ (never run), sweep/."""
    root = tmp_path_factory.mktemp("ls")
    X, y = iris()
    small_grid_experiment(cv=2, inner_cv=2).compile(root / "done", X, y).run(
        "local", n_jobs=2, progress=False)
    exp = Experiment(FailingClassifier(), param_grid={"fail": [False, True]}, cv=2,
                     inner_cv=2, error_score="raise")
    wf = exp.compile(root / "runs" / "failed", X, y, chunk_size=1)
    with pytest.raises(TaskFailedError):
        wf.run("local", n_jobs=1, progress=False)
    small_grid_experiment(cv=2).compile(root / "new", X, y)
    Sweep(sweep_funcs.quadratic, param_grid={"x": [0, 1, 3]}, metric="loss",
          mode="min").compile(root / "sweep").run("local", n_jobs=2, progress=False)
    (root / "runs" / "notes").mkdir()  # not a workdir
    (root / ".hidden").mkdir()
    small_grid_experiment(cv=2).compile(root / ".hidden" / "w", X, y)
    return root


def test_finds_workdirs_at_any_depth_but_not_in_hidden_folders(root):
    assert [p.relative_to(root).as_posix() for p in find_workdirs(root)] == [
        "done", "new", "runs/failed", "sweep"]


def test_rows_say_recipe_state_counts_best_backend_and_duration(root):
    rows = {os.path.relpath(r["path"], root): r for r in list_workdirs(root)}
    done = rows["done"]
    assert done["recipe"] == "nested_cv" and done["state"] == "done"
    assert done["counts"] == {"done": done["tasks"]} and done["backend"] == "local"
    assert done["best"].startswith("test_score ") and 0 < done["best_value"] <= 1
    assert done["duration"] > 0 and done["created"] <= time.time()
    failed = rows[os.path.join("runs", "failed")]
    assert failed["state"] == "failed" and failed["counts"]["failed"] == 4
    assert failed["best"] is None
    new = rows["new"]
    assert new["state"] == "new" and new["counts"] == {"pending": new["tasks"]}
    assert new["backend"] is None and new["duration"] is None
    sweep = rows["sweep"]
    assert sweep["recipe"] == "sweep" and sweep["state"] == "done"
    assert sweep["best_value"] == 1.0 and "min loss 1" in sweep["best"]


def test_head_of_workflow_json_gives_meta_and_task_count_without_loading(root):
    meta, n = read_head(Workdir(root / "done"))
    wf = Workflow.load(root / "done")
    assert n == len(wf) and meta == wf.meta | {"format": 1}


def test_finished_workdirs_are_read_from_their_records_not_their_tasks(root, monkeypatch):
    def no_load(*args, **kwargs):
        raise AssertionError("ls loaded a workflow")

    monkeypatch.setattr(Workflow, "load", no_load)
    rows = list_workdirs(root)
    assert {r["state"] for r in rows} == {"done", "failed", "new"}


def test_a_task_started_after_the_record_is_counted_from_the_files(tmp_path):
    X, y = iris()
    wf = small_grid_experiment(cv=2, inner_cv=2).compile(tmp_path / "w", X, y)
    wf.run("local", n_jobs=2, progress=False)
    record = json.loads(wf.workdir.run_record_file.read_text())
    write_json(wf.workdir.run_record_file, {**record, "end": record["end"] - 10})
    os.unlink(wf.workdir.path(wf.tasks["aggregate"].outputs[0]))  # as if rerun
    os.utime(wf.workdir.logs_dir, (time.time(), time.time()))
    row = workdir_row(tmp_path / "w")
    assert row["counts"] == {"done": len(wf) - 1, "pending": 1} and row["state"] == "partial"


@pytest.mark.parametrize(("sort", "reverse", "first"), [
    ("path", False, "done"), ("path", True, "sweep"), ("best", False, "done"),
    ("best", True, "sweep"), ("tasks", True, "runs/failed"), ("tasks", False, "sweep")])
def test_sort(root, sort, reverse, first):
    rows = list_workdirs(root, sort, reverse)
    assert os.path.relpath(rows[0]["path"], root) == first
    if sort == "best":  # no best score: last either way
        assert {os.path.relpath(r["path"], root) for r in rows[2:]} == {"new", "runs/failed"}


def test_cli_table_and_json(root):
    proc = subprocess.run([sys.executable, "-m", "mempamal", "ls", str(root), "--json",
                           "--sort", "path"], capture_output=True, text=True, check=True)
    assert [os.path.relpath(r["path"], root) for r in json.loads(proc.stdout)] == [
        "done", "new", os.path.join("runs", "failed"), "sweep"]
    proc = subprocess.run([sys.executable, "-m", "mempamal", "ls", str(root)],
                          capture_output=True, text=True, check=True,
                          env={**os.environ, "COLUMNS": "200"})
    assert "runs/failed" in proc.stdout and "failed" in proc.stdout
    assert "test_score" in proc.stdout and "local" in proc.stdout


def test_bad_root_and_sort_are_refused(tmp_path):
    with pytest.raises(ValidationError, match="is not a directory"):
        list_workdirs(tmp_path / "missing")
    with pytest.raises(ValidationError, match="cannot sort by 'colour'"):
        list_workdirs(tmp_path, "colour")
    proc = subprocess.run([sys.executable, "-m", "mempamal", "ls", str(tmp_path / "missing")],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "is not a directory" in proc.stderr
