"""Each task's own resources: wall, CPU, peak memory (not its worker's), devices."""

from __future__ import annotations

from helpers import MemoryHungryClassifier, iris

from mempamal import Experiment
from mempamal.runner import read_meta


def test_peak_memory_is_the_tasks_own_in_a_persistent_worker(tmp_path):
    X, y = iris()
    # one worker runs the 400 MiB fit, then the small ones
    exp = Experiment(MemoryHungryClassifier(), param_grid={"alloc_mb": [400, 0]},
                     cv=2, inner_cv=2)
    wf = exp.compile(tmp_path / "w", X, y, chunk_size=1)
    wf.run("local", n_jobs=1, progress=False)
    big = read_meta(wf.workdir, "fit-o0-i0-c0")
    small = read_meta(wf.workdir, "fit-o0-i0-c1")
    assert big["peak_rss_scope"] == small["peak_rss_scope"] == "task"
    assert big["peak_rss_mb"] > 400
    assert small["peak_rss_mb"] < big["peak_rss_mb"] - 300, (small, big)
    assert small["start"] > big["end"]  # the same worker, after the big one
    for meta in (big, small):
        assert 0 < meta["cpu_seconds"] < 60 and meta["seconds"] > 0
        assert "gpu_mem_mb" in meta


def test_status_sums_up_what_done_tasks_measured_per_kind(tmp_path):
    import os
    import statistics
    import subprocess
    import sys

    from mempamal.status import status_report
    from mempamal.usage import usage_by_kind

    X, y = iris()
    exp = Experiment(MemoryHungryClassifier(), param_grid={"alloc_mb": [200, 0]},
                     cv=2, inner_cv=2)
    wf = exp.compile(tmp_path / "w", X, y, chunk_size=1)
    wf.run("local", n_jobs=2, progress=False)
    usage = status_report(wf.workdir.root)["usage"]
    fits = [read_meta(wf.workdir, t) for t in wf.tasks if t.startswith("fit-")]
    assert usage["fit"]["n"] == usage["fit"]["done"] == len(fits) == 8
    assert usage["fit"]["peak_rss_mb_max"] == max(m["peak_rss_mb"] for m in fits) > 200
    assert usage["fit"]["seconds_median"] == statistics.median(m["seconds"] for m in fits)
    assert set(usage) == {"fit", "select", "aggregate"}
    # beyond the cap, an even sample is read (and said)
    sampled = usage_by_kind(wf, wf.status(), max_per_kind=3)["fit"]
    assert (sampled["n"], sampled["done"]) == (3, 8)
    shown = subprocess.run([sys.executable, "-m", "mempamal", "status", str(wf.workdir.root)],
                           capture_output=True, text=True, timeout=60,
                           env={**os.environ, "COLUMNS": "160"})
    assert "measured per task" in shown.stdout, shown.stdout + shown.stderr
    measured = shown.stdout.split("measured per task", 1)[1]
    (fit_line,) = [ln for ln in measured.splitlines() if ln.strip("│ ").startswith("fit ")]
    assert f"{usage['fit']['peak_rss_mb_max']:.0f}" in fit_line
