"""The order in which a scheduler that takes priorities up front should start tasks.

The local executor chooses each next task as a worker frees (``local._DagRun``):
a deeper task first (a select as soon as its fits are done), else workflow
order, except at the end of a run, where the next fit comes from the join
(select) with the most fits left, so that the last joins end together and
their selects run side by side. A Dask scheduler is handed every task at once
and starts them by its own ``priority``; left to submission order, a nested
run ends with the last outer split's select alone on one worker (W3: a 2.3 s
forest refit, every other worker idle). :func:`priorities` plays the local
rule ahead of time, every task of a depth taken as ready (fits are: they
depend on nothing), and gives the resulting start order as priorities.
"""

from __future__ import annotations

from collections import Counter

from .packing import dependents


def priorities(tasks: dict, todo, workers: int) -> dict[str, int]:
    """A priority per task of ``todo``: larger starts first (Dask's ``priority=``).

    Parameters
    ----------
    tasks : dict
        Task id -> :class:`~mempamal.workflow.Task`, every task of the
        workflow, in workflow (topological) order.
    todo : iterable of str
        The tasks this run starts.
    workers : int
        Tasks that run at once.

    Returns
    -------
    dict
        Task id -> int: deeper tasks above shallower ones; within a depth,
        workflow order, except that once no more than ``workers`` joins (at
        least two) have tasks left at that depth, the next task comes from
        the join with the most left (the first in workflow order on a tie).
    """
    todo = set(todo)
    children = dependents(tasks)
    depth = depths(tasks)
    by_depth: dict[int, list[str]] = {}
    for tid in tasks:
        if tid in todo:
            by_depth.setdefault(depth[tid], []).append(tid)
    width = len(tasks) + 1
    out = {}
    for level, tids in by_depth.items():
        joins = {tid: frozenset(children[tid]) for tid in tids}
        for rank, tid in enumerate(_balanced(tids, joins, workers)):
            out[tid] = level * width + (width - 1 - rank)
    return out


def depths(tasks: dict) -> dict[str, int]:
    """Each task's depth in the DAG: 0 without dependencies, else one more than
    its deepest dependency (``tasks`` in topological order).
    """
    depth: dict[str, int] = {}
    for tid, task in tasks.items():
        depth[tid] = 1 + max((depth[d] for d in task.deps), default=-1)
    return depth


def _balanced(tids: list[str], joins: dict, workers: int) -> list[str]:
    """``tids`` (one depth, workflow order) in the order the local rule starts them.

    Linear but for the end, where at most ``workers`` joins are compared per
    task (C100k has 100,000 fits).
    """
    left = Counter(j for j in joins.values() if j)  # a task feeding nothing joins nothing
    open_joins = len(left)
    order: list[str] = []
    for k, tid in enumerate(tids):
        if 2 <= open_joins <= workers:
            return order + _fullest_first(tids[k:], joins, left)
        order.append(tid)
        join = joins[tid]
        if join:
            left[join] -= 1
            open_joins -= left[join] == 0
    return order


def _fullest_first(tids: list[str], joins: dict, left: Counter) -> list[str]:
    """The end: the next task from the join with the most left (on a tie, the one
    whose next task comes first); tasks feeding no join last, in order.
    """
    queues: dict[frozenset, list[str]] = {}
    for tid in tids:
        queues.setdefault(joins[tid], []).append(tid)
    loose = queues.pop(frozenset(), [])
    position = {tid: k for k, tid in enumerate(tids)}
    heads = {join: 0 for join in queues}
    order = []
    while heads:
        join = min(heads, key=lambda j: (-left[j], position[queues[j][heads[j]]]))
        order.append(queues[join][heads[join]])
        left[join] -= 1
        heads[join] += 1
        if heads[join] == len(queues[join]):
            del heads[join]
    return order + loose
