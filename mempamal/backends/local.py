"""The local executor: the workflow's DAG on a pool of persistent workers.

Workers are long-lived processes (one per job) that import scikit-learn
once, load the experiment once and memory-map the data: with fits of a few
milliseconds, a fresh interpreter per task (about a second to import
scikit-learn) would cost more than the work. ``subprocess=True`` instead runs
every task as its real shell command, as a cluster does.
"""

from __future__ import annotations

import heapq
import os
import subprocess
import time
import warnings
from collections import Counter

# BrokenExecutor (the base of BrokenExecutor) keeps multiprocessing and
# loky out of `mempamal status`, which instantiates this backend too
from concurrent.futures import FIRST_COMPLETED, BrokenExecutor, Future, ThreadPoolExecutor, wait

from ..errors import ValidationError
from ..lock import run_lock
from ..runner import TaskOutcome, read_meta, run_task
from .base import Backend, RunReport, resume_in_background
from .ordering import depths

#: a task whose worker died this many times is failed, not retried again
MAX_WORKER_DEATHS = 2
#: idle workers exit after this long
WORKER_IDLE_SECONDS = 120
#: seconds between two looks at the machine's slots while other runs hold them
POLL_SECONDS = 0.05


class LocalBackend(Backend):
    """Run the workflow on this machine.

    Options
    -------
    n_jobs : int
        Parallel workers (default: the number of CPUs; -1 also means that).
    subprocess : bool
        Run each task as its shell command in a fresh interpreter.
    progress : bool or None
        Show a progress bar (None: when standard error is a terminal).
    python : str or None
        Interpreter for subprocess mode (default: the one compiled in).
    share_machine : bool
        Share the machine's CPUs and GPUs with the other local runs of this
        user (:mod:`mempamal.slots`): later runs wait for free slots, in
        submission order. False: run as if alone.
    """

    name = "local"
    options = {"n_jobs": None, "subprocess": False, "progress": None, "python": None,
               "share_machine": True}

    def validate(self) -> None:
        n = self.opts["n_jobs"]
        if n is None or n == -1:
            self.opts["n_jobs"] = os.cpu_count() or 1
        elif not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ValidationError(f"n_jobs must be a positive int or -1, got {n!r}")
        if not isinstance(self.opts["share_machine"], bool):
            raise ValidationError("share_machine must be true or false, got "
                                  f"{self.opts['share_machine']!r}")

    def submit(self, workflow):
        """Run in a detached background process; return its ``Popen``."""
        return resume_in_background(workflow, self.name, {
            k: v for k, v in self.opts.items() if k != "progress"})

    def run(self, workflow) -> RunReport:
        """Run every pending task, dependencies first; wait; raise on failures."""
        wd = workflow.workdir
        check_gpus(workflow.pending(), machine_gpus())
        with run_lock(wd, f"local run (n_jobs={self.opts['n_jobs']})"):
            wd.remove_temporaries()
            report = _DagRun(workflow, self.opts).execute()
        return report.raise_for_failures()


