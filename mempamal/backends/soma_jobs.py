"""Translate mempamal tasks into a Soma-Workflow ``Workflow`` and its JSON file.

One soma ``Job`` per task: its command is the task's argv, run from the
workdir (soma's ``working_directory``), its name is the task id, its resource
hints become a native specification for the schedulers that take one. Groups
(one per outer split, one per inner split inside it) only shape the tree the
soma-workflow GUI shows; execution order comes from the dependencies alone.
"""

from __future__ import annotations

import configparser
import os
import socket
from pathlib import Path

from soma_workflow.client import Group, Helper, Job
from soma_workflow.client import Workflow as SomaWorkflow

from ..errors import ValidationError
from ..workdir import atomic_path

#: schedulers whose jobs are scripts we can give resource directives to
NATIVE_SPEC_SCHEDULERS = ("slurm", "pbspro")


def build_workflow(tasks, root: Path, *, python=None, name: str, out_dir: Path | None = None,
                   scheduler_type: str = "local_basic", native_specification=None,
                   max_cpus: int | None = None) -> SomaWorkflow:
    """A soma ``Workflow`` running ``tasks`` from the workdir ``root``.

    Parameters
    ----------
    tasks : list of Task
        In topological order; dependencies on tasks not in the list are
        considered satisfied (their outputs exist).
    root : Path
        The workdir (absolute): every job runs there.
    python : str, optional
        Interpreter replacing the one recorded at compile time.
    name : str
        The workflow's name in soma-workflow.
    out_dir : Path, optional
        Where each job's stdout/stderr go (``TASK.out``/``TASK.err``);
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
    jobs = {}
    for t in tasks:
        jobs[t.id] = _job(t, root, python, out_dir, scheduler_type, native_specification,
                          max_cpus)
    deps = [(jobs[d], jobs[t.id]) for t in tasks for d in t.deps if d in jobs]
    return SomaWorkflow(list(jobs.values()), dependencies=deps,
                        root_group=_groups(tasks, jobs), name=name)


def _job(task, root, python, out_dir, scheduler_type, native_specification, max_cpus) -> Job:
    cpus = int(task.resources.get("cpus", 1) or 1)
    if max_cpus is not None:
        cpus = min(cpus, max_cpus)
    # a "native" parallel job on one node: soma's local scheduler counts its
    # CPUs, its SLURM scheduler turns it into -N 1 -c CPUS
    parallel = ({"config_name": "native", "nodes_number": 1, "cpu_per_node": cpus}
                if cpus > 1 else None)
    if native_specification is None:
        native_specification = native_spec(task.resources, scheduler_type)
    kw = {}
    if out_dir is not None:
        kw = {"stdout_file": str(out_dir / f"{task.id}.out"),
              "stderr_file": str(out_dir / f"{task.id}.err")}
    return Job(command=task.command(python, workdir="."), name=task.id,
               working_directory=str(root), parallel_job_info=parallel,
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


def _groups(tasks, jobs) -> list:
    """GUI tree: ``outer split O`` > ``inner split I`` > fit jobs, then select."""
    root: list = []
    outer: dict = {}
    inner: dict = {}
    for t in tasks:
        o, i = t.args.get("o"), t.args.get("i")
        if o is None:
            root.append(jobs[t.id])
            continue
        if o not in outer:
            outer[o] = Group([], name=f"outer split {o}")
            root.append(outer[o])
        if i is None:
            outer[o].elements.append(jobs[t.id])
            continue
        if (o, i) not in inner:
            inner[o, i] = Group([], name=f"inner split {i}")
            outer[o].elements.append(inner[o, i])
        inner[o, i].elements.append(jobs[t.id])
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
