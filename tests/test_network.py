"""Nothing a run starts listens beyond this machine; the Dask dashboard option (issue #12).

The shell-command backends and Dask run the user's experiment file through
the CLI (``mempamal run exp.py -w W -b BACKEND``) while every socket their
process tree listens on is collected (psutil); an address other than
loopback fails the test, and the results must equal scikit-learn's.
(``test_plain_script.py`` watches the same way while the plain script runs
on every backend, the in-process local executor included.)
"""

from __future__ import annotations

import contextlib
import errno
import socket
import sys
import urllib.error
import urllib.request

import pytest
from conftest import import_or_fail, requires_or_fail
from script_runs import (
    DASHBOARD,
    HAVE_DISTRIBUTED,
    assert_same,
    backend_params,
    cli_argv,
    results_of,
    run_watched,
    sklearn_result,
    write_user_files,
)

from mempamal.backends.base import get_backend
from mempamal.errors import ValidationError

dask_only = [pytest.mark.dask, requires_or_fail(HAVE_DISTRIBUTED, "distributed not installed")]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_user_files(tmp_path_factory.mktemp("user"))


@pytest.fixture(scope="module")
def oracle(folder):
    return sklearn_result(folder)


@contextlib.contextmanager
def port_8787_taken():
    """Hold 127.0.0.1:8787 (or find it already held by someone else)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind(("127.0.0.1", 8787))
        sock.listen()
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:
            raise
    try:
        yield
    finally:
        sock.close()


def _run(folder, name, tmp_path, *extra):
    workdir = tmp_path / f"w-{name}"
    proc, watch = run_watched(cli_argv(folder, name, workdir, *extra), str(workdir), folder)
    assert proc.returncode == 0, f"mempamal run -b {name} failed:\n{proc.stderr[-4000:]}"
    # the watch saw the run's processes, not just the command's own
    assert len(watch.pids) >= 2, watch.pids
    assert watch.not_loopback() == [], f"{name}: listening beyond loopback (pid, ip, port)"
    return workdir, proc, watch


# -- every backend -------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("name", backend_params(["local-subprocess", "soma", "slurm"]))
def test_cli_run_listens_on_nothing_beyond_loopback(folder, oracle, tmp_path, name):
    workdir, _, watch = _run(folder, name, tmp_path)
    assert_same(results_of(workdir), oracle)
    # the local executor, SLURM and Soma-Workflow light mode open no port at all
    assert watch.seen == set()


@pytest.mark.slow
@pytest.mark.parametrize("name", backend_params(["dask"]))
def test_dask_cluster_listens_on_loopback_and_moves_off_a_taken_8787(folder, oracle, tmp_path,
                                                                     name):
    with port_8787_taken():
        workdir, proc, watch = _run(folder, name, tmp_path)
    assert_same(results_of(workdir), oracle)
    # scheduler, nannies, workers and dashboard listened; all of them on loopback
    assert len(watch.seen) >= 5, watch.seen
    printed = DASHBOARD.findall(proc.stderr)
    assert len(printed) == 1, proc.stderr
    host, port = printed[0][0], int(printed[0][1])
    assert port != 8787
    assert (host, port) in watch.ports(), "the printed dashboard address did not listen"


# -- the dashboard option ------------------------------------------------------
def _get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


@pytest.mark.slow
@pytest.mark.dask
@requires_or_fail(HAVE_DISTRIBUTED, "distributed not installed")
def test_dashboard_false_serves_no_dashboard(tmp_path):
    import dask.config
    from distributed import Client

    from mempamal.backends.dask.local_cluster import OwnCluster, listening

    # as after a scheduler with a dashboard but no bokeh ran in this process
    # (distributed then appends its "missing bokeh" page to the live config)
    key = "distributed.scheduler.http.routes"
    polluted = {key: [*dask.config.get(key), "distributed.http.scheduler.missing_bokeh"]}
    with dask.config.set(polluted), OwnCluster(tmp_path, 1, dashboard=None) as cluster, \
            Client(cluster.address, set_as_default=False) as client:
        cluster.wait_for_workers(client)
        assert cluster.dashboard_url(client) is None
        # distributed's HTTP API still listens (loopback, not 8787), without /status
        http = client.scheduler_info(n_workers=0)["services"]["dashboard"]
        sockets = listening(cluster.procs["scheduler"].pid)
        assert ("127.0.0.1", http) in sockets and http != 8787
        assert _get(f"http://127.0.0.1:{http}/health") == 200
        assert _get(f"http://127.0.0.1:{http}/status") == 404
    assert cluster.procs == {}


@pytest.mark.parametrize(("value", "expected"), [
    (None, "127.0.0.1:8787"), (True, "127.0.0.1:8787"), (False, None),
    (":0", "127.0.0.1:0"), ("8788", "127.0.0.1:8788"), (8788, "127.0.0.1:8788"),
    ("0.0.0.0:8787", "0.0.0.0:8787"), ("localhost:1234", "localhost:1234"),
])
def test_dashboard_address_defaults_to_loopback(value, expected):
    import_or_fail("distributed")
    from mempamal.backends.dask.local_cluster import dashboard_address

    assert dashboard_address(value) == expected


@pytest.mark.parametrize(("pair", "expected"), [
    ("dashboard=false", False), ("dashboard=127.0.0.1:8790", "127.0.0.1:8790"),
    ("dashboard=:0", ":0"),
])
def test_cli_dashboard_option_reaches_the_backend(pair, expected):
    import_or_fail("distributed")
    from mempamal.cli import _parse_options

    opts = _parse_options([pair])
    assert get_backend("dask", **opts).opts["dashboard"] == expected


@pytest.mark.parametrize(("options", "match"), [
    ({"dashboard": "nowhere"}, "dashboard must be an address 'host:port'"),
    ({"dashboard": "h:99999"}, "dashboard must be an address"),
    ({"dashboard": [8787]}, "dashboard must be an address"),
    ({"dashboard": False, "address": "tcp://h:1"}, "keeps its own dashboard"),
    ({"dashboard": ":0", "cluster_options": {"dashboard_address": ":1"}}, "say the same"),
    ({"cluster_options": {"dashboard_address": "nowhere"}}, "dashboard must be an address"),
    ({"cluster_options": {"processes": True}}, r"\['processes'\] are not options"),
])
def test_bad_dashboard_and_cluster_options_are_refused(options, match):
    import_or_fail("distributed")
    with pytest.raises(ValidationError, match=match):
        get_backend("dask", **options)


CHILD = """
import sys, time
from distributed import Client
from mempamal.backends.dask.local_cluster import OwnCluster
with OwnCluster(sys.argv[1], 1) as cluster, Client(cluster.address) as client:
    cluster.wait_for_workers(client)
    print(" ".join(str(p.pid) for p in cluster.procs.values()), flush=True)
    time.sleep(600)
