"""The Dask backend against a real Dask cluster (LocalCluster, and SLURMCluster on SLURM).

The local backend is the oracle: every run here must give exactly its results.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import requires_or_fail
from helpers import (
    CrashingClassifier,
    FailingClassifier,
    SleepyClassifier,
    assert_same_results,
    iris,
    small_grid_experiment,
)

from mempamal import Experiment, load_results
from mempamal.errors import BackendError, TaskFailedError, ValidationError
from mempamal.workflow import Workflow

HAVE_DISTRIBUTED = importlib.util.find_spec("distributed") is not None
pytestmark = [pytest.mark.dask,
              requires_or_fail(HAVE_DISTRIBUTED, "dask.distributed is not installed")]


def _slurm_up() -> bool:
    if not (shutil.which("sbatch") and shutil.which("sinfo")):
        return False
    try:
        proc = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True,
                              timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return proc.returncode == 0 and any(
        s.strip().rstrip("*") in ("idle", "mix", "alloc") for s in proc.stdout.split())


def _compile(path, exp=None, chunk_size=1, **kw):
    X, y = iris()
    return (exp or small_grid_experiment()).compile(path, X, y, chunk_size=chunk_size, **kw)


def _attempts(wf) -> dict:
    out = {}
    for tid in wf.tasks:
        try:
            with open(wf.workdir.meta_file(tid), encoding="utf-8") as fh:
                out[tid] = json.load(fh)["attempt"]
        except FileNotFoundError:
            out[tid] = 0
    return out


@pytest.fixture(scope="module")
def cluster():
    """Two single-threaded worker processes advertising one CPU each, shared by tests."""
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=":0", resources={"CPU": 1}) as c:
        yield c


@pytest.fixture(scope="module")
def client(cluster):
    from distributed import Client

    with Client(cluster, set_as_default=False) as c:
        yield c


@pytest.fixture(scope="module")
def oracle(tmp_path_factory):
    """The local backend's results for the default small experiment."""
    wf = _compile(tmp_path_factory.mktemp("oracle") / "w")
    wf.run("local", n_jobs=2, progress=False)
    return load_results(wf.workdir.root)


# -- options -------------------------------------------------------------------
@pytest.mark.parametrize(("options", "match"), [
    ({"n_job": 2}, "unknown option.*valid options"),
    ({"n_jobs": 0}, "n_jobs must be a positive int"),
    ({"n_jobs": "2"}, "n_jobs must be a positive int"),
    ({"address": "tcp://h:1", "n_jobs": 2}, "n_jobs=2 sizes a cluster"),
    ({"address": ""}, "address must be a scheduler address"),
    ({"client": "tcp://h:1"}, "client must be a distributed.Client"),
    ({"address": "tcp://h:1", "cluster": "slurm"}, "exclude each other"),
    ({"cluster": "kubernetes"}, "'kubernetes' is not a cluster name"),
    ({"cluster": 3}, "cluster must be a cluster name or a distributed cluster object"),
    ({"cluster_options": {"cores": 1}, "address": "tcp://h:1"}, "cluster_options configure"),
    ({"cluster_options": "cores=1"}, "cluster_options must be a dict"),
    ({"resources": "yes"}, "resources must be true, false, None or a dict"),
    ({"resources": {"cpus": ""}}, "resources must be"),
    ({"progress": "no"}, "progress must be"),
    ({"worker_timeout": 0}, "worker_timeout must be a positive number"),
])
def test_bad_options_are_refused(options, match):
    from mempamal.backends import get_backend

    with pytest.raises(ValidationError, match=match):
        get_backend("dask", **options)


def test_bad_options_touch_nothing(tmp_path):
    wf = _compile(tmp_path / "w")
    with pytest.raises(ValidationError):
        wf.run("dask", cluster="nope")
    assert not list(wf.workdir.logs_dir.iterdir())


