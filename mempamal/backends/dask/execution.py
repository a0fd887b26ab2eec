"""One run of the Dask backend: every pending task as a future, collected as it ends."""

from __future__ import annotations

import sys
import uuid

import distributed

from ...errors import ValidationError
from ..base import RunReport
from ..ordering import priorities
from ..progress import RunProgress
from .worker import TaskFailed, indent, run_on_worker

#: rounds of a run: the first, then reruns of what a corrupt input invalidated
MAX_ROUNDS = 3


def task_resources(task, mapping: dict) -> dict:
    """The Dask resources a task requires under ``mapping``."""
    need = {}
    for hint, name in mapping.items():
        value = task.resources.get(hint)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValidationError(f"task {task.id}: resource hint {hint}={value!r} cannot be "
                                  f"a Dask resource {name!r} (expected a number)")
        if value > 0:
            need[name] = value
    return need


def announce(client, own=None) -> None:
    """Tell where to watch the run.

    For the cluster mempamal started (``own``), the address its dashboard's
    socket really listens on (nothing without a dashboard); for a cluster the
    user brought, the link distributed gives.
    """
    if own is not None:
        url = own.dashboard_url(client)
    elif "dashboard" in client.scheduler_info(n_workers=0).get("services", {}):
        url = client.dashboard_link
    else:
        url = None
    if url:
        print(f"mempamal: Dask dashboard at {url}", file=sys.stderr)


def run_rounds(client, workflow, todo, needs: dict, progress) -> RunReport:
    """Run ``todo``; then rerun what corrupt inputs invalidated, a few times at most.

    A task that finds a dependency's output corrupt deletes it and fails
    (``CorruptOutputError``): the next round recomputes that dependency, the
    task and its dependents, as the local executor does.
    """
    report = RunReport()
    with RunProgress(len(todo), progress) as bar:
        for n in range(MAX_ROUNDS):
            one = _DaskRun(client, workflow, todo, needs, bar)
            one.execute()
            report.executed += one.report.executed
            report.failures.update(one.report.failures)
            report.not_run += one.report.not_run
            if not one.corrupt or n == MAX_ROUNDS - 1:
                break
            todo = _recompute_plan(workflow, one.corrupt)
            redo = {t.id for t in todo}
            report.failures = {k: v for k, v in report.failures.items() if k not in redo}
            report.not_run = [t for t in report.not_run if t not in redo]
            bar.add_total(len(todo))
    return report


def _recompute_plan(workflow, corrupt) -> list:
    """Pending tasks to rerun after ``corrupt`` tasks deleted some inputs, in order.

    The deleted outputs' tasks, then everything downstream that is pending,
    except what also waits on a task that is not rerun (a real failure).
    """
    pending = {t.id for t in workflow.pending()}
    seeds = set(corrupt) | {d for c in corrupt for d in workflow.tasks[c].deps if d in pending}
    wanted = workflow.downstream(seeds) & pending
    plan, chosen = [], set()
    for task in workflow.tasks.values():  # topological order
        if task.id in wanted and all(d in chosen or d not in pending for d in task.deps):
            plan.append(task)
            chosen.add(task.id)
    return plan


