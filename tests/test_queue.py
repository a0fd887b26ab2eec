"""A queue of experiments on one machine, with no daemon: shared CPU slots."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
from helpers import SleepyClassifier, iris
from sklearn.model_selection import GridSearchCV, cross_validate

from mempamal import Experiment, load_results
from mempamal.runner import read_meta
from mempamal.workflow import Workflow


def _compile(path, delay=0.15):
    X, y = iris()
    exp = Experiment(SleepyClassifier(delay=delay), param_grid={"C": [0.1, 1.0]}, cv=2,
                     inner_cv=2)
    return exp.compile(path, X, y, chunk_size=1)


def _max_concurrency(spans) -> int:
    events = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])
    now = peak = 0
    for _, step in events:
        now += step
        peak = max(peak, now)
    return peak


def _submit(work, env):
    return subprocess.Popen([sys.executable, "-m", "mempamal", "resume", str(work), "-j", "2",
                             "-o", "progress=false"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def test_three_experiments_never_run_more_tasks_than_cpu_slots(tmp_path):
    env = {**os.environ, "MEMPAMAL_SLOTS_DIR": str(tmp_path / "slots"),
           "MEMPAMAL_CPU_SLOTS": "2"}
    flows = [_compile(tmp_path / f"w{k}") for k in range(3)]
    procs = []
    for wf in flows:
        procs.append(_submit(wf.workdir.root, env))
        time.sleep(0.3)  # submission order
    seen_queue = subprocess.run([sys.executable, "-m", "mempamal", "queue", "--json"],
                                env=env, capture_output=True, text=True)
    for p in procs:
        assert p.wait(timeout=300) == 0, p.stderr.read()
    listed = json.loads(seen_queue.stdout)
    assert 1 <= len(listed) <= 3 and all("workdir" in t for t in listed)
    spans, starts = [], []
    for wf in flows:
        metas = [read_meta(wf.workdir, t) for t in wf.tasks]
        assert all(m["state"] == "done" for m in metas)
        spans += [(m["start"], m["end"]) for m in metas]
        starts.append(min(m["start"] for m in metas))
    assert _max_concurrency(spans) <= 2
    assert starts == sorted(starts)  # served in submission order
    X, y = iris()
    oracle = cross_validate(GridSearchCV(SleepyClassifier(delay=0.0), {"C": [0.1, 1.0]}, cv=2),
                            X, y, cv=2)
    for wf in flows:  # the same results as alone: sklearn's
        np.testing.assert_allclose(load_results(wf.workdir.root).test_scores(),
                                   oracle["test_score"], rtol=0, atol=1e-12)


def test_a_killed_executor_frees_its_slots(tmp_path):
    env = {**os.environ, "MEMPAMAL_SLOTS_DIR": str(tmp_path / "slots"),
           "MEMPAMAL_CPU_SLOTS": "1"}
    slow = _compile(tmp_path / "slow", delay=2.0)
    proc = _submit(slow.workdir.root, env)
    deadline = time.time() + 60
    while not any(read_meta(slow.workdir, t) for t in slow.tasks):
        assert time.time() < deadline, "the first run never started"
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)  # executor and workers, holding the only slot
    proc.wait()
    fast = _compile(tmp_path / "fast", delay=0.0)
    started = time.time()
    other = _submit(fast.workdir.root, env)
    assert other.wait(timeout=120) == 0, other.stderr.read()
    assert time.time() - started < 60
    assert Workflow.load(fast.workdir.root).pending() == []
    listed = subprocess.run([sys.executable, "-m", "mempamal", "queue", "--json"], env=env,
                            capture_output=True, text=True)
    assert json.loads(listed.stdout) == []  # the dead run's ticket is gone


def test_the_queued_task_takes_the_slots_of_the_task_that_ends(tmp_path, monkeypatch):
    """The one task waiting in the pool's queue holds no slot until a worker frees.

    Without this, with every CPU slot taken by this run's own tasks, the queued
    task could not be handed over before the parent saw a task end, released
    its slot and took it again: each worker idled between two tasks.
    """
    from mempamal import slots

    monkeypatch.setenv("MEMPAMAL_SLOTS_DIR", str(tmp_path / "slots"))
    monkeypatch.setenv("MEMPAMAL_CPU_SLOTS", "2")
    acquired, held, peak = [], set(), [0]
    real_acquire, real_release = slots.MachineSlots.try_acquire, slots.MachineSlots.release

    def try_acquire(self, cpus, gpus=()):
        names = real_acquire(self, cpus, gpus)
        acquired.append(names)
        held.update(names or [])
        peak[0] = max(peak[0], len(held))
        return names

    def release(self, names):
        held.difference_update(names)
        real_release(self, names)

    monkeypatch.setattr(slots.MachineSlots, "try_acquire", try_acquire)
    monkeypatch.setattr(slots.MachineSlots, "release", release)
    # ten independent fits, then the aggregate: a task always waits in the
    # queue but at the start and at the aggregate (with selects, the balanced
    # end of a nested run makes more tasks start right after their dependencies)
    X, y = iris()
    exp = Experiment(SleepyClassifier(delay=0.02), cv=10, inner_cv=None)
    wf = exp.compile(tmp_path / "w", X, y)
    assert len(wf.tasks) == 11
    assert wf.run("local", n_jobs=2, progress=False).ok
    assert all(read_meta(wf.workdir, t)["state"] == "done" for t in wf.tasks)
    metas = [read_meta(wf.workdir, t) for t in wf.tasks]
    assert _max_concurrency([(m["start"], m["end"]) for m in metas]) <= 2
    assert peak[0] == 2 and not held  # never more than the machine's slots; all given back
    # the two first tasks took slots; the others mostly inherited theirs
    assert len([a for a in acquired if a]) < len(wf.tasks) / 2, acquired


def _ticket_writes(monkeypatch, tmp_path) -> list[tuple[float, dict]]:
    from mempamal import slots

    monkeypatch.setenv("MEMPAMAL_SLOTS_DIR", str(tmp_path / "slots"))
    monkeypatch.setenv("MEMPAMAL_CPU_SLOTS", "2")
    written = []
    real_publish = slots.MachineSlots._publish

    def publish(self):
        real_publish(self)
        written.append((time.time(), json.loads(self.ticket.read_text())))

    monkeypatch.setattr(slots.MachineSlots, "_publish", publish)
    return written


def _ten_fits(tmp_path, delay):
    X, y = iris()
    return Experiment(SleepyClassifier(delay=delay), cv=10, inner_cv=None).compile(
        tmp_path / "w", X, y)


def test_the_ticket_is_not_written_at_every_task(tmp_path, monkeypatch):
    """Slots held and tasks done are shown at most every PUBLISH_SECONDS.

    Written at every task, the ticket cost the parent about 0.5 ms of CPU
    each time, taken from the workers when every core runs a task (W2: 56
    tasks of 85 ms).
    """
    from mempamal import slots

    written = _ticket_writes(monkeypatch, tmp_path)
    wf = _ten_fits(tmp_path, delay=0.02)
    t0 = time.monotonic()
    assert wf.run("local", n_jobs=2, progress=False).ok
    elapsed = time.monotonic() - t0
    assert all(read_meta(wf.workdir, t)["state"] == "done" for t in wf.tasks)
    # the first write, then one per PUBLISH_SECONDS at most (it was 18 here)
    assert 1 <= len(written) <= 2 + elapsed / slots.PUBLISH_SECONDS, (len(written), elapsed)


def test_the_ticket_shows_each_task_done_within_publish_seconds(tmp_path, monkeypatch):
    """Even when no other task ends then: the executor looks again when it is due."""
    from mempamal import slots

    monkeypatch.setattr(slots, "PUBLISH_SECONDS", 0.2)
    written = _ticket_writes(monkeypatch, tmp_path)
    X, y = iris()
    # two workers, four 1.5 s tasks: the first two end together, then no
    # task ends for 1.5 s; without looking again when due, the second end
    # would wait for the next two to be written
    wf = Experiment(SleepyClassifier(delay=1.5), cv=4, inner_cv=None).compile(
        tmp_path / "w", X, y)
    assert wf.run("local", n_jobs=2, progress=False).ok
    ends = sorted(read_meta(wf.workdir, t)["end"] for t in wf.tasks if t != "aggregate")
    assert [info["done"] for _, info in written] == sorted(info["done"] for _, info in written)
    for k, end in enumerate(ends[:-1]):  # the last: the run ends (and the ticket goes)
        shown = [t for t, info in written if info["done"] >= k + 1]
        # the parent hears of it, then writes it at most 0.2 s after the last
        # write (0.6 s of slack for a loaded machine, well under 1.5 s)
        assert shown and shown[0] - end < 0.2 + 0.6, (k, end, written)
    assert all(info["held"] <= 2 and not info["waiting"] for _, info in written)