def test_unreachable_scheduler_is_a_clear_error(tmp_path):
    import dask
    import distributed  # noqa: F401  (first: see the test below)

    wf = _compile(tmp_path / "w")
    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}), \
            pytest.raises(BackendError, match="cannot connect to the Dask scheduler at "
                                              "'tcp://127.0.0.1:1'"):
        wf.run("dask", address="tcp://127.0.0.1:1")
    assert not list(wf.workdir.logs_dir.iterdir())


RUNS_AFTER_A_CONFIG_BLOCK = """
import sys
import dask
from mempamal import Sweep
from sweep_funcs import plain

def sweep():
    return Sweep(plain, param_grid={"x": [1.0, 2.0]}, metric="value", mode="min")

# entered before distributed's first import: on the way out, dask removes
# the whole section it inserted, distributed's defaults with it
with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
    sweep().compile(sys.argv[1] + "/a").run("dask", n_jobs=1, progress=False)
assert "distributed" not in dask.config.config, "dask kept the section: nothing to test"
sweep().compile(sys.argv[1] + "/b").run("dask", n_jobs=1, progress=False)
# what the user set after the block stays
dask.config.set({"distributed.scheduler.allowed-failures": 7})
sweep().compile(sys.argv[1] + "/c").run("dask", n_jobs=1, progress=False)
print(dask.config.get("distributed.scheduler.allowed-failures"))
"""


