"""The cluster mempamal starts, kept between the runs of a process while it idles.

Starting it costs about 1.4 s on 2 cores before the first task runs: a
scheduler and the nannies' process import distributed, then every worker
imports scikit-learn for its first task. The local executor keeps its
worker pool between runs (idle workers exit after
``WORKER_IDLE_SECONDS``); so does the Dask backend with the cluster it
starts: a second run in the same session (a notebook, a resume after a
fix, the next experiment) finds its workers connected and scikit-learn
imported.

A kept cluster is used again only by a run that would start the very same
one: the same workers, host, dashboard and other options, the same dask
configuration and environment variables (a worker inherits both when it
starts). Anything else closes it and starts a new one. It is closed

- after :data:`KEEP_SECONDS` without a run;
- at once when a run ends by an exception (Ctrl-C, a lost worker: nothing
  of a broken cluster is kept);
- when a server process of it has ended;
- by :func:`forget_kept_cluster`;
- when this process exits: workers first, then the scheduler, as after a
  run (a worker whose scheduler left first keeps its nanny waiting seconds
  before it kills it); and however else this process ends, its servers see
  end-of-file on their pipes and stop (see :mod:`.local_cluster`).

Its logs stay in the workdir of the run that started it; a run that uses
it again says where.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import sys
import threading

from ...errors import BackendError
from .local_cluster import OwnCluster, inheritable_config

#: seconds a kept cluster waits for the next run (the local executor's idle workers' wait)
KEEP_SECONDS = 300.0

_lock = threading.Lock()
_kept: tuple[str, OwnCluster, threading.Timer] | None = None
_exit_registered = False


def cluster_key(n_workers: int, options: dict) -> str:
    """What must be equal for a run to use a kept cluster: options, dask config, environment."""
    import dask.config

    return json.dumps({"n_workers": n_workers, "options": options,
                       "config": dask.config.serialize(inheritable_config()),
                       "environ": sorted(os.environ.items())}, sort_keys=True, default=repr)


@contextlib.contextmanager
def kept_cluster(key: str, make):
    """The run's own cluster: the one kept with ``key``, or ``make()`` started.

    Kept on the way out for the next run, closed on an exception.
    """
    cluster = _take(key)
    if cluster is None:
        cluster = make()
        cluster.__enter__()  # a start that fails closes what it started
    else:
        print(f"mempamal: the Dask cluster an earlier run started is used again (logs in "
              f"{cluster.dir})", file=sys.stderr, flush=True)
    try:
        yield cluster
    except BaseException:
        cluster.close()  # Ctrl-C, a lost worker...: everything stopped before raising
        raise
    _keep(key, cluster)


def forget_kept_cluster() -> None:
    """Close the kept cluster now, if there is one (and wait for it to stop)."""
    kept = _pop()
    if kept is not None:
        kept[1].close()


def _pop() -> tuple[str, OwnCluster] | None:
    """The kept (key, cluster), no longer kept: its timer stopped."""
    global _kept
    with _lock:
        kept, _kept = _kept, None
    if kept is None:
        return None
    kept[2].cancel()
    return kept[0], kept[1]


def _take(key: str) -> OwnCluster | None:
    kept = _pop()
    if kept is None:
        return None
    other, cluster = kept
    if other == key:
        try:
            cluster.check_alive()
            return cluster
        except BackendError:
            pass
    cluster.close_in_background()
    return None


def _keep(key: str, cluster: OwnCluster) -> None:
    global _kept, _exit_registered
    timer = threading.Timer(KEEP_SECONDS, _expire, args=(cluster,))
    timer.daemon = True
    with _lock:
        previous, _kept = _kept, (key, cluster, timer)
        if not _exit_registered:
            atexit.register(forget_kept_cluster)
            _exit_registered = True
    timer.start()
    if previous is not None:  # two runs side by side: one cluster is kept
        previous[2].cancel()
        previous[1].close_in_background()


def _expire(cluster: OwnCluster) -> None:
    global _kept
    with _lock:
        if _kept is None or _kept[1] is not cluster:
            return  # taken by a run meanwhile
        _kept = None
    cluster.close()