"""


def _running(proc) -> bool:
    """Alive and not a zombie (an orphan's zombie waits for a reaper, not for us)."""
    import psutil

    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.mark.slow
@pytest.mark.dask
@requires_or_fail(HAVE_DISTRIBUTED, "distributed not installed")
def test_nothing_keeps_listening_once_mempamal_is_killed(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    import psutil

    parent = subprocess.Popen([sys.executable, "-c", CHILD, str(tmp_path)],
                              stdout=subprocess.PIPE, text=True)
    try:
        pids = [int(p) for p in parent.stdout.readline().split()]
        assert len(pids) == 2, "the cluster did not start"
        servers = [psutil.Process(p) for p in pids]
        procs = servers + [c for s in servers for c in s.children(recursive=True)]
        assert len(procs) >= 3  # scheduler, the nannies' process, a worker
        parent.send_signal(signal.SIGKILL)  # no clean-up code runs
        deadline = time.monotonic() + 60
        while any(_running(p) for p in procs) and time.monotonic() < deadline:
            time.sleep(0.2)
        left = [p for p in procs if _running(p)]
        assert left == [], f"{left} outlived the process that started them"
    finally:
        parent.kill()
        parent.wait()


@pytest.mark.dask
@requires_or_fail(HAVE_DISTRIBUTED, "distributed not installed")
def test_the_config_passed_on_drops_what_distributed_wrote_into_it():
    """A scheduler started here without bokeh appends a route to the live config."""
    import dask.config

    from mempamal.backends.dask.local_cluster import inheritable_config

    key, page = "distributed.scheduler.http.routes", "distributed.http.scheduler.missing_bokeh"
    # (the live config may hold the page already, if a scheduler ran in this process)
    routes = [r for r in dask.config.get(key) if r != page]
    with dask.config.set({key: [*routes, page]}):
        passed = inheritable_config()["distributed"]["scheduler"]["http"]["routes"]
        assert page not in passed
        assert passed == routes
        # the live config is left as it is
        assert page in dask.config.get(key)


@pytest.mark.dask
@requires_or_fail(HAVE_DISTRIBUTED, "distributed not installed")
def test_own_cluster_leaves_out_the_defaults_that_slow_compute():
    """No MALLOC_TRIM_THRESHOLD_ (glibc's mmap threshold stays dynamic), no profiler,
    workers forked by their nanny (on Linux).

    A value the user set is passed on as is.
    """
    import dask.config

    from mempamal.backends.dask.local_cluster import inheritable_config

    env_key = "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_"
    passed = inheritable_config()["distributed"]
    assert passed["nanny"]["pre-spawn-environ"]["MALLOC_TRIM_THRESHOLD_"] is None
    assert passed["worker"]["profile"]["enabled"] is False
    assert passed["worker"]["multiprocessing-method"] == (
        "fork" if sys.platform.startswith("linux") else "spawn")
    assert passed["nanny"]["pre-spawn-environ"]["OMP_NUM_THREADS"] == 1  # the rest kept
    with dask.config.set({env_key: 131072, "distributed.worker.profile.enabled": "yes",
                          "distributed.worker.multiprocessing-method": "forkserver"}):
        passed = inheritable_config()["distributed"]
        assert passed["nanny"]["pre-spawn-environ"]["MALLOC_TRIM_THRESHOLD_"] == 131072
        assert passed["worker"]["profile"]["enabled"] == "yes"
        assert passed["worker"]["multiprocessing-method"] == "forkserver"
    assert dask.config.get(env_key) == 65536  # the live config is not changed


@pytest.mark.dask
@pytest.mark.slow
@requires_or_fail(HAVE_DISTRIBUTED, "distributed not installed")
def test_own_cluster_workers_run_without_them(tmp_path, monkeypatch):
    import sweep_funcs

    from mempamal import Sweep, load_results

    wf = Sweep(sweep_funcs.worker_settings, param_grid={"x": [1.0]}, metric="value",
               mode="min").compile(tmp_path / "w")
    # as a Nanny started in this process leaves it (distributed sets it in its
    # own environment before spawning a worker)
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "65536")
    wf.run("dask", n_jobs=1, progress=False)
    row = load_results(tmp_path / "w").trials.iloc[0]
    assert row["state"] == "done"
    assert row["malloc_trim_set"] == 0.0 and row["profiling"] == 0.0
    assert row["spawned"] == (0.0 if sys.platform.startswith("linux") else 1.0)