@pytest.mark.slow
def test_a_second_run_after_a_config_block_that_took_distributed_defaults_away(tmp_path):
    """A script's ``with dask.config.set({"distributed...": v}): wf.run("dask")``
    before distributed was imported left every later run failing with
    ``KeyError: 'distributed'`` (a fresh interpreter: distributed not imported)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", RUNS_AFTER_A_CONFIG_BLOCK, str(tmp_path)],
                          capture_output=True, text=True, timeout=180, env=env, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ["7"]
    for run in "abc":
        assert load_results(tmp_path / run).trials["value"].tolist() == [1.0, 0.0]


def test_every_registered_dask_default_is_filled_back_and_set_values_stay(monkeypatch):
    """dask-jobqueue's section is lost the same way as distributed's."""
    import dask.config
    from conftest import import_or_fail

    from mempamal.backends.dask.local_cluster import with_dask_defaults

    import_or_fail("dask_jobqueue")
    walltime = dask.config.get("jobqueue.slurm.walltime")
    timeout = dask.config.get("distributed.comm.timeouts.connect")
    # as after with-blocks entered before the imports, then one value set
    monkeypatch.setitem(dask.config.config, "jobqueue", {"slurm": {"cores": 3}})
    monkeypatch.delitem(dask.config.config, "distributed")
    with_dask_defaults()
    assert dask.config.get("jobqueue.slurm.cores") == 3
    assert dask.config.get("jobqueue.slurm.walltime") == walltime
    assert dask.config.get("distributed.comm.timeouts.connect") == timeout


# -- runs ----------------------------------------------------------------------
def test_own_local_cluster_equals_local_backend(tmp_path, oracle, capsys):
    wf = _compile(tmp_path / "w")
    report = wf.run("dask", n_jobs=2, progress=False,
                    cluster_options={"dashboard_address": ":0"})
    assert sorted(report.executed) == sorted(wf.tasks)
    assert not report.failures and not report.not_run
    assert_same_results(load_results(wf.workdir.root), oracle)
    assert "Dask dashboard at http" in capsys.readouterr().err
    assert set(_attempts(wf).values()) == {1}
    # the lock is released: a second run finds nothing to do
    assert wf.run("dask", client=None, n_jobs=1).executed == []


def _kept_servers() -> list:
    """The kept cluster's processes: scheduler, the nannies' process, their workers."""
    import psutil

    from mempamal.backends.dask import kept

    assert kept._kept is not None, "no cluster was kept"
    servers = [psutil.Process(p.pid) for p in kept._kept[1].procs.values()]
    return servers + [c for s in servers for c in s.children(recursive=True)]


def _stopped(processes, within: float) -> list:
    """Those of ``processes`` still running after ``within`` seconds."""
    deadline = time.monotonic() + within
    while any(_running(p) for p in processes) and time.monotonic() < deadline:
        time.sleep(0.1)
    return [p for p in processes if _running(p)]


def _worker_pids(wf) -> set:
    return {json.load(open(wf.workdir.meta_file(t), encoding="utf-8"))["pid"]
            for t in wf.tasks}


def test_own_cluster_is_kept_while_it_idles_then_leaves_nothing(tmp_path, monkeypatch):
    """Kept for the next run of the process, as the local pool is; stopped once idle."""
    from mempamal.backends.dask import kept

    monkeypatch.setattr(kept, "KEEP_SECONDS", 2.0)
    wf = _compile(tmp_path / "w")
    wf.run("dask", n_jobs=2, progress=False, cluster_options={"dashboard_address": ":0"})
    assert wf.done() == set(wf.tasks)
    seen = _kept_servers()
    assert len(seen) >= 4  # scheduler, the nannies' process, two workers
    assert all(_running(p) for p in seen)  # kept: the run has returned
    assert _stopped(seen, within=2.0 + 30) == []
    assert kept._kept is None
    # a run with a failed task too: its report is raised after the cluster
    # is left for the next run, which it is, then stopped as well
    exp = Experiment(FailingClassifier(fail=True), cv=2, inner_cv=None, error_score="raise")
    failing = _compile(tmp_path / "f", exp)
    with pytest.raises(TaskFailedError):
        failing.run("dask", n_jobs=1, progress=False,
                    cluster_options={"dashboard_address": ":0"})
    seen = _kept_servers()
    assert _stopped(seen, within=2.0 + 30) == []


def test_a_second_run_uses_the_kept_cluster_and_other_options_start_another(
        tmp_path, oracle, capsys):
    opts = {"progress": False, "cluster_options": {"dashboard_address": ":0"}}
    first = _compile(tmp_path / "a")
    first.run("dask", n_jobs=2, **opts)
    workers = _worker_pids(first)
    servers = _kept_servers()
    second = _compile(tmp_path / "b")
    second.run("dask", n_jobs=2, **opts)
    assert_same_results(load_results(second.workdir.root), oracle)
    assert _worker_pids(second) <= workers  # the same worker processes
    assert f"used again (logs in {tmp_path / 'a' / 'dask'})" in capsys.readouterr().err
    assert not (tmp_path / "b" / "dask" / "workers.log").exists()
    third = _compile(tmp_path / "c")
    third.run("dask", n_jobs=1, **opts)  # another cluster: the kept one is closed
    assert_same_results(load_results(third.workdir.root), oracle)
    assert not _worker_pids(third) & workers
    assert "used again" not in capsys.readouterr().err
    assert _stopped(servers, within=30) == []


def test_a_changed_environment_or_a_dead_server_starts_another_cluster(
        tmp_path, oracle, monkeypatch):
    opts = {"n_jobs": 1, "progress": False, "cluster_options": {"dashboard_address": ":0"}}
    first = _compile(tmp_path / "a")
    first.run("dask", **opts)
    monkeypatch.setenv("MEMPAMAL_TEST_SETTING", "a worker inherits it")
    second = _compile(tmp_path / "b")
    second.run("dask", **opts)
    assert not _worker_pids(second) & _worker_pids(first)
    os.kill(_kept_servers()[0].pid, signal.SIGKILL)  # its scheduler
    third = _compile(tmp_path / "c")
    third.run("dask", **opts)
    assert_same_results(load_results(third.workdir.root), oracle)
    assert not _worker_pids(third) & _worker_pids(second)


EXITING_SCRIPT = """
import sys
from helpers import iris, small_grid_experiment
X, y = iris()
wf = small_grid_experiment().compile(sys.argv[1], X, y, chunk_size=1)
wf.run("dask", n_jobs=2, progress=False, cluster_options={"dashboard_address": ":0"})
"""


def test_a_process_that_exits_stops_its_kept_cluster_in_order(tmp_path):
    """Workers first, then the scheduler: no nanny left waiting to kill its worker."""
    subprocess.run([sys.executable, "-c", EXITING_SCRIPT, str(tmp_path / "w")], check=True,
                   timeout=300)
    wf = Workflow.load(tmp_path / "w")
    assert wf.done() == set(wf.tasks)
    import psutil

    workers = [psutil.Process(p) for p in _worker_pids(wf) if psutil.pid_exists(p)]
    assert _stopped(workers, within=1.0) == []  # stopped as the process exited
    log = (tmp_path / "w" / "dask" / "workers.log").read_text()
    assert "still alive after" not in log and "Traceback" not in log, log[-2000:]


def test_a_run_ended_by_an_exception_closes_its_cluster_at_once(tmp_path, monkeypatch):
    from mempamal.backends import dask as dask_backend
    from mempamal.backends.dask import kept

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(dask_backend, "run_rounds", interrupted)
    wf = _compile(tmp_path / "w")
    started = []
    make = kept.OwnCluster.__enter__

    def recording(cluster):
        started.append(cluster)
        return make(cluster)

    monkeypatch.setattr(kept.OwnCluster, "__enter__", recording)
    with pytest.raises(KeyboardInterrupt):
        wf.run("dask", n_jobs=1, progress=False, cluster_options={"dashboard_address": ":0"})
    assert len(started) == 1 and started[0].procs == {}  # closed before raising
    assert kept._kept is None


def _running(proc) -> bool:
    import psutil

    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_existing_client_and_cluster_object(tmp_path, oracle, client, cluster):
    wf = _compile(tmp_path / "a")
    wf.run("dask", client=client, progress=False)
    assert_same_results(load_results(wf.workdir.root), oracle)
    wf = _compile(tmp_path / "b")
    wf.run("dask", cluster=cluster, progress=False)
    assert_same_results(load_results(wf.workdir.root), oracle)
    assert client.status == "running" and cluster.status.name == "running"


def test_resume_recomputes_only_deleted_outputs(tmp_path, oracle, client):
    wf = _compile(tmp_path / "w")
    wf.run("dask", client=client, progress=False)
    removed = ["fit-o1-i0-c2", "fit-o2-i2-c0", "select-o0"]
    for tid in removed:
        for out in wf.tasks[tid].outputs:
            wf.workdir.path(out).unlink()
    report = Workflow.load(wf.workdir.root).run("dask", client=client, progress=False)
    assert sorted(report.executed) == sorted(removed)
    attempts = _attempts(wf)
    assert {t for t, a in attempts.items() if a == 2} == set(removed)
    assert {t for t, a in attempts.items() if a == 1} == set(wf.tasks) - set(removed)
    assert_same_results(load_results(wf.workdir.root), oracle)


def test_corrupt_input_is_recomputed(tmp_path, oracle, client):
    wf = _compile(tmp_path / "w")
    wf.run("dask", client=client, progress=False)
    fit_out = wf.workdir.path(wf.tasks["fit-o0-i0-c0"].outputs[0])
    fit_out.write_text(fit_out.read_text().replace("0.", "0.5", 1))  # still valid JSON
    wf.workdir.path(wf.tasks["select-o0"].outputs[0]).unlink()
    report = wf.run("dask", client=client, progress=True)  # the bar grows in round 2
    # select-o0 finds its input altered and deletes it; the next round
    # recomputes the fit, then select-o0
    assert report.executed == ["select-o0", "fit-o0-i0-c0", "select-o0"]
    assert not report.failures and not report.not_run
    assert_same_results(load_results(wf.workdir.root), oracle)


def test_run_holds_the_workdir_lock(tmp_path, client):
    from mempamal.errors import WorkdirLockedError
    from mempamal.lock import run_lock

    wf = _compile(tmp_path / "w")
    with run_lock(wf.workdir, "another run"), \
            pytest.raises(WorkdirLockedError, match="another run"):
        wf.run("dask", client=client, progress=False)
    assert not list(wf.workdir.logs_dir.iterdir())


def test_failure_blocks_dependents_only(tmp_path, client):
    # candidate 1 fails in every split: its chunk fails, chunk 0 still runs,
    # no select (they need both chunks) and no aggregate runs
    exp = Experiment(FailingClassifier(), param_grid={"C": [1.0], "fail": [False, True]},
                     cv=2, inner_cv=2, error_score="raise")
    wf = _compile(tmp_path / "w", exp)
    with pytest.raises(TaskFailedError) as info:
        wf.run("dask", client=client, progress=False)
    report = info.value.report
    failed = {f"fit-o{o}-i{i}-c1" for o in range(2) for i in range(2)}
    assert set(report.failures) == failed
    for why in report.failures.values():
        assert "RuntimeError: FailingClassifier asked to fail" in why
        assert "Traceback (most recent call last)" in why and "in fit" in why
    assert sorted(report.not_run) == ["aggregate", "select-o0", "select-o1"]
    assert wf.done() == {f"fit-o{o}-i{i}-c0" for o in range(2) for i in range(2)}
    attempts = _attempts(wf)
    assert [attempts[t] for t in report.not_run] == [0, 0, 0]  # never started
    assert "FailingClassifier asked to fail" in str(info.value)

    # the command line, through the scheduler's address: non-zero exit, and
    # nothing reruns but the failed tasks
    proc = subprocess.run(
        [sys.executable, "-m", "mempamal", "resume", str(wf.workdir.root), "--backend",
         "dask", "--scheduler-address", client.scheduler.address, "-o", "progress=false"],
        capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 1, proc.stderr
    assert "4 task(s) failed" in proc.stderr
    attempts = _attempts(wf)
    assert {t for t, a in attempts.items() if a == 2} == failed


def _starts(wf) -> dict:
    out = {}
    for tid in wf.tasks:
        with open(wf.workdir.meta_file(tid), encoding="utf-8") as fh:
            out[tid] = json.load(fh)["start"]
    return out


@pytest.mark.slow
def test_tasks_start_in_the_local_executors_order(tmp_path):
    """A select as soon as its fits are done, and the last two splits' fits
    alternate, so that their selects end together (``backends/ordering.py``);
    in submission order, Dask ran every fit of a split before the next
    split's, and each select after the fits queued on its worker."""
    exp = Experiment(SleepyClassifier(delay=0.2), param_grid={"C": [0.1, 1.0]}, cv=3,
                     inner_cv=2)
    wf = _compile(tmp_path / "w", exp)
    wf.run("dask", n_jobs=2, progress=False, cluster_options={"dashboard_address": ":0"})
    starts = _starts(wf)
    fits = {o: sorted(t for k, t in starts.items() if k.startswith(f"fit-o{o}-"))
            for o in range(3)}
    assert starts["select-o0"] < fits[1][-1]
    assert fits[2][0] < fits[1][-1] and fits[1][0] < fits[2][-1]


