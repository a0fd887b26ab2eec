"""Benchmarks: mempamal against scikit-learn's own nested CV, as ratios.

Run from the repository root (README.rst names the command)::

    python benchmarks/bench.py [--reps 3] [--only W1,W2,W3,C100k,SLURM,SOMA,DASK,S1,S2] [--out FILE]

S1 and S2 are the sweep workloads of ``bench_sweep.py``, on every backend
this machine has (local, SLURM, Soma-Workflow, Dask).

Every figure is a ratio of two timings taken in the same run (interleaved,
median of ``--reps`` repetitions); the machine's cores and the library
versions are recorded with them. Nothing here is a test: no assertion.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

#: the issues' targets (issue 18's where it tightened issue 10's)
TARGETS = {
    "W1 local / ideal": 1.05, "W1 local / sklearn": 0.97, "W2 local / sklearn": 1.10,
    "W2 local / ideal": 1.10, "W3 local / sklearn": 1.00, "W3 local / ideal": 1.05,
    "C100k compile s": 3.0, "C100k compile peak MB": 300.0, "C100k status s": 1.0,
    "W1 slurm / local": 1.10, "W1 soma / local": 1.5, "W1 dask LocalCluster / local": 1.15,
    "S1 local s": 5.0, "S2 local / ideal": 1.05, "S2 slurm / ideal": 1.25,
}


def sklearn_nested(wl, n_jobs):
    """cross_validate(GridSearchCV(n_jobs=N), cv=outer): wall time, scores."""
    from sklearn.model_selection import GridSearchCV, cross_validate

    X, y = wl.data
    search = GridSearchCV(wl.estimator, wl.param_grid, cv=wl.inner_cv, scoring=wl.scoring,
                          n_jobs=n_jobs)
    t0 = time.perf_counter()
    out = cross_validate(search, X, y, cv=wl.cv, scoring=wl.scoring, return_estimator=True)
    return time.perf_counter() - t0, out


def serial_work(wl) -> float:
    """Sum of every fit and score time of the nested CV, run serially on one core.

    BLAS and OpenMP are limited to one thread, as in each of mempamal's
    workers and joblib's. Left to themselves they use every core: W2's fits
    then took 4.27 s instead of 4.55 s on 2 cores, and ``work / n_jobs``
    was an ideal no run on n_jobs one-thread workers can reach (two such
    copies run side by side take as long each as one alone: 4.44-4.53 s).
    """
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        _, out = sklearn_nested(wl, n_jobs=1)
    work = 0.0
    for est, outer_score_time in zip(out["estimator"], out["score_time"]):
        res = est.cv_results_
        n_splits = sum(k.startswith("split") and k.endswith("_test_score") for k in res)
        work += float(((res["mean_fit_time"] + res["mean_score_time"]) * n_splits).sum())
        work += est.refit_time_ + outer_score_time
    return work


def experiment(wl):
    """The workload's nested CV as a mempamal Experiment."""
    from mempamal import Experiment

    return Experiment(wl.estimator, param_grid=wl.param_grid, cv=wl.cv, inner_cv=wl.inner_cv,
                      scoring=wl.scoring)


def mempamal_local(wl, n_jobs, root: Path):
    """compile + run on the local executor: wall time of both."""
    X, y = wl.data
    work = root / f"{wl.name}-{time.monotonic_ns()}"
    t0 = time.perf_counter()
    exp = experiment(wl)
    wf = exp.compile(work, X, y)
    wf.run("local", n_jobs=n_jobs, progress=False)
    elapsed = time.perf_counter() - t0
    shutil.rmtree(work)
    return elapsed, wf.meta["chunk_size"]


