"""The Dask backend: the workflow's DAG as Dask futures on a distributed cluster.

Each pending task becomes one future that calls :func:`mempamal.runner.run_task`
inside a worker process (no shell, no fresh interpreter per task), and takes
the futures of its pending dependencies as arguments: Dask's scheduler then
runs the DAG itself, with no barrier between outer folds.

A task that fails raises :class:`TaskFailed` in the worker. Dask marks every
future depending on it as erred with that same exception without running it,
so dependents never run while independent branches go on. A worker that dies
mid-task (killed, out of memory) is replaced by its nanny and Dask reruns the
task elsewhere; outputs are written atomically, so the rerun is the only one
whose files count.

Where the cluster comes from (at most one of ``address``, ``client`` and
``cluster``):

- nothing: a ``LocalCluster`` of ``n_jobs`` single-threaded worker processes,
  started for the run and closed after it;
- ``address``: the scheduler of a running cluster (``tcp://host:8786``);
- ``client``: an existing ``distributed.Client`` (Python API only);
- ``cluster``: a cluster object (``dask_jobqueue.SLURMCluster(...)``,
  ``LocalCluster(...)``), or the name of one to start for the run and close
  after it: ``"local"`` or a dask-jobqueue scheduler (``"slurm"``, ``"pbs"``...),
  built with ``cluster_options``.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import uuid
import warnings

import distributed
from distributed.deploy import Cluster

from ..errors import BackendError, ValidationError
from ..lock import run_lock
from ..runner import run_task
from ..workdir import Workdir
from .base import Backend, RunReport, resume_in_background
from .progress import RunProgress

#: ``cluster=NAME`` -> dask_jobqueue class
JOBQUEUE_CLUSTERS = {
    "slurm": "SLURMCluster", "pbs": "PBSCluster", "sge": "SGECluster",
    "lsf": "LSFCluster", "htcondor": "HTCondorCluster", "moab": "MoabCluster",
    "oar": "OARCluster",
}
#: ``resources=True``: task hint -> Dask worker resource
DEFAULT_RESOURCES = {"cpus": "CPU", "mem_mb": "MEMORY_MB", "gpus": "GPU"}
#: at most this many characters of a failed task's traceback go in the report
MAX_TRACEBACK = 4000
#: rounds of a run: the first, then reruns of what a corrupt input invalidated
MAX_ROUNDS = 3


class TaskFailed(Exception):
    """Raised in the worker when a task fails; Dask hands it to every dependent.

    Parameters
    ----------
    task_id : str
        The task that failed.
    error : str
        ``"ExceptionType: message"``.
    error_type : str
        The exception's type name.
    traceback : str
        The traceback the task printed in its log ("" when there is none).
    """

    def __init__(self, task_id: str, error: str, error_type: str, traceback: str) -> None:
        # the arguments go to Exception so that the exception pickles back as is
        super().__init__(task_id, error, error_type, traceback)
        self.task_id, self.error, self.error_type, self.traceback = (
            task_id, error, error_type, traceback)

    def __str__(self) -> str:
        return f"task {self.task_id} failed: {self.error}"

    def reason(self) -> str:
        """The error, then the traceback, for :class:`RunReport`."""
        if not self.traceback:
            return self.error
        return f"{self.error}\n" + _indent(self.traceback)


# run_task redirects sys.stdout/err and limits BLAS threads for the whole
# process: two tasks in two threads of one worker would mix their logs, so a
# worker process runs one mempamal task at a time whatever its thread count
_ONE_TASK_AT_A_TIME = threading.Lock()


def run_on_worker(root: str, task_id: str, *upstream):
    """Run one task in a Dask worker; raise :class:`TaskFailed` if it fails.

    Parameters
    ----------
    root : str
        The workdir.
    task_id : str
        The task to run.
    *upstream : TaskOutcome
        Outcomes of the dependencies run in this same run. They are not used:
        passing their futures is what makes Dask wait for them.

    Returns
    -------
    TaskOutcome
    """
    with _ONE_TASK_AT_A_TIME:
        outcome = run_task(root, task_id)
    if not outcome.ok:
        raise TaskFailed(task_id, outcome.error or "failed", outcome.error_type or "",
                         _log_traceback(Workdir(root), task_id))
    return outcome


def _log_traceback(wd: Workdir, task_id: str) -> str:
    """The traceback of the task's last attempt, from its log."""
    try:
        with open(wd.log_file(task_id), encoding="utf-8", errors="replace") as fh:
            text = fh.read()
    except OSError:
        return ""
    last = text.rpartition("=== mempamal task ")[2]
    start = last.find("Traceback (most recent call last)")
    if start < 0:
        return ""
    tb = last[start:].split("\n=== FAILED", 1)[0].rstrip()
    return tb if len(tb) <= MAX_TRACEBACK else "...\n" + tb[-MAX_TRACEBACK:]


