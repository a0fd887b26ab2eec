"""Cut a workflow into SLURM jobs: arrays of packed tasks chained by dependencies (pure).

1. **Levels.** Tasks of the same kind whose dependencies lie in the same
   levels form a level: for nested CV every fit, then every select, then the
   aggregate. Tasks keep the workflow's (topological) order inside a level.
2. **Lines.** A level is cut into lines, each run by one array element (one
   interpreter) task after task. Either ``tasks_per_job`` tasks per line,
   without crossing a change of downstream tasks (so each outer split's fits
   stay together), or lines given by a ``pack`` function, which balances the
   work of the whole level over the CPUs (see :func:`balanced_lines`).
3. **Jobs.** Consecutive lines with the same upstream jobs and the same
   downstream tasks form one array job, cut into arrays of at most
   ``max_array_size`` elements, each indexed from 0 because SLURM bounds the
   index, not only the count. A run of one line is a plain job. A job depends
   (``afterok``) on every job its tasks read from.
4. **Chains.** A plain job whose only upstream job is a plain job that feeds
   nothing else runs in that job, after it: one interpreter start and one
   scheduler round trip fewer (for nested CV: the aggregate after the selects).

Jobs are listed in dependency order, earliest workflow task first, so that a
scheduler ordering by job id runs an outer split's select before the next
split's fits. Nothing here knows what a fold is: only ``Task.kind``, ``deps``
and ids.
"""

from __future__ import annotations

import functools
import heapq
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from ...errors import ValidationError

#: task ids become file names and job names
_SAFE_ID = re.compile(r"^[A-Za-z0-9_.+-]+$")


@dataclass
class Job:
    """One sbatch submission.

    Attributes
    ----------
    stem : str
        Unique name of its script (``slurm/STEM.sbatch``) and task file.
    lines : list of list of str
        Array element k runs the task ids of ``lines[k]``; a plain job has one line.
    deps : list of str
        Stems of the jobs it waits for.
    array : bool
        Whether it is submitted as an array job.
    """

    stem: str
    lines: list
    deps: list = field(default_factory=list)
    array: bool = True

    @property
    def task_ids(self) -> list[str]:
        return [tid for line in self.lines for tid in line]


def plan_jobs(workflow, max_array_size: int, tasks_per_job: int = 1,
              pack: Callable[[list[str]], list[list[str]]] | None = None) -> list[Job]:
    """The jobs of ``workflow`` in submission order (every job after its deps).

    Parameters
    ----------
    workflow : Workflow
    max_array_size : int
        Most elements of one array job.
    tasks_per_job : int
        Tasks per line when ``pack`` is None.
    pack : callable, optional
        ``pack(task_ids_of_a_level) -> lines``: the level's ids, in order, cut
        into consecutive lines.
    """
    tasks = workflow.tasks
    _check_ids(tasks)
    dependents: dict[str, set[str]] = {tid: set() for tid in tasks}
    for t in tasks.values():
        for d in t.deps:
            dependents[d].add(t.id)
    downstream = functools.partial(_downstream, dependents)
    job_of: dict[str, int] = {}  # task id -> index into ``runs``
    runs: list[list[list[str]]] = []  # each run: the lines of one future job (or pieces)
    run_deps: list[set[int]] = []
    for level in _levels(tasks):
        lines = pack(level) if pack is not None else \
            _fixed_lines(level, tasks_per_job, downstream)
        key_of_previous = None
        for line in lines:
            deps = {job_of[d] for tid in line for d in tasks[tid].deps}
            key = (frozenset(deps), downstream(line))
            if key != key_of_previous:
                runs.append([])
                run_deps.append(deps)
                key_of_previous = key
            runs[-1].append(line)
            for tid in line:
                job_of[tid] = len(runs) - 1
    names = [_common_prefix(run) for run in runs]  # before chains merge kinds
    _fuse_chains(runs, run_deps)
    return _jobs(runs, run_deps, names, tasks, max_array_size)


def _check_ids(tasks) -> None:
    for tid in tasks:
        if not _SAFE_ID.match(tid):
            raise ValidationError(
                f"task id {tid!r} cannot name a SLURM script; expected letters, digits, "
                "'_', '.', '+' or '-'")


def _downstream(dependents, line) -> frozenset:
    """The tasks outside ``line`` that read from it."""
    inside = set(line)
    return frozenset(d for tid in line for d in dependents[tid] if d not in inside)


def _levels(tasks) -> list[list[str]]:
    """Task ids grouped by (kind, levels of their deps), levels in topological order."""
    level_of: dict[str, int] = {}
    keys: dict[tuple, int] = {}
    levels: list[list[str]] = []
    for t in tasks.values():
        key = (t.kind, frozenset(level_of[d] for d in t.deps))
        if key not in keys:
            keys[key] = len(levels)
            levels.append([])
        level_of[t.id] = keys[key]
        levels[keys[key]].append(t.id)
    return levels


