"""A node lost mid-task: SLURM requeues the job, the task runs again, nothing is lost."""

from __future__ import annotations

import json
import subprocess
import threading
import time

import pytest
from conftest import requires_or_fail, slurm_answers
from helpers import SleepyClassifier, assert_same_results, iris

from mempamal import Experiment, load_results

pytestmark = [pytest.mark.slurm, pytest.mark.slow,
              requires_or_fail(slurm_answers(), "no SLURM cluster answers (scontrol)")]


def _node() -> str:
    return subprocess.run(["sinfo", "--noheader", "--format=%N"], capture_output=True,
                          text=True, check=True).stdout.split()[0]


def _scontrol(*args, check=True):
    return subprocess.run(["scontrol", "update", *args], check=check, capture_output=True,
                          text=True)


def _node_state(node: str) -> str:
    return subprocess.run(["sinfo", "--noheader", "--nodes", node, "--format=%T"],
                          capture_output=True, text=True).stdout.strip()


def _bring_back(node: str, timeout: float = 60.0) -> str:
    """Resume the node (SLURM may have returned it to service already); its state."""
    deadline = time.monotonic() + timeout
    state = _node_state(node)
    while time.monotonic() < deadline:
        if not any(word in state for word in ("down", "drain", "fail")):
            return state
        # "Invalid node state" when it is up again by itself: not an error
        _scontrol(f"nodename={node}", "state=resume", check=False)
        time.sleep(1)
        state = _node_state(node)
    return state


@pytest.fixture
def node():
    """The cluster's node, given back in service whatever the test did to it."""
    name = _node()
    yield name
    assert not any(w in _bring_back(name) for w in ("down", "drain", "fail")), \
        f"node {name} did not come back: {_node_state(name)}"


def _lose_the_node_mid_task(wf, node, events):
    """Down the node while a fit runs, then bring it back and let the requeue start."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        running = [tid for tid in wf.tasks if wf.workdir.meta_file(tid).exists() and json.loads(
            wf.workdir.meta_file(tid).read_text()).get("state") == "running"]
        if running:
            events["killed"] = running
            break
        time.sleep(0.2)
    else:
        return
    try:
        _scontrol(f"nodename={node}", "state=down", "reason=mempamal-node-lost-test")
        time.sleep(2)
    finally:
        events["node_after"] = _bring_back(node)
    # SLURM holds a requeued job back for a while (BeginTime): start it now
    time.sleep(1)
    jobs = subprocess.run(["squeue", "--noheader", "--format=%i %r"], capture_output=True,
                          text=True).stdout.split("\n")
    for line in jobs:
        if line.strip().endswith("BeginTime"):
            subprocess.run(["scontrol", "update", f"jobid={line.split()[0]}",
                            "StartTime=now"], capture_output=True)


def test_a_node_lost_mid_task_is_requeued_and_the_task_runs_again(tmp_path, node):
    X, y = iris()
    exp = Experiment(SleepyClassifier(delay=1.0), param_grid={"C": [0.1, 1.0]}, cv=2,
                     inner_cv=2)
    wf = exp.compile(tmp_path / "w", X, y, chunk_size=2)
    events: dict = {}
    saboteur = threading.Thread(target=_lose_the_node_mid_task, args=(wf, node, events))
    saboteur.start()
    wf.run("slurm", poll_interval=0.5, progress=False, tasks_per_job=1)
    saboteur.join()
    assert events.get("killed"), "no task was running when the node should have been lost"
    attempts = {tid: json.loads(wf.workdir.meta_file(tid).read_text())["attempt"]
                for tid in events["killed"]}
    assert max(attempts.values()) >= 2, attempts  # it ran again after the requeue
    local = Experiment(SleepyClassifier(delay=0.0), param_grid={"C": [0.1, 1.0]}, cv=2,
                       inner_cv=2).compile(tmp_path / "local", X, y, chunk_size=2)
    local.run("local", n_jobs=2, progress=False)
    assert_same_results(load_results(wf.workdir.root), load_results(local.workdir.root))
