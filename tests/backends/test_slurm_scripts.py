"""SLURM backend without a cluster: planning, rendered scripts (golden files), options, parsers.

Golden files live in tests/backends/golden/slurm/CASE/. After an intended
change of the scripts, regenerate them and review the diff:

    MEMPAMAL_REGEN_GOLDEN=1 python -m pytest tests/backends/test_slurm_scripts.py
    git diff tests/backends/golden/slurm
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from mempamal.backends import get_backend
from mempamal.backends.packing import UNTIMED_WAVES
from mempamal.backends.slurm import SlurmBackend, scripts
from mempamal.backends.slurm.commands import (
    Record,
    parse_cluster_cpus,
    parse_max_array_size,
    parse_squeue,
    read_records,
)
from mempamal.backends.slurm.plan import (
    array_spec,
    balanced_lines,
    parse_array_spec,
    plan_jobs,
)
from mempamal.backends.slurm.states import assignments, task_states
from mempamal.errors import BackendError, ValidationError
from mempamal.recipes.nested_cv import build_tasks
from mempamal.workflow import Workflow

GOLDEN = Path(__file__).parent / "golden" / "slurm"
REGEN = os.environ.get("MEMPAMAL_REGEN_GOLDEN") == "1"

CASES = {
    # nested CV, arrays cut at 3 elements, throttled, every directive option
    "nested": ([2, 2], 3, 2, dict(
        max_array_size=3, max_parallel=2, partition="debug", time="1:00:00", mem="2G",
        account="proj-1", qos="normal", gres="gpu:1", cpus_per_task=2,
        setup=["module load python/3.11", "source \"$HOME/venv/bin/activate\""],
        extra_directives=["--constraint=skylake"], python="python3", job_name="mp",
        tasks_per_job=1)),
    # no inner CV: one array of fits feeding the aggregate, packed two per element
    "flat": ([0, 0, 0], 1, 1, dict(max_array_size=1001, tasks_per_job=2, python="python3")),
}


def _workflow(root, n_inner, n_candidates, chunk_size) -> Workflow:
    tasks = build_tasks(n_inner, n_candidates, chunk_size, python="python3")
    return Workflow(root, tasks, {"fingerprint": "0123456789abcdef"})


@pytest.mark.parametrize("case", sorted(CASES))
def test_scripts_match_golden_files(tmp_path, case):
    n_inner, n_cand, chunk, opts = CASES[case]
    wf = _workflow(tmp_path / "w", n_inner, n_cand, chunk)
    paths = wf.write("slurm", **opts)
    got = {p.name: p.read_text(encoding="utf-8") for p in paths}
    golden = GOLDEN / case
    if REGEN:
        shutil.rmtree(golden, ignore_errors=True)
        golden.mkdir(parents=True)
        for name, text in got.items():
            (golden / name).write_text(text, encoding="utf-8")
    want = {p.name: p.read_text(encoding="utf-8") for p in sorted(golden.iterdir())}
    assert sorted(got) == sorted(want)
    for name in want:
        assert got[name] == want[name], f"{name} differs from {golden / name}"


@pytest.mark.parametrize("case", sorted(CASES))
def test_output_is_deterministic_and_valid_bash(tmp_path, case):
    n_inner, n_cand, chunk, opts = CASES[case]
    a = _workflow(tmp_path / "a", n_inner, n_cand, chunk).write("slurm", **opts)
    b = _workflow(tmp_path / "b", n_inner, n_cand, chunk).write("slurm", **opts)
    assert [p.read_bytes() for p in a] == [p.read_bytes() for p in b]
    for p in a:
        if p.suffix in (".sbatch", ".sh"):
            proc = subprocess.run(["bash", "-n", str(p)], capture_output=True, text=True)
            assert proc.returncode == 0, (p, proc.stderr)


def test_hostile_workdir_scripts_hold_no_path(hostile_dir):
    wf = _workflow(hostile_dir / "w", [2], 2, 1)
    paths = wf.write("slurm", max_array_size=10, python="python3")
    for p in paths:
        assert str(hostile_dir) not in p.read_text(encoding="utf-8")
        if p.suffix in (".sbatch", ".sh"):
            assert subprocess.run(["bash", "-n", str(p)]).returncode == 0


def test_rewrite_removes_scripts_of_other_options(tmp_path):
    wf = _workflow(tmp_path / "w", [2, 2], 3, 1)
    wf.write("slurm", max_array_size=2, tasks_per_job=1)
    assert (tmp_path / "w" / "slurm" / "fit-o0.2.sbatch").exists()
    wf.write("slurm", max_array_size=100, tasks_per_job=1)
    names = sorted(p.name for p in (tmp_path / "w" / "slurm").iterdir())
    assert "fit-o0.2.sbatch" not in names and "fit-o0.sbatch" in names


def test_user_template_overrides_one_block(tmp_path):
    tdir = tmp_path / "templates" / "slurm"
    tdir.mkdir(parents=True)
    (tdir / "array.sbatch.j2").write_text(
        '{% extends "builtin/slurm/array.sbatch.j2" %}\n'
        "{% block setup %}\necho custom setup\n{% endblock %}\n")
    wf = _workflow(tmp_path / "w", [2, 2], 2, 1)
    wf.write("slurm", template_dir=str(tmp_path / "templates"), max_array_size=10)
    text = (tmp_path / "w" / "slurm" / "fit-o0.sbatch").read_text()
    assert "echo custom setup" in text and "--task-file slurm/fit-o0.tasks" in text
    assert "custom" not in (tmp_path / "w" / "slurm" / "select-o0.sbatch").read_text()


# -- planning ------------------------------------------------------------------
def test_plan_one_array_per_outer_split_and_select_after_all_its_arrays(tmp_path):
    wf = _workflow(tmp_path / "w", [3, 3], 4, 1)  # 12 fits per outer split
    jobs = {j.stem: j for j in plan_jobs(wf, max_array_size=5)}
    assert sorted(jobs) == ["aggregate", "fit-o0.0", "fit-o0.1", "fit-o0.2", "fit-o1.0",
                            "fit-o1.1", "fit-o1.2", "select-o0", "select-o1"]
    assert [len(jobs[f"fit-o0.{k}"].lines) for k in range(3)] == [5, 5, 2]
    assert jobs["select-o0"].deps == ["fit-o0.0", "fit-o0.1", "fit-o0.2"]
    assert jobs["select-o1"].deps == ["fit-o1.0", "fit-o1.1", "fit-o1.2"]
    assert jobs["aggregate"].deps == ["select-o0", "select-o1"]
    assert not jobs["select-o0"].array and jobs["fit-o0.0"].array
    fits = [t for s in ("fit-o0.0", "fit-o0.1", "fit-o0.2") for t in jobs[s].task_ids]
    assert fits == [t for t in wf.tasks if t.startswith("fit-o0-")]


def test_plan_packs_tasks_per_element(tmp_path):
    wf = _workflow(tmp_path / "w", [0, 0, 0, 0, 0], 1, 1)
    jobs = plan_jobs(wf, max_array_size=2, tasks_per_job=2)
    assert [(j.stem, j.lines, j.deps) for j in jobs] == [
        ("fit.0", [["fit-o0", "fit-o1"], ["fit-o2", "fit-o3"]], []),
        ("fit.1", [["fit-o4"]], []),
        ("aggregate", [["aggregate"]], ["fit.0", "fit.1"]),
    ]


@pytest.mark.parametrize(("indices", "spec"), [
    ([0, 1, 2, 3], "0-3"), ([3, 7, 9], "3,7,9"), ([0, 1, 5, 6, 7, 9], "0-1,5-7,9"), ([4], "4"),
])
def test_array_spec_round_trip(indices, spec):
    assert array_spec(indices) == spec
    assert array_spec(indices, 2) == spec + "%2"
    assert parse_array_spec(spec + "%2") == indices


# -- options -------------------------------------------------------------------
def test_unknown_option_lists_valid_ones():
    with pytest.raises(ValidationError, match="partitoin.*valid options.*partition"):
        get_backend("slurm", partitoin="debug")


@pytest.mark.parametrize(("key", "value"), [
    ("partition", "de bug"), ("partition", "x\n#SBATCH --mem=1"), ("time", "soon"),
    ("time", -5), ("mem", "lots"), ("max_parallel", 0), ("max_array_size", "4"),
    ("tasks_per_job", 0), ("extra_directives", ["--constraint=a b"]),
    ("extra_directives", ["constraint"]), ("setup", ["a\nb"]), ("job_name", "a;b"),
    ("poll_interval", 0),
])
def test_bad_option_values_are_refused_naming_them(key, value):
    with pytest.raises(ValidationError, match=key):
        SlurmBackend(**{key: value})


def test_without_sbatch_submit_says_so(tmp_path, monkeypatch):
    wf = _workflow(tmp_path / "w", [0], 1, 1)
    wf.workdir.create()
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(BackendError, match="sbatch.*not on PATH"):
        wf.submit("slurm", max_array_size=10)


# -- parsers and state mapping -------------------------------------------------
SQUEUE = """\
10|10|2|mp-run-fit-o0|COMPLETED|None
17|10|0|mp-run-fit-o0|FAILED|NonZeroExitCode
18|10|1|mp-run-fit-o0|OUT_OF_MEMORY|OutOfMemory
12|12|N/A|mp-run-select-o0|CANCELLED|DependencyNeverSatisfied
13|13|0|mp-run-fit-o1|RUNNING|None
14|13|1|mp-run-fit-o1|PENDING|JobArrayTaskLimit
"""


def test_parse_squeue():
    rows = parse_squeue(SQUEUE + "garbage\n")
    assert len(rows) == 6
    assert rows[1] == {"job": "17", "array_job": "10", "index": 0, "name": "mp-run-fit-o0",
                       "state": "FAILED", "reason": "NonZeroExitCode"}
    assert rows[3]["index"] is None and rows[0]["reason"] is None


def test_parse_max_array_size():
    assert parse_max_array_size("MaxArraySize            = 100001\nMinJobAge = 300 sec") \
        == 100001
    assert parse_max_array_size("nothing here") == 1001


def test_task_states_from_squeue_rows():
    lines = {"fit-o0": [["a"], ["b"], ["c"]], "select-o0": [["s"]],
             "fit-o1": [["d"], ["e"]]}
    records = [Record("10", "fit-o0", "0-2%2"), Record("12", "select-o0", "-"),
               Record("13", "fit-o1", "0-1")]
    assigned = assignments(records, lambda stem: lines.get(stem, []))
    file_states = {"a": "failed", "b": "running", "c": "done", "s": "pending",
                   "d": "running", "e": "pending"}
    metas = {"a": {"state": "failed", "slurm_job": "17", "error": "RuntimeError: x"},
             "b": {"state": "running", "slurm_job": "18", "attempt": 1},
             "d": {"state": "running", "slurm_job": "13"}, "s": None, "e": None}
    states, updates = task_states(file_states, assigned, parse_squeue(SQUEUE), metas,
                                  lambda stem: f"mp-run-{stem}")
    assert states == {"a": "failed", "b": "failed", "c": "done", "s": "cancelled",
                      "d": "running", "e": "queued"}
    assert updates["a"]["scheduler_state"] == "FAILED (NonZeroExitCode)"
    assert updates["a"]["error"] == "RuntimeError: x"
    assert updates["b"]["state"] == "failed"
    assert updates["b"]["error_type"] == "OUT_OF_MEMORY"
    assert updates["b"]["scheduler_log"] == "logs/mp-run-fit-o0-10_1.out"
    assert set(updates) == {"a", "b"}


def test_task_killed_by_a_forgotten_job_is_failed():
    records = [Record("10", "fit-o0", "0")]
    assigned = assignments(records, lambda stem: [["a"]])
    states, updates = task_states({"a": "running"}, assigned, [],
                                  {"a": {"state": "running", "slurm_job": "10"}},
                                  lambda stem: f"mp-run-{stem}")
    assert states == {"a": "failed"}
    assert updates["a"]["scheduler_state"] == "UNKNOWN"


def test_task_of_a_forgotten_job_run_by_a_job_slurm_knows_reads_that_job():
    """The meta names another job than the (forgotten) one assigned: its row and log."""
    records = [Record("10", "fit-o0", "0")]
    assigned = assignments(records, lambda stem: [["a"]])
    rows = parse_squeue("15|15|N/A|mp-run-fit-o0|FAILED|NonZeroExitCode\n")
    states, updates = task_states({"a": "running"}, assigned, rows,
                                  {"a": {"state": "running", "slurm_job": "15"}},
                                  lambda stem: f"mp-run-{stem}")
    assert states == {"a": "failed"}
    assert updates["a"]["scheduler_state"] == "FAILED (NonZeroExitCode)"
    assert updates["a"]["scheduler_log"] == "logs/mp-run-fit-o0-15.out"


def test_records_ignore_comments(tmp_path):
    f = tmp_path / "jobs.tsv"
    f.write_text("# submitted by submit.sh\n10\tfit-o0\t0-3%2\n11\tselect-o0\t-\n")
    assert read_records(f) == [Record("10", "fit-o0", "0-3%2"), Record("11", "select-o0", "-")]


def _auto_plan(wf, monkeypatch, cpus, **opts):
    from mempamal.backends.slurm import commands

    monkeypatch.setattr(commands, "cluster_cpus", lambda partition: cpus)
    return SlurmBackend(max_array_size=1001, **opts).plan(wf)  # tasks_per_job="auto"


def test_auto_packing_cuts_each_level_into_one_element_per_cpu(tmp_path, monkeypatch):
    # W1's shape: 5 outer x 5 inner splits, one chunk of 24 candidates per fit task
    wf = _workflow(tmp_path / "w", [5] * 5, 24, 24)
    wf.meta.update(seconds_per_fit=0.08, chunk_size=24)  # 25 fit tasks of ~2 s: 48 s
    jobs = _auto_plan(wf, monkeypatch, cpus=2)
    assert [(j.stem, j.array, [len(line) for line in j.lines], j.deps) for j in jobs] == [
        ("fit.0", False, [13], []), ("fit.1", False, [12], []),
        # the five selects (~1 s of work) in one element, the aggregate after them
        ("select", False, [6], ["fit.0", "fit.1"]),
    ]
    assert jobs[2].lines[0] == [f"select-o{o}" for o in range(5)] + ["aggregate"]
    assert [t for j in jobs[:2] for t in j.task_ids] == [t for t in wf.tasks
                                                          if t.startswith("fit-")]
    # a packed plain job runs its line through the task file
    script = scripts.script_text(jobs[0], wf, SlurmBackend().opts, "rid")
    assert "--task-file slurm/fit.0.tasks --index 0" in script and "--array" not in script


def test_auto_packing_bounds_the_work_of_an_element(tmp_path, monkeypatch):
    from mempamal.backends.slurm import AUTO_JOB_SECONDS, MIN_JOB_SECONDS

    wf = _workflow(tmp_path / "w", [2] * 2, 10, 1)  # 40 fit tasks of one candidate
    wf.meta.update(seconds_per_fit=MIN_JOB_SECONDS / 4, chunk_size=1)  # 100 s in all

    def fit_lines(jobs):
        return [len(line) for j in jobs if j.stem.startswith("fit") for line in j.lines]

    # many CPUs: as many elements as hold MIN_JOB_SECONDS each
    assert fit_lines(_auto_plan(wf, monkeypatch, cpus=1000)) == [4] * 10
    # unknown CPUs (no sinfo): the same
    assert fit_lines(_auto_plan(wf, monkeypatch, cpus=None)) == [4] * 10
    # few CPUs, or a throttle: one element each, unless that exceeds AUTO_JOB_SECONDS
    assert fit_lines(_auto_plan(wf, monkeypatch, cpus=4)) == [10] * 4
    assert fit_lines(_auto_plan(wf, monkeypatch, cpus=1000, max_parallel=3)) == [13, 14, 13]
    assert fit_lines(_auto_plan(wf, monkeypatch, cpus=1)) == [20, 20]  # 50 s each <= 60 s
    # elements wanting two CPUs each: half as many slots
    assert fit_lines(_auto_plan(wf, monkeypatch, cpus=8, cpus_per_task=2)) == [10] * 4
    wf.meta["seconds_per_fit"] = AUTO_JOB_SECONDS * 3  # tasks longer than a minute
    assert fit_lines(_auto_plan(wf, monkeypatch, cpus=2)) == [1] * 40
    wf.meta["seconds_per_fit"] = None  # chunk_size given at compile: nothing timed
    # by count: UNTIMED_WAVES elements per CPU, of equal count
    assert fit_lines(_auto_plan(wf, monkeypatch, cpus=2)) == [40 // (2 * UNTIMED_WAVES)] * 8
    assert fit_lines(_auto_plan(wf, monkeypatch, cpus=1000)) == [1] * 40
    # untimed and no sinfo: one element per task, one array per outer split
    jobs = _auto_plan(wf, monkeypatch, cpus=None)
    assert [j.stem for j in jobs] == ["fit-o0", "select-o0", "fit-o1", "select-o1",
                                      "aggregate"]
    assert fit_lines(jobs) == [1] * 40
    assert [len(line) for j in SlurmBackend(tasks_per_job=3).plan(wf)
            if j.stem.startswith("fit") for line in j.lines] == ([3] * 6 + [2]) * 2
    with pytest.raises(ValidationError, match="tasks_per_job"):
        SlurmBackend(tasks_per_job="autox")


@pytest.mark.parametrize(("seconds", "slots", "want"), [
    ([1.0] * 10, 2, [5, 5]),
    ([1.0] * 10, 3, [3, 4, 3]),
    ([1.0] * 3, 10, [1, 1, 1]),  # never more lines than tasks
    ([9.0, 1, 1, 1, 1, 1, 1, 1, 1, 1], 2, [1, 9]),  # equal work, not equal counts
    ([0.1] * 5, 4, [5]),  # less than min_seconds in all: one line
    ([30.0] * 4, 1, [2, 2]),  # at most max_seconds, even with one slot
])
def test_balanced_lines(seconds, slots, want):
    ids = [f"t{k}" for k in range(len(seconds))]
    lines = balanced_lines(ids, seconds, slots, min_seconds=1.0, max_seconds=60.0)
    assert [len(line) for line in lines] == want
    assert [t for line in lines for t in line] == ids


def test_plan_runs_a_chain_in_one_job(tmp_path):
    wf = _workflow(tmp_path / "w", [2], 2, 1)  # one outer split: select -> aggregate
    jobs = plan_jobs(wf, max_array_size=10)
    assert [(j.stem, j.lines, j.deps) for j in jobs] == [
        ("fit-o0", [[t] for t in wf.tasks if t.startswith("fit-")], []),
        ("select-o0", [["select-o0", "aggregate"]], ["fit-o0"]),
    ]


def test_parse_cluster_cpus():
    text = "debug* 3/1/4/8\nbig 10/0/0/10\ndebug* 1/1/0/2\n"
    assert parse_cluster_cpus(text, None) == 6  # default partition, drained CPUs left out
    assert parse_cluster_cpus(text, "big") == 10
    assert parse_cluster_cpus(text, "gpu") is None
    assert parse_cluster_cpus("garbage", None) is None


def test_compile_records_the_timing_that_auto_packing_uses(tmp_path):
    from helpers import iris, small_grid_experiment

    X, y = iris()
    timed = small_grid_experiment().compile(tmp_path / "a", X, y)
    assert timed.meta["seconds_per_fit"] > 0
    fixed = small_grid_experiment().compile(tmp_path / "b", X, y, chunk_size=1)
    assert fixed.meta["seconds_per_fit"] is None


def test_soft_dependencies_are_afterany_in_the_plan_and_in_submit_sh(tmp_path, monkeypatch):
    """A search's next suggest waits ``afterany`` on its round, ``afterok`` on the last suggest.

    submit.sh is run with an ``sbatch`` on PATH that logs its arguments and
    answers a job id, as the real one does with ``--parsable``.
    """
    import sweep_funcs
    from scipy.stats import uniform

    from mempamal import Sweep
    from mempamal.backends.slurm.scripts import dependency_option

    sweep = Sweep(f"{sweep_funcs.__file__}:quadratic",
                  param_distributions={"x": uniform(0, 1), "y": uniform(0, 1)},
                  search="qmc", n_iter=4, batch_size=2, random_state=0, metric="loss",
                  mode="min")
    wf = sweep.compile(tmp_path / "w")
    jobs = {j.stem: j for j in SlurmBackend(tasks_per_job=1, max_array_size=100).plan(wf)}
    suggest = next(j for s, j in jobs.items() if s.startswith("suggest-r1"))
    trials_r0 = [s for s, j in jobs.items() if "trial-0" in j.task_ids]
    assert suggest.soft_deps == trials_r0 and set(trials_r0) < set(suggest.deps)
    assert dependency_option(["a", "any:b", "c"], {"a": "1", "b": "2", "c": "3"}) == \
        "afterok:1:3,afterany:2"
    assert dependency_option(["any:b"], {"b": "2"}) == "afterany:2"
    assert dependency_option(["a", "any:b"], {}) is None

    wf.write("slurm", tasks_per_job=1, max_array_size=100)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "sbatch.log"
    fake = bin_dir / "sbatch"
    fake.write_text('#!/bin/bash\nn=$(( $(wc -l < "$LOG" 2>/dev/null || echo 0) + 100 ))\n'
                    'printf "%s %s\\n" "$n" "$*" >> "$LOG"\necho "$n"\n')
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("LOG", str(log))
    subprocess.run(["bash", str(tmp_path / "w" / "slurm" / "submit.sh")], check=True,
                   capture_output=True)
    ids = {}
    deps = {}
    for line in log.read_text().splitlines():
        job_id, *args = line.split()
        stem = Path(args[-1]).stem
        ids[stem] = job_id
        deps[stem] = next((a.split("=", 1)[1] for a in args if a.startswith("--dependency=")),
                          None)
    # suggest-r1: after suggest-r0 succeeded and round 0's trial jobs ended
    suggest_r0 = next(s for s in ids if s.startswith("suggest-r0"))
    assert deps[suggest.stem] == (f"afterok:{ids[suggest_r0]},afterany:"
                                  + ":".join(ids[s] for s in trials_r0))
    # the trials of round 1 need suggest-r1 to have succeeded
    trial_r1 = next(s for s, j in jobs.items() if "trial-2" in j.task_ids)
    assert deps[trial_r1] == f"afterok:{ids[suggest.stem]}"


def test_untimed_sweep_trials_are_packed_by_count(tmp_path, monkeypatch):
    """200 trials of unknown duration on 2 CPUs: 8 elements of 25, not 200 interpreters."""
    import sweep_funcs

    from mempamal import Sweep

    wf = Sweep(f"{sweep_funcs.__file__}:quadratic", param_grid={"x": list(range(200))},
               metric="loss", mode="min").compile(tmp_path / "w")
    assert wf.estimated_seconds() is None
    jobs = _auto_plan(wf, monkeypatch, cpus=2)
    trial_lines = [line for j in jobs for line in j.lines if line[0].startswith("trial-")]
    assert [len(line) for line in trial_lines] == [25] * (2 * UNTIMED_WAVES)
    assert sorted(t for line in trial_lines for t in line) == sorted(
        t for t in wf.tasks if t.startswith("trial-"))
    # a big partition: one element per trial, long trials spread over it
    jobs = _auto_plan(wf, monkeypatch, cpus=500)
    assert sum(len(j.lines) for j in jobs if j.task_ids[0].startswith("trial-")) == 200