class _DaskRun:
    """Submit all pending tasks as futures at once; collect them as they finish."""

    def __init__(self, client, workflow, todo, needs: dict, bar) -> None:
        self.client = client
        self.wf = workflow
        self.todo = todo
        self.needs = needs
        self.bar = bar
        self.report = RunReport()
        self.unexplained: dict[str, BaseException] = {}
        self.corrupt: list[str] = []  # tasks that found (and deleted) a corrupt input

    def execute(self) -> RunReport:
        self.nonce = uuid.uuid4().hex[:8]
        self.pending = {t.id for t in self.todo}
        self.futures: dict = {}
        self.held = list(self.todo)  # not submitted yet (see _release)
        self.ended: set[str] = set()
        # the local executor's order (a select as soon as its fits are done
        # and a balanced end) as Dask priorities; a worker runs one task at a time
        self.priority = priorities(self.wf.tasks, self.pending,
                                   max(1, len(self.client.nthreads())))
        self._release()
        tids = {f.key: tid for tid, f in self.futures.items()}
        ended = distributed.as_completed(list(self.futures.values()), loop=self.client.loop)
        try:
            for fut in ended:
                tid = tids[fut.key]
                ok = self._record(tid, fut)
                if ok is not None:
                    self.bar.advance(ok)
                self.ended.add(tid)
                for new_tid, new in self._release():
                    tids[new.key] = new_tid
                    ended.add(new)
        except BaseException:
            # Ctrl-C: drop what has not started; a cluster mempamal
            # started is closed next, which stops the rest
            self.client.cancel(list(self.futures.values()))
            raise
        self._explain(self.futures)
        return self.report

    def _release(self) -> list:
        """Submit the held tasks that may go now; return their ``(id, future)``.

        A future per pending task (topological order), keyed by task id + run
        nonce; the nonce and ``pure=False`` make every run compute afresh,
        never reusing a result Dask remembers from an earlier run. A failed
        future fails every future given it as an argument, so a task that
        needs a dependency only to have ended (``soft_deps``) is held back
        here until that one ends, and submitted without it.
        """
        root = str(self.wf.workdir.root)
        new, still = [], []
        for task in self.held:
            ready = all(d in self.ended or d not in self.pending for d in task.soft_deps) \
                and all(d in self.futures or d not in self.pending for d in task.hard_deps)
            if not ready:
                still.append(task)
                continue
            deps = [self.futures[d] for d in task.hard_deps if d in self.futures]  # done: none
            fut = self.client.submit(
                run_on_worker, root, task.id, *deps, key=f"{task.id}-{self.nonce}",
                pure=False, resources=self.needs.get(task.id) or None,
                priority=self.priority[task.id])
            self.futures[task.id] = fut
            new.append((task.id, fut))
        self.held = still
        return new

    def _record(self, tid: str, fut) -> bool | None:
        """Record a finished future; return ok/failed, or None if it did not run."""
        if fut.status == "finished":  # the outcome stays on the worker: no round trip
            self.report.executed.append(tid)
            return True
        exc = fut.exception() if fut.status == "error" else None
        if isinstance(exc, TaskFailed):
            if exc.task_id != tid:
                self.report.not_run.append(tid)
                return None
            reason = exc.reason()
            if exc.error_type == "CorruptOutputError":
                self.corrupt.append(tid)
        elif isinstance(exc, distributed.KilledWorker):
            if exc.task != fut.key:
                self.report.not_run.append(tid)
                return None
            reason = ("the worker process running it died (killed, out of memory or "
                      f"crashed) {exc.allowed_failures + 1} time(s); Dask gave up on it")
        else:
            # cancelled, or an error outside the task (e.g. unpicklable
            # arguments): whether it is this task's fault is decided at the end
            self.unexplained[tid] = exc
            return None
        self.report.executed.append(tid)
        self.report.failures[tid] = reason
        return False

    def _explain(self, futures: dict) -> None:
        """Blame the first task of each failed chain; the rest did not run."""
        bad = set(self.report.failures) | set(self.report.not_run)
        for task in self.todo:  # topological: a dep is decided before its dependents
            if task.id not in self.unexplained:
                continue
            exc = self.unexplained[task.id]
            if any(d in bad for d in task.hard_deps):
                self.report.not_run.append(task.id)
            else:
                fut = futures[task.id]
                tb = fut.traceback() if exc is not None else None
                why = ("cancelled (the Dask scheduler or client went away?)" if exc is None
                       else f"{type(exc).__name__}: {exc}")
                if tb is not None:
                    import traceback

                    why += "\n" + indent("".join(traceback.format_tb(tb)))
                self.report.failures[task.id] = why
            bad.add(task.id)
