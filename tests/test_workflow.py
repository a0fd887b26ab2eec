"""The data model: Task and Workflow, independent of any experiment."""

from __future__ import annotations

import json

import pytest

from mempamal import ValidationError
from mempamal.workflow import Task, Workflow, command_prefix


def _wf(root, deps_of):
    prefix = command_prefix("python3")
    tasks = [Task(tid, "fit", [f"out/fit/{tid}.json"], deps, {"cpus": 1}, {}, prefix)
             for tid, deps in deps_of.items()]
    return Workflow(root, tasks, {"fingerprint": "f"})


def test_ready_is_pending_with_done_dependencies(tmp_path):
    wf = _wf(tmp_path, {"a": [], "b": ["a"], "c": ["b"], "d": []})
    assert [t.id for t in wf.ready()] == ["a", "d"]
    (tmp_path / "out" / "fit").mkdir(parents=True)
    (tmp_path / "out/fit/a.json").write_text("{}")
    assert [t.id for t in wf.ready()] == ["b", "d"]
    assert [t.id for t in wf.pending()] == ["b", "c", "d"]
    assert wf.downstream(["a"]) == {"a", "b", "c"}


def test_check_refuses_unknown_dependencies_and_cycles(tmp_path):
    with pytest.raises(ValidationError, match="unknown task 'zz'"):
        _wf(tmp_path, {"a": ["zz"]}).check()
    with pytest.raises(ValidationError, match="cycle"):
        _wf(tmp_path, {"a": ["b"], "b": ["a"]}).check()
    _wf(tmp_path, {"a": [], "b": ["a"]}).check()


def test_save_load_round_trip_keeps_every_task_field(tmp_path):
    wf = _wf(tmp_path, {"a": [], "b": ["a"]})
    wf.save()
    doc = json.loads((tmp_path / "workflow.json").read_text())
    assert doc["tasks"][1]["argv"] == ["python3", "-m", "mempamal", "run-task", ".", "b"]
    back = Workflow.load(tmp_path)
    assert [t.to_dict() for t in back.tasks.values()] == [t.to_dict() for t in wf.tasks.values()]
    assert back.meta == wf.meta
    # identical prefixes are shared, not copied per task
    assert back.tasks["a"].prefix is back.tasks["b"].prefix


def test_command_names_interpreter_and_workdir(tmp_path):
    task = _wf(tmp_path, {"a": []}).tasks["a"]
    assert task.command() == ["python3", "-m", "mempamal", "run-task", ".", "a"]
    assert task.command(python="/opt/py", workdir="/w d") == [
        "/opt/py", "-m", "mempamal", "run-task", "/w d", "a"]


@pytest.mark.parametrize(("n_candidates", "size", "n_splits", "workers", "expected"), [
    (4, 4, 9, 2, 2),       # W3's shape: 9 one-chunk tasks on 2 cores idle 11 %; 18 do not
    (4, 4, 9, 4, 1),       # 4 cores: 36 tasks of one candidate
    (24, 24, 25, 2, 12),   # W1's shape: 25 tasks on 2 cores idle 4 %; 50 do not
    (100, 100, 25, 2, 50),  # W2's
    (24, 24, 5, 2, 12),    # 5 tasks idle 20 %; 10 do not
    (12, 3, 4, 2, 3),      # already balanced: the time-based size stands
    (1, 1, 9, 2, 1),       # nothing to split: the only size there is
])
def test_chunk_size_fills_the_cores_in_the_last_wave(n_candidates, size, n_splits, workers,
                                                     expected):
    from mempamal.recipes.nested_cv.compile import MAX_IDLE_FRACTION, balanced_chunk_size

    got = balanced_chunk_size(n_candidates, size, n_splits, workers)
    assert got == expected
    n_tasks = n_splits * -(-n_candidates // got)
    waves = -(-n_tasks // workers)
    assert got <= size and (waves * workers / n_tasks - 1 <= MAX_IDLE_FRACTION
                            or n_candidates == 1)


def test_a_fast_fit_is_timed_warm_at_compile(tmp_path):
    """The first fit pays one-time costs: a fast one is timed a second time, warm."""
    import numpy as np
    from helpers import CountingClassifier, iris

    from mempamal import Experiment

    X, y = iris()
    log = tmp_path / "fits.log"
    # more candidates than a task of even a 1 ms fit holds, so that a warm
    # time could change the chunk size
    exp = Experiment(CountingClassifier(log_file=str(log)),
                     param_grid={"C": np.linspace(0.1, 1.0, 3000)}, cv=2, inner_cv=2)
    wf = exp.compile(tmp_path / "w", X, y)
    probes = log.read_text().splitlines()
    assert len(probes) == 2 and probes[0] == probes[1], probes  # the same fit, twice
    assert 0 < wf.meta["seconds_per_fit"] < 1.0


@pytest.mark.parametrize(("n_candidates", "timings"), [
    (4, 1),   # 2 s / 0.36 s holds 5 candidates: all 4 in one task whatever a warm fit says
    (10, 2),  # 5 of 10: a faster warm fit could put more in a task
])
def test_a_fit_is_timed_again_only_when_that_can_change_the_chunk_size(
        tmp_path, monkeypatch, n_candidates, timings):
    import numpy as np
    from helpers import FailingClassifier, iris

    from mempamal import Experiment
    from mempamal.recipes.nested_cv import compile as nested_compile

    calls = []

    def timed(*args, **kwargs):
        calls.append(kwargs.get("add_rows"))
        return {"fit_time": 0.36 if len(calls) == 1 else 0.2, "score_time": 0.0}

    monkeypatch.setattr(nested_compile, "_first_fit", timed)
    X, y = iris()
    exp = Experiment(FailingClassifier(), param_grid={"C": np.linspace(0.1, 1.0, n_candidates)},
                     cv=2, inner_cv=2)
    wf = exp.compile(tmp_path / "w", X, y)
    assert len(calls) == timings and calls == [None] * timings
    assert wf.meta["seconds_per_fit"] == (0.36 if timings == 1 else 0.2)
