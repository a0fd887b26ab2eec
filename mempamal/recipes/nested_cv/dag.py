"""Nested cross-validation as a DAG of tasks (pure: no I/O).

There is no barrier between outer splits: a select waits for its own
split's fits only.
"""

from __future__ import annotations

from ...workdir import Workdir
from ...workflow import Task, command_prefix


def chunks(n_candidates: int, chunk_size: int) -> list[list[int]]:
    """Candidate indices cut into consecutive chunks of ``chunk_size``."""
    return [list(range(s, min(s + chunk_size, n_candidates)))
            for s in range(0, n_candidates, chunk_size)]


def build_tasks(n_inner: list[int], n_candidates: int, chunk_size: int,
                python: str | None = None, resources: dict | None = None,
                final_inner: int = 0, cand_chunks: list[list[int]] | None = None) -> list[Task]:
    """Tasks of a nested CV, in topological order.

    Parameters
    ----------
    n_inner : list of int
        Number of inner splits of each outer split (0: no inner CV).
    n_candidates : int
        Number of candidates.
    chunk_size : int
        Candidates per fit task.
    python : str, optional
        Interpreter of the task commands.
    resources : dict, optional
        Resource hints given to every task.
    final_inner : int, default=0
        Inner splits of the final model's search on all the data
        (``fit-final-i{i}-c{c}`` -> ``select-final``); 0: no final model.
    cand_chunks : list of list of int, optional
        The candidate chunks (default: consecutive chunks of ``chunk_size``).
    """
    res = dict(resources or {})
    res.setdefault("cpus", 1)
    prefix = command_prefix(python)
    tasks: list[Task] = []
    selects = []
    if cand_chunks is None:
        cand_chunks = chunks(n_candidates, chunk_size)
    splits = [*enumerate(n_inner)] + ([("final", final_inner)] if final_inner else [])
    for o, n_i in splits:
        if n_i == 0:
            tid = f"fit-o{o}"
            tasks.append(Task(tid, "fit", [Workdir.fit_output(o, None, 0)], [], res,
                              {"o": o, "i": None, "candidates": [0]}, prefix))
            selects.append(tid)
            continue
        fits = []
        name = "final" if o == "final" else f"o{o}"
        for i in range(n_i):
            for c, cands in enumerate(cand_chunks):
                tid = f"fit-{name}-i{i}-c{c}"
                tasks.append(Task(tid, "fit", [Workdir.fit_output(o, i, c)], [], res,
                                  {"o": o, "i": i, "candidates": cands}, prefix))
                fits.append(tid)
        tid = f"select-{name}"
        tasks.append(Task(tid, "select", [Workdir.select_output(o)], fits, res,
                          {"o": o}, prefix))
        selects.append(tid)
    outputs = [Workdir.FINAL_SUMMARY, Workdir.FINAL_CV_RESULTS, Workdir.FINAL_OUTER_SCORES]
    tasks.append(Task("aggregate", "aggregate", outputs, selects, res, {}, prefix))
    return tasks


def estimated_seconds(task: Task, meta: dict) -> float | None:
    """Rough work of one task, from one fit timed at compile time (None: untimed).

    A fit task fits and scores each of its candidates once; a select refits
    the best candidate on the larger outer-train set and scores it, which
    counts as two fits; the aggregate only reads small files.
    """
    seconds_per_fit = meta.get("seconds_per_fit")
    if not seconds_per_fit:
        return None
    if task.kind == "fit":
        return seconds_per_fit * len(task.args["candidates"])
    if task.kind == "select":
        return 2 * seconds_per_fit
    return 0.1
