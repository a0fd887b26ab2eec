"""A model-based sweep submitted whole to a real SLURM, with nothing of mempamal alive.

The DAG of a search in rounds is static: ``suggest-r0 -> trials -> suggest-r1
-> ... -> aggregate`` is submitted at once, each suggest job depending on
its round, and the submitting process returns. During the run, the only
mempamal processes are SLURM's job steps; the trial table equals the local
executor's and a live Optuna study's in the same rounds.
"""

from __future__ import annotations

import os
import time

import adaptive_funcs
import pytest
from conftest import requires_or_fail, slurm_answers
from test_adaptive_sweep import (
    SPACE,
    _check_against_oracle,
    _table,
    check_killed_trial_then_resume,
    killed_trial_sweep,
    oracle,
)

from mempamal import Sweep, load_results

pytestmark = [pytest.mark.slurm, pytest.mark.slow,
              requires_or_fail(slurm_answers(), "no SLURM cluster answers (sbatch/squeue)")]


def _proc(pid: str, what: str) -> str:
    with open(f"/proc/{pid}/{what}", "rb") as fh:
        return fh.read().decode(errors="replace")


def _ancestors(pid: str) -> list[str]:
    """Command names from ``pid``'s parent up to init."""
    names = []
    while pid not in ("0", "1"):
        stat = _proc(pid, "stat")
        pid = stat.rsplit(")", 1)[1].split()[1]  # the field after the state: ppid
        if pid in ("0", "1"):
            break
        names.append(_proc(pid, "comm").strip())
    return names


def _processes_of(root) -> dict[str, list[str]]:
    """``{pid: ancestors}`` of every process working in ``root`` or naming it."""
    out = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cwd = os.readlink(f"/proc/{pid}/cwd")
            argv = _proc(pid, "cmdline")
            if cwd.startswith(str(root)) or str(root) in argv:
                out[pid] = _ancestors(pid)
        except (OSError, IndexError):
            continue  # ended meanwhile
    return out


def _children_of_me() -> list[str]:
    me, out = str(os.getpid()), []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if _proc(pid, "stat").rsplit(")", 1)[1].split()[1] == me:
                out.append(pid)
        except (OSError, IndexError):
            continue
    return out


def test_whole_search_submitted_at_once_runs_with_no_mempamal_process_alive(tmp_path):
    def sweep():
        given = [{"x": adaptive_funcs.FAIL_X, "y": 1.0, "act": "tanh"}]  # fails, round 0
        return Sweep(adaptive_funcs.branin, param_distributions=SPACE, search="tpe",
                     n_iter=12, batch_size=4, random_state=11, candidates=given,
                     metric="loss", mode="min")

    local = sweep().compile(tmp_path / "local")
    local.run("local", n_jobs=2, progress=False)
    expected = load_results(tmp_path / "local")

    root = tmp_path / "slurm"
    wf = sweep().compile(root)
    before = set(_children_of_me())  # e.g. the local executor's idle workers
    records = wf.submit("slurm", poll_interval=0.5, progress=False)
    assert records, "nothing submitted"
    # everything is in the queue now: suggest-r2 and the aggregate too
    assert not wf.done() or wf.done() <= {"suggest-r0"}
    seen_steps = 0
    deadline = time.monotonic() + 300
    while wf.done() != set(wf.tasks):
        assert time.monotonic() < deadline, f"not finished: {sorted(set(wf.tasks) - wf.done())}"
        started = sorted(set(_children_of_me()) - before)
        assert not started, f"submit left processes alive: {started}"
        for pid, ancestors in _processes_of(root).items():
            # a task process is a job step: slurmstepd is one of its ancestors
            assert any(a.startswith("slurmstepd") for a in ancestors), (pid, ancestors)
            seen_steps += 1
        time.sleep(0.2)
    assert seen_steps > 0, "no job step seen running: the process check saw nothing"
    got = load_results(root)
    assert _table(got).equals(_table(expected))
    _check_against_oracle(got, oracle("tpe", 12, 4, 11, enqueued=[
        {"x": adaptive_funcs.FAIL_X, "y": 1.0, "act": "tanh"}]))
    assert list(got.trials["state"]).count("failed") == 1


def test_nested_cv_with_tpe_on_slurm_equals_local(tmp_path):
    from test_adaptive_nested_cv import _data, _experiment

    X, y = _data()
    # small: each dependency level costs SLURM's scheduling latency
    small = {"cv": 2, "inner_cv": 2, "n_iter": 4, "batch_size": 2}
    local = _experiment(**small).compile(tmp_path / "local", X, y)
    local.run("local", n_jobs=2, progress=False)
    wf = _experiment(**small).compile(tmp_path / "slurm", X, y)
    wf.run("slurm", poll_interval=0.5, progress=False)
    got, expected = load_results(tmp_path / "slurm"), load_results(tmp_path / "local")
    drop = ["mean_fit_time", "std_fit_time", "mean_score_time", "std_score_time"]
    assert got.cv_results.drop(columns=drop).equals(expected.cv_results.drop(columns=drop))
    assert got.best_params == expected.best_params
    assert list(got.test_scores()) == list(expected.test_scores())


def test_a_killed_trial_job_does_not_stop_the_search(tmp_path):
    """Trial 5's array element dies (SIGKILL): the next suggest job runs ``afterany``."""
    from mempamal.backends.slurm.commands import read_records

    wf = killed_trial_sweep().compile(tmp_path / "w")
    check_killed_trial_then_resume(wf, "slurm", poll_interval=0.5)
    text = (tmp_path / "w" / "slurm" / "submit.sh").read_text()
    assert "any:trial" in text  # the by-hand script says afterany too
    records = read_records(wf.workdir.backend_dir("slurm") / "jobs.tsv")
    assert any(r.stem.startswith("suggest-r2") for r in records)