def bench_workload(name, reps, n_jobs, root, results):
    from workloads import WORKLOADS

    wl = WORKLOADS[name]()
    print(f"\n{name}: {wl.description}", flush=True)
    # warm both pools once (joblib's and mempamal's workers are both reused
    # afterwards, as they are in any Python session)
    sklearn_nested(wl, n_jobs)
    mempamal_local(wl, n_jobs, root)
    sk, mp, works = [], [], []
    for rep in range(reps):  # interleaved, so drifts in machine load hit all three
        sk.append(sklearn_nested(wl, n_jobs)[0])
        t, chunk = mempamal_local(wl, n_jobs, root)
        mp.append(t)
        # the reference too: timed once, before the reps, it caught the VM
        # in another mood than the reps (W2's serial work: 5.78 s in one run,
        # 4.9-5.3 s in four others of the same hour), and the ideal with it
        works.append(serial_work(wl))
        print(f"  rep {rep}: sklearn {sk[-1]:.2f}s  mempamal {mp[-1]:.2f}s "
              f"(chunk_size {chunk})  serial work {works[-1]:.2f}s", flush=True)
    sk_med, mp_med = statistics.median(sk), statistics.median(mp)
    work = statistics.median(works)
    ideal = work / n_jobs
    print(f"  serial work {work:.2f}s -> ideal makespan on {n_jobs} cores {ideal:.2f}s")
    results["workloads"][name] = {
        "description": wl.description, "serial_work_s": work, "serial_works_s": works,
        "ideal_s": ideal,
        "sklearn_s": sk, "mempamal_s": mp, "chunk_size": chunk,
        "sklearn_median_s": sk_med, "mempamal_median_s": mp_med,
    }
    results["ratios"][f"{name} local / sklearn"] = mp_med / sk_med
    results["ratios"][f"{name} local / ideal"] = mp_med / ideal
    results["ratios"][f"{name} sklearn / ideal"] = sk_med / ideal


C100K_SCRIPT = textwrap.dedent("""
    import json, resource, sys, time
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from mempamal import Experiment
    rng = np.random.RandomState(0)
    X, y = rng.randn(500, 5), rng.randint(0, 2, 500)
    exp = Experiment(LogisticRegression(), param_grid={"C": np.logspace(-3, 3, 1000)},
                     cv=10, inner_cv=10)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.perf_counter()
    wf = exp.compile(sys.argv[1], X, y, chunk_size=1)
    t = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"tasks": len(wf), "compile_s": t, "peak_mb": peak,
                      "peak_above_imports_mb": peak - base}))
""")

STATUS_SCRIPT = textwrap.dedent("""
    import json, sys, time
    t0 = time.perf_counter()
    from mempamal.workflow import Workflow
    wf = Workflow.load(sys.argv[1])
    states = wf.status()
    print(json.dumps({"status_s": time.perf_counter() - t0, "tasks": len(states)}))
""")

NX_SCRIPT = textwrap.dedent("""
    import json, time
    import networkx as nx
    t0 = time.perf_counter()
    g = nx.DiGraph()
    for o in range(10):
        fits = [f"fit-o{o}-i{i}-c{c}" for i in range(10) for c in range(1000)]
        g.add_nodes_from(fits)
        g.add_edges_from((f, f"select-o{o}") for f in fits)
        g.add_edge(f"select-o{o}", "aggregate")
    print(json.dumps({"networkx_build_s": time.perf_counter() - t0, "nodes": len(g)}))
""")


def _py(script, *args) -> dict:
    out = subprocess.run([sys.executable, "-c", script, *map(str, args)], check=True,
                         capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def bench_c100k(reps, root, results):
    print("\nC100k: 10 outer x 10 inner x 1000 candidates, one candidate per task", flush=True)
    rows = []
    for rep in range(reps):
        work = root / f"c100k-{rep}"
        row = _py(C100K_SCRIPT, work)
        row.update(_py(STATUS_SCRIPT, work))
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "mempamal", "status", str(work)], check=False,
                       capture_output=True)
        row["status_cli_s"] = time.perf_counter() - t0
        row.update(_py(NX_SCRIPT))
        rows.append(row)
        shutil.rmtree(work)
        print(f"  rep {rep}: " + ", ".join(f"{k} {v:.2f}" if isinstance(v, float) else
                                          f"{k} {v}" for k, v in row.items()), flush=True)
    med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    results["workloads"]["C100k"] = {"reps": rows, "median": med}
    results["ratios"]["C100k compile s"] = med["compile_s"]
    results["ratios"]["C100k compile peak MB"] = med["peak_mb"]
    results["ratios"]["C100k status s"] = med["status_s"]
    results["ratios"]["C100k compile / networkx build"] = med["compile_s"] / med["networkx_build_s"]