def test_killed_worker_task_is_rerun(tmp_path, client):
    exp = Experiment(SleepyClassifier(delay=0.4), param_grid={"C": [0.1, 1.0]},
                     cv=2, inner_cv=2)
    oracle_wf = _compile(tmp_path / "oracle", exp)
    oracle_wf.run("local", n_jobs=2, progress=False)
    wf = _compile(tmp_path / "w", exp)
    killed = {}
    stop = threading.Event()

    def kill_one_running_task():
        # the first fit seen running in a worker process, while it still
        # sleeps in fit: SIGKILL that process
        pids = set(client.run(os.getpid).values())
        while not stop.is_set():
            for meta_file in wf.workdir.logs_dir.glob("fit-*.meta.json"):
                try:
                    meta = json.loads(meta_file.read_text())
                except (OSError, ValueError):
                    continue
                if (meta["state"] == "running" and meta["pid"] in pids
                        and time.time() - meta["start"] < 0.2):
                    os.kill(meta["pid"], signal.SIGKILL)
                    killed.update(task=meta["task"], pid=meta["pid"])
                    return
            time.sleep(0.02)

    killer = threading.Thread(target=kill_one_running_task)
    killer.start()
    try:
        report = wf.run("dask", client=client, progress=False)
    finally:
        stop.set()
        killer.join()
    assert killed, "no task was seen running in a worker"
    assert not report.failures
    assert _attempts(wf)[killed["task"]] == 2
    assert killed["pid"] not in client.run(os.getpid).values()
    assert_same_results(load_results(wf.workdir.root), load_results(oracle_wf.workdir.root))


