"""``mem="auto"`` and ``time="auto"``: SLURM limits sized from what was measured.

Each job gets ``--mem`` and ``--time`` from, in this order:

1. **escalation**: a task of the job ended OUT_OF_MEMORY (or TIMEOUT) under
   the limit of its last submission: twice that limit (or the peak SLURM
   saw, with a margin, if larger), at most :data:`MAX_ESCALATIONS` times;
2. **measured**: the largest peak memory / duration recorded by finished
   tasks of the same kind, with a margin;
3. **compiled**: the fit timed at compile time (its seconds and peak memory);
4. the task's ``resources`` hints (``mem_mb``, ``time_min``);
5. nothing known: no line, the partition's default (said in the script).

Values are rounded up and kept within the partition's limits (``sinfo``).
A job runs its tasks one after the other: memory is the largest of its
tasks', time the sum. Every choice is written in the script as a comment
saying where it came from, and the limits of each task are kept in
``slurm/sizes.json`` for the next resume to escalate from.
"""

from __future__ import annotations

import math
import re

from ...workdir import read_json, read_meta, write_json

#: a task is resubmitted with more memory or time at most this many times
MAX_ESCALATIONS = 3
#: measured peaks and durations are multiplied by these before rounding up
MEM_MARGIN, TIME_MARGIN = 1.5, 2.0
#: added to every task's memory (interpreter, imports) and time (start-up)
MEM_FLOOR_MB, TIME_FLOOR_S = 64, 60
_MEM_STEP_MB = 64

OOM_STATES = ("OUT_OF_MEMORY",)
TIMEOUT_STATES = ("TIMEOUT",)


def sizes_file(workflow):
    return workflow.workdir.backend_dir("slurm") / "sizes.json"


def previous_sizes(workflow) -> dict:
    """``{task_id: {"mem_mb", "time_min", "mem_escalations", "time_escalations"}}``."""
    try:
        return read_json(sizes_file(workflow))
    except (FileNotFoundError, ValueError):
        return {}


def _measured(workflow) -> dict:
    """Largest recorded peak memory (MB) and duration (s) of finished tasks, per kind."""
    out: dict[str, dict] = {}
    for tid, task in workflow.tasks.items():
        meta = read_meta(workflow.workdir, tid)
        if not meta or meta.get("state") != "done":
            continue
        kind = out.setdefault(task.kind, {"mem": 0.0, "seconds": 0.0})
        kind["mem"] = max(kind["mem"], float(meta.get("peak_rss_mb") or 0))
        kind["seconds"] = max(kind["seconds"], float(meta.get("seconds") or 0))
    return out


def _round_mem(mb: float) -> int:
    return int(math.ceil(mb / _MEM_STEP_MB) * _MEM_STEP_MB)


def task_sizes(workflow, task, measured: dict, previous: dict, mem_auto: bool,
               time_auto: bool) -> dict:
    """The memory (MB) and time (minutes) one task asks for, and why."""
    meta = read_meta(workflow.workdir, task.id) or {}
    before = previous.get(task.id, {})
    out = {"mem_escalations": before.get("mem_escalations", 0),
           "time_escalations": before.get("time_escalations", 0)}
    if mem_auto:
        out["mem_mb"], out["mem_source"] = _task_mem(workflow, task, meta, before, measured,
                                                     out)
    if time_auto:
        out["time_s"], out["time_source"] = _task_time(workflow, task, meta, before, measured,
                                                       out)
    return out


def _task_mem(workflow, task, meta, before, measured, out):
    ended = str(meta.get("error_type") or "")
    if ended in OOM_STATES and before.get("mem_mb") \
            and out["mem_escalations"] < MAX_ESCALATIONS:
        out["mem_escalations"] += 1
        peak = float(meta.get("mem_peak_mb") or 0)
        mb = max(2 * before["mem_mb"], MEM_MARGIN * peak)
        return mb, (f"escalated x2 after OUT_OF_MEMORY at {before['mem_mb']} MB "
                    f"(escalation {out['mem_escalations']} of {MAX_ESCALATIONS})")
    seen = measured.get(task.kind, {}).get("mem")
    if seen:
        return MEM_MARGIN * seen + MEM_FLOOR_MB, f"{task.kind} tasks measured at {seen:.0f} MB"
    compiled = workflow.meta.get("fit_peak_mb")
    if compiled and task.kind in ("fit", "select"):
        return (MEM_MARGIN * compiled + MEM_FLOOR_MB,
                f"the fit timed at compile time peaked at {compiled:.0f} MB")
    if task.resources.get("mem_mb"):
        return float(task.resources["mem_mb"]), "the task's resources['mem_mb']"
    return None, "nothing measured yet: the partition's default"


def _task_time(workflow, task, meta, before, measured, out):
    ended = str(meta.get("error_type") or "")
    if ended in TIMEOUT_STATES and before.get("time_s") \
            and out["time_escalations"] < MAX_ESCALATIONS:
        out["time_escalations"] += 1
        return 2 * before["time_s"], (f"escalated x2 after TIMEOUT at {before['time_s'] / 60:.0f}"
                                      f" min (escalation {out['time_escalations']} of "
                                      f"{MAX_ESCALATIONS})")
    seen = measured.get(task.kind, {}).get("seconds")
    if seen:
        return TIME_MARGIN * seen + TIME_FLOOR_S, f"{task.kind} tasks measured at {seen:.1f} s"
    estimates = workflow.estimated_seconds()
    if estimates and estimates.get(task.id):
        return (TIME_MARGIN * estimates[task.id] + TIME_FLOOR_S,
                "estimated from the fit timed at compile time")
    if task.resources.get("time_min"):
        return 60.0 * task.resources["time_min"], "the task's resources['time_min']"
    return None, "nothing measured yet: the partition's default"


