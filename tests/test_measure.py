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
