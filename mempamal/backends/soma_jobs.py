"""Translate mempamal tasks into a Soma-Workflow ``Workflow`` and its JSON file.

One soma ``Job`` per line of tasks (:class:`Line`, planned by
:mod:`.packing`, the planner the SLURM backend uses): its command runs the
line's tasks one after the other in one interpreter (``python -m mempamal
run-task . ID1 ID2 ...``), from the workdir (soma's ``working_directory``);
its name says which tasks it runs; its resource hints (the largest of its
tasks', time summed) become a native specification for the schedulers that
take one. A line of one task is named by the task id, as before packing.

Groups only shape the tree the soma-workflow GUI shows (execution order comes
from the dependencies alone): a job whose tasks share an outer split goes in
``outer split O`` (and ``inner split I`` if they share that too); a job
spanning several outer splits (packing balances a whole level) goes in a
group named after its kinds of task, e.g. ``fit jobs``.
"""

from __future__ import annotations

import configparser
import os
import re
import socket
from dataclasses import dataclass
from pathlib import Path

from soma_workflow.client import Group, Helper, Job
from soma_workflow.client import Workflow as SomaWorkflow

from ..errors import ValidationError
from ..workdir import atomic_path

#: schedulers whose jobs are scripts we can give resource directives to
NATIVE_SPEC_SCHEDULERS = ("slurm", "pbspro")
#: characters kept in a job's log file names
_UNSAFE_IN_NAMES = re.compile(r"[^A-Za-z0-9_.+-]")


@dataclass
class Line:
    """Tasks one soma job runs one after the other.

    Attributes
    ----------
    name : str
        The soma job's name (unique in its workflow; the GUI shows it).
    stem : str
        File name stem of its stdout/stderr (``STEM.out``, ``STEM.err``).
    task_ids : list of str
        In the order they run.
    deps : list of int
        Indices of the lines it waits for.
    """

    name: str
    stem: str
    task_ids: list
    deps: list


def name_lines(lines, deps) -> list[Line]:
    """:class:`Line` records with unique readable names for planned ``lines``.

    One task: its id. More: ``FIRST .. LAST (N tasks)`` (lines never share a
    task, so their first ids differ).
    """
    out, stems = [], set()
    for ids, up in zip(lines, deps):
        if len(ids) == 1:
            name = stem = ids[0]
        else:
            name, stem = f"{ids[0]} .. {ids[-1]} ({len(ids)} tasks)", f"{ids[0]}..{ids[-1]}"
        stem = _UNSAFE_IN_NAMES.sub("_", stem)
        base, k = stem, 1
        while stem in stems:  # two ids that differ only by unsafe characters
            stem, k = f"{base}.{k}", k + 1
        stems.add(stem)
        out.append(Line(name, stem, list(ids), sorted(up)))
    return out


def build_workflow(lines: list[Line], tasks: dict, root: Path, *, python=None, name: str,
                   out_dir: Path | None = None, scheduler_type: str = "local_basic",
                   native_specification=None, max_cpus: int | None = None) -> SomaWorkflow:
    """A soma ``Workflow`` running ``lines`` of ``tasks`` from the workdir ``root``.

    Parameters
    ----------
    lines : list of Line
        In topological order; dependencies on tasks not in a line are
        considered satisfied (their outputs exist).
    tasks : dict
        Task id -> Task, for every id of ``lines``.
    root : Path
        The workdir (absolute): every job runs there.
    python : str, optional
        Interpreter replacing the one recorded at compile time.
    name : str
        The workflow's name in soma-workflow.
    out_dir : Path, optional
        Where each job's stdout/stderr go (``STEM.out``/``STEM.err``);
        default: soma-workflow's own choice.
    scheduler_type : str
        Soma-workflow scheduler type the jobs are meant for; decides how
        resource hints are spelled.
    native_specification : str or list of str, optional
        Given to every job as is instead of the spelling derived from the hints.
    max_cpus : int, optional
        Cap on the CPUs a job asks for (soma's local scheduler never starts a
        job that wants more CPUs than it has).
    """
    jobs = [_job(line, [tasks[t] for t in line.task_ids], root, python, out_dir,
                 scheduler_type, native_specification, max_cpus) for line in lines]
    deps = [(jobs[d], jobs[k]) for k, line in enumerate(lines) for d in line.deps]
    return SomaWorkflow(jobs, dependencies=deps, root_group=_groups(lines, tasks, jobs),
                        name=name)


def line_resources(tasks) -> dict:
    """The hints of tasks run one after the other: largest cpus/memory/gpus, summed time."""
    out = {}
    for key in ("cpus", "mem_mb", "gpus"):
        values = [t.resources[key] for t in tasks if t.resources.get(key)]
        if values:
            out[key] = max(values)
    minutes = [t.resources.get("time_min") for t in tasks]
    if all(minutes):
        out["time_min"] = sum(minutes)
    return out


