"""Cut a workflow into SLURM jobs: arrays of alike tasks chained by dependencies (pure).

Tasks of the same kind that have the same dependencies and the same direct
dependents form one group: for nested CV, the fit tasks of one outer split
(they all feed ``select-oK``), then each select, then the aggregate. A group
of several tasks becomes an array job (one line of task ids per element, see
``tasks_per_job``), cut into several arrays of at most ``max_array_size``
elements, each indexed from 0 because SLURM bounds the index, not only the
count. A job depends (``afterok``) on every array of every group it reads.
Nothing here knows what a fold is: only ``Task.kind``, ``deps`` and ids.
"""

from __future__ import annotations

import re
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


def plan_jobs(workflow, max_array_size: int, tasks_per_job: int = 1) -> list[Job]:
    """The jobs of ``workflow`` in submission order (every job after its deps)."""
    groups = _groups(workflow)
    jobs: list[Job] = []
    stems_of: dict[int, list[str]] = {}
    group_of = {tid: g for g, ids in enumerate(groups) for tid in ids}
    names = _names(groups)
    for g, ids in enumerate(groups):
        dep_groups = sorted({group_of[d] for tid in ids for d in workflow.tasks[tid].deps})
        deps = [s for dg in dep_groups for s in stems_of[dg]]
        if len(ids) == 1:
            jobs.append(Job(names[g], [ids], deps, array=False))
            stems_of[g] = [names[g]]
            continue
        lines = [ids[k:k + tasks_per_job] for k in range(0, len(ids), tasks_per_job)]
        pieces = [lines[k:k + max_array_size] for k in range(0, len(lines), max_array_size)]
        stems = [names[g] if len(pieces) == 1 else f"{names[g]}.{p}"
                 for p in range(len(pieces))]
        jobs.extend(Job(s, piece, deps) for s, piece in zip(stems, pieces))
        stems_of[g] = stems
    return jobs


def _groups(workflow) -> list[list[str]]:
    """Task ids grouped by (kind, deps' groups, direct dependents), in topological order."""
    dependents: dict[str, list[str]] = {tid: [] for tid in workflow.tasks}
    for t in workflow.tasks.values():
        if not _SAFE_ID.match(t.id):
            raise ValidationError(
                f"task id {t.id!r} cannot name a SLURM script; expected letters, digits, "
                "'_', '.', '+' or '-'")
        for d in t.deps:
            dependents[d].append(t.id)
    group_of: dict[str, int] = {}
    keys: dict[tuple, int] = {}
    groups: list[list[str]] = []
    for t in workflow.tasks.values():
        key = (t.kind, frozenset(group_of[d] for d in t.deps), frozenset(dependents[t.id]))
        if key not in keys:
            keys[key] = len(groups)
            groups.append([])
        group_of[t.id] = keys[key]
        groups[keys[key]].append(t.id)
    return groups


def _names(groups) -> list[str]:
    """A readable unique name per group: the common ``-`` prefix of its ids."""
    names, seen = [], set()
    for ids in groups:
        parts = [tid.split("-") for tid in ids]
        common = []
        for segs in zip(*parts):
            if len(set(segs)) > 1:
                break
            common.append(segs[0])
        name = "-".join(common) or "tasks"
        base, n = name, 1
        while name in seen:
            name, n = f"{base}-g{n}", n + 1
        seen.add(name)
        names.append(name)
    return names


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