def bench_slurm(reps, n_jobs, root, results):
    """W1 on the real SLURM cluster vs the local executor, same run.

    Three ways onto SLURM, each compiled afresh:

    - the SLURM backend with default options (``tasks_per_job="auto"``: each
      level's work cut into about one array element per CPU of the partition);
    - the SLURM backend unpacked (``tasks_per_job=1``: one fresh interpreter
      per fit task), to show what packing buys;
    - the Dask backend on dask-jobqueue's SLURMCluster (one worker job per
      core, started by the run, persistent while it lasts).
    """
    if shutil.which("sbatch") is None:
        print("\nSLURM: sbatch not found, skipped")
        return
    cluster_options = {
        "cores": 1, "processes": 1, "memory": "1GB", "walltime": "00:30:00",
        "interface": "lo", "python": sys.executable, "job_name": "mempamal-bench-dask",
        "log_directory": str(root / "dask-logs"), "local_directory": str(root / "dask-tmp"),
    }
    variants = {
        "W1 slurm / local": ("slurm", {}),
        "W1 slurm unpacked / local": ("slurm", {"tasks_per_job": 1}),
        "W1 dask on SLURMCluster / local": ("dask", {
            "cluster": "slurm", "n_jobs": n_jobs, "progress": False,
            "cluster_options": cluster_options}),
    }
    local, fresh, times = _w1_versus_local(variants, reps, n_jobs, root, "SLURM",
                                           wait=_wait_for_idle_cluster)
    results["workloads"]["W1-slurm"] = {"local_s": local, "local_fresh_s": fresh, **times}
    _w1_ratios(results, local, fresh, times)


def bench_here(section, reps, n_jobs, root, results):
    """W1 through Soma-Workflow (light mode) or a Dask LocalCluster vs local, same run.

    ``SOMA``: the Soma backend with default options (``tasks_per_job="auto"``:
    each level's work cut into about one soma job per core) and unpacked
    (``tasks_per_job=1``: one soma job, one interpreter, per task).
    ``DASK``: the Dask backend's own LocalCluster of ``n_jobs`` workers.
    """
    if section == "SOMA":
        variants = {
            "W1 soma / local": ("soma", {"n_jobs": n_jobs, "progress": False}),
            "W1 soma unpacked / local": ("soma", {"n_jobs": n_jobs, "progress": False,
                                                  "tasks_per_job": 1}),
        }
    else:
        variants = {"W1 dask LocalCluster / local": ("dask", {"n_jobs": n_jobs,
                                                              "progress": False})}
    # the Dask run closes its cluster in the background: let it end before the
    # next measure, so that no measure shares the cores with it
    local, fresh, times = _w1_versus_local(variants, reps, n_jobs, root, section,
                                           wait=_wait_for_closing_clusters)
    results["workloads"][f"W1-{section.lower()}"] = {"local_s": local, "local_fresh_s": fresh,
                                                      **times}
    _w1_ratios(results, local, fresh, times)


def _w1_ratios(results, local, fresh, times) -> None:
    """Each variant against the warm local pool (the target) and a fresh session's run."""
    for name, t in times.items():
        results["ratios"][name] = statistics.median(t) / statistics.median(local)
    for name, t in times.items():
        results["ratios"][f"{name} fresh"] = statistics.median(t) / statistics.median(fresh)


FRESH_LOCAL_SCRIPT = textwrap.dedent("""
    import json, sys, time
    sys.path.insert(0, sys.argv[1])
    from workloads import w1
    from mempamal import Experiment
    wl = w1()
    X, y = wl.data
    exp = Experiment(wl.estimator, param_grid=wl.param_grid, cv=wl.cv, inner_cv=wl.inner_cv,
                     scoring=wl.scoring)
    t0 = time.perf_counter()
    wf = exp.compile(sys.argv[2], X, y)
    wf.run("local", n_jobs=int(sys.argv[3]), progress=False)
    print(json.dumps({"seconds": time.perf_counter() - t0}))
""")


def mempamal_local_fresh(n_jobs, root: Path) -> float:
    """W1's compile + run on the local executor from a fresh session: no worker started yet.

    What a script run once sees: its workers start and import scikit-learn
    during the run, as a SLURM element, a Soma job or a Dask worker does.
    The session's own imports (the user built the estimator) are not timed.
    """
    work = root / f"W1-fresh-{time.monotonic_ns()}"
    seconds = _py(FRESH_LOCAL_SCRIPT, HERE, work, n_jobs)["seconds"]
    shutil.rmtree(work)
    return seconds