def _job(line, tasks, root, python, out_dir, scheduler_type, native_specification,
         max_cpus) -> Job:
    resources = line_resources(tasks)
    cpus = int(resources.get("cpus", 1) or 1)
    if max_cpus is not None:
        cpus = min(cpus, max_cpus)
    # a "native" parallel job on one node: soma's local scheduler counts its
    # CPUs, its SLURM scheduler turns it into -N 1 -c CPUS
    parallel = ({"config_name": "native", "nodes_number": 1, "cpu_per_node": cpus}
                if cpus > 1 else None)
    if native_specification is None:
        native_specification = native_spec(resources, scheduler_type)
    kw = {}
    if out_dir is not None:
        kw = {"stdout_file": str(out_dir / f"{line.stem}.out"),
              "stderr_file": str(out_dir / f"{line.stem}.err")}
    # the tasks of one workflow share their command up to the id
    command = tasks[0].command(python, workdir=".")[:-1] + [t.id for t in tasks]
    return Job(command=command, name=line.name, working_directory=str(root),
               parallel_job_info=parallel,
               native_specification=native_specification or None, **kw)


def native_spec(resources: dict, scheduler_type: str):
    """Resource hints (``mem_mb``, ``time_min``, ``gpus``) in a scheduler's own words.

    Returns a list of sbatch options for ``slurm``, one ``-l`` string for
    ``pbspro``, and None for the others (the local scheduler has no use for them).

    Examples
    --------
    >>> native_spec({"mem_mb": 2000, "time_min": 90}, "slurm")
    ['--mem=2000M', '--time=90']
    >>> native_spec({"mem_mb": 2000, "time_min": 90}, "pbspro")
    '-l mem=2000mb,walltime=01:30:00'
    >>> native_spec({"mem_mb": 2000}, "local_basic") is None
    True
    """
    mem, minutes, gpus = (resources.get(k) for k in ("mem_mb", "time_min", "gpus"))
    if scheduler_type == "slurm":
        spec = [f"--mem={int(mem)}M"] if mem else []
        spec += [f"--time={int(minutes)}"] if minutes else []
        spec += [f"--gres=gpu:{int(gpus)}"] if gpus else []
        return spec or None
    if scheduler_type == "pbspro":
        parts = [f"mem={int(mem)}mb"] if mem else []
        if minutes:
            h, m = divmod(int(minutes), 60)
            parts.append(f"walltime={h:02d}:{m:02d}:00")
        parts += [f"ngpus={int(gpus)}"] if gpus else []
        return "-l " + ",".join(parts) if parts else None
    return None


def _groups(lines, tasks, jobs) -> list:
    """GUI tree: ``outer split O`` > ``inner split I`` > jobs; jobs spanning splits by kind."""
    root: list = []
    groups: dict = {}

    def group(key, name, parent):
        if key not in groups:
            groups[key] = Group([], name=name)
            parent.append(groups[key])
        return groups[key].elements

    for line, job in zip(lines, jobs):
        args = [tasks[t].args for t in line.task_ids]
        outer = {a.get("o") for a in args}
        inner = {a.get("i") for a in args}
        if outer == {None}:
            root.append(job)
        elif len(outer) > 1:
            kinds = "+".join(dict.fromkeys(tasks[t].kind for t in line.task_ids))
            group(("kind", kinds), f"{kinds} jobs", root).append(job)
        else:
            (o,) = outer
            there = group(("outer", o), f"outer split {o}", root)
            if len(inner) == 1 and None not in inner:
                (i,) = inner
                there = group(("inner", o, i), f"inner split {i}", there)
            there.append(job)
    return root


def serialize(path: Path, soma_wf: SomaWorkflow) -> Path:
    """``Helper.serialize`` to ``path``, atomically (a half-written file is never seen)."""
    with atomic_path(path) as tmp:
        Helper.serialize(str(tmp), soma_wf)
    return path


# -- the user's own soma-workflow configuration -------------------------------
def user_config_path() -> Path | None:
    """The configuration file soma-workflow would read (same lookup order)."""
    env = os.environ.get("SOMA_WORKFLOW_CONFIG")
    candidates = [env] if env else []
    candidates += [os.path.join(os.path.expanduser("~"), ".soma-workflow.cfg"),
                   "/etc/soma-workflow.cfg"]
    for c in candidates:
        if c and os.path.isfile(c):
            return Path(c)
    return None


def resource_scheduler_type(resource: str) -> str:
    """The ``SCHEDULER_TYPE`` of a resource of the user's configuration.

    Raises ValidationError naming the configured resources if it is not there.
    Resources soma-workflow treats as this machine run its local scheduler.
    """
    path = user_config_path()
    parser = configparser.ConfigParser(interpolation=None)
    if path is not None:
        parser.read(path)
    if resource in ("localhost", socket.gethostname()) and not parser.has_section(resource):
        return "local_basic"
    if not parser.has_section(resource):
        where = str(path) if path else "no configuration file ($SOMA_WORKFLOW_CONFIG, " \
            "~/.soma-workflow.cfg or /etc/soma-workflow.cfg)"
        raise ValidationError(
            f"resource {resource!r} is not configured for soma-workflow in {where}; "
            f"configured resources: {parser.sections()}"
        )
    return parser.get(resource, "SCHEDULER_TYPE", fallback="local_basic").strip()
