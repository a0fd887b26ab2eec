"""How long one ``mempamal watch`` refresh takes on a 100,000-task workdir (target: 1 s),
and ``mempamal ls`` on hundreds of finished workdirs.

Run from the repository root::

    python benchmarks/bench_watch.py [--tasks 100000] [--reps 5] [--workdirs 300] [--out FILE]

A synthetic nested-CV workdir (10 outer x 10 inner x 1000 candidates, one
candidate per fit task; no data, nothing is fitted) is laid out as a run
half-way through: 60 % of the fits done (output, log and meta record each),
100 failed, 8 running on another host, the rest never started. Timed: the
first snapshot (loads workflow.json), the next ones (what a refresh costs),
their rendering, and ``status`` for comparison. Then ``--workdirs`` copies
of a small finished workdir (1,000 tasks each, with their run records) are
listed by ``ls``. Nothing here is a test: no assertion; the figures are
printed as JSON.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path


def make_workdir(root: Path, n_candidates: int) -> int:
    """Lay out the synthetic run; return its number of tasks."""
    from mempamal.recipes.nested_cv import build_tasks
    from mempamal.workflow import Workflow

    wf = Workflow(root, build_tasks([10] * 10, n_candidates, 1, python="python3"),
                  {"fingerprint": "0123456789abcdef"})
    wf.workdir.create()
    wf.save()
    fits = [t for t in wf.tasks.values() if t.kind == "fit"]
    n_done = int(0.6 * len(fits))
    now, host = time.time(), socket.gethostname()

    def meta(task, **doc):
        with open(wf.workdir.meta_file(task.id), "w", encoding="utf-8") as fh:
            json.dump({"task": task.id, "host": host, "attempt": 1, **doc}, fh)

    for k, t in enumerate(fits[:n_done]):
        for o in t.outputs:
            Path(wf.workdir.path(o)).write_text("{}")
        wf.workdir.log_file(t.id).write_text("=== done\n")
        meta(t, state="done", start=now - 100 + k * 1e-3, end=now - 99 + k * 1e-3, seconds=1.0)
    for t in fits[n_done:n_done + 100]:
        wf.workdir.log_file(t.id).write_text("Traceback...\nValueError: bad C\n")
        meta(t, state="failed", start=now - 50, end=now - 49, error="ValueError: bad C",
             error_type="ValueError")
    for t in fits[n_done + 100:n_done + 108]:
        meta(t, state="running", host="othernode", pid=1, start=now - 5)
    return len(wf)


def make_finished_workdirs(root: Path, n: int) -> None:
    """``n`` finished workdirs of 1,000 fit tasks each (outputs, records, summary)."""
    from mempamal.recipes.nested_cv import build_tasks
    from mempamal.runinfo import write_run_record
    from mempamal.workdir import Workdir, write_json
    from mempamal.workflow import Workflow

    for k in range(n):
        wf = Workflow(root / f"exp-{k:03d}", build_tasks([10] * 10, 10, 1, python="python3"),
                      {"fingerprint": f"{k:016d}"})
        wf.workdir.create()
        wf.save()
        write_json(wf.workdir.path(Workdir.FINAL_SUMMARY),
                   {"n_outer_splits": 10, "scores": {"test_score": {"mean": 0.9, "std": 0.01}}})
        now = time.time()
        write_run_record(wf.workdir, "local", now - 60, now, {"done": len(wf)}, "done")


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=100_000, help="about this many fits")
    parser.add_argument("--reps", type=int, default=5, help="refreshes timed")
    parser.add_argument("--workdirs", type=int, default=300, help="finished workdirs ls lists")
    parser.add_argument("--out", default=None, help="also write the figures here (JSON)")
    args = parser.parse_args()
    from rich.console import Console

    from mempamal.ls import list_workdirs
    from mempamal.status import status_report
    from mempamal.watch import Watcher, render

    with tempfile.TemporaryDirectory(prefix="bench-watch-") as tmp:
        root = Path(tmp) / "w"
        build_s, n_tasks = timed(lambda: make_workdir(root, max(1, args.tasks // 100)))
        first_s, watcher = timed(lambda: Watcher(root))
        snap_first, snap = timed(watcher.snapshot)
        refreshes, renders = [], []
        for _ in range(args.reps):
            s, snap = timed(watcher.snapshot)
            refreshes.append(s)
            console = Console(file=io.StringIO(), width=160)
            t0 = time.perf_counter()
            console.print(render(snap))
            renders.append(time.perf_counter() - t0)
        status_s, _ = timed(lambda: status_report(root))
    with tempfile.TemporaryDirectory(prefix="bench-ls-") as tmp:
        make_finished_workdirs(Path(tmp), args.workdirs)
        ls_s, rows = timed(lambda: list_workdirs(tmp))
    figures = {
        "tasks": n_tasks, "build_s": round(build_s, 2),
        "watch_load_s": round(first_s, 3), "first_snapshot_s": round(snap_first, 3),
        "refresh_s_median": round(statistics.median(refreshes), 3),
        "refresh_s_max": round(max(refreshes), 3),
        "render_s_median": round(statistics.median(renders), 4),
        "status_report_s": round(status_s, 3), "target_refresh_s": 1.0,
        "ls_workdirs": len(rows), "ls_s": round(ls_s, 3),
        "cpus": os.cpu_count(), "python": platform.python_version(),
        "load_avg": os.getloadavg()[0],
    }
    print(json.dumps(figures, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(figures, indent=1) + "\n")


if __name__ == "__main__":
    sys.exit(main())