class _DagRun:
    """Submit each task as soon as its dependencies are done."""

    def __init__(self, workflow, opts) -> None:
        self.wf = workflow
        self.opts = opts
        self.root = str(workflow.workdir.root)
        done = workflow.done()
        self.todo = {tid: t for tid, t in workflow.tasks.items() if tid not in done}
        # unfinished dependencies of each pending task
        self.waiting = {tid: {d for d in t.deps if d not in done}
                        for tid, t in self.todo.items()}
        self.children: dict[str, list[str]] = {}
        for tid, t in self.todo.items():
            for d in t.deps:
                self.children.setdefault(d, []).append(tid)
        self.report = RunReport()
        self.since = time.time()  # a meta record older than this is another run's
        self.deaths: dict[str, int] = {}
        # GPU tasks get devices of their own, in a fresh interpreter each
        # (CUDA reads CUDA_VISIBLE_DEVICES once per process)
        self.free_gpus = machine_gpus()
        self.held: dict[Future, list[str]] = {}
        self.slot_of: dict[Future, list[str]] = {}  # machine slots of each task in flight
        # (future, CPUs it needs) of the queued task that takes the slots of
        # the first task to end (see _can_borrow)
        self.borrower: tuple[Future, int] | None = None
        # depth in the DAG (0 for tasks without dependencies), in workflow order
        self.order = {tid: k for k, tid in enumerate(workflow.tasks)}
        self.depth = depths(workflow.tasks)
        # the join each task feeds (a fit: its split's select), how many tasks
        # not started yet feed each (depth, join), and how many such joins
        # each depth has (see _pop)
        self.join = {tid: (self.depth[tid], tuple(self.children.get(tid, ())))
                     for tid in self.todo}
        self.unstarted: Counter = Counter()
        self.joins_at: Counter = Counter()
        for tid in self.waiting:
            self._count(tid, +1)

    def execute(self) -> RunReport:
        if not self.todo:
            return self.report
        from .progress import RunProgress

        self.slots = _machine_slots(self.root, len(self.todo), self.opts["share_machine"])
        try:
            with RunProgress(len(self.todo), self.opts["progress"]) as bar:
                self.bar = bar
                self._execute_rounds()
        finally:
            if self.slots is not None:
                self.slots.close()
        return self.report

    def _execute_rounds(self) -> None:
        while True:
            pool = self._pool()
            try:
                self._drive(pool)
                self.gpu_pool.shutdown(wait=True)
                if self.opts["subprocess"]:
                    pool.shutdown(wait=True)
                break
            except BrokenExecutor:
                # a worker died (OOM killer, segfault): retry what was in
                # flight on a fresh pool
                self._release_all()
                _forget_pool()
                continue
            except BaseException:
                _kill_pool(pool)
                raise

    def _pool(self):
        n = min(self.opts["n_jobs"], len(self.todo))
        self.gpu_pool = ThreadPoolExecutor(max(1, len(self.free_gpus)))
        if self.opts["subprocess"]:
            return ThreadPoolExecutor(n)
        return _process_pool(n)

    def _drive(self, pool) -> None:
        """Keep the pool busy, choosing each next task by priority.

        Only ``n_jobs + 1`` tasks are handed to the pool at a time (one queued
        so a worker never waits for the next one); the rest wait in a heap. A
        task deeper in the DAG goes first: a select starts as soon as its fits
        are done instead of queueing behind every other fit, so outer splits
        finish one after the other and the run does not end with a tail of
        selects on one core.
        """
        running: dict[Future, str] = {}
        ready = [self._priority(t) for t, w in self.waiting.items() if not w]
        heapq.heapify(ready)
        while ready or running:
            blocked = self._start_ready(pool, ready, running)
            timeout = self._look_again_in(blocked)
            finished = wait(running, timeout=timeout, return_when=FIRST_COMPLETED)[0] \
                if running else _sleep(timeout)
            for fut in finished:
                tid = running.pop(fut)
                self.free_gpus.extend(self.held.pop(fut, []))
                self._release(fut)
                try:
                    outcome = fut.result()
                except BrokenExecutor:
                    self._worker_died(tid, running)
                    raise
                for child in self._finished(tid, outcome):
                    heapq.heappush(ready, self._priority(child))

    def _look_again_in(self, blocked: bool) -> float | None:
        """Seconds to wait for a task at most: None when only a task's end matters.

        Waiting for slots other experiments hold: look again soon. A change
        of the slots' ticket not yet written: look again when it is due.
        """
        due = self.slots.due_in() if self.slots is not None else None
        if blocked:
            return POLL_SECONDS if due is None else min(POLL_SECONDS, due)
        return due

    def _pop(self, ready: list) -> tuple:
        """The next ready task: the best priority, but at the end of a run the
        one whose join has the most tasks not started.

        Tasks go in workflow order, so outer splits finish one after the other
        and each select runs while the next split's fits keep the other cores
        busy. But the last split's select would then run alone, every other
        core idle (W3: a 2.2 s refit). Once no more joins have tasks to start
        than there are workers, taking from the fullest one first makes them
        end together, and their selects run side by side. The Dask backend
        plays this rule ahead of time (:mod:`mempamal.backends.ordering`).
        """
        best = heapq.heappop(ready)
        if not ready or not 2 <= self.joins_at[-best[0]] <= self.opts["n_jobs"]:
            return best
        same = [best]  # the ready tasks as deep as the best (fits, when it is one)
        while ready and ready[0][0] == best[0]:
            same.append(heapq.heappop(ready))
        pick = min(same, key=lambda p: (-self.unstarted.get(self.join.get(p[-1]), 0), p))
        for p in same:
            if p is not pick:
                heapq.heappush(ready, p)
        return pick

    def _count(self, tid: str, step: int) -> None:
        key = self.join.get(tid)
        if key is None or not key[1]:
            return  # feeds nothing (the aggregate), or added by a recompute
        before = self.unstarted[key]
        self.unstarted[key] += step
        if (before == 0) != (self.unstarted[key] == 0):
            self.joins_at[key[0]] += step

    def _unqueue(self, tid: str) -> bool:
        """Take ``tid`` off the tasks waiting to start; whether it was there."""
        if tid not in self.waiting:
            return False
        del self.waiting[tid]
        self._count(tid, -1)
        return True

    def _queue(self, tid: str, deps: set) -> None:
        if tid not in self.waiting:
            self._count(tid, +1)
        self.waiting[tid] = deps

    def _start_ready(self, pool, ready: list, running: dict) -> bool:
        """Start ready tasks, best first, while cores (and devices) allow.

        ``n_jobs`` tasks run at once; one more CPU task waits in the pool's
        queue so that a worker never idles between two tasks. A GPU task
        waits for free devices, letting CPU tasks behind it start. Every task
        in flight holds its machine slots (see :mod:`mempamal.slots`).
        Returns True when a task could start but for slots other
        experiments hold.
        """
        n_jobs = self.opts["n_jobs"]
        deferred, blocked = [], False
        while ready:
            prio = self._pop(ready)
            tid = prio[-1]
            task = self.wf.tasks[tid]
            on_gpu = sum(1 for f in running if f in self.held)
            need = gpus_of(task)
            if need:
                if need > len(self.free_gpus) or len(running) >= n_jobs:
                    deferred.append(prio)
                    continue
                slots = self._acquire(task, self.free_gpus[:need])
                if slots is None:
                    deferred.append(prio)
                    blocked = True
                    continue
                fut = self._start_gpu(tid, need)
            else:
                if len(running) - on_gpu >= n_jobs - on_gpu + (0 if on_gpu else 1):
                    deferred.append(prio)
                    break
                if len(running) >= n_jobs and self._can_borrow(task, running):
                    # the one queued task: it can only start when one of ours
                    # ends, so it takes that task's slots then (see _release)
                    # instead of waiting here for the parent to pass them on
                    fut = self._start(pool, tid)
                    running[fut] = tid
                    self.slot_of[fut] = []
                    self.borrower = (fut, self._cpus(task))
                    continue
                slots = self._acquire(task, [])
                if slots is None:
                    deferred.append(prio)
                    blocked = True
                    break
                fut = self._start(pool, tid)
            running[fut] = tid
            self.slot_of[fut] = slots
        for prio in deferred:
            heapq.heappush(ready, prio)
        if self.slots is not None:
            self.slots.publish(waiting=blocked and len(running) < n_jobs)
        return blocked

    def _cpus(self, task) -> int:
        return min(int(task.resources.get("cpus") or 1), self.slots.n_cpus)

    def _acquire(self, task, gpus: list[str]) -> list[str] | None:
        if self.slots is None:
            return []
        return self.slots.try_acquire(self._cpus(task), gpus)

    def _can_borrow(self, task, running: dict) -> bool:
        """Whether ``task`` may wait in the pool's queue holding no slot yet.

        Only with shared slots, one such task at a time, and when every task
        in flight holds at least the CPUs it needs, so that whichever ends
        first frees enough for it.
        """
        if self.slots is None or self.borrower is not None:
            return False
        need = self._cpus(task)
        return all(len(_cpu_slots(self.slot_of[f])) >= need for f in running
                   if f not in self.held)

    def _release(self, fut) -> None:
        names = self.slot_of.pop(fut, [])
        if self.slots is None:
            return
        if self.borrower is not None and self.borrower[0] is not fut and names:
            # the queued task now runs on the worker ``fut`` left: hand over
            borrower, need = self.borrower
            handed = _cpu_slots(names)[:need]
            self.slot_of[borrower] = handed
            names = [n for n in names if n not in handed]
            self.borrower = None
        elif self.borrower is not None and self.borrower[0] is fut:
            self.borrower = None
        if names:
            self.slots.release(names)
        self.slots.task_done()

    def _release_all(self) -> None:
        self.borrower = None
        for fut in list(self.slot_of):
            names = self.slot_of.pop(fut)
            if self.slots is not None and names:
                self.slots.release(names)

    def _start_gpu(self, tid: str, need: int) -> Future:
        self._unqueue(tid)
        devices, self.free_gpus = self.free_gpus[:need], self.free_gpus[need:]
        fut = self.gpu_pool.submit(_run_subprocess, self.root, self.wf.tasks[tid],
                                   self.opts["python"], {"CUDA_VISIBLE_DEVICES": ",".join(devices)})
        self.held[fut] = devices
        return fut

    def _priority(self, tid: str) -> tuple:
        return (-self.depth[tid], self.order[tid], tid)

    def _start(self, pool, tid: str) -> Future:
        self._unqueue(tid)
        if self.opts["subprocess"]:
            return pool.submit(_run_subprocess, self.root, self.wf.tasks[tid],
                               self.opts["python"])
        return pool.submit(run_task, self.root, tid)

    def _finished(self, tid: str, outcome: TaskOutcome) -> list[str]:
        """Record an outcome; return the tasks now ready to start."""
        if outcome.error_type == "CorruptOutputError" and self.deaths.get(tid, 0) < 2:
            return self._recompute_inputs(tid)
        self.report.executed.append(tid)
        self.bar.advance(outcome.ok)
        if not outcome.ok:
            self.report.failures[tid] = outcome.error or "failed"
            blocked = self.wf.blocked_by([tid]) - {tid}
            skipped = [b for b in blocked if self._unqueue(b)]
            self.report.not_run.extend(skipped)
            self.bar.skip(len(skipped))
            # what needs it only to have ended (soft_deps) goes on below
        ready = []
        for child in self.children.get(tid, []):
            deps = self.waiting.get(child)
            if deps is None:
                continue
            deps.discard(tid)
            if not deps:
                ready.append(child)
        return ready

    def _recompute_inputs(self, tid: str) -> list[str]:
        """A dependency's output was corrupt (and deleted): rerun it, then ``tid``."""
        self.deaths[tid] = self.deaths.get(tid, 0) + 1
        missing = {t.id for t in self.wf.pending()} & set(self.wf.tasks[tid].deps)
        for dep in missing:
            siblings = self.children.setdefault(dep, [])
            if tid not in siblings:
                siblings.append(tid)
            self.todo[dep] = self.wf.tasks[dep]
        self._queue(tid, set(missing))
        self.bar.add_total(len(missing))
        return sorted(missing)

    def _worker_died(self, tid: str, running: dict) -> None:
        """Put in-flight tasks back; fail those that broke a worker too often.

        A task counts a death only if it had started (its meta record says
        running): the task queued behind the others never ran, it cannot be
        what killed the worker.
        """
        for other in [tid, *running.values()]:
            meta = read_meta(self.wf.workdir, other) or {}
            started = meta.get("state") == "running" and meta.get("start", 0) >= self.since
            self.deaths[other] = self.deaths.get(other, 0) + started
            if self.deaths[other] >= MAX_WORKER_DEATHS:
                self._finished(other, TaskOutcome(
                    other, False, error="its worker process died (killed, out of "
                    "memory or crashed)", error_type="WorkerDied"))
            else:
                self._queue(other, set())
        running.clear()


