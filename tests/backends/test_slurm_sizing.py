"""SLURM mem="auto" / time="auto": sizing from measurement, escalation, a real OOM."""

from __future__ import annotations

import pytest
from conftest import requires_or_fail, slurm_answers
from helpers import MemoryHungryClassifier, iris

from mempamal import Experiment
from mempamal.backends.slurm import SlurmBackend, scripts
from mempamal.backends.slurm.sizing import (
    oom_from_log,
    parse_partition_limits,
    plan_sizes,
    previous_sizes,
    save_sizes,
)
from mempamal.workdir import write_json

SINFO = """debug* infinite 24105
long 2-00:00:00 64000+
short 30:00 8000
"""


@pytest.mark.parametrize("partition, expected", [
    (None, {"max_mem_mb": 24105}),
    ("long", {"max_minutes": 2880, "max_mem_mb": 64000}),
    ("short", {"max_minutes": 30, "max_mem_mb": 8000}),
    ("nope", {}),
])
def test_partition_limits_from_sinfo(partition, expected):
    assert parse_partition_limits(SINFO, partition) == expected


def test_memory_kill_is_read_from_the_job_log():
    log = ("slurmstepd-vm: error: StepId=133.batch exceeded memory limit (396451840 > "
           "104857600), being killed\nslurmstepd-vm: error: Exceeded job memory limit\n")
    assert oom_from_log(log) == {"mem_peak_mb": 378.1, "mem_limit_mb": 100.0}
    assert oom_from_log("Traceback...\nValueError: boom\n") is None


def _workflow(tmp_path, **kw):
    X, y = iris()
    exp = Experiment(MemoryHungryClassifier(), param_grid={"alloc_mb": [0, 1]}, cv=2,
                     inner_cv=2)
    return exp.compile(tmp_path / "w", X, y, **kw)


def _plan(wf, **opts):
    backend = SlurmBackend(**opts)
    jobs = backend.plan(wf)
    return jobs, plan_sizes(wf, jobs, backend.opts, {"max_mem_mb": 2000, "max_minutes": 90})


def test_auto_sizes_come_from_the_compile_timing_then_from_measurement(tmp_path):
    wf = _workflow(tmp_path)
    assert wf.meta["fit_peak_mb"] > 0
    jobs, (sizes, given) = _plan(wf, mem="auto", time="auto")
    notes = [n for _, ns in sizes.values() for n in ns]
    assert any("the fit timed at compile time peaked" in n for n in notes)
    assert any(n.startswith("--time=") for n in notes)
    fit = next(t for t in wf.tasks if t.startswith("fit"))
    for tid in [t for t in wf.tasks if wf.tasks[t].kind == "fit"]:  # as if they ran
        write_json(wf.workdir.meta_file(tid), {"state": "done", "peak_rss_mb": 700.0,
                                               "seconds": 30.0})
    jobs, (sizes, given) = _plan(wf, mem="auto", time="auto")
    assert given[fit]["mem_mb"] == 1152  # 1.5 x 700 + 64, rounded up to 64 MB
    assert given[fit]["time_s"] >= 120  # 2 x 30 + 60 s, in whole minutes
    job = next(j for j in jobs if fit in j.task_ids)
    script = scripts.script_text(job, wf, SlurmBackend(mem="auto").opts, "rid", sizes[job.stem])
    assert "#SBATCH --mem=1152M" in script
    assert "# sizing: --mem=1152M: fit tasks measured at 700 MB" in script


def test_out_of_memory_escalates_and_is_capped_by_the_partition(tmp_path):
    wf = _workflow(tmp_path, chunk_size=1, resources={"mem_mb": 300})
    jobs, (sizes, given) = _plan(wf, mem="auto")
    fit = next(t for t in wf.tasks if t.startswith("fit"))
    assert given[fit]["mem_mb"] == 320  # the hint, rounded up to 64 MB
    save_sizes(wf, given)
    write_json(wf.workdir.meta_file(fit), {"state": "failed", "error_type": "OUT_OF_MEMORY",
                                           "mem_peak_mb": 350.0})
    for expected in (640, 1280, 2000):  # x2, x2, then the partition's 2000 MB
        jobs, (sizes, given) = _plan(wf, mem="auto")
        assert given[fit]["mem_mb"] == expected
        save_sizes(wf, given)
    assert previous_sizes(wf)[fit]["mem_escalations"] == 3
    jobs, (sizes, given) = _plan(wf, mem="auto")  # no more than three escalations
    assert given[fit]["mem_escalations"] == 3


def test_nothing_measured_says_what_will_be_used(tmp_path):
    wf = _workflow(tmp_path, chunk_size=1)  # chunk_size given: nothing timed
    assert wf.meta["fit_peak_mb"] is None
    jobs, (sizes, _) = _plan(wf, mem="auto", time="auto")
    notes = [n for _, ns in sizes.values() for n in ns]
    assert "no --mem: nothing measured yet: the partition's default" in notes
    opts = SlurmBackend(mem="auto").opts
    assert all("--mem" not in d for j in jobs
               for d in scripts.directives(j, wf, opts, "r", sizes[j.stem][0]))


# -- on the real cluster -------------------------------------------------------


def _memory_enforced() -> bool:
    import subprocess

    try:
        out = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True,
                             timeout=20).stdout
    except (OSError, subprocess.TimeoutExpired):
        return False
    return "OverMemoryKill" in out or "task/cgroup" in out


@pytest.mark.slurm
@pytest.mark.slow
@requires_or_fail(slurm_answers() and _memory_enforced(),
                  "no SLURM cluster enforcing --mem (JobAcctGatherParams=OverMemoryKill)")
def test_a_real_oom_is_named_then_escalated_on_resume(tmp_path):
    from mempamal import TaskFailedError, load_results
    from mempamal.status import status_report

    X, y = iris()
    # held 2 s: SLURM's gatherer samples once a second (JobAcctGatherFrequency);
    # held only for the allocation (~0.2 s), the kill depended on when the
    # fit fell between two samples, and a loaded CI machine once missed it
    exp = Experiment(MemoryHungryClassifier(hold=2.0), param_grid={"alloc_mb": [0, 400]},
                     cv=2, inner_cv=2)
    wf = exp.compile(tmp_path / "w", X, y, chunk_size=1, resources={"mem_mb": 300})
    fast = {"poll_interval": 0.5, "progress": False, "tasks_per_job": 1}
    with pytest.raises(TaskFailedError):
        wf.run("slurm", mem="auto", **fast)
    report = status_report(wf.workdir.root, "slurm")
    ooms = [f for f in report["failures"] if f["error_type"] == "OUT_OF_MEMORY"]
    assert ooms and all(f["task"].endswith("-c1") for f in ooms)  # the 400 MB candidate
    meta = __import__("json").loads(wf.workdir.meta_file(ooms[0]["task"]).read_text())
    assert meta["mem_limit_mb"] == 320 and meta["mem_peak_mb"] > 320
    assert "went past the job's --mem limit of 320 MB" in meta["error"]
    wf.run("slurm", mem="auto", **fast)  # escalates: x2, or 1.5 x the peak SLURM saw
    sizes = previous_sizes(wf)
    assert sizes[ooms[0]["task"]]["mem_escalations"] == 1
    assert sizes[ooms[0]["task"]]["mem_mb"] >= 640
    local = exp.compile(tmp_path / "local", X, y, chunk_size=1)
    local.run("local", n_jobs=2, progress=False)
    assert load_results(wf.workdir.root).best_params == \
        load_results(local.workdir.root).best_params