def test_task_that_kills_its_worker_fails(tmp_path):
    # fit kills its worker process; Dask gives up on a task at once here
    # (allowed-failures=0; saturation 1.0 keeps queued tasks off a dying
    # worker, so only the guilty task is blamed)
    import dask
    import distributed  # noqa: F401  (first: see the test below)

    crash = tmp_path / "crash"
    crash.touch()
    exp = Experiment(CrashingClassifier(fail_file=str(crash)), cv=2, inner_cv=None)
    wf = _compile(tmp_path / "w", exp)
    with dask.config.set({"distributed.scheduler.allowed-failures": 0,
                          "distributed.scheduler.worker-saturation": 1.0}), \
            pytest.raises(TaskFailedError) as info:
        wf.run("dask", n_jobs=2, progress=False, cluster_options={"dashboard_address": ":0"})
    report = info.value.report
    assert set(report.failures) == {"fit-o0", "fit-o1"}
    assert all("worker process running it died" in why for why in report.failures.values())
    assert report.not_run == ["aggregate"]
    assert wf.done() == set()


def test_resources_are_required_where_asked(tmp_path, oracle, client):
    wf = _compile(tmp_path / "w")
    wf.run("dask", client=client, resources=True, progress=False)  # workers have CPU=1
    assert_same_results(load_results(wf.workdir.root), oracle)

    wf = _compile(tmp_path / "big", resources={"cpus": 2})
    with pytest.raises(BackendError, match=r"needs the Dask worker resources \{'CPU': 2\}"):
        wf.run("dask", client=client, resources=True, progress=False)
    assert not list(wf.workdir.logs_dir.iterdir())  # refused before anything ran
    with pytest.raises(BackendError, match="SLOT"):
        wf.run("dask", client=client, resources={"cpus": "SLOT"}, progress=False)
    # not asked: the hints are only hints
    wf.run("dask", client=client, progress=False)
    assert_same_results(load_results(wf.workdir.root), oracle)


