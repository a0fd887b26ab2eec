"""Run a downstream plain job's tasks in the array element that ends last.

When the last fit element of W1 ends, SLURM still has to notice, start the
select job on a node and give it an interpreter that imports scikit-learn
again: ~2 s on an idle one-node cluster, the largest cost of a SLURM run after
the work itself. The element that ends last already has all of that, so it
runs the downstream job's line itself (``run-task ... --then slurm/STEM.tasks``).

The downstream job is still submitted and still depends on its upstream jobs:
it starts after them, finds its tasks done and exits. Nothing depends on this
shortcut having happened, so every way it can fail to happen is safe:

- an element that is not the last sees a dependency not done yet and leaves
  (each element writes its outputs before it looks, so at least the last one
  sees everything done);
- two elements ending together take a lock, and the second finds the tasks
  done once it gets it;
- too little of the job's time limit left, squeue not answering, or a failed
  tail task: the job runs them (again), as it would have.

A tail task's failure does not change the element's exit status: its own
tasks succeeded, and the downstream job must still start to try again.
:func:`tail_jobs` decides, at write time, which jobs may be run this way: plain
jobs whose ``#SBATCH`` requests equal those of the job that would run them.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

from filelock import FileLock, Timeout

#: margin kept from the job's time limit: the tail's estimate times this...
TIME_FACTOR = 2.0
#: ... plus these seconds (or this much when nothing was timed)
MARGIN_SECONDS = 120.0
UNTIMED_SECONDS = 600.0
#: directives that differ from job to job without changing what it may run
_OWN = ("--job-name=", "--output=", "--time=")

__all__ = ["run_tails", "tail_jobs", "this_job", "time_left"]


def tail_jobs(jobs, directives_of) -> dict[str, list[str]]:
    """``{stem: [stems of the plain jobs its elements may run when they end last]}``.

    A plain job qualifies under each job it depends on (``afterok`` or
    ``afterany``) when both ask SLURM for the same resources (``directives_of``:
    stem -> ``#SBATCH`` arguments); the time limit is checked when it runs.
    Then the tails of a tail, in dependency order: nested CV's fit elements
    end with their split's select and, when it is the last, the aggregate.
    ``jobs`` are in dependency order.
    """
    resources = {job.stem: sorted(d for d in directives_of(job.stem) if not d.startswith(_OWN))
                 for job in jobs}
    direct: dict[str, list[str]] = {job.stem: [] for job in jobs}
    for job in jobs:
        if job.array:
            continue
        for up in job.deps:
            if resources[up] == resources[job.stem]:
                direct[up].append(job.stem)
    out: dict[str, list[str]] = {}
    for job in reversed(jobs):  # a tail's own tails are known before it is used
        out[job.stem] = list(dict.fromkeys(
            s for tail in direct[job.stem] for s in (tail, *out[tail])))
    return out


def run_tails(root, task_files, run_line) -> None:
    """After a line succeeded: run each file's (only) line here if all its deps are done.

    ``run_line(task_ids) -> exit status`` runs tasks in this process. Files
    are taken in order, so a tail may use what the one before produced.
    """
    from ...context import load_workflow
    from ...runner import all_done

    workflow = load_workflow(root)
    clock = _Deadline()
    for path in task_files:
        with open(path, encoding="utf-8") as fh:
            ids = fh.read().split()
        tasks = [workflow.tasks[t] for t in ids if t in workflow.tasks]
        if len(tasks) != len(ids):
            continue  # a task file of another compile: left to its job
        inside = set(ids)
        deps = {d for t in tasks for d in t.deps if d not in inside}
        if not all_done(root, deps):  # not the last: it, or the job, runs them
            continue
        if all_done(root, ids):  # already run
            continue
        lock = FileLock(f"{path}.lock", timeout=0)
        try:
            lock.acquire()
        except Timeout:
            continue  # another element ending now runs them
        try:
            if clock.allows(workflow, ids):
                run_line(ids)  # a failure is the job's to retry
        finally:
            lock.release()


class _Deadline:
    """The job's time left, asked of squeue once, then counted down here."""

    def __init__(self) -> None:
        self.end: float | None = None
        self.asked = False

    def allows(self, workflow, ids) -> bool:
        if not self.asked:
            self.asked = True
            left = time_left(this_job())
            self.end = None if left is None else time.monotonic() + left
        estimates = workflow.estimated_seconds()
        need = (UNTIMED_SECONDS if estimates is None
                else TIME_FACTOR * sum(estimates[t] for t in ids) + MARGIN_SECONDS)
        left = None if self.end is None else self.end - time.monotonic()
        if left is None or left < need:
            print(f"mempamal: {len(ids)} downstream task(s) left to their own job "
                  f"(time left: {'unknown' if left is None else f'{left:.0f} s'}, "
                  f"needed {need:.0f} s)", file=sys.stderr)
            return False
        return True


def this_job() -> str | None:
    """The id squeue knows the running job by.

    An array element is ``ARRAY_INDEX``: the array's own id is also one of its
    elements' ids, and squeue lists every element for it.
    """
    array, index = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array and index:
        return f"{array}_{index}"
    return os.environ.get("SLURM_JOB_ID")


def time_left(job: str | None) -> float | None:
    """Seconds before SLURM's time limit ends ``job`` (inf: none); None if unknown."""
    if not job:
        return None
    try:
        out = subprocess.run(["squeue", "--noheader", "--jobs", job, "--format=%L"],
                             capture_output=True, text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    lefts = [parse_time_left(line.strip()) for line in out.splitlines() if line.strip()]
    return None if not lefts or None in lefts else min(lefts)


_LEFT = re.compile(r"^(?:(\d+)-)?(?:(\d+):)?(\d+):(\d+)$")


def parse_time_left(text: str) -> float | None:
    """Seconds in squeue's ``%L``: ``[D-][HH:]MM:SS``, ``UNLIMITED`` or ``NOT_SET``."""
    if text in ("UNLIMITED", "NOT_SET"):
        return float("inf")
    m = _LEFT.match(text)
    if m is None:
        return None
    days, hours, minutes, seconds = (int(g or 0) for g in m.groups())
    return float(((days * 24 + hours) * 60 + minutes) * 60 + seconds)