def _cpu_slots(names: list[str]) -> list[str]:
    """The CPU slots among machine slot names (the others are GPUs)."""
    return [n for n in names if n.startswith("cpu-")]


def _run_subprocess(root: str, task, python, env: dict | None = None) -> TaskOutcome:
    """Run a task's real shell command from the workdir (with ``env`` added)."""
    proc = subprocess.run(task.command(python), cwd=root, stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          check=False, env={**os.environ, **env} if env else None)
    if proc.returncode == 0:
        return TaskOutcome(task.id, True)
    from ..workdir import Workdir

    meta = read_meta(Workdir(root), task.id) or {}
    why = meta.get("error") or f"exit status {proc.returncode}: {proc.stdout[-500:]}"
    return TaskOutcome(task.id, False, error=why, error_type=meta.get("error_type"))


def _sleep(seconds) -> set:
    time.sleep(seconds or POLL_SECONDS)
    return set()


def _machine_slots(root: str, total: int, enabled: bool):
    """The run's share of the machine's slots (None: shared with nobody)."""
    if not enabled:
        return None
    from ..slots import MachineSlots

    try:
        return MachineSlots(root, total)
    except OSError as exc:  # an unwritable home, say: run alone, and say so
        warnings.warn(f"cannot use the machine's shared slots ({exc}); this run does "
                      "not coordinate with other local runs", stacklevel=3)
        return None


