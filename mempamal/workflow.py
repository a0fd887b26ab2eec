"""Task and Workflow: a DAG of file-producing shell commands.

A :class:`Task` is done exactly when all its outputs exist; outputs are
written atomically, so a killed task never leaves a file that looks done.
A :class:`Workflow` holds the tasks of one working directory and is saved as
``workflow.json``, the backend-neutral single source of truth.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import json
import os
import sys
from dataclasses import dataclass, field
from functools import cached_property

from .errors import ValidationError, WorkdirError
from .workdir import Workdir, atomic_path, read_json, write_json

FORMAT_VERSION = 1


@dataclass(slots=True)
class Task:
    """One shell command that produces files.

    Attributes
    ----------
    id : str
        Stable, readable identifier (``fit-o3-i1-c0``, ``select-o3``...).
    kind : str
        What the task does: ``fit``, ``select`` or ``aggregate``.
    outputs : list of str
        Files it produces, relative to the workdir.
    deps : list of str
        Ids of the tasks whose outputs it reads.
    soft_deps : list of str
        Those of ``deps`` that need only have ended, done or not: the task
        runs after them and takes a missing output as a failure to report (a
        model-based search's ``suggest`` after its round's trials, one of
        which may have been killed). SLURM's ``afterany``.
    resources : dict
        Hints backends translate: ``cpus``, ``mem_mb``, ``time_min``, ``gpus``.
    args : dict
        Kind-specific arguments (outer split, inner split, candidates...).
    prefix : tuple of str
        The command without the task id (``python -m mempamal run-task .``);
        one tuple shared by all tasks, which keeps 100,000 tasks small.
    """

    id: str
    kind: str
    outputs: list
    deps: list = field(default_factory=list)
    resources: dict = field(default_factory=dict)
    args: dict = field(default_factory=dict)
    prefix: tuple = ()
    soft_deps: list = field(default_factory=list)

    @property
    def hard_deps(self) -> list[str]:
        """The dependencies that must be done (their outputs present) first."""
        if not self.soft_deps:
            return self.deps
        soft = set(self.soft_deps)
        return [d for d in self.deps if d not in soft]

    @property
    def argv(self) -> list[str]:
        """The command, run with the workdir as current directory."""
        return [*self.prefix, self.id]

    def command(self, python: str | None = None, workdir: str = ".") -> list[str]:
        """The argv that runs this task.

        Parameters
        ----------
        python : str, optional
            Interpreter to use instead of the one recorded at compile time.
        workdir : str, default="."
            How the command names the workdir (``"."`` when run from it).
        """
        argv = self.argv
        if python is not None:
            argv[0] = python
        argv[argv.index(".")] = workdir
        return argv

    def to_dict(self) -> dict:
        d = {
            "id": self.id, "kind": self.kind, "argv": self.argv,
            "outputs": self.outputs, "deps": self.deps,
            "resources": self.resources, "args": self.args,
        }
        if self.soft_deps:
            d["soft_deps"] = self.soft_deps
        return d


def command_prefix(python: str | None = None) -> tuple[str, ...]:
    """``python -m mempamal run-task .``: a task's command without its id."""
    return (python or sys.executable, "-m", "mempamal", "run-task", ".")


def _task_from_dict(d: dict, shared: dict) -> Task:
    """A Task from its JSON form, sharing identical prefixes and resources."""
    argv = d["argv"]
    if not argv or argv[-1] != d["id"]:
        raise WorkdirError(f"task {d['id']!r} in workflow.json has an unexpected argv {argv!r}")
    prefix = tuple(argv[:-1])
    res = d.get("resources") or {}
    res_key = tuple(sorted(res.items()))
    return Task(d["id"], d["kind"], d["outputs"], d.get("deps") or [],
                shared.setdefault(res_key, res), d.get("args") or {},
                shared.setdefault(prefix, prefix), d.get("soft_deps") or [])