def _fixed_lines(level, per_line: int, downstream) -> list[list[str]]:
    """``per_line`` tasks per line, a new line wherever the downstream tasks change."""
    lines: list[list[str]] = []
    block: list[str] = []
    block_key = None
    for tid in level + [None]:
        key = downstream([tid]) if tid is not None else None
        if block and (tid is None or key != block_key):
            lines.extend(block[k:k + per_line] for k in range(0, len(block), per_line))
            block = []
        if tid is not None:
            block.append(tid)
            block_key = key
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


def _fuse_chains(runs, run_deps) -> None:
    """Move a one-line run into its only upstream run, when that one is one line
    feeding only it (in place; emptied runs are left empty).
    """
    users: dict[int, set[int]] = {r: set() for r in range(len(runs))}
    for r, deps in enumerate(run_deps):
        for d in deps:
            users[d].add(r)
    for r in range(len(runs)):
        if len(runs[r]) != 1 or len(run_deps[r]) != 1:
            continue
        (up,) = run_deps[r]
        if len(runs[up]) == 1 and users[up] == {r}:
            runs[up][0].extend(runs[r][0])
            runs[r] = []
            users[up] = users.pop(r)
            for u in users[up]:
                run_deps[u].discard(r)
                run_deps[u].add(up)
            run_deps[r] = set()


def _jobs(runs, run_deps, bases, tasks, max_array_size) -> list[Job]:
    """Runs -> named jobs (cut at ``max_array_size``), in dependency order."""
    order = {tid: k for k, tid in enumerate(tasks)}
    live = [r for r in range(len(runs)) if runs[r]]
    first = {r: min(order[t] for line in runs[r] for t in line) for r in live}
    # topological order, earliest task first among the ready runs
    waiting = {r: set(run_deps[r]) for r in live}
    users: dict[int, list[int]] = {r: [] for r in live}
    for r in live:
        for d in run_deps[r]:
            users[d].append(r)
    heap = [(first[r], r) for r in live if not waiting[r]]
    heapq.heapify(heap)
    ordered = []
    while heap:
        _, r = heapq.heappop(heap)
        ordered.append(r)
        for u in users[r]:
            waiting[u].discard(r)
            if not waiting[u]:
                heapq.heappush(heap, (first[u], u))
    pieces = {r: [runs[r][k:k + max_array_size] for k in range(0, len(runs[r]), max_array_size)]
              for r in ordered}
    names = _names([(bases[r], len(pieces[r])) for r in ordered])
    stems_of = dict(zip(ordered, names))
    position = {r: k for k, r in enumerate(ordered)}
    jobs = []
    for r in ordered:
        deps = [s for d in sorted(run_deps[r], key=position.get) for s in stems_of[d]]
        for stem, piece in zip(stems_of[r], pieces[r]):
            jobs.append(Job(stem, piece, deps, array=len(runs[r]) > 1))
    return jobs


def _common_prefix(lines) -> str:
    """The ``-``-separated segments every task id of ``lines`` starts with."""
    parts = [tid.split("-") for line in lines for tid in line]
    common = []
    for segs in zip(*parts):
        if len(set(segs)) > 1:
            break
        common.append(segs[0])
    return "-".join(common) or "tasks"


def _names(bases: list[tuple[str, int]]) -> list[list[str]]:
    """Stems of each run's pieces: its base name, numbered ``.k`` when shared."""
    count: dict[str, int] = {}
    for base, n in bases:
        count[base] = count.get(base, 0) + n
    seen: dict[str, int] = {}
    out = []
    for base, n in bases:
        if count[base] == 1:
            out.append([base])
            continue
        k = seen.get(base, 0)
        out.append([f"{base}.{k + j}" for j in range(n)])
        seen[base] = k + n
    return out


def array_spec(indices, throttle: int | None = None) -> str:
    """``0-3,7,9-12`` (plus ``%N``) for sorted distinct ``indices``."""
    parts, start, prev = [], None, None
    for i in sorted(set(indices)):
        if start is None:
            start = prev = i
        elif i == prev + 1:
            prev = i
        else:
            parts.append(f"{start}" if start == prev else f"{start}-{prev}")
            start = prev = i
    if start is not None:
        parts.append(f"{start}" if start == prev else f"{start}-{prev}")
    spec = ",".join(parts)
    return f"{spec}%{throttle}" if throttle else spec


def parse_array_spec(spec: str) -> list[int]:
    """Indices of an array spec written by :func:`array_spec` (``-``: not an array)."""
    spec = spec.partition("%")[0]
    if spec in ("", "-"):
        return []
    out = []
    for part in spec.split(","):
        a, _, b = part.partition("-")
        out.extend(range(int(a), int(b or a) + 1))
    return out
