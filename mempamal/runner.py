"""Run tasks of a workdir: the code behind ``python -m mempamal run-task``.

Every backend ends up here, in a fresh interpreter (SLURM, Soma-Workflow,
the local executor's subprocess mode) or in a persistent worker (local
executor, Dask). A task's stdout/stderr go to ``logs/TASK.log``; a small meta
record (``logs/TASK.meta.json``: state, times, host, peak memory, error) is
written atomically when it starts and when it ends.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import time
import traceback
import warnings
from dataclasses import dataclass

from .errors import CorruptOutputError, MempamalError, MissingInputError
from .measure import TaskUsage
from .workdir import open_log, read_json, read_meta, write_meta
from .workflow import sha256_file


@dataclass
class TaskOutcome:
    """What happened to one task."""

    task_id: str
    ok: bool
    skipped: bool = False
    error: str | None = None
    error_type: str | None = None
    seconds: float = 0.0


def run_task(root, task_id: str, force: bool = False) -> TaskOutcome:
    """Run task ``task_id`` of the workdir at ``root``; never raises for a task error.

    A task whose outputs already exist is skipped unless ``force``.
    """
    from .context import load_context  # joblib, numpy: only where tasks run

    try:
        ctx = load_context(root)
        task = ctx.workflow.tasks[task_id]
    except KeyError:
        return TaskOutcome(task_id, False, error=f"no task {task_id!r} in {root}",
                           error_type="KeyError")
    except Exception as exc:  # noqa: BLE001 - reported, not raised
        _record_load_failure(root, task_id, exc)
        return TaskOutcome(task_id, False, error=f"{type(exc).__name__}: {exc}",
                           error_type=type(exc).__name__)
    wd = ctx.workdir
    if not force and len(wd.existing(task.outputs)) == len(task.outputs):
        return TaskOutcome(task_id, True, skipped=True)
    meta = {"task": task_id, "state": "running", "host": socket.gethostname(),
            "pid": os.getpid(), "start": time.time(),
            "slurm_job": os.environ.get("SLURM_JOB_ID"),
            "attempt": _previous_attempts(wd.meta_file(task_id)) + 1,
            # the devices a GPU task was given (local executor, SLURM, Dask)
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")}
    t0 = time.perf_counter()
    usage = TaskUsage.start()
    try:
        check_inputs(ctx, task)
    except MissingInputError as exc:
        # started too early (a scheduler that ran it despite a failed
        # dependency): not run, so its meta record is left as it was
        return TaskOutcome(task_id, False, error=str(exc), error_type=type(exc).__name__)
    except CorruptOutputError as exc:
        outcome = TaskOutcome(task_id, False, error=str(exc), error_type=type(exc).__name__)
        _finish(wd, meta, outcome, usage, task)
        return outcome
    write_meta(wd, task_id, meta)
    outcome = TaskOutcome(task_id, True)
    with open_log(wd.log_file(task_id)) as log, \
            contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        print(f"=== mempamal task {task_id} attempt {meta['attempt']} on {meta['host']} "
              f"pid {meta['pid']} at {time.strftime('%Y-%m-%d %H:%M:%S')}", flush=True)
        try:
            # limit BLAS/OpenMP to the task's share so parallel tasks do not
            # oversubscribe the cores
            cpus = int(task.resources.get("cpus", 1))
            with thread_limits(cpus), thread_env(cpus), warnings.catch_warnings():
                # a persistent worker would otherwise show a warning only for
                # its first task; each task's log gets its own
                warnings.simplefilter("default")
                from .recipes import get_recipe

                get_recipe(ctx.workflow.recipe).run_task(ctx, task)
        except BaseException as exc:
            outcome = TaskOutcome(task_id, False, error=f"{type(exc).__name__}: {exc}",
                                  error_type=type(exc).__name__)
            traceback.print_exc(file=log)
            if not isinstance(exc, Exception):  # KeyboardInterrupt, SystemExit
                _finish(wd, meta, outcome, usage, task)
                raise
        print(f"=== {'done' if outcome.ok else 'FAILED'} in "
              f"{time.perf_counter() - t0:.3f}s", flush=True)
    _finish(wd, meta, outcome, usage, task)
    return outcome


def _record_load_failure(root, task_id: str, exc: BaseException) -> None:
    """Record, in the task's own log and meta record, why its workdir did not load.

    A module the experiment needs is missing, a pickle was tampered with...:
    ``status`` then shows the cause and a log that exists.
    """
    from .workdir import Workdir

    wd = Workdir(root)
    if not wd.workflow_file.exists() or not wd.logs_dir.is_dir():
        return
    now = time.time()
    meta = {"task": task_id, "state": "failed", "host": socket.gethostname(),
            "pid": os.getpid(), "start": now, "end": now, "seconds": 0.0,
            "slurm_job": os.environ.get("SLURM_JOB_ID"),
            "attempt": _previous_attempts(wd.meta_file(task_id)) + 1,
            "error": f"{type(exc).__name__}: {exc}", "error_type": type(exc).__name__}
    try:
        with open_log(wd.log_file(task_id)) as log:
            print(f"=== mempamal task {task_id} could not load its workdir on {meta['host']}",
                  file=log)
            traceback.print_exception(exc, file=log)
        write_meta(wd, task_id, meta)
    except OSError:
        pass  # a read-only or vanished workdir: the caller still reports the error


def check_inputs(ctx, task) -> None:
    """Verify the outputs of ``task``'s dependencies before reading them.

    An output whose sha256 differs from the one its task recorded, or a JSON
    output that does not parse, is deleted (so that the producing task is
    pending again) and :class:`CorruptOutputError` is raised: a damaged file
    is recomputed, never silently used.
    """
    wd = ctx.workdir
    dep_tasks = [ctx.workflow.tasks[d] for d in task.deps]
    present = wd.existing(rel for t in dep_tasks for rel in t.outputs)
    soft = set(task.soft_deps)
    # a soft dependency's outputs may be missing: it ended without them
    # (killed, timed out), which the task reads as a failure
    missing = [t.id for t in dep_tasks
               if t.id not in soft and not all(rel in present for rel in t.outputs)]
    if missing:
        raise MissingInputError(
            f"task {task.id!r} cannot run yet: dependencies not done: {missing[:5]}"
        )
    for dep_task in dep_tasks:
        problems = damaged_outputs(wd, dep_task)
        if problems:
            rel, why = problems[0]
            raise CorruptOutputError(
                f"output {rel!r} of task {dep_task.id!r} is corrupt: {why}; deleted it so "
                f"that {dep_task.id!r} is recomputed"
            )


def damaged_outputs(wd, task) -> list[tuple[str, str]]:
    """Outputs of ``task`` that are truncated or altered; each is deleted.

    An output is checked against the sha256 its task recorded; without one (the
    task was killed between writing it and its meta record), a JSON output
    must at least parse. Missing outputs are not reported (not done is not damaged).
    """
    digests = (read_meta(wd, task.id) or {}).get("digests") or {}
    problems = []
    for rel in task.outputs:
        path = wd.path(rel)
        why = None
        try:
            if rel in digests:
                if sha256_file(path) != digests[rel]:
                    why = "its sha256 differs from the one recorded when it was written"
            elif rel.endswith(".json"):
                read_json(path)
        except FileNotFoundError:
            continue
        except (ValueError, UnicodeDecodeError) as exc:
            why = f"it does not parse ({exc})"
        if why:
            path.unlink(missing_ok=True)
            problems.append((rel, why))
    return problems


def verify(workflow) -> dict[str, list]:
    """Check every output of ``workflow``; delete the damaged ones.

    Returns ``{task_id: [(output, reason), ...]}`` of the tasks that are
    pending again; a rerun recomputes them.
    """
    done = workflow.done()
    found = {}
    for tid in done:
        problems = damaged_outputs(workflow.workdir, workflow.tasks[tid])
        if problems:
            found[tid] = problems
    return found


def _finish(wd, meta: dict, outcome: TaskOutcome, usage: TaskUsage, task) -> None:
    used = usage.stop()  # wall and CPU seconds, the task's own peak memory
    outcome.seconds = used["seconds"]
    if outcome.ok:
        meta["digests"] = {rel: sha256_file(wd.path(rel)) for rel in task.outputs}
    meta.update(state="done" if outcome.ok else "failed", end=time.time(),
                error=outcome.error, error_type=outcome.error_type, **used)
    write_meta(wd, outcome.task_id, meta)


def _previous_attempts(meta_file) -> int:
    try:
        return int(read_json(meta_file).get("attempt", 0))
    except (FileNotFoundError, ValueError):
        return 0


#: exit status of ``run-task`` when a task could not start because a
#: dependency is not done (sysexits' EX_TEMPFAIL): not run, rather than failed
EXIT_NOT_READY = 75


def run_tasks_main(root, task_ids, force: bool = False) -> int:
    """Run tasks one after the other (a packed cluster job); exit status.

    0 if all succeeded, EXIT_NOT_READY if the only problem is tasks started
    before their dependencies were done, 1 otherwise.
    """
    if not force and all_done(root, task_ids):
        # a line run already (by the upstream element that ended last, see
        # backends.slurm.tail, or before a resume): nothing to load or import
        return 0
    failed, not_ready = False, False
    for tid in task_ids:
        outcome = run_task(root, tid, force=force)
        if outcome.ok:
            continue
        if outcome.error_type == "MissingInputError":
            not_ready = True
            print(f"mempamal: task {tid} not run: {outcome.error}", file=sys.stderr)
        else:
            failed = True
            print(f"mempamal: task {tid} failed: {outcome.error}", file=sys.stderr)
    return 1 if failed else EXIT_NOT_READY if not_ready else 0


def all_done(root, task_ids) -> bool:
    """Whether every task of ``task_ids`` has all its outputs (False when unsure)."""
    from .context import load_workflow

    try:
        wf = load_workflow(root)
        outputs = [rel for tid in task_ids for rel in wf.tasks[tid].outputs]
    except (KeyError, OSError, ValueError, MempamalError):
        return False  # run_task reports what is wrong, task by task
    return len(wf.workdir.existing(outputs)) == len(outputs)


#: (modules imported when it was made, controller): threadpoolctl's look at
#: the loaded libraries, kept while no new module was imported
_CONTROLLER: list = [None, None]


#: the variables that size BLAS/OpenMP pools when a library loads (joblib's
#: loky sets the same ones for its workers); NUMBA_NUM_THREADS is left out:
#: numba refuses a new value once its threads are launched
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                    "BLIS_NUM_THREADS", "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")


@contextlib.contextmanager
def thread_env(n: int):
    """``THREAD_VARIABLES`` set to ``n`` for the task, restored after it.

    :func:`thread_limits` limits the libraries already loaded. A library a
    task loads later (the user's torch) and any program it starts read these
    variables instead; left unset, each sizes its pool to every core of the
    machine, and ``n_jobs`` such tasks oversubscribe it (two two-thread
    OpenBLAS processes on 2 cores: 18 s each for what one does alone in 4.3 s).
    A value already there is replaced too, as :func:`thread_limits` replaces
    it in the loaded libraries: the ``cpus`` hint is the task's thread count,
    and an environment is easily set by someone else (distributed's nannies
    write ``OMP_NUM_THREADS=1`` into the process that starts a LocalCluster).
    """
    before = {v: os.environ.get(v) for v in THREAD_VARIABLES}
    os.environ.update({v: str(n) for v in THREAD_VARIABLES})
    try:
        yield
    finally:
        for v, value in before.items():
            if value is None:
                os.environ.pop(v, None)
            else:
                os.environ[v] = value


def thread_limits(n: int):
    """``threadpool_limits(n)`` without scanning the loaded libraries every task.

    Finding the BLAS/OpenMP libraries costs ~3 ms: the cost of a whole task
    for a quick trial. The scan is kept while the process imports nothing new
    (a new import is what may load another library, e.g. the user's torch).
    """
    from threadpoolctl import ThreadpoolController

    if _CONTROLLER[0] != len(sys.modules):
        _CONTROLLER[1] = ThreadpoolController()
        _CONTROLLER[0] = len(sys.modules)
    return _CONTROLLER[1].limit(limits=n)