class Workflow:
    """The tasks of one working directory, as a DAG.

    Parameters
    ----------
    workdir : str, path-like or Workdir
        Where the workflow lives.
    tasks : list of Task
        In a topological order (every task after its deps).
    meta : dict
        Fingerprint, versions, recipe description.
    """

    def __init__(self, workdir, tasks, meta=None) -> None:
        self.workdir = workdir if isinstance(workdir, Workdir) else Workdir(workdir)
        self.tasks: dict[str, Task] = {t.id: t for t in tasks}
        self.meta = dict(meta or {})

    def __repr__(self) -> str:
        return f"<Workflow {len(self.tasks)} tasks in {str(self.workdir.root)!r}>"

    def __len__(self) -> int:
        return len(self.tasks)

    # -- persistence ---------------------------------------------------------
    def save(self) -> None:
        """Write ``workflow.json`` atomically, one task per line.

        Streamed task by task: building the whole document first would double
        the memory a 100,000-task workflow needs.
        """
        head = json.dumps({"format": FORMAT_VERSION, **self.meta}, indent=1)
        with atomic_path(self.workdir.workflow_file) as tmp, \
                open(tmp, "w", encoding="utf-8") as fh:
            fh.write(head[:-2] + ',\n "tasks": [\n')
            last = len(self.tasks) - 1
            for k, task in enumerate(self.tasks.values()):
                fh.write(json.dumps(task.to_dict(), separators=(",", ":")))
                fh.write("\n" if k == last else ",\n")
            fh.write("]}\n")
            fh.flush()
            os.fsync(fh.fileno())

    @classmethod
    def load(cls, workdir) -> Workflow:
        """Read ``WORKDIR/workflow.json``."""
        wd = workdir if isinstance(workdir, Workdir) else Workdir(workdir)
        with gc_paused():
            return cls._load(wd)

    @classmethod
    def _load(cls, wd: Workdir) -> Workflow:
        try:
            doc = read_json(wd.workflow_file)
        except FileNotFoundError:
            raise WorkdirError(
                f"{str(wd.root)!r} is not a mempamal workdir: no {wd.workflow_file.name}"
                " (compile an experiment into it first)"
            ) from None
        if doc.get("format") != FORMAT_VERSION:
            raise WorkdirError(
                f"{str(wd.workflow_file)!r} has format {doc.get('format')!r}; "
                f"this mempamal reads format {FORMAT_VERSION}"
            )
        shared: dict = {}
        tasks = [_task_from_dict(t, shared) for t in doc.pop("tasks")]
        doc.pop("format")
        return cls(wd, tasks, doc)

    # -- graph ---------------------------------------------------------------
    @cached_property
    def graph(self):
        """The DAG as a networkx DiGraph (edge dep -> task)."""
        import networkx as nx

        g = nx.DiGraph()
        g.add_nodes_from(self.tasks)
        g.add_edges_from((d, t.id) for t in self.tasks.values() for d in t.deps)
        return g

    def check(self) -> None:
        """Raise if a dependency is unknown or the graph has a cycle."""
        for t in self.tasks.values():
            for d in t.deps:
                if d not in self.tasks:
                    raise ValidationError(f"task {t.id!r} depends on unknown task {d!r}")
            if not set(t.soft_deps) <= set(t.deps):
                raise ValidationError(f"task {t.id!r}: soft_deps {t.soft_deps!r} are not "
                                      f"all in its deps {t.deps!r}")
        import networkx as nx

        if not nx.is_directed_acyclic_graph(self.graph):
            raise ValidationError("the workflow has a dependency cycle")

    def downstream(self, ids) -> set[str]:
        """``ids`` and every task that depends on them, transitively."""
        import networkx as nx

        out = set(ids)
        for tid in ids:
            out.update(nx.descendants(self.graph, tid))
        return out

    def blocked_by(self, failed) -> set[str]:
        """``failed`` and every task that cannot run without them, transitively.

        Only hard dependencies block: a task that needs ``failed`` only to
        have ended (``soft_deps``) still runs, as does what follows it.
        """
        users: dict[str, list[str]] = {}
        for t in self.tasks.values():
            for d in t.hard_deps:
                users.setdefault(d, []).append(t.id)
        out, stack = set(failed), list(failed)
        while stack:
            for u in users.get(stack.pop(), ()):
                if u not in out:
                    out.add(u)
                    stack.append(u)
        return out

    # -- state ---------------------------------------------------------------
    def done(self) -> set[str]:
        """Ids of the tasks whose outputs all exist.

        Each output directory is listed once; which directories those are is
        worked out once per workflow, so that ``watch``, which asks every
        second, pays only the listings (0.1 s for 100,000 tasks).
        """
        present = self.workdir.listing(self._output_dirs)
        done = set()
        for tid, t in self.tasks.items():
            outs = t.outputs
            if len(outs) == 1:  # most tasks: no generator per task
                if outs[0] in present:
                    done.add(tid)
            elif all(o in present for o in outs):
                done.add(tid)
        return done

    @cached_property
    def _output_dirs(self) -> list[str]:
        """The directories (relative) that hold the tasks' outputs."""
        return sorted({o.rpartition("/")[0] for t in self.tasks.values() for o in t.outputs})

    def pending(self) -> list[Task]:
        """Tasks not done, in topological order."""
        done = self.done()
        return [t for t in self.tasks.values() if t.id not in done]

    def ready(self) -> list[Task]:
        """Pending tasks whose dependencies are all done."""
        done = self.done()
        return [t for t in self.tasks.values()
                if t.id not in done and all(d in done for d in t.deps)]

    @property
    def recipe(self) -> str:
        """The recipe that compiled this workflow (``nested_cv``, ``sweep``)."""
        return self.meta.get("recipe", "nested_cv")

    def estimated_seconds(self) -> dict[str, float] | None:
        """Rough seconds of work per task, from what the compile timed (or None)."""
        from .recipes import get_recipe

        estimate = get_recipe(self.recipe).estimated_seconds
        seconds = {tid: estimate(t, self.meta) for tid, t in self.tasks.items()}
        return None if any(s is None for s in seconds.values()) else seconds

    def file_digest(self, name: str) -> str | None:
        """The sha256 recorded at compile time for a workdir file."""
        return self.meta.get("digests", {}).get(name)

    # -- backends ------------------------------------------------------------
    def run(self, backend: str = "local", **options):
        """Run the pending tasks on ``backend`` and wait for them.

        Returns the backend's report; raises
        :class:`~mempamal.errors.TaskFailedError` if a task failed. The run
        is recorded in ``run.json``; with ``notify=[URL, ...]`` a message is
        sent at the first failure and when the run ends (:mod:`mempamal.notify`).
        """
        from .notify import notifying

        instance = self._backend(backend, options, record=True)
        with notifying(self, instance):
            return instance.run(self)

    def _backend(self, name, options, record=False):
        from .backends import get_backend

        instance = get_backend(name, **options)  # validates before anything is written
        if record:
            write_json(self.workdir.last_backend_file, {"backend": instance.name})
        return instance

    def last_backend(self) -> str:
        """The backend this workflow last ran on or was submitted to (default local)."""
        try:
            return read_json(self.workdir.last_backend_file)["backend"]
        except (FileNotFoundError, ValueError, KeyError):
            return "local"

    def write(self, backend: str, **options) -> list:
        """Write ``backend``'s artefacts (scripts...) and return their paths."""
        return self._backend(backend, options).write(self)

    def submit(self, backend: str, **options):
        """Submit the pending tasks to ``backend`` and return at once."""
        return self._backend(backend, options, record=True).submit(self)

    def status(self, backend: str | None = None, **options) -> dict[str, str]:
        """``{task_id: state}``; the outputs are the truth for ``done``.

        Without ``backend``, the one last run or submitted to is asked.
        """
        return self._backend(backend or self.last_backend(), options).status(self)


@contextlib.contextmanager
def gc_paused():
    """Pause the cyclic garbage collector while building many small objects.

    Creating 100,000 tasks otherwise triggers dozens of full collections that
    find nothing to free (they hold no cycles): a third of the load time.
    Objects that exist when the block ends are frozen (``gc.freeze``): never
    scanned again, so garbage cycles created before it are not freed; the
    price of a workflow load that stays fast.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        # what was built lives as long as the workflow: keep it out of later
        # full collections too (each would walk all 100,000 tasks again)
        gc.freeze()
        if was_enabled:
            gc.enable()


def sha256_file(path) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