def _w1_versus_local(variants, reps, n_jobs, root, label, wait=None):
    """Interleaved timings of W1 (compile + run) on the local executor and on each variant.

    Each variant compiles afresh, so its time includes the compile, as the
    local executor's does. ``wait()`` runs before every measure. The local
    executor's pool is warm, as in a session that ran before; the local run
    from a fresh session is timed too (``local fresh``), for information.
    """
    from workloads import w1

    wl = w1()
    X, y = wl.data
    print(f"\nW1 on {label} vs local", flush=True)
    times = {name: [] for name in variants}
    local, fresh = [], []
    # warm the local pool once, as bench_workload does (run alone, --only
    # SLURM timed a cold pool in its first rep: 1.3 s more)
    mempamal_local(wl, n_jobs, root)
    # and the Dask backend's own cluster, kept between runs as the local pool is
    for k, (backend, options) in enumerate(variants.values()):
        if backend == "dask" and options.get("cluster", "local") == "local":
            experiment(wl).compile(root / f"{label.lower()}-warm-{k}", X, y).run(backend,
                                                                                 **options)
    for rep in range(reps):
        if wait:
            wait()
        local.append(mempamal_local(wl, n_jobs, root)[0])
        if wait:
            wait()
        fresh.append(mempamal_local_fresh(n_jobs, root))
        for k, (name, (backend, options)) in enumerate(variants.items()):
            exp = experiment(wl)
            if wait:  # a job still ending (a Dask worker closing) would slow the next measure
                wait()
            t0 = time.perf_counter()
            wf = exp.compile(root / f"{label.lower()}-{rep}-{k}", X, y)
            wf.run(backend, **options)
            times[name].append(time.perf_counter() - t0)
        print(f"  rep {rep}: " + "  ".join(f"{n.split(' /')[0]} {t[-1]:.2f}s"
                                          for n, t in times.items())
              + f"  local {local[-1]:.2f}s  local fresh {fresh[-1]:.2f}s", flush=True)
    return local, fresh, times


def _wait_for_closing_clusters(timeout: float = 30.0) -> None:
    """Wait for the threads closing a Dask cluster after a run (see local_cluster)."""
    for thread in threading.enumerate():
        if thread.name == "mempamal-dask-close":
            thread.join(timeout)


def _wait_for_idle_cluster(timeout: float = 120.0) -> None:
    """Wait until squeue lists no pending, running or completing job."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = subprocess.run(["squeue", "--noheader", "--states=PD,R,CG,CF"],
                             capture_output=True, text=True, check=False).stdout
        if not out.strip():
            return
        time.sleep(0.5)


def environment() -> dict:
    import numpy
    import sklearn
    from threadpoolctl import threadpool_info

    import mempamal

    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "cores": os.cpu_count(),
        "machine": platform.machine(), "python": platform.python_version(),
        "mempamal": mempamal.__version__, "scikit-learn": sklearn.__version__,
        "numpy": numpy.__version__,
        "blas": [(i["internal_api"], i.get("version"), i["num_threads"])
                 for i in threadpool_info()],
    }


def print_table(results, targets=None) -> None:
    targets = TARGETS if targets is None else targets
    print("\n| measure | value | target |\n|---|---|---|")
    for key, value in results["ratios"].items():
        target = targets.get(key)
        verdict = "" if target is None else ("ok" if value <= target else "MISSED")
        print(f"| {key} | {value:.3f} | {'' if target is None else f'<= {target} {verdict}'} |")


def write_results(results, out) -> None:
    """The run's figures as JSON in ``out`` (its folder made if needed)."""
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(results, indent=1) + "\n")
    print(f"\nwrote {out}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--only", default="W1,W2,W3,C100k,SLURM,SOMA,DASK,S1,S2")
    parser.add_argument("--n-jobs", type=int, default=os.cpu_count())
    parser.add_argument("--out", default=str(HERE / "results" / "latest.json"))
    args = parser.parse_args(argv)
    only = set(args.only.split(","))
    results = {"environment": environment(), "n_jobs": args.n_jobs, "reps": args.reps,
               "workloads": {}, "ratios": {}}
    print(json.dumps(results["environment"]))
    with tempfile.TemporaryDirectory(prefix="mempamal-bench-") as tmp:
        root = Path(tmp)
        for name in ("W1", "W2", "W3"):
            if name in only:
                bench_workload(name, args.reps, args.n_jobs, root, results)
        if "C100k" in only:
            bench_c100k(args.reps, root, results)
        if "SLURM" in only:
            bench_slurm(args.reps, args.n_jobs, root, results)
        for section in ("SOMA", "DASK"):
            if section in only:
                bench_here(section, args.reps, args.n_jobs, root, results)
        if {"S1", "S2"} & only:
            import bench_sweep  # it imports this module's helpers: not at the top

            backends = bench_sweep.available(bench_sweep.BACKENDS)
            if "S1" in only:
                bench_sweep.bench_s1(args.reps, root, results, backends)
            if "S2" in only:
                bench_sweep.bench_s2(args.reps, root, results, backends)
    print_table(results)
    write_results(results, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
