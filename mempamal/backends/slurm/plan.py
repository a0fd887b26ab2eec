"""Cut a workflow into SLURM jobs: arrays of packed tasks chained by dependencies (pure).

Levels and lines come from :mod:`..packing`, the planner the Soma-Workflow
backend shares: tasks of a level (every fit, then every select...) cut into
lines, each run by one array element (one interpreter) task after task,
``tasks_per_job`` per line or balanced over the CPUs by a ``pack`` function.
Then, here:

1. **Jobs.** Consecutive lines with the same upstream jobs and the same
   downstream tasks form one array job, cut into arrays of at most
   ``max_array_size`` elements, each indexed from 0 because SLURM bounds the
   index, not only the count. A run of one line is a plain job. A job depends
   (``afterok``) on every job its tasks read from.
2. **Chains.** A plain job whose only upstream job is a plain job that feeds
   nothing else runs in that job, after it (:func:`..packing.fuse_chains`):
   one interpreter start and one scheduler round trip fewer (for nested CV:
   the aggregate after the selects).

Jobs are listed in dependency order, earliest workflow task first, so that a
scheduler ordering by job id runs an outer split's select before the next
split's fits. Nothing here knows what a fold is: only ``Task.kind``, ``deps``
and ids.
"""

from __future__ import annotations

import functools
import heapq
import re
from dataclasses import dataclass, field

from ...errors import ValidationError
from ..packing import (
    Pack,
    balanced_lines,
    common_prefix,
    dependents,
    downstream,
    fixed_lines,
    fuse_chains,
    levels,
    upstream,
)

__all__ = ["Job", "array_spec", "balanced_lines", "parse_array_spec", "plan_jobs"]

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
    soft_deps : list of str
        Those of ``deps`` it needs only to have ended (``afterany``), not to
        have succeeded (``afterok``).
    """

    stem: str
    lines: list
    deps: list = field(default_factory=list)
    array: bool = True
    soft_deps: list = field(default_factory=list)

    @property
    def task_ids(self) -> list[str]:
        return [tid for line in self.lines for tid in line]


def plan_jobs(workflow, max_array_size: int, tasks_per_job: int = 1,
              pack: Pack | None = None) -> list[Job]:
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
    down = functools.partial(downstream, dependents(tasks))
    job_of: dict[str, int] = {}  # task id -> index into ``runs``
    runs: list[list[list[str]]] = []  # each run: the lines of one future job (or pieces)
    run_deps: list[set[int]] = []
    run_soft: list[set[int]] = []  # the upstream runs needed only to have ended
    for level in levels(tasks):
        lines = pack(level) if pack is not None else fixed_lines(level, tasks_per_job, down)
        key_of_previous = None
        for line in lines:
            deps, soft = upstream(line, tasks, job_of)
            key = (frozenset(deps), frozenset(soft), down(line))
            if key != key_of_previous:
                runs.append([])
                run_deps.append(deps)
                run_soft.append(soft)
                key_of_previous = key
            runs[-1].append(line)
            for tid in line:
                job_of[tid] = len(runs) - 1
    names = [common_prefix(run) for run in runs]  # before chains merge kinds
    fuse_chains(runs, run_deps, run_soft)
    return _jobs(runs, run_deps, run_soft, names, tasks, max_array_size)


def _check_ids(tasks) -> None:
    for tid in tasks:
        if not _SAFE_ID.match(tid):
            raise ValidationError(
                f"task id {tid!r} cannot name a SLURM script; expected letters, digits, "
                "'_', '.', '+' or '-'")












def _jobs(runs, run_deps, run_soft, bases, tasks, max_array_size) -> list[Job]:
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
        soft = [s for d in sorted(run_soft[r], key=position.get) for s in stems_of[d]]
        for stem, piece in zip(stems_of[r], pieces[r]):
            jobs.append(Job(stem, piece, deps, array=len(runs[r]) > 1, soft_deps=soft))
    return jobs




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
