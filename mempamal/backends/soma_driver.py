"""The child process that drives one soma-workflow run.

``python -P .../mempamal/backends/soma_driver.py RUN.json`` (it imports
nothing from mempamal, so it starts fast). It lives in its own
process because soma-workflow's light mode runs its engine inside the
submitting process (which must stay alive until the jobs end), prints to
standard output unconditionally, reads its scheduler settings from
``~/.soma-workflow-scheduler.cfg`` only, and leaves threads behind. The parent
starts it with ``HOME`` and ``SOMA_WORKFLOW_CONFIG`` pointing inside the
workdir (light mode), and reads from it one JSON event per line:

``{"event": "started", "workflow_id": ID}``,
``{"event": "job", "task": TID, "status": ..., "exit_status": ...,
"exit_value": ..., "signal": ...}`` once per finished job,
``{"event": "end", "workflow_status": ..., "interrupted": bool}`` or
``{"event": "error", "message": ...}``.
Everything soma-workflow prints goes to the run's log file instead.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import tempfile
import time
import traceback

_stop = []


def main(argv) -> int:
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: _stop.append(True))
    with open(argv[0], encoding="utf-8") as fh:
        spec = json.load(fh)
    events = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
    log = open(spec["log"], "a", encoding="utf-8")  # noqa: SIM115 - lives as long as us
    os.dup2(log.fileno(), 1)
    os.dup2(log.fileno(), 2)

    def emit(**event):
        try:
            events.write(json.dumps(event) + "\n")
            events.flush()
        except (BrokenPipeError, ValueError, OSError):
            _stop.append(True)  # nobody listens any more: stop, do not orphan jobs

    if spec.get("tmp"):
        # soma's own scratch files (not the jobs': they inherit the real TMPDIR)
        tempfile.tempdir = spec["tmp"]
    code = 0
    try:
        import soma_workflow.engine as engine

        # engine loop period and wait poll (default 1 s per dependency level)
        engine.refreshment_interval = float(spec["refreshment_interval"])
        code = _drive(spec, emit)
    except BaseException as exc:  # noqa: BLE001 - reported to the parent
        traceback.print_exc()
        emit(event="error", message=f"{type(exc).__name__}: {exc}")
        code = 3
    with contextlib.suppress(OSError):
        events.close()
    log.flush()
    # os._exit: soma-workflow's atexit hooks and leftover threads would make a
    # normal exit hang or print; everything we own is flushed already
    os._exit(code)


def _drive(spec, emit) -> int:
    from soma_workflow import constants
    from soma_workflow.client import Helper, WorkflowController

    wc = WorkflowController(resource_id=spec["resource"])
    try:
        wf = Helper.unserialize(spec["workflow_file"])
        if spec.get("env"):
            wf.env = dict(spec["env"])
        wid = wc.submit_workflow(wf, name=spec["name"], queue=spec.get("queue"))
        emit(event="started", workflow_id=wid)
        names = {ej.job_id: job.name for job, ej in wc.workflow(wid).job_mapping.items()}
        reported: set = set()
        interval = float(spec["refreshment_interval"])
        parent = os.getppid()
        while True:
            if _stop or os.getppid() != parent:
                # kills the running jobs; nothing is left orphaned
                wc.stop_workflow(wid)
                emit(event="end", workflow_status="stopped", interrupted=True)
                return 130
            jobs, _, wf_status, _, _ = wc.workflow_elements_status(wid)
            wf_done = wf_status == constants.WORKFLOW_DONE
            for jid, status, _queue, exit_info, _dates, *_ in jobs:
                # a job can read "done" a moment before its exit value is stored
                ended = status == constants.FAILED or (
                    status == constants.DONE and (exit_info[0] is not None or wf_done))
                if jid in reported or not ended:
                    continue
                reported.add(jid)
                emit(event="job", task=names.get(jid, str(jid)), status=status,
                     exit_status=exit_info[0], exit_value=exit_info[1],
                     signal=exit_info[2])
            if wf_done:
                emit(event="end", workflow_status=wf_status, interrupted=False)
                return 0
            time.sleep(interval)
    finally:
        _stop_engine(wc)
        kill_leftover_jobs()


def kill_leftover_jobs(timeout: float = 10.0) -> list[int]:
    """Kill every process below this one (their pids): jobs soma started as it stopped.

    soma-workflow's local scheduler takes its whole queue before it starts the
    jobs in it. ``stop_workflow`` kills what runs and unqueues what waits, but
    a job between the two is in neither place: it starts just after, and
    would run its tasks with nobody left to stop it (seen once in CI: a task
    record written 2 s after the interrupted run had returned). The engine's
    threads are stopped first, so nothing starts after this. In light mode
    every process below the driver is a job (or a job's child); after a
    workflow that ended, none is left and this does nothing.
    """
    import psutil

    procs = psutil.Process().children(recursive=True)
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()
    psutil.wait_procs(procs, timeout=timeout)
    return [p.pid for p in procs]


def _stop_engine(wc) -> None:
    """Stop the engine and the scheduler threads ``stop_engine`` leaves running."""
    engine = getattr(wc, "_engine_proxy", None)
    scheduler = getattr(getattr(engine, "engine_loop", None), "_scheduler", None)
    wc.stop_engine()
    end = getattr(scheduler, "end_scheduler_thread", None)
    if end is not None:
        end()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
