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


def suggest_output(o: int, round_index: int) -> str:
    """``out/suggest/oO-rR.json``: candidates asked for round ``R`` of outer split ``O``.

    ``out/suggest/final-rR.json`` for the final model's search.
    """
    name = "final" if o == "final" else f"o{o}"
    return f"out/suggest/{name}-r{round_index}.json"


def build_adaptive_tasks(n_inner: list[int], n_candidates: int, batch_size: int,
                         chunk_size: int, python: str | None = None,
                         resources: dict | None = None, final_inner: int = 0) -> list[Task]:
    """Tasks of a nested CV whose outer splits each run a model-based search.

    For outer split ``o``, round ``r``::

        suggest-o{o}-r{r}     ask the round's candidates (out/suggest/o{o}-r{r}.json)
              |
        fit-o{o}-i{i}-c{c}    every inner split i, the round's candidate chunks c
              |  (all i, c of the round)
        suggest-o{o}-r{r+1} ... -> select-o{o} -> aggregate

    Chunks are numbered across rounds (``c`` is unique within a split) and
    never cross a round. There is no barrier between outer splits. With
    ``final_inner`` inner splits, the final model's search on all the data
    runs the same way (``suggest-final-r{r}``, ``fit-final-i{i}-c{c}``,
    ``select-final``).
    """
    res = dict(resources or {})
    res.setdefault("cpus", 1)
    suggest_res = {"cpus": 1, "mem_mb": 1000, "time_min": 10}
    prefix = command_prefix(python)
    tasks: list[Task] = []
    selects = []
    rounds = [list(range(s, min(s + batch_size, n_candidates)))
              for s in range(0, n_candidates, batch_size)]
    splits = [*enumerate(n_inner)] + ([("final", final_inner)] if final_inner else [])
    for o, n_i in splits:
        name = "final" if o == "final" else f"o{o}"
        fits: list[str] = []
        previous: list[str] = []
        c = 0
        for r, cands in enumerate(rounds):
            suggest = f"suggest-{name}-r{r}"
            deps = previous + ([f"suggest-{name}-r{r - 1}"] if r else [])
            # the round's fits need only have ended: a killed one is a failed
            # candidate to Optuna, not the end of the search
            tasks.append(Task(suggest, "suggest", [suggest_output(o, r)], deps, suggest_res,
                              {"o": o, "round": r}, prefix, soft_deps=list(previous)))
            chunked = [cands[k:k + chunk_size] for k in range(0, len(cands), chunk_size)]
            previous = []
            for i in range(n_i):
                for k, chunk in enumerate(chunked):
                    tid = f"fit-{name}-i{i}-c{c + k}"
                    tasks.append(Task(tid, "fit", [Workdir.fit_output(o, i, c + k)], [suggest],
                                      res, {"o": o, "i": i, "candidates": chunk, "round": r},
                                      prefix))
                    previous.append(tid)
            c += len(chunked)
            fits += previous
        tid = f"select-{name}"
        tasks.append(Task(tid, "select", [Workdir.select_output(o)], fits, res, {"o": o},
                          prefix))
        selects.append(tid)
    outputs = [Workdir.FINAL_SUMMARY, Workdir.FINAL_CV_RESULTS, Workdir.FINAL_OUTER_SCORES]
    tasks.append(Task("aggregate", "aggregate", outputs, selects, res, {}, prefix))
    return tasks


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
    if task.kind == "suggest":  # Optuna's import, then tell + ask
        return 2.0
    return 0.1
