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
import warnings

import distributed
from distributed.deploy import Cluster

from ...errors import BackendError, ValidationError
from ...lock import run_lock
from ..base import Backend, RunReport, resume_in_background
from .execution import announce, run_rounds, task_resources
from .worker import TaskFailed, run_on_worker

__all__ = ["DaskBackend", "TaskFailed", "run_on_worker"]

#: ``cluster=NAME`` -> dask_jobqueue class
JOBQUEUE_CLUSTERS = {
    "slurm": "SLURMCluster", "pbs": "PBSCluster", "sge": "SGECluster",
    "lsf": "LSFCluster", "htcondor": "HTCondorCluster", "moab": "MoabCluster",
    "oar": "OARCluster",
}
#: ``resources=True``: task hint -> Dask worker resource
DEFAULT_RESOURCES = {"cpus": "CPU", "mem_mb": "MEMORY_MB", "gpus": "GPU"}


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
            needs = {t.id: task_resources(t, self.resource_map)
                     for t in workflow.tasks.values()}
            with self._client() as client:
                announce(client)
                self._check_workers(client, {t.id: needs[t.id] for t in todo})
                report = run_rounds(client, workflow, todo, needs, self.opts["progress"])
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
                "worker_timeout", "notify")
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