def _indent(text: str) -> str:
    return "\n".join("    " + line for line in text.splitlines())


class DaskBackend(Backend):
    """Run the workflow on a Dask distributed cluster.

    Options
    -------
    n_jobs : int or None
        Workers of the cluster mempamal starts (default: the number of CPUs
        for ``LocalCluster``, 1 for a dask-jobqueue cluster; -1: the number of
        CPUs), or the number of workers to scale a given ``cluster`` object to.
        Not allowed with ``address`` or ``client``: their workers are theirs.
    address : str or None
        Address of a running scheduler (``tcp://host:8786``).
    client : distributed.Client or None
        An existing client (Python API only); left open.
    cluster : str, cluster object or None
        A cluster object, used and left running (``n_jobs`` scales it if
        given); or ``"local"`` / a dask-jobqueue name (``"slurm"``, ``"pbs"``,
        ``"sge"``, ``"lsf"``, ``"htcondor"``, ``"moab"``, ``"oar"``): started
        with ``cluster_options`` for the run and closed after it.
    cluster_options : dict or None
        Keyword arguments of the cluster mempamal starts (``LocalCluster`` or
        the dask-jobqueue class), e.g. ``{"cores": 1, "memory": "2GB"}``.
    resources : bool, dict or None
        Turn the tasks' resource hints into Dask worker resources the tasks
        require. True maps ``cpus`` -> ``CPU``, ``mem_mb`` -> ``MEMORY_MB``,
        ``gpus`` -> ``GPU``; a dict gives the mapping ``{hint: resource}``.
        Workers must advertise them (``dask worker --resources "CPU=4"``).
        Default: no constraint.
    progress : bool or None
        Show a progress bar (None: when standard error is a terminal).
    worker_timeout : float or None
        Seconds to wait for a first worker before giving up (None: no limit;
        batch jobs may queue for long).
    """

    name = "dask"
    options = {"n_jobs": None, "address": None, "client": None, "cluster": None,
               "cluster_options": None, "resources": None, "progress": None,
               "worker_timeout": None}

    # -- options ---------------------------------------------------------------
    def validate(self) -> None:
        o = self.opts
        given = [k for k in ("address", "client", "cluster") if o[k] is not None]
        if len(given) > 1:
            raise ValidationError(f"options {given} exclude each other: give at most one "
                                  "of address, client, cluster")
        if o["address"] is not None and (not isinstance(o["address"], str)
                                         or not o["address"].strip()):
            raise ValidationError("address must be a scheduler address such as "
                                  f"'tcp://host:8786', got {o['address']!r}")
        if o["client"] is not None and not isinstance(o["client"], distributed.Client):
            raise ValidationError("client must be a distributed.Client, got "
                                  f"{type(o['client']).__name__} {o['client']!r}")
        self._validate_cluster()
        self._validate_n_jobs()
        self.resource_map = _resource_map(o["resources"])
        if o["progress"] is not None and not isinstance(o["progress"], bool):
            raise ValidationError(f"progress must be true, false or None, got {o['progress']!r}")
        t = o["worker_timeout"]
        if t is not None and (isinstance(t, bool) or not isinstance(t, int | float) or t <= 0):
            raise ValidationError(f"worker_timeout must be a positive number of seconds, got {t!r}")

    def _validate_cluster(self) -> None:
        cluster, copts = self.opts["cluster"], self.opts["cluster_options"]
        if isinstance(cluster, str):
            if cluster != "local" and cluster not in JOBQUEUE_CLUSTERS:
                raise ValidationError(
                    f"cluster {cluster!r} is not a cluster name; expected 'local' or one of "
                    f"{sorted(JOBQUEUE_CLUSTERS)} (dask-jobqueue), or a cluster object")
        elif cluster is not None and not isinstance(cluster, Cluster):
            raise ValidationError(
                "cluster must be a cluster name or a distributed cluster object "
                f"(LocalCluster, dask_jobqueue.SLURMCluster...), got {cluster!r}")
        if copts is None:
            return
        if not isinstance(copts, dict) or not all(isinstance(k, str) for k in copts):
            raise ValidationError(f"cluster_options must be a dict of keyword arguments, "
                                  f"got {copts!r}")
        if not self._starts_cluster:
            raise ValidationError("cluster_options configure the cluster mempamal starts; "
                                  "they cannot apply with address, client or a cluster object")

    def _validate_n_jobs(self) -> None:
        n = self.opts["n_jobs"]
        if n is None:
            return
        if isinstance(n, bool) or not isinstance(n, int) or (n < 1 and n != -1):
            raise ValidationError(f"n_jobs must be a positive int or -1, got {n!r}")
        if self.opts["address"] is not None or self.opts["client"] is not None:
            raise ValidationError(
                f"n_jobs={n!r} sizes a cluster mempamal starts or scales; with address or "
                "client the workers are the running cluster's (leave n_jobs unset)")
        if n == -1:
            self.opts["n_jobs"] = os.cpu_count() or 1

    @property
    def _starts_cluster(self) -> bool:
        o = self.opts
        return o["address"] is None and o["client"] is None and not isinstance(
            o["cluster"], Cluster)

    def _describe(self) -> str:
        o = self.opts
        if o["address"]:
            return f"scheduler {o['address']}"
        if o["client"] is not None:
            return f"client of {o['client'].scheduler.address}"
        if isinstance(o["cluster"], Cluster):
            return f"{type(o['cluster']).__name__} at {o['cluster'].scheduler_address}"
        return f"new {o['cluster'] or 'local'} cluster"

    # -- running ---------------------------------------------------------------
    def run(self, workflow) -> RunReport:
        """Run every pending task on the cluster; wait; raise on failures."""
        wd = workflow.workdir
        with run_lock(wd, f"dask run ({self._describe()})"):
            wd.remove_temporaries()
            todo = workflow.pending()
            if not todo:
                return RunReport()
            needs = {t.id: _task_resources(t, self.resource_map)
                     for t in workflow.tasks.values()}
            with self._client() as client:
                _announce(client)
                self._check_workers(client, {t.id: needs[t.id] for t in todo})
                report = _run_rounds(client, workflow, todo, needs, self.opts["progress"])
        return report.raise_for_failures()

    def submit(self, workflow):
        """Run in a detached background process; return its ``Popen``.

        Only options a new process can use are allowed (not ``client`` or a
        cluster object). Its output goes to ``WORKDIR/dask/run.log``.
        """
        o = self.opts
        if o["client"] is not None or isinstance(o["cluster"], Cluster):
            raise ValidationError("submit runs in a new process, which cannot use a client "
                                  "or cluster object; give address or a cluster name, or "
                                  "use run()")
        keys = ("n_jobs", "address", "cluster", "cluster_options", "resources",
                "worker_timeout")
        return resume_in_background(workflow, self.name, {k: o[k] for k in keys})

    @contextlib.contextmanager
    def _client(self):
        """A connected client; what mempamal started is closed on the way out."""
        o = self.opts
        if o["client"] is not None:
            yield o["client"]
            return
        with contextlib.ExitStack() as stack:
            if o["address"] is not None:
                target = o["address"]
            elif isinstance(o["cluster"], Cluster):
                target = o["cluster"]
                if o["n_jobs"] is not None:
                    target.scale(o["n_jobs"])
            else:
                target = stack.enter_context(self._new_cluster())
            try:
                client = distributed.Client(target, set_as_default=False)
            except (OSError, TimeoutError) as exc:
                raise BackendError(f"cannot connect to the Dask scheduler at {target!r}: "
                                   f"{exc}") from exc
            stack.enter_context(client)
            yield client

    def _new_cluster(self):
        o = self.opts
        kind = o["cluster"] or "local"
        copts = dict(o["cluster_options"] or {})
        if kind == "local":
            # one single-threaded process per job: tasks set their own BLAS
            # threads and redirect the process's stdout to their log
            kwargs = {"n_workers": o["n_jobs"] or os.cpu_count() or 1,
                      "threads_per_worker": 1, "processes": True, **copts}
            factory, name = distributed.LocalCluster, "LocalCluster"
        else:
            try:
                import dask_jobqueue
            except ImportError as exc:
                raise BackendError(f"cluster={kind!r} needs dask-jobqueue ({exc}); install "
                                   "it with `pip install dask-jobqueue`") from exc
            name = JOBQUEUE_CLUSTERS[kind]
            factory, kwargs = getattr(dask_jobqueue, name), copts
        try:
            cluster = factory(**kwargs)
        except (TypeError, ValueError, OSError) as exc:
            raise BackendError(f"cannot start {name}(**{kwargs!r}): {exc}") from exc
        if kind != "local":
            cluster.scale(o["n_jobs"] or 1)
        return cluster

    def _check_workers(self, client, needs: dict) -> None:
        """Fail early when no worker comes, or none has the resources a task needs."""
        timeout = self.opts["worker_timeout"]
        if timeout is not None:
            try:
                client.wait_for_workers(1, timeout=timeout)
            except TimeoutError:
                raise BackendError(f"no Dask worker connected to {client.scheduler.address} "
                                   f"within worker_timeout={timeout}s") from None
        workers = list(client.scheduler_info(n_workers=-1)["workers"].values())
        many = sorted({w["name"] for w in workers if w["nthreads"] > 1}, key=str)
        if many:
            warnings.warn(f"Dask workers {many} have several threads; each runs one mempamal "
                          "task at a time (tasks redirect the process's output and limit its "
                          "BLAS threads): give workers one thread each (processes=cores)",
                          stacklevel=3)
        if not workers:  # batch jobs still queued: they may bring the resources
            return
        advertised = [w.get("resources") or {} for w in workers]
        for tid, need in needs.items():
            if need and not any(all(res.get(k, 0) >= v for k, v in need.items())
                                for res in advertised):
                raise BackendError(
                    f"task {tid} needs the Dask worker resources {need}, but no connected "
                    f"worker has them (workers advertise {advertised}); start workers with "
                    "them (`dask worker --resources \"CPU=1\"`, cluster_options="
                    "{'resources': {...}} for a LocalCluster) or leave the resources "
                    "option unset")


