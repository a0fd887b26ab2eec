"""Sweep benchmarks (issue 13), as ratios against a reference in the same run.

Run from the repository root, in the venv that ``bash tests/run.sh`` makes::

    python benchmarks/bench_sweep.py [--reps 3] [--only S1,S2] [--backends local,slurm,soma,dask]

(``python benchmarks/bench.py`` runs them too, in its one table.)

- S1: 10,000 trials of a function that returns at once, 2 workers, end to
  end (compile, run, results loaded from disk). Beside it, Optuna's
  in-memory ``study.optimize`` with ``RandomSampler`` on the same number of
  trials (it writes nothing: the floor of any search loop).
- S2: 200 trials that each sleep 0.2 s on 2 workers: makespan divided by the
  ideal (200 x 0.2 s / 2 = 20 s).

Each on every backend given: the local executor, the real SLURM cluster
(where ``sbatch`` answers), Soma-Workflow in light mode and Dask (where they
are installed), so that a user can pick a backend from one table.

Nothing here is a test: no assertion, figures only.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench import (  # noqa: E402
    _wait_for_closing_clusters,
    _wait_for_idle_cluster,
    environment,
    print_table,
    write_results,
)
from sweep_workloads import instant, sleepy  # noqa: E402

TARGETS = {"S1 local s": 5.0, "S2 local / ideal": 1.05, "S2 slurm / ideal": 1.25}
N_S1, N_S2, SLEEP_S2 = 10_000, 200, 0.2


def _sweep(func, n):
    from mempamal import Sweep

    return Sweep(func, param_grid={"x": list(range(n))}, metric="value", mode="min")


def _end_to_end(func, n, root: Path, backend="local", **options) -> float:
    from mempamal import load_results

    t0 = time.perf_counter()
    wf = _sweep(func, n).compile(root)
    wf.run(backend, progress=False, **options)
    trials = load_results(root).trials
    elapsed = time.perf_counter() - t0
    if len(trials) != n or not (trials["state"] == "done").all():
        raise RuntimeError(f"{root}: {len(trials)} trials, states "
                           f"{trials['state'].value_counts().to_dict()}")
    return elapsed


def optuna_reference(n) -> float | None:
    """Optuna's in-memory optimize loop with RandomSampler on ``n`` trials."""
    try:
        import optuna
    except ImportError:
        return None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    t0 = time.perf_counter()
    study.optimize(lambda t: instant(t.suggest_int("x", 0, n - 1)), n_trials=n)
    return time.perf_counter() - t0


#: each backend's options for two workers (SLURM: the cluster's CPUs)
BACKENDS = {
    "local": {"n_jobs": 2},
    "slurm": {"poll_interval": 0.5},
    "soma": {"n_jobs": 2, "refreshment_interval": 0.1},
    "dask": {"n_jobs": 2},
}


def available(backends) -> list[str]:
    """Those of ``backends`` this machine can run (SLURM answering, modules installed)."""
    import importlib.util

    out = []
    for name in backends:
        if name == "slurm" and shutil.which("sbatch") is None:
            print("SLURM: sbatch not found, skipped")
        elif name == "soma" and importlib.util.find_spec("soma_workflow") is None:
            print("Soma-Workflow: not installed, skipped")
        elif name == "dask" and importlib.util.find_spec("distributed") is None:
            print("Dask: distributed not installed, skipped")
        else:
            out.append(name)
    return out


def _timed(func, n, root, name, rep) -> float:
    if name == "slurm":
        _wait_for_idle_cluster()
    _wait_for_closing_clusters()  # a Dask run's cluster may still be closing
    return _end_to_end(func, n, root / f"{func.__name__}-{name}-{rep}", name, **BACKENDS[name])


def bench_s1(reps, root, results, backends=("local",)):
    ref = [optuna_reference(N_S1) for _ in range(reps)]
    if ref[0] is not None:
        print(f"  S1 optuna in memory: {statistics.median(ref):.2f}s", flush=True)
    results["workloads"]["S1-optuna"] = {"seconds": ref}
    for name in backends:
        mine = []
        for rep in range(reps):
            mine.append(_timed(instant, N_S1, root, name, rep))
            print(f"  S1 {name} rep {rep}: {mine[-1]:.2f}s", flush=True)
        results["workloads"][f"S1-{name}"] = {"seconds": mine}
        results["ratios"][f"S1 {name} s"] = statistics.median(mine)
        if ref[0] is not None:
            results["ratios"][f"S1 {name} / optuna in memory"] = (statistics.median(mine)
                                                                  / statistics.median(ref))


def bench_s2(reps, root, results, backends=("local",)):
    ideal = N_S2 * SLEEP_S2 / 2
    for name in backends:
        times = []
        for rep in range(reps):
            times.append(_timed(sleepy, N_S2, root, name, rep))
            print(f"  S2 {name} rep {rep}: {times[-1]:.2f}s (ideal {ideal:.0f}s)", flush=True)
        results["workloads"][f"S2-{name}"] = {"seconds": times, "ideal_s": ideal}
        results["ratios"][f"S2 {name} / ideal"] = statistics.median(times) / ideal


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--only", default="S1,S2")
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--out", default=str(HERE / "results" / "sweep-latest.json"))
    args = parser.parse_args(argv)
    only = set(args.only.split(","))
    backends = available(args.backends.split(","))
    results = {"environment": environment(), "reps": args.reps, "workloads": {},
               "ratios": {}}
    print(json.dumps(results["environment"]))
    with tempfile.TemporaryDirectory(prefix="mempamal-bench-sweep-") as tmp:
        root = Path(tmp)
        if "S1" in only:
            bench_s1(args.reps, root, results, backends)
        if "S2" in only:
            bench_s2(args.reps, root, results, backends)
    print_table(results, TARGETS)
    write_results(results, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
