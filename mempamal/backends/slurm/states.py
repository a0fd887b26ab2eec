"""SLURM states -> mempamal task states (pure functions of the records, squeue rows, meta).

The outputs are the truth for ``done``. For the rest, each task is matched to
the latest job (and array index) that was to run it, and that job's squeue row
decides: queued, running, cancelled or failed with SLURM's state and reason
(OUT_OF_MEMORY, TIMEOUT, FAILED/NonZeroExitCode...). A task that a job killed
keeps a meta record saying "running"; :func:`task_states` returns the updates
that make such records say what happened, so the reason survives after SLURM
forgets the job (MinJobAge, five minutes by default).
"""

from __future__ import annotations

from .commands import ACTIVE_STATES
from .plan import parse_array_spec
from .scripts import log_path

#: SLURM states of a job that ended without success (besides CANCELLED)
FAILED_STATES = {"FAILED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "BOOT_FAIL",
                 "DEADLINE", "PREEMPTED"}
_STARTING = {"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD",
             "SPECIAL_EXIT"}


def assignments(records, lines_of) -> dict[str, tuple[str, int | None, str, list[str]]]:
    """``{task_id: (job id, array index or None, stem, line)}`` of the latest submission.

    ``lines_of(stem)`` gives the task-id lines of a job's task file.
    """
    out = {}
    for rec in records:
        lines = lines_of(rec.stem)
        if not lines:
            continue
        if rec.array == "-":
            for tid in lines[0]:
                out[tid] = (rec.job, None, rec.stem, lines[0])
            continue
        for k in parse_array_spec(rec.array):
            if k < len(lines):
                for tid in lines[k]:
                    out[tid] = (rec.job, k, rec.stem, lines[k])
    return out


def row_key(row) -> tuple[str, int | None]:
    return (row["array_job"], row["index"]) if row["index"] is not None else (row["job"], None)


def task_states(file_states: dict, assigned: dict, rows: list[dict], metas: dict,
                default_name) -> tuple[dict, dict]:
    """``({task_id: state}, {task_id: meta updates})``.

    Parameters
    ----------
    file_states : dict
        States from the workdir alone (outputs and meta records).
    assigned : dict
        From :func:`assignments`.
    rows : list of dict
        squeue rows (:func:`~.commands.parse_squeue`) of the recorded jobs.
    metas : dict
        ``{task_id: meta record or None}``.
    default_name : callable
        ``stem -> job name`` when SLURM no longer knows the job.
    """
    by_key = {row_key(r): r for r in rows}
    known_jobs = {r["job"]: r for r in rows}
    states, updates = dict(file_states), {}
    for tid, state in file_states.items():
        if state == "done":
            continue
        meta = metas.get(tid) or {}
        where = assigned.get(tid)
        row = by_key.get(where[:2]) if where else None
        job = str(meta.get("slurm_job") or "")
        if state == "running" and job in known_jobs and (row is None or job != row["job"]):
            # run by another job than the one assigned: the upstream element
            # that ended last (see .tail), or a job SLURM still knows while it
            # forgot the assigned one. That job says whether it still runs or
            # was killed, and its log is the one to read.
            other = known_jobs[job]
            states[tid], upd = _from_row(tid, other, meta, [tid], metas,
                                         (*row_key(other), None, [tid]))
            if upd:
                updates[tid] = upd
            continue
        if row is None:
            # SLURM forgot the job (or never had it): only a meta left "running"
            # by a job that is no longer active needs correcting
            if state == "running" and job and where is not None:
                name = default_name(where[2])
                states[tid] = "failed"
                updates[tid] = _killed(meta, "UNKNOWN", None, job,
                                       log_path(name, where[0], where[1]))
            continue
        states[tid], upd = _from_row(tid, row, meta, where[3], metas, where)
        if upd:
            updates[tid] = upd
    return states, updates


def _from_row(tid, row, meta, line, metas, where):
    state, reason, job = row["state"], row["reason"], row["job"]
    mine = str(meta.get("slurm_job") or "") == job  # the meta was written by this job
    log = log_path(row["name"], where[0], where[1]) if where else None
    if state in _STARTING:
        return "queued", None
    if state in ACTIVE_STATES:
        if len(line) == 1 or (mine and meta.get("state") == "running"):
            return "running", None
        return ("failed" if mine and meta.get("state") == "failed" else "queued"), None
    if state == "CANCELLED":
        if mine and meta.get("state") == "running":
            return "cancelled", {**meta, "state": "cancelled", "scheduler_state": "CANCELLED",
                                 "scheduler_log": log}
        return "cancelled", None
    if state not in FAILED_STATES:  # COMPLETED but outputs missing: trust the files
        return ("failed" if meta.get("state") == "failed" else "pending"), None
    sched = f"{state} ({reason})" if reason else state
    if mine and meta.get("state") == "failed":
        if meta.get("scheduler_state") == sched:
            return "failed", None
        return "failed", {**meta, "scheduler_state": sched, "scheduler_log": log}
    if mine:
        return "failed", _killed(meta, state, reason, job, log)
    started = [t for t in line if str((metas.get(t) or {}).get("slurm_job") or "") == job]
    if started:
        return "pending", None  # another task of this packed line failed; this one never ran
    # the job failed before any task started (setup line, python not found...)
    new = {"task": tid, "slurm_job": job}
    if meta.get("attempt"):
        new["attempt"] = meta["attempt"]
    upd = {**new, "state": "failed", "error_type": state, "scheduler_state": sched,
           "scheduler_log": log,
           "error": f"SLURM job {job} ended {sched} before the task started; see {log}"}
    return "failed", (None if meta.get("scheduler_state") == sched else upd)


def _killed(meta, state, reason, job, log) -> dict:
    """Meta of a task whose job SLURM ended while the task ran."""
    sched = f"{state} ({reason})" if reason else state
    what = ("is no longer known to SLURM" if state == "UNKNOWN"
            else f"ended {sched}")
    return {**meta, "state": "failed", "error_type": state, "scheduler_state": sched,
            "scheduler_log": log,
            "error": f"SLURM job {job} {what} before the task finished; see {log}"}