def _resource_map(value) -> dict:
    """The ``resources`` option as ``{task hint: Dask resource name}``."""
    if value is None or value is False:
        return {}
    if value is True:
        return dict(DEFAULT_RESOURCES)
    if isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, str) and v
                                       for k, v in value.items()):
        return dict(value)
    raise ValidationError("resources must be true, false, None or a dict {task hint: Dask "
                          f"resource name}} such as {DEFAULT_RESOURCES}, got {value!r}")


def _task_resources(task, mapping: dict) -> dict:
    """The Dask resources a task requires under ``mapping``."""
    need = {}
    for hint, name in mapping.items():
        value = task.resources.get(hint)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValidationError(f"task {task.id}: resource hint {hint}={value!r} cannot be "
                                  f"a Dask resource {name!r} (expected a number)")
        if value > 0:
            need[name] = value
    return need


def _announce(client) -> None:
    """Tell where to watch the run."""
    services = client.scheduler_info(n_workers=0).get("services", {})
    if "dashboard" in services:
        print(f"mempamal: Dask dashboard at {client.dashboard_link}", file=sys.stderr)


def _run_rounds(client, workflow, todo, needs: dict, progress) -> RunReport:
    """Run ``todo``; then rerun what corrupt inputs invalidated, a few times at most.

    A task that finds a dependency's output corrupt deletes it and fails
    (``CorruptOutputError``): the next round recomputes that dependency, the
    task and its dependents, as the local executor does.
    """
    report = RunReport()
    with RunProgress(len(todo), progress) as bar:
        for n in range(MAX_ROUNDS):
            one = _DaskRun(client, workflow, todo, needs, bar)
            one.execute()
            report.executed += one.report.executed
            report.failures.update(one.report.failures)
            report.not_run += one.report.not_run
            if not one.corrupt or n == MAX_ROUNDS - 1:
                break
            todo = _recompute_plan(workflow, one.corrupt)
            redo = {t.id for t in todo}
            report.failures = {k: v for k, v in report.failures.items() if k not in redo}
            report.not_run = [t for t in report.not_run if t not in redo]
            bar.add_total(len(todo))
    return report


