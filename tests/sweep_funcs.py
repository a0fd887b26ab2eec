"""Functions swept by the tests (importable: tasks in other processes import them)."""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path


def quadratic(x, y=0.0, trial=None):
    """Deterministic: a loss and a score that depend on the parameters and the seed."""
    seed = 0 if trial is None else trial.seed
    return {"loss": (x - 2) ** 2 + y + 0.5 * seed, "score": -abs(x) + seed}


def plain(x, y=0.0):
    """No trial parameter; returns a bare number."""
    return (x - 2) ** 2 + y


def _mark(folder, trial, what):
    """Count a call by creating a file (calls are counted across processes)."""
    d = Path(folder)
    d.mkdir(parents=True, exist_ok=True)
    (d / f"{trial.id}-{what}-{time.time_ns()}-{os.getpid()}").touch()


def counted(x, trial, calls, delay=0.0, fail_at=None):
    """Mark each call in ``calls``; sleep ``delay``; raise for ``x == fail_at``."""
    _mark(calls, trial, "call")
    time.sleep(delay)
    if fail_at is not None and x == fail_at:
        raise ValueError(f"x={x} is not allowed")
    if x < 0:
        return float("nan")
    return {"loss": float(x) ** 2}


def checkpointed(x, trial, n_steps, log, step_seconds=0.05):
    """A training loop saving a checkpoint in ``trial.dir`` each step, resuming from it."""
    ckpt = trial.dir / "checkpoint.json"
    state = json.loads(ckpt.read_text()) if ckpt.exists() else {"step": -1, "total": 0.0}
    with open(log, "a", encoding="utf-8") as fh:
        fh.write(json.dumps({"trial": trial.id, "attempt": trial.attempt,
                             "first_step": state["step"] + 1}) + "\n")
    for step in range(state["step"] + 1, n_steps):
        time.sleep(step_seconds)
        state = {"step": step, "total": state["total"] + x * step}
        trial.report(step, loss=1.0 / (1 + state["total"]))
        tmp = trial.dir / "checkpoint.json.tmp"
        tmp.write_text(json.dumps(state))
        os.replace(tmp, ckpt)
        if trial.should_stop():
            break
    return {"loss": 1.0 / (1 + state["total"]), "steps": state["step"] + 1}


def waits_for_release(x, trial, release, timeout=60.0):
    """Report a step, then wait until the file ``release`` exists before returning."""
    trial.report(0, loss=float(x))
    deadline = time.monotonic() + timeout
    while not os.path.exists(release):
        if time.monotonic() > deadline:
            raise TimeoutError("never released")
        time.sleep(0.02)
    trial.report(1, loss=float(x) / 2)
    return float(x) / 2


def allocates(mb, trial):
    """Hold ``mb`` MiB for a moment: the trial's own peak memory shows it."""
    import numpy as np

    block = np.ones(int(mb * 2**20 / 8))
    return {"loss": float(block[0]) + math.log1p(mb)}


def blas_threads(x):
    """The most threads a BLAS/OpenMP pool of this process may use right now."""
    import numpy  # noqa: F401 - loads the BLAS whose pool is limited
    from threadpoolctl import threadpool_info

    return {"threads": float(max(i["num_threads"] for i in threadpool_info()))}


def child_threads(x):
    """The BLAS/OpenMP thread counts a program the trial starts is told to use."""
    import subprocess
    import sys

    code = "import os; print(os.environ.get('OMP_NUM_THREADS', 0), " \
           "os.environ.get('OPENBLAS_NUM_THREADS', 0))"
    omp, openblas = subprocess.run([sys.executable, "-c", code], capture_output=True,
                                   text=True, check=True).stdout.split()
    return {"omp": float(omp), "openblas": float(openblas)}


def worker_settings(x):
    """What the process running the trial was started with (the Dask backend's test)."""
    import os

    import psutil
    from distributed import get_worker

    profiling = get_worker().profile_recent is not None and bool(
        __import__("dask").config.get("distributed.worker.profile.enabled"))
    # a spawned worker runs multiprocessing's spawn_main; a forked one, its nanny's command
    spawned = "multiprocessing.spawn" in " ".join(psutil.Process().cmdline())
    return {"value": x, "malloc_trim_set": float("MALLOC_TRIM_THRESHOLD_" in os.environ),
            "profiling": float(profiling), "spawned": float(spawned)}
