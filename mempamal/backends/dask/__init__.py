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

- nothing: a scheduler and ``n_jobs`` single-threaded workers in new
  processes on this machine, listening on 127.0.0.1 only, started for the
  run (:mod:`.local_cluster`; not ``LocalCluster``, whose workers re-run a
  user's script that has no ``__main__`` guard) and kept for the next run
  of the process while it idles, as the local executor's workers are
  (:mod:`.kept`);
- ``address``: the scheduler of a running cluster (``tcp://host:8786``);
- ``client``: an existing ``distributed.Client`` (Python API only);
- ``cluster``: a cluster object (``dask_jobqueue.SLURMCluster(...)``,
  ``LocalCluster(...)``), or the name of one to start for the run and close
  after it: ``"local"`` (the default above) or a dask-jobqueue scheduler
  (``"slurm"``, ``"pbs"``...), built with ``cluster_options``.

A cluster the user brings (``address``, ``client``, a cluster object) is
used as it is: mempamal changes none of its settings. What mempamal starts
keeps its dashboard on 127.0.0.1:8787 (a free port when 8787 is taken), or
where the ``dashboard`` option says; a dask-jobqueue scheduler itself must
listen where the batch jobs' workers can reach it (its ``interface``).
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
from .kept import cluster_key, kept_cluster
from .local_cluster import (
    LOOPBACK,
    OwnCluster,
    check_options,
    dashboard_address,
    with_dask_defaults,
)
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
        Keyword arguments of the cluster mempamal starts: for the local one
        ``host`` (default ``127.0.0.1``), ``scheduler_port``,
        ``dashboard_address`` (same as ``dashboard``), ``n_workers`` (same as
        ``n_jobs``), ``threads_per_worker``, ``memory_limit``, ``resources``;
        for a dask-jobqueue one, its class's arguments, e.g.
        ``{"cores": 1, "memory": "2GB"}``.
    dashboard : str, bool or None
        Where the dashboard of the cluster mempamal starts listens:
        ``"host:port"``, or ``":port"`` / ``"port"`` for that port on the
        cluster's host (127.0.0.1 by default, not every interface); False:
        no dashboard. Default: ``127.0.0.1:8787``, or a free port when 8787
        is taken. mempamal prints the address that really listens. Not
        allowed with ``address``, ``client`` or a cluster object.
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
               "worker_timeout": None, "dashboard": None}

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
        self._validate_dashboard()
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
        if (cluster or "local") == "local":
            check_options(copts)
            if "n_workers" in copts and self.opts["n_jobs"] is not None:
                raise ValidationError(f"n_jobs={self.opts['n_jobs']!r} and cluster_options "
                                      f"n_workers={copts['n_workers']!r} say the same thing: "
                                      "give one")

    def _validate_dashboard(self) -> None:
        o = self.opts
        copts = o["cluster_options"] or {}
        local = (o["cluster"] or "local") == "local"
        given = copts.get("dashboard_address") if local else (
            copts.get("scheduler_options") or {}).get("dashboard_address")
        if local and given is not None:
            dashboard_address(given)  # raises on a bad value
        if o["dashboard"] is None:
            return
        if not self._starts_cluster:
            raise ValidationError(
                f"dashboard={o['dashboard']!r} configures the cluster mempamal starts; a "
                "cluster given by address, client or object keeps its own dashboard")
        if given is not None:
            raise ValidationError(f"dashboard={o['dashboard']!r} and cluster_options "
                                  f"dashboard_address={given!r} say the same thing: give one")
        dashboard_address(o["dashboard"])  # raises on a bad value

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
        with_dask_defaults()
        with run_lock(wd, f"dask run ({self._describe()})"):
            wd.remove_temporaries()
            todo = workflow.pending()
            if not todo:
                return RunReport()
            needs = {t.id: task_resources(t, self.resource_map)
                     for t in workflow.tasks.values()}
            with self._client(wd) as (client, own):
                announce(client, own)
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
                "worker_timeout", "notify", "dashboard")
        return resume_in_background(workflow, self.name, {k: o[k] for k in keys})

    @contextlib.contextmanager
    def _client(self, workdir):
        """A connected client, and the :class:`OwnCluster` behind it if mempamal started one.

        What mempamal started is closed on the way out.
        """
        o = self.opts
        if o["client"] is not None:
            yield o["client"], None
            return
        own = None
        with contextlib.ExitStack() as stack:
            if o["address"] is not None:
                target = o["address"]
            elif isinstance(o["cluster"], Cluster):
                target = o["cluster"]
                if o["n_jobs"] is not None:
                    target.scale(o["n_jobs"])
            elif (o["cluster"] or "local") == "local":
                n, options = self._own_cluster_options()
                own = stack.enter_context(kept_cluster(
                    cluster_key(n, options),
                    lambda: OwnCluster(workdir.backend_dir(self.name), n, **options)))
                target = own.address
            else:
                target = stack.enter_context(self._jobqueue_cluster())
            try:
                client = distributed.Client(target, set_as_default=False)
            except (OSError, TimeoutError) as exc:
                raise BackendError(f"cannot connect to the Dask scheduler at {target!r}: "
                                   f"{exc}") from exc
            stack.enter_context(client)
            if own is not None:
                own.wait_for_workers(client)
            yield client, own

    def _own_cluster_options(self) -> tuple[int, dict]:
        """The local cluster's workers and :class:`OwnCluster` options, from the run's.

        One single-threaded worker process per job, on loopback.
        Single-threaded because tasks set their own BLAS threads and
        redirect the process's stdout to their log.
        """
        o = self.opts
        copts = dict(o["cluster_options"] or {})
        host = copts.pop("host", LOOPBACK)
        dash = copts.pop("dashboard_address", o["dashboard"])
        n = o["n_jobs"] or copts.pop("n_workers", None) or os.cpu_count() or 1
        copts.pop("n_workers", None)
        return n, {"host": host, "dashboard": dashboard_address(dash, host), **copts}

    def _jobqueue_cluster(self):
        o = self.opts
        kind = o["cluster"]
        kwargs = dict(o["cluster_options"] or {})
        # the scheduler must listen where the jobs' workers reach it; its
        # dashboard need not: loopback unless told (ssh -L to look at it)
        sched = dict(kwargs.get("scheduler_options") or {})
        if "dashboard_address" not in sched:
            dash = dashboard_address(o["dashboard"])
            sched.update({"dashboard": False, "dashboard_address": f"{LOOPBACK}:0"}
                         if dash is None else {"dashboard_address": dash})
        kwargs["scheduler_options"] = sched
        try:
            import dask_jobqueue
        except ImportError as exc:
            raise BackendError(f"cluster={kind!r} needs dask-jobqueue ({exc}); install "
                               "it with `pip install dask-jobqueue`") from exc
        name = JOBQUEUE_CLUSTERS[kind]
        try:
            cluster = getattr(dask_jobqueue, name)(**kwargs)
        except (TypeError, ValueError, OSError) as exc:
            raise BackendError(f"cannot start {name}(**{kwargs!r}): {exc}") from exc
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
                    "{'resources': {...}} for the local cluster) or leave the resources "
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
