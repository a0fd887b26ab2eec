"""Cut tasks into lines: tasks one interpreter runs one after the other (pure).

Shared by the backends whose unit of work is a fresh interpreter (SLURM array
elements, Soma-Workflow jobs), so that each pays its start-up (~1 s to import
scikit-learn) once per line rather than once per task.

1. **Levels.** Tasks of the same kind whose dependencies lie in the same
   levels form a level: for nested CV every fit, then every select, then the
   aggregate. Tasks keep the given (topological) order inside a level.
   Dependencies on tasks outside the given ones are taken as satisfied (their
   outputs exist), so that a resume plans only what is pending.
2. **Lines.** A level is cut into lines, either ``tasks_per_job`` tasks per
   line without crossing a change of downstream tasks (so each outer split's
   fits stay together), or by a ``pack`` function, which balances the work of
   the whole level over the CPUs (:func:`balanced_lines`, :func:`auto_pack`),
   or, when nothing is known of the tasks' durations, by count
   (:func:`count_pack`: a few waves of lines per CPU).
3. **Chains** (:func:`fuse_chains`). A unit of one line whose only upstream
   unit is one line feeding nothing else runs in that line, after it.

Nothing here knows what a fold is: only ``Task.kind``, ``deps`` and ids.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

from ..errors import ValidationError

#: ``pack(task_ids_of_a_level) -> lines``: the level's ids, in order, cut into lines
Pack = Callable[[list[str]], list[list[str]]]


def check_tasks_per_job(value) -> None:
    """Refuse anything but a positive int or ``"auto"``, naming the value."""
    if value == "auto" or (isinstance(value, int) and not isinstance(value, bool)
                           and value >= 1):
        return
    raise ValidationError(f"tasks_per_job must be a positive int or 'auto', got {value!r}")


def dependents(tasks) -> dict[str, set[str]]:
    """``{task_id: ids of the tasks of `tasks` that read from it}``."""
    out: dict[str, set[str]] = {tid: set() for tid in tasks}
    for t in tasks.values():
        for d in t.deps:
            if d in out:
                out[d].add(t.id)
    return out


def downstream(dependents_of, line) -> frozenset:
    """The tasks outside ``line`` that read from it."""
    inside = set(line)
    return frozenset(d for tid in line for d in dependents_of[tid] if d not in inside)


def levels(tasks) -> list[list[str]]:
    """Task ids grouped by (kind, levels of their deps), levels in topological order.

    ``tasks`` maps ids to tasks in topological order; dependencies outside it
    are ignored.
    """
    level_of: dict[str, int] = {}
    keys: dict[tuple, int] = {}
    out: list[list[str]] = []
    for t in tasks.values():
        key = (t.kind, frozenset(level_of[d] for d in t.deps if d in level_of))
        if key not in keys:
            keys[key] = len(out)
            out.append([])
        level_of[t.id] = keys[key]
        out[keys[key]].append(t.id)
    return out


def fixed_lines(level, per_line: int, downstream_of) -> list[list[str]]:
    """``per_line`` tasks per line, a new line wherever the downstream tasks change."""
    lines: list[list[str]] = []
    block: list[str] = []
    block_key = None
    for tid in level + [None]:
        key = downstream_of([tid]) if tid is not None else None
        if block and (tid is None or key != block_key):
            lines.extend(block[k:k + per_line] for k in range(0, len(block), per_line))
            block = []
        if tid is not None:
            block.append(tid)
            block_key = key
    return lines


def level_lines(tasks, tasks_per_job: int = 1, pack: Pack | None = None) -> list[list[str]]:
    """Every level of ``tasks`` cut into lines (levels in topological order)."""
    down = functools.partial(downstream, dependents(tasks))
    lines: list[list[str]] = []
    for level in levels(tasks):
        lines.extend(pack(level) if pack is not None else
                     fixed_lines(level, tasks_per_job, down))
    return lines


def balanced_lines(ids: list[str], seconds: list[float], slots: int | None,
                   min_seconds: float, max_seconds: float) -> list[list[str]]:
    """Consecutive ``ids`` cut into lines of about equal work.

    As many lines as there are ``slots`` (CPUs that can run one at once; None:
    unknown, no limit), but none with less than ``min_seconds`` of work (each
    line pays an interpreter start-up) and none with more than ``max_seconds``
    unless a single task is longer. Never more lines than tasks.
    """
    total = sum(seconds)
    by_size = max(1, math.floor(total / min_seconds)) if min_seconds > 0 else len(ids)
    wanted = by_size if slots is None else min(slots, by_size)
    n = min(len(ids), max(1, wanted, math.ceil(total / max_seconds)))
    if n <= 1:
        return [list(ids)] if ids else []
    lines: list[list[str]] = [[]]
    done = 0.0
    for k, (tid, s) in enumerate(zip(ids, seconds)):
        # start a new line once this one holds its share, keeping a task for
        # every line still to come
        share = total * len(lines) / n
        left = len(ids) - k
        if lines[-1] and len(lines) < n and (done + s / 2 > share or left == n - len(lines)):
            lines.append([])
        lines[-1].append(tid)
        done += s
    return lines


def auto_pack(tasks, estimates: dict, slots: Callable[[list], int | None],
              min_seconds: float, max_seconds: float) -> Pack:
    """A ``pack`` that balances each level's estimated work over its slots.

    Parameters
    ----------
    tasks : dict
        Task id -> task.
    estimates : dict
        Task id -> estimated seconds of work.
    slots : callable
        ``slots(tasks_of_a_level)``: how many of them can run at once (None:
        unknown).
    min_seconds, max_seconds : float
        Work bounds of one line (see :func:`balanced_lines`).
    """
    def pack(level):
        return balanced_lines(level, [estimates[t] for t in level],
                              slots([tasks[t] for t in level]), min_seconds, max_seconds)

    return pack


#: ``count_pack``: lines per CPU for tasks of unknown duration. One wave would
#: suit equal tasks best; a few leave room for unequal ones to even out, while
#: a level of 10,000 short tasks still costs only a few interpreters per CPU
UNTIMED_WAVES = 4


def count_pack(tasks, slots: Callable[[list], int | None], waves: int = UNTIMED_WAVES) -> Pack:
    """A ``pack`` for tasks of unknown duration: ``waves`` lines per slot at most.

    Each level's tasks are cut into ``min(len(level), waves * slots)`` lines of
    (nearly) equal count. With unknown slots (``slots`` returns None) every
    task is a line of its own, as without packing: long tasks then spread
    over whatever the cluster offers.
    """
    def pack(level):
        n_slots = slots([tasks[t] for t in level])
        if n_slots is None:
            return [[t] for t in level]
        n = min(len(level), waves * n_slots)
        return balanced_lines(level, [1.0] * len(level), n, 0.0, math.inf)

    return pack


def upstream(line, tasks, where: dict) -> tuple[set, set]:
    """The units ``line`` reads from, and those of them it needs only to have ended.

    ``where`` maps a task id to its unit (a line, a job); dependencies outside
    it are left out. A unit is needed only to have ended when every edge
    from it is soft (:attr:`Task.soft_deps`): one hard edge makes it ``afterok``.
    """
    hard = {where[d] for tid in line for d in tasks[tid].hard_deps if d in where}
    soft = {where[d] for tid in line for d in tasks[tid].soft_deps if d in where}
    return hard | soft, soft - hard


def line_deps(lines, tasks, soft_only: bool = False) -> list[set[int]]:
    """For each line, the indices of the lines holding the tasks it reads from.

    ``soft_only``: only those it needs to have ended (see :func:`upstream`).
    """
    line_of = {tid: k for k, line in enumerate(lines) for tid in line}
    return [upstream(line, tasks, line_of)[soft_only] - {k} for k, line in enumerate(lines)]


def timed_or_count_pack(tasks, estimates: dict | None, slots: Callable[[list], int | None],
                        min_seconds: float, max_seconds: float) -> Pack:
    """``tasks_per_job="auto"``: :func:`auto_pack` on what the compile timed, or,
    with nothing timed (``estimates`` None: a sweep's trials), :func:`count_pack`.
    """
    if estimates is None:
        return count_pack(tasks, slots)
    return auto_pack(tasks, estimates, slots, min_seconds, max_seconds)


def fuse_chains(runs, run_deps, soft_deps=None) -> None:
    """Move a one-line run into its only upstream run, when that one is one line
    feeding only it (in place; emptied runs are left empty).

    A run is a list of lines (one job); ``run_deps[r]`` the runs it reads from,
    ``soft_deps[r]`` those of them it needs only to have ended: such a run
    stays apart, so that it still runs when its upstream job is killed.
    Saves an interpreter start and a scheduler round trip (for nested CV: the
    aggregate runs after the selects).
    """
    users: dict[int, set[int]] = {r: set() for r in range(len(runs))}
    for r, deps in enumerate(run_deps):
        for d in deps:
            users[d].add(r)
    for r in range(len(runs)):
        if len(runs[r]) != 1 or len(run_deps[r]) != 1:
            continue
        (up,) = run_deps[r]
        if soft_deps is not None and up in soft_deps[r]:
            continue
        if len(runs[up]) == 1 and users[up] == {r}:
            runs[up][0].extend(runs[r][0])
            runs[r] = []
            users[up] = users.pop(r)
            for u in users[up]:  # they read from r only: up is what r was to them
                run_deps[u].discard(r)
                run_deps[u].add(up)
                if soft_deps is not None and r in soft_deps[u]:
                    soft_deps[u].discard(r)
                    soft_deps[u].add(up)
            run_deps[r] = set()


def chained_lines(tasks, tasks_per_job: int = 1,
                  pack: Pack | None = None) -> tuple[list[list[str]], list[set[int]]]:
    """Lines of ``tasks`` with chains fused, and each line's upstream lines.

    Every line is one job (no arrays): what a scheduler without array jobs
    runs. Lines are in topological order (every line after those it reads from).
    """
    lines = level_lines(tasks, tasks_per_job, pack)
    runs = [[line] for line in lines]
    deps = line_deps(lines, tasks)
    fuse_chains(runs, deps, line_deps(lines, tasks, soft_only=True))
    kept = [r for r in range(len(runs)) if runs[r]]
    index = {r: k for k, r in enumerate(kept)}
    return [runs[r][0] for r in kept], [{index[d] for d in deps[r]} for r in kept]


def common_prefix(lines) -> str:
    """The ``-``-separated segments every task id of ``lines`` starts with."""
    parts = [tid.split("-") for line in lines for tid in line]
    common = []
    for segs in zip(*parts):
        if len(set(segs)) > 1:
            break
        common.append(segs[0])
    return "-".join(common) or "tasks"