def gpus_of(task) -> int:
    """GPUs a task asks for (its ``gpus`` resource hint)."""
    return int(task.resources.get("gpus") or 0)


def machine_gpus() -> list[str]:
    """The GPU devices this machine lends to tasks, as ``CUDA_VISIBLE_DEVICES`` names them.

    The current ``CUDA_VISIBLE_DEVICES`` when it is set (SLURM sets it on a
    GPU allocation), otherwise the devices NVML reports (``nvidia-ml-py``).
    """
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [d.strip() for d in visible.split(",") if d.strip() and d.strip() != "-1"]
    try:
        import pynvml
    except ImportError:
        return []
    try:
        pynvml.nvmlInit()
        return [str(k) for k in range(pynvml.nvmlDeviceGetCount())]
    except Exception as exc:  # noqa: BLE001 - NVML present but failing
        warnings.warn(f"NVML is installed but failed ({exc}); CUDA_VISIBLE_DEVICES is not "
                      "set either: no GPU is lent to tasks", stacklevel=2)
        return []


def check_gpus(tasks, devices: list[str]) -> None:
    """Refuse, before the run, a task that needs more GPUs than the machine has."""
    for task in tasks:
        need = gpus_of(task)
        if need > len(devices):
            where = os.environ.get("CUDA_VISIBLE_DEVICES")
            seen = (f"CUDA_VISIBLE_DEVICES={where!r}" if where is not None
                    else "NVML (nvidia-ml-py)" if devices else "no CUDA_VISIBLE_DEVICES, no NVML")
            raise ValidationError(f"task {task.id} needs {need} GPU(s) but this machine lends "
                                  f"{len(devices)} ({seen}); lower resources['gpus'] or run "
                                  "where there are more")


