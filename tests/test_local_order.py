"""Which ready task the local executor starts next (pure: nothing runs)."""

from __future__ import annotations

import heapq

import pytest

from mempamal.backends.local import _DagRun
from mempamal.recipes.nested_cv import build_tasks
from mempamal.runner import TaskOutcome
from mempamal.workflow import Workflow


class _Bar:
    def advance(self, ok):
        pass

    def skip(self, n):
        pass


def _order(tmp_path, n_outer: int, n_jobs: int) -> list[str]:
    """Start order when tasks end one at a time, in the order they started."""
    tasks = build_tasks([2] * n_outer, 2, 1, python="python3")  # 4 fits per outer split
    wf = Workflow(tmp_path / "w", tasks, {"fingerprint": "0" * 16})
    run = _DagRun(wf, {"n_jobs": n_jobs, "subprocess": False})
    run.bar = _Bar()
    ready = [run._priority(t) for t, w in run.waiting.items() if not w]
    heapq.heapify(ready)
    started = []
    while ready:
        tid = run._pop(ready)[-1]
        run._unqueue(tid)
        started.append(tid)
        for child in run._finished(tid, TaskOutcome(tid, True)):
            heapq.heappush(ready, run._priority(child))
    assert sorted(started) == sorted(wf.tasks)
    return started


def _fits(o):
    return [f"fit-o{o}-i{i}-c{c}" for i in range(2) for c in range(2)]


def test_the_last_splits_fits_alternate_so_their_selects_end_together(tmp_path):
    order = _order(tmp_path, 3, n_jobs=2)
    # split 0 first, its select as soon as it can run...
    assert order[:5] == [*_fits(0), "select-o0"]
    # ... then the two splits left, taking from the one with more fits to start
    fits = [t for t in order[5:] if t.startswith("fit-")]
    assert fits == [t for pair in zip(_fits(1), _fits(2)) for t in pair]
    assert order[-3:] == ["fit-o2-i1-c1", "select-o2", "aggregate"]


@pytest.mark.parametrize("n_jobs", [1, 4])
def test_one_worker_or_more_workers_than_splits_keep_workflow_order(tmp_path, n_jobs):
    # one worker: nothing to end together; 4 workers, 3 splits: balanced from the start
    order = _order(tmp_path, 3, n_jobs=n_jobs)
    fits = [t for t in order if t.startswith("fit-")]
    if n_jobs == 1:
        assert fits == [*_fits(0), *_fits(1), *_fits(2)]
    else:
        assert fits[:3] == ["fit-o0-i0-c0", "fit-o1-i0-c0", "fit-o2-i0-c0"]


# -- the same order, fixed ahead, as Dask priorities ---------------------------
@pytest.mark.parametrize("n_jobs", [1, 2, 4])
@pytest.mark.parametrize("n_outer", [1, 3, 5])
def test_dask_priorities_give_the_fits_the_local_executors_start_order(tmp_path, n_outer,
                                                                        n_jobs):
    from mempamal.backends.ordering import priorities

    local = _order(tmp_path, n_outer, n_jobs)
    tasks = {t.id: t for t in build_tasks([2] * n_outer, 2, 1, python="python3")}
    prio = priorities(tasks, list(tasks), n_jobs)
    assert set(prio) == set(tasks)
    by_priority = sorted(tasks, key=lambda t: -prio[t])
    fits = [t for t in by_priority if t.startswith("fit-")]
    assert fits == [t for t in local if t.startswith("fit-")]
    # deeper first: every select above every fit, the aggregate above both
    selects = [t for t in by_priority if t.startswith("select-")]
    assert by_priority == ["aggregate", *selects, *fits]
    assert selects == [f"select-o{o}" for o in range(n_outer)]


def test_dask_priorities_cover_only_the_tasks_to_run(tmp_path):
    from mempamal.backends.ordering import priorities

    tasks = {t.id: t for t in build_tasks([2] * 3, 2, 1, python="python3")}
    todo = [t for t in tasks if not t.startswith("fit-o0")]  # split 0's fits are done
    prio = priorities(tasks, todo, 2)
    assert set(prio) == set(todo)
    fits = sorted((t for t in todo if t.startswith("fit-")), key=lambda t: -prio[t])
    # two splits left for two workers: balanced from the start
    assert fits == [t for pair in zip(_fits(1), _fits(2)) for t in pair]
