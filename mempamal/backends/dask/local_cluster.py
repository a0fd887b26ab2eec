"""The Dask cluster mempamal starts on this machine: scheduler and workers in new processes.

Why not ``distributed.LocalCluster``: its worker processes are started by
multiprocessing's *spawn*, which re-imports the user's ``__main__``. A plain
script without ``if __name__ == "__main__":`` (the README's quick start)
then runs again in every worker: it compiles again, meets the workdir lock,
and the worker dies ("Nanny failed to start"). Here the scheduler and the
nannies are ``python -c`` processes running ``dask spec``: nothing of the
user's script runs in them (tasks get the user's objects by value from the
workdir's pickles), and a nanny's worker, spawned from a ``-c`` main, has no
main module to re-import either.

Processes: one scheduler, one process holding the ``n_workers`` nannies,
and one process per worker (single-threaded; its nanny restarts it if it
dies). Each server process reads the inherited end of a pipe of its own
whose other end only mempamal holds: when mempamal closes the cluster
(workers first, then the scheduler), or dies however it dies, they see
end-of-file and shut down, so no scheduler is left behind. They are started
together; the nannies wait for the scheduler's file.
Their logs go to ``WORKDIR/dask/scheduler.log`` and ``workers.log``.

Start-up cost, measured (2 cores, ``n_workers=2`` single-threaded workers,
time until both workers are connected, then time to close; each a fresh
interpreter, the variants interleaved, median of 5). "Quiet": load average
below 1.5; "loaded": 4 other sessions running tests (load average 9-12)::

    cluster                               quiet start   loaded start   loaded close
    LocalCluster (before; breaks plain       0.40 s        2.1 s          0.5 s
      scripts)
    distributed.SubprocessCluster            1.5 s         5.1 s          0.05 s
    this module                          1.0 s (a)         3.1 s          1.1 s

(a) the first version, which started the nannies once the scheduler was
up; they now start together (loaded: 3.6 s before, 3.2 s after).

About 0.6 s (1 s loaded) more than ``LocalCluster``, once per run: one more
interpreter importing ``distributed`` and a scheduler outside this process.
``SubprocessCluster`` (experimental) was slower and not chosen: one nanny
process per worker (2n+1 interpreters instead of n+2), its scheduler's
standard error piped where nobody reads it, its scheduler file left in /tmp,
and its scheduler and nannies still running 20 s after its parent was
killed (checked: SIGKILL), where these stop by themselves.

Network: everything listens on ``host`` (127.0.0.1 unless told otherwise):
the scheduler on a free port, the nannies and workers on free ports, the
dashboard on 8787 or, when 8787 is taken, a free port (``distributed``
moves it). The scheduler's small HTTP API (``/health``, ``/metrics``)
always listens, on the dashboard's address or, with no dashboard, a free
loopback port.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from ...errors import BackendError, ValidationError

#: what listens when nothing else is said
LOOPBACK = "127.0.0.1"
#: distributed's usual dashboard port
DASHBOARD_PORT = 8787
#: options of ``cluster_options`` for the cluster mempamal starts
OPTIONS = ("host", "scheduler_port", "dashboard_address", "n_workers",
           "threads_per_worker", "memory_limit", "resources")
#: seconds for the scheduler and every worker to come up, then to go
START_TIMEOUT = 120.0
STOP_TIMEOUT = 10.0

# Run as `python -c WATCHDOG FD spec ARGS...`: a thread reads the pipe end FD;
# end-of-file means mempamal closed the cluster or is gone: SIGTERM makes
# `dask spec` close its servers gracefully, and a stuck close ends anyway.
# The signal is sent to the main thread itself: it is the one whose event
# loop must wake up to run dask's handler.
WATCHDOG = f"""\
import os, signal, sys, threading, time
def _watch(fd):
    while os.read(fd, 1):
        pass
    signal.pthread_kill(threading.main_thread().ident, signal.SIGTERM)
    time.sleep({STOP_TIMEOUT})
    os._exit(1)