def job_limits(job, per_task: dict, limits: dict) -> tuple[dict, list[str]]:
    """``({"mem": "…M" or None, "time": minutes or None}, comment lines)`` of one job."""
    notes = []
    mems = [(per_task[t].get("mem_mb"), per_task[t].get("mem_source"), t)
            for t in job.task_ids if "mem_source" in per_task[t]]
    out = {}
    if mems:
        known = [m for m in mems if m[0]]
        if known:
            mb, why, tid = max(known, key=lambda m: m[0])
            mb = _round_mem(mb)
            cap = limits.get("max_mem_mb")
            if cap and mb > cap:
                notes.append(f"--mem capped at the partition's {cap} MB (wanted {mb} MB)")
                mb = cap
            out["mem"] = f"{mb}M"
            notes.append(f"--mem={mb}M: {why} ({tid})")
        else:
            notes.append(f"no --mem: {mems[0][1]}")
    times = [per_task[t] for t in job.task_ids if "time_source" in per_task[t]]
    if times:
        per_line = [sum(per_task[t].get("time_s") or 0 for t in line) for line in job.lines]
        if all(x.get("time_s") for x in times):
            minutes = int(math.ceil(max(per_line) / 60))
            cap = limits.get("max_minutes")
            if cap and minutes > cap:
                notes.append(f"--time capped at the partition's {cap} min (wanted {minutes})")
                minutes = cap
            out["time"] = minutes
            why = sorted({x["time_source"] for x in times})
            notes.append(f"--time={minutes}: {'; '.join(why)}")
        else:
            notes.append("no --time: nothing measured yet: the partition's default")
    return out, notes


def plan_sizes(workflow, jobs, opts: dict, limits: dict) -> tuple[dict, dict]:
    """Sizes of every job (by stem) and of every task, for the auto options."""
    mem_auto, time_auto = opts["mem"] == "auto", opts["time"] == "auto"
    if not (mem_auto or time_auto):
        return {}, {}
    measured, previous = _measured(workflow), previous_sizes(workflow)
    per_task = {t: task_sizes(workflow, workflow.tasks[t], measured, previous, mem_auto,
                              time_auto) for job in jobs for t in job.task_ids}
    per_job = {job.stem: job_limits(job, per_task, limits) for job in jobs}
    # what each task was given: the next resume escalates from it
    given = {}
    for job in jobs:
        size, _ = per_job[job.stem]
        for t in job.task_ids:
            given[t] = {"mem_mb": int(size["mem"][:-1]) if size.get("mem") else None,
                        "time_s": 60 * size["time"] if size.get("time") else None,
                        "mem_escalations": per_task[t]["mem_escalations"],
                        "time_escalations": per_task[t]["time_escalations"]}
    return per_job, given


def save_sizes(workflow, given: dict) -> None:
    if given:
        write_json(sizes_file(workflow), {**previous_sizes(workflow), **given})


def parse_partition_limits(text: str, partition: str | None) -> dict:
    """``sinfo --noheader --format="%P %l %m"`` -> ``{"max_minutes", "max_mem_mb"}``.

    ``%l`` is the time limit (``infinite``, ``MM``, ``HH:MM:SS``, ``D-HH:MM:SS``),
    ``%m`` the memory per node in MB (``24105``, ``8000+``).
    """
    best = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 3:
            continue
        name, limit, mem = parts[0], parts[1], parts[2]
        default = name.endswith("*")
        name = name.rstrip("*")
        if (partition is None and not default) or (partition is not None and name != partition):
            continue
        minutes = _minutes(limit)
        mem_mb = int(mem.rstrip("+")) if mem.rstrip("+").isdigit() else None
        if minutes is not None:
            best["max_minutes"] = max(best.get("max_minutes", 0), minutes)
        if mem_mb:
            best["max_mem_mb"] = max(best.get("max_mem_mb", 0), mem_mb)
    return best


def _minutes(limit: str) -> int | None:
    if limit in ("infinite", "UNLIMITED", "n/a"):
        return None
    days, _, rest = limit.rpartition("-")
    parts = [int(p) for p in rest.split(":")]
    if len(parts) == 1:
        h, m, s = 0, parts[0], 0
    elif len(parts) == 2:
        h, m, s = 0, parts[0], parts[1]
    else:
        h, m, s = parts[-3:]
    return (int(days or 0) * 24 + h) * 60 + m + (1 if s else 0)


_EXCEEDED = re.compile(r"exceeded memory limit \((\d+) > (\d+)\)")


def oom_from_log(text: str) -> dict | None:
    """What SLURM's memory enforcement wrote in a job's log, or None.

    Without cgroups (``JobAcctGatherParams=OverMemoryKill``), a job past its
    ``--mem`` is killed with ``exceeded memory limit (PEAK > LIMIT)`` (bytes)
    and ``Exceeded job memory limit`` in its log, and SLURM calls it FAILED:
    the log, not the state, says it was memory.
    """
    found = _EXCEEDED.findall(text)
    if found:
        peak, limit = max(int(p) for p, _ in found), int(found[-1][1])
        return {"mem_peak_mb": round(peak / 2**20, 1), "mem_limit_mb": round(limit / 2**20, 1)}
    if "Exceeded job memory limit" in text or "oom-kill" in text.lower():
        return {"mem_peak_mb": None, "mem_limit_mb": None}
    return None