def test_submit_returns_and_runs_in_background(tmp_path, oracle, client):
    wf = _compile(tmp_path / "w")
    proc = wf.submit("dask", address=client.scheduler.address)
    assert proc.wait(timeout=120) == 0, (wf.workdir.root / "dask" / "run.log").read_text()
    assert_same_results(load_results(wf.workdir.root), oracle)
    with pytest.raises(ValidationError, match="cannot use a client"):
        wf.submit("dask", client=client)


# -- batch system --------------------------------------------------------------
@pytest.mark.slurm
@requires_or_fail(_slurm_up(), "no answering SLURM cluster (sbatch/sinfo)")
def test_slurm_cluster_equals_local_backend(tmp_path, oracle):
    """Workers start as SLURM jobs (dask-jobqueue) and run the workflow."""
    wf = _compile(tmp_path / "w")
    wf.run("dask", cluster="slurm", n_jobs=2, progress=False, worker_timeout=120,
           cluster_options={
               "cores": 1, "processes": 1, "memory": "400MB", "walltime": "00:10:00",
               # one node: scheduler and workers talk over the loopback
               "interface": "lo", "python": sys.executable,
               "log_directory": str(tmp_path / "dask-logs"),
               "local_directory": str(tmp_path / "dask-tmp"),
               "job_name": "mempamal-dask-test",
           })
    assert_same_results(load_results(wf.workdir.root), oracle)
    # the workers ran as SLURM jobs
    hosts = {json.loads(wf.workdir.meta_file(t).read_text())["slurm_job"] for t in wf.tasks}
    assert None not in hosts