threading.Thread(target=_watch, args=(int(sys.argv[1]),), daemon=True).start()
from distributed.cli.dask_spec import main
main(sys.argv[2:], prog_name="dask spec")
"""


def dashboard_address(value, host: str = LOOPBACK) -> str | None:
    """The dashboard option as ``"host:port"``, or None for no dashboard.

    Parameters
    ----------
    value : str, bool or None
        None or True: ``host:8787``; False: no dashboard; a string
        ``"host:port"``, ``":port"`` or ``"port"`` (no host: ``host``, so
        ``":0"`` is a free port on loopback, not every interface).
    host : str
        The host used when ``value`` names none.

    Returns
    -------
    str or None
    """
    if value is None or value is True:
        return f"{host}:{DASHBOARD_PORT}"
    if value is False:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if isinstance(value, str):
        name, _, port = value.strip().rpartition(":")
        if port.isdigit() and int(port) <= 65535 and " " not in name:
            return f"{name or host}:{int(port)}"
    raise ValidationError(f"dashboard must be an address 'host:port' (or ':port'), true or "
                          f"false, got {value!r}")


def check_options(copts: dict) -> None:
    """Refuse ``cluster_options`` the cluster mempamal starts does not know."""
    unknown = sorted(set(copts) - set(OPTIONS))
    if unknown:
        raise ValidationError(
            f"cluster_options {unknown} are not options of the local cluster mempamal starts; "
            f"valid options: {list(OPTIONS)} (or pass your own cluster=LocalCluster(...))")


class OwnCluster:
    """A scheduler and single-threaded workers in new processes, on this machine.

    Use it as a context manager: entering starts every process and returns
    once the scheduler has written its address (:attr:`address`);
    :meth:`wait_for_workers` then waits for the workers; leaving stops
    everything.

    Parameters
    ----------
    directory : path
        Where the scheduler file and the logs go (created).
    n_workers : int
        Worker processes.
    host : str
        The address every server listens on.
    dashboard : str or None
        The dashboard's ``"host:port"`` (see :func:`dashboard_address`),
        or None for no dashboard.
    scheduler_port : int
        The scheduler's port (0: a free one).
    threads_per_worker : int
        Threads of each worker (mempamal runs one task at a time per worker).
    memory_limit : str, int or None
        Each worker's memory limit (None: the machine's memory shared out
        between the workers, as ``LocalCluster`` does).
    resources : dict or None
        Resources every worker advertises, e.g. ``{"CPU": 1}``.
    """

    def __init__(self, directory, n_workers: int, host: str = LOOPBACK,
                 dashboard: str | None = f"{LOOPBACK}:{DASHBOARD_PORT}",
                 scheduler_port: int = 0, threads_per_worker: int = 1,
                 memory_limit=None, resources: dict | None = None) -> None:
        self.dir = Path(directory)
        self.n_workers = n_workers
        self.host = host
        self.dashboard = dashboard
        self.scheduler_port = scheduler_port
        self.threads_per_worker = threads_per_worker
        self.memory_limit = memory_limit
        self.resources = resources
        self.scheduler_file = self.dir / "scheduler.json"
        self.address: str | None = None
        self.procs: dict[str, subprocess.Popen] = {}
        self._pipes: dict[str, int] = {}  # write ends, one per process

    # -- start -----------------------------------------------------------------
    def __enter__(self) -> OwnCluster:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def start(self) -> None:
        """Start the scheduler and the workers; return when the scheduler answers."""
        self.dir.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.scheduler_file.unlink()  # a stale one would send workers astray
        self.procs["scheduler"] = self._spawn("scheduler", self._scheduler_spec())
        self.procs["workers"] = self._spawn("workers", self._workers_spec())
        self.address = self._wait_for_scheduler()

    def _scheduler_spec(self) -> dict:
        opts = {"host": self.host, "port": self.scheduler_port,
                "scheduler_file": str(self.scheduler_file)}
        if self.dashboard is None:
            # distributed always serves its HTTP API; keep it off 8787
            opts.update(dashboard=False, dashboard_address=f"{self.host}:0")
        else:
            opts.update(dashboard=True, dashboard_address=self.dashboard)
        return {"cls": "distributed.Scheduler", "opts": opts}

    def _workers_spec(self) -> dict:
        from distributed.system import MEMORY_LIMIT  # the machine's, or its cgroup's

        memory = self.memory_limit
        if memory is None:  # as LocalCluster: the machine's memory shared out
            memory = MEMORY_LIMIT // self.n_workers
        opts = {"host": self.host, "nthreads": self.threads_per_worker,
                "scheduler_file": str(self.scheduler_file), "memory_limit": memory,
                "death_timeout": START_TIMEOUT}
        if self.resources:
            opts["resources"] = self.resources
        return {str(i): {"cls": "distributed.Nanny", "opts": {**opts, "name": i}}
                for i in range(self.n_workers)}

    def _spawn(self, what: str, spec: dict) -> subprocess.Popen:
        import dask.config

        read_end, self._pipes[what] = os.pipe()
        env = dict(os.environ)
        config = inheritable_config()
        # the caller's dask config (dask.config.set(...) around the run) holds there too
        env["DASK_INTERNAL_INHERIT_CONFIG"] = dask.config.serialize(config)
        environ = config["distributed"]["nanny"]["pre-spawn-environ"]
        if environ.get("MALLOC_TRIM_THRESHOLD_") is None \
                and env.get("MALLOC_TRIM_THRESHOLD_") == DASK_MALLOC_TRIM:
            # a Nanny that ran in this process (a LocalCluster of the user's)
            # wrote distributed's value into its environment: not the user's
            del env["MALLOC_TRIM_THRESHOLD_"]
        argv = [sys.executable, "-c", WATCHDOG, str(read_end), "--spec", json.dumps(spec)]
        try:
            with open(self.log(what), "wb") as log:
                # own session: a Ctrl-C reaches mempamal, which stops them in order
                return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                        stderr=subprocess.STDOUT, env=env,
                                        pass_fds=(read_end,), start_new_session=True)
        except OSError as exc:
            raise BackendError(f"cannot start the Dask {what} ({sys.executable} -c ...): "
                               f"{exc}") from exc
        finally:
            os.close(read_end)

    def log(self, what: str) -> Path:
        """The log file of the ``"scheduler"`` or ``"workers"`` process."""
        return self.dir / f"{what}.log"

    def _wait_for_scheduler(self) -> str:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            self.check_alive()
            with contextlib.suppress(OSError, ValueError, KeyError), \
                    open(self.scheduler_file, encoding="utf-8") as fh:
                return json.load(fh)["address"]
            if time.monotonic() > deadline:
                raise BackendError(f"the Dask scheduler did not start within {START_TIMEOUT}s; "
                                   f"see {self.log('scheduler')}")
            time.sleep(0.05)

    def wait_for_workers(self, client) -> None:
        """Return when every worker is connected; fail if a server process dies."""
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                client.wait_for_workers(self.n_workers, timeout=1)
                return
            except TimeoutError:
                pass
            self.check_alive()
            if time.monotonic() > deadline:
                raise BackendError(f"{self.n_workers} Dask workers did not connect within "
                                   f"{START_TIMEOUT}s; see {self.log('workers')}")

    def check_alive(self) -> None:
        """Raise :class:`BackendError` with the log's end if a server process ended."""
        for what, proc in self.procs.items():
            if proc.poll() is not None:
                tail = _tail(self.log(what))
                raise BackendError(f"the Dask {what} process exited with code "
                                   f"{proc.returncode} ({self.log(what)}):\n{tail}")

    # -- what listens ----------------------------------------------------------
    def dashboard_url(self, client) -> str | None:
        """The dashboard's URL, at the address its socket really listens on."""
        if self.dashboard is None:
            return None
        port = client.scheduler_info(n_workers=0).get("services", {}).get("dashboard")
        proc = self.procs.get("scheduler")
        if port is None or proc is None:
            return None
        try:
            hosts = [ip for ip, p in listening(proc.pid) if p == port]
        except Exception:  # noqa: BLE001 - psutil may not see sockets (AccessDenied...)
            hosts = [self.dashboard.rpartition(":")[0]]  # where it was asked to listen
        if not hosts:
            return None
        host = hosts[0]
        url = f"http://[{host}]:{port}/status" if ":" in host else f"http://{host}:{port}/status"
        if host in ("0.0.0.0", "::"):
            url += " (listening on every interface)"
        return url

    # -- stop ------------------------------------------------------------------
    def close_in_background(self) -> threading.Thread:
        """Tell every process to stop and return; a thread waits for them.

        After a run, its results are written: nothing needs the servers
        any more, and their graceful close (workers, then the scheduler:
        ~0.3 s) need not delay the caller. If this process exits first,
        the servers see end-of-file on their pipes and stop by themselves.
        """
        closing = threading.Thread(target=self.close, name="mempamal-dask-close",
                                   daemon=True)
        closing.start()
        return closing

    def close(self) -> None:
        """Stop every process (gracefully, then by force); idempotent.

        Workers first: a worker whose scheduler is already gone does not
        answer its nanny, which then waits seconds before killing it.
        """
        deadline = time.monotonic() + STOP_TIMEOUT
        for what in ("workers", "scheduler"):
            if what in self._pipes:
                os.close(self._pipes.pop(what))  # end-of-file: it shuts itself down
            if what in self.procs:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.procs[what].wait(timeout=max(0.1, deadline - time.monotonic()))
        for proc in self.procs.values():
            # a server, or a worker it spawned, that did not stop
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        self.procs = {}