def _kill_pool(pool) -> None:
    """Stop now (Ctrl-C): cancel queued tasks and kill the workers.

    Outputs are written atomically, so a task stopped mid-way leaves only a
    temporary file, which the next run removes.
    """
    if isinstance(pool, ThreadPoolExecutor):
        pool.shutdown(wait=False, cancel_futures=True)
    else:
        _forget_pool()
        pool.shutdown(wait=False, kill_workers=True)


#: (size, executor) of the process pool kept between runs of this process
_POOL: tuple | None = None


def _process_pool(n: int):
    """Mempamal's own pool of n workers, reused by the next run of this process.

    loky (joblib's executor) rather than multiprocessing: it does not re-import
    the caller's ``__main__`` (which fails under ``python -c``, stdin or some
    notebooks). Kept warm between runs (idle workers exit after
    WORKER_IDLE_SECONDS), so a resume does not pay scikit-learn's import again.
    It is not joblib's global reusable executor: sharing that one breaks the
    caller's own ``n_jobs`` afterwards.
    """
    from joblib.externals.loky import ProcessPoolExecutor

    global _POOL
    if _POOL is not None and _POOL[0] == n:
        return _POOL[1]
    _forget_pool()
    pool = ProcessPoolExecutor(max_workers=n, timeout=WORKER_IDLE_SECONDS)
    _POOL = (n, pool)
    return pool


def _forget_pool() -> None:
    """Drop the kept pool (broken, killed, or of another size)."""
    global _POOL
    if _POOL is not None:
        _POOL[1].shutdown(wait=False, kill_workers=True)
        _POOL = None