def _recompute_plan(workflow, corrupt) -> list:
    """Pending tasks to rerun after ``corrupt`` tasks deleted some inputs, in order.

    The deleted outputs' tasks, then everything downstream that is pending,
    except what also waits on a task that is not rerun (a real failure).
    """
    pending = {t.id for t in workflow.pending()}
    seeds = set(corrupt) | {d for c in corrupt for d in workflow.tasks[c].deps if d in pending}
    wanted = workflow.downstream(seeds) & pending
    plan, chosen = [], set()
    for task in workflow.tasks.values():  # topological order
        if task.id in wanted and all(d in chosen or d not in pending for d in task.deps):
            plan.append(task)
            chosen.add(task.id)
    return plan


class _DaskRun:
    """Submit all pending tasks as futures at once; collect them as they finish."""

    def __init__(self, client, workflow, todo, needs: dict, bar) -> None:
        self.client = client
        self.wf = workflow
        self.todo = todo
        self.needs = needs
        self.bar = bar
        self.report = RunReport()
        self.unexplained: dict[str, BaseException] = {}
        self.corrupt: list[str] = []  # tasks that found (and deleted) a corrupt input

    def execute(self) -> RunReport:
        futures = self._submit()
        tids = {f.key: tid for tid, f in futures.items()}
        try:
            for fut in distributed.as_completed(list(futures.values()), loop=self.client.loop):
                ok = self._record(tids[fut.key], fut)
                if ok is not None:
                    self.bar.advance(ok)
        except BaseException:
            # Ctrl-C: drop what has not started; a cluster mempamal
            # started is closed next, which stops the rest
            self.client.cancel(list(futures.values()))
            raise
        self._explain(futures)
        return self.report

    def _submit(self) -> dict:
        """One future per pending task (topological order), keyed by task id + run nonce.

        The nonce and ``pure=False`` make every run compute afresh, never
        reusing a result Dask remembers from an earlier run.
        """
        nonce = uuid.uuid4().hex[:8]
        root = str(self.wf.workdir.root)
        futures = {}
        for task in self.todo:
            deps = [futures[d] for d in task.deps if d in futures]  # done deps: no future
            futures[task.id] = self.client.submit(
                run_on_worker, root, task.id, *deps, key=f"{task.id}-{nonce}", pure=False,
                resources=self.needs.get(task.id) or None)
        return futures

    def _record(self, tid: str, fut) -> bool | None:
        """Record a finished future; return ok/failed, or None if it did not run."""
        if fut.status == "finished":  # the outcome stays on the worker: no round trip
            self.report.executed.append(tid)
            return True
        exc = fut.exception() if fut.status == "error" else None
        if isinstance(exc, TaskFailed):
            if exc.task_id != tid:
                self.report.not_run.append(tid)
                return None
            reason = exc.reason()
            if exc.error_type == "CorruptOutputError":
                self.corrupt.append(tid)
        elif isinstance(exc, distributed.KilledWorker):
            if exc.task != fut.key:
                self.report.not_run.append(tid)
                return None
            reason = ("the worker process running it died (killed, out of memory or "
                      f"crashed) {exc.allowed_failures + 1} time(s); Dask gave up on it")
        else:
            # cancelled, or an error outside the task (e.g. unpicklable
            # arguments): whether it is this task's fault is decided at the end
            self.unexplained[tid] = exc
            return None
        self.report.executed.append(tid)
        self.report.failures[tid] = reason
        return False

    def _explain(self, futures: dict) -> None:
        """Blame the first task of each failed chain; the rest did not run."""
        bad = set(self.report.failures) | set(self.report.not_run)
        for task in self.todo:  # topological: a dep is decided before its dependents
            if task.id not in self.unexplained:
                continue
            exc = self.unexplained[task.id]
            if any(d in bad for d in task.deps):
                self.report.not_run.append(task.id)
            else:
                fut = futures[task.id]
                tb = fut.traceback() if exc is not None else None
                why = ("cancelled (the Dask scheduler or client went away?)" if exc is None
                       else f"{type(exc).__name__}: {exc}")
                if tb is not None:
                    import traceback

                    why += "\n" + _indent("".join(traceback.format_tb(tb)))
                self.report.failures[task.id] = why
            bad.add(task.id)