def listening(pid: int) -> list[tuple[str, int]]:
    """The ``(ip, port)`` pairs process ``pid`` listens on (TCP)."""
    import psutil

    proc = psutil.Process(pid)
    conns = getattr(proc, "net_connections", None) or proc.connections
    return [(c.laddr.ip, c.laddr.port) for c in conns(kind="inet")
            if c.status == psutil.CONN_LISTEN]


def _tail(path: Path, n: int = 20) -> str:
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join("    " + line for line in lines[-n:])


def inheritable_config() -> dict:
    """The dask config of this process, less what distributed wrote into it by itself.

    A ``Scheduler`` started in this process with a dashboard but without
    bokeh appends its "missing bokeh" page to the config's own list of HTTP
    routes (distributed mutates the list it reads); passed on as is, that
    page would answer ``/status`` on a cluster started with no dashboard.
    """
    import copy

    import dask.config

    config = copy.deepcopy(dask.config.config)
    routes = config.get("distributed", {}).get("scheduler", {}).get("http", {}).get("routes")
    if isinstance(routes, list):
        routes[:] = [r for r in routes if r != "distributed.http.scheduler.missing_bokeh"]
    _for_compute(config)
    return config


def with_dask_defaults() -> None:
    """Fill back into the live dask config the defaults it lost.

    ``with dask.config.set({"distributed.…": value}):`` entered before
    distributed was first imported records the whole ``distributed`` section
    as its own insert, and removes it on the way out, with the defaults
    distributed's import merged into it (dask's rule; dask-jobqueue's
    ``jobqueue`` section alike). Every later ``Client`` then fails with
    ``KeyError: 'distributed'``: a script's second Dask run would. Every
    package's registered defaults (``dask.config.defaults``) fill the keys
    that are missing; what the user set stays.
    """
    import copy

    import dask.config
    import distributed  # noqa: F401  (registers its defaults, if not done yet)

    for defaults in dask.config.defaults:
        dask.config.update(dask.config.config, copy.deepcopy(defaults), priority="old")


#: distributed's default ``MALLOC_TRIM_THRESHOLD_`` for the workers it spawns
DASK_MALLOC_TRIM = "65536"


def _for_compute(config: dict) -> None:
    """Three of distributed's defaults that slow CPU-bound tasks, left out (in place).

    - ``MALLOC_TRIM_THRESHOLD_=65536`` in each worker's environment fixes
      glibc's mmap threshold, so every array above 128 KB is mapped and
      unmapped again: W1's fits ran 7 % slower than in the local executor.
    - The statistical profiler samples every thread every 10 ms (the
      dashboard's profile page): about 2 % more.

    And one that slows every start: on Linux, a nanny forks its worker
    instead of spawning a fresh interpreter that imports distributed again.
    Both workers connect 0.25 s sooner and close 0.3 s sooner (2 cores,
    ``benchmarks/`` W1 on Dask), and a worker a task killed is back as much
    sooner. The nanny has imported nothing of the user's, and nothing there
    touches a GPU, so the fork inherits no state a task could trip on.

    Only distributed's default values are changed: a value the user set
    stays (for mempamal's own cluster; a cluster the user brings is theirs).
    """
    distributed = config.setdefault("distributed", {})
    environ = distributed.setdefault("nanny", {}).setdefault("pre-spawn-environ", {})
    if str(environ.get("MALLOC_TRIM_THRESHOLD_")) == DASK_MALLOC_TRIM:
        environ["MALLOC_TRIM_THRESHOLD_"] = None  # None: not set (distributed's rule)
    worker = distributed.setdefault("worker", {})
    profile = worker.setdefault("profile", {})
    if profile.get("enabled", True) is True:
        profile["enabled"] = False
    if sys.platform.startswith("linux") and worker.get("multiprocessing-method",
                                                       "spawn") == "spawn":
        worker["multiprocessing-method"] = "fork"
