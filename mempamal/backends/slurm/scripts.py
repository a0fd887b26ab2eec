"""Render the sbatch scripts, task files and submit.sh of a plan (no I/O but the writes).

Decisions (flag spelling, units, quoting) are made here; the templates in
``templates/slurm/`` only lay the text out. ``#SBATCH`` lines are read by
sbatch, not by a shell, so their values cannot be quoted: options are
validated to a safe alphabet instead (see :mod:`.options`), and paths never
appear in them (logs are relative to the job's working directory).
"""

from __future__ import annotations

import shlex

from ...templating import render
from ...workdir import write_text
from .plan import Job, array_spec
from .tail import tail_jobs

#: what submit.sh and the backend append job ids to, in ``WORKDIR/slurm/``
JOBS_FILE = "jobs.tsv"
#: the same for the notify jobs (kept apart: a pending watchdog is no running task)
NOTIFY_JOBS_FILE = "notify-jobs.tsv"
#: with ``notify``, jobs added after the task jobs: stem -> (event, dependency
#: type, separator). The watchdog runs as soon as any task job ended without
#: success ("?" is SLURM's "or"); --kill-on-invalid-dep cancels it once every
#: one succeeded. The end job runs once all ended, however they ended.
NOTIFY_JOBS = {"notify-failure": ("failure", "afternotok", "?"),
               "notify-end": ("end", "afterany", ",")}
#: minutes a notify job may take (a status read and one message)
NOTIFY_MINUTES = 10


def job_name(opts: dict, run_id: str, stem: str) -> str:
    """Every job of a run carries the run id, so one squeue call shows the run."""
    return f"{opts['job_name']}-{run_id}-{stem}"


def log_pattern(job: Job) -> str:
    """``--output`` of a job, relative to the workdir (job name, job and array ids)."""
    return "logs/%x-%A_%a.out" if job.array else "logs/%x-%j.out"


def log_path(name: str, job_id: str, index: int | None) -> str:
    """The SLURM log of one array element (``index``) or plain job, as sbatch names it."""
    return f"logs/{name}-{job_id}_{index}.out" if index is not None else f"logs/{name}-{job_id}.out"


def directives(job: Job, workflow, opts: dict, run_id: str, size: dict | None = None
               ) -> list[str]:
    """``#SBATCH`` arguments of a job, in a fixed order (``size``: the auto limits)."""
    tasks = [workflow.tasks[t] for t in job.task_ids]
    per_line = max(len(line) for line in job.lines)

    def hint(key):
        vals = [t.resources.get(key) for t in tasks if t.resources.get(key) is not None]
        return max(vals) if vals else None

    cpus = opts["cpus_per_task"] or hint("cpus")
    mem = opts["mem"] if opts["mem"] is not None else hint("mem_mb")
    time = opts["time"]
    if time is None and hint("time_min") is not None:
        time = int(hint("time_min")) * per_line
    if mem == "auto":
        mem = (size or {}).get("mem")
    if time == "auto":
        time = (size or {}).get("time")
    gres = opts["gres"] or (f"gpu:{hint('gpus')}" if hint("gpus") else None)
    out = [f"--job-name={job_name(opts, run_id, job.stem)}", f"--output={log_pattern(job)}"]
    for flag, value in (("--partition", opts["partition"]), ("--account", opts["account"]),
                        ("--qos", opts["qos"]), ("--time", time),
                        ("--cpus-per-task", cpus), ("--mem", _mem(mem)),
                        ("--gres", gres)):
        if value is not None:
            out.append(f"{flag}={value}")
    out.extend(_mail(opts))
    out.extend(opts["extra_directives"])
    return out


def _mail(opts: dict) -> list[str]:
    """``--mail-user``/``--mail-type``, for clusters whose nodes cannot reach the outside."""
    out = []
    if opts["mail_user"] is not None:
        out.append(f"--mail-user={opts['mail_user']}")
    if opts["mail_type"] is not None:
        out.append(f"--mail-type={opts['mail_type'].upper()}")
    return out


def dependency(kind: str, sep: str, job_ids) -> str:
    """``--dependency`` value: ``kind`` on every job of ``job_ids``, joined by ``sep``."""
    return sep.join(f"{kind}:{j}" for j in job_ids)


def notify_script_text(workflow, opts: dict, run_id: str, stem: str) -> str:
    """The sbatch script of a notify job: ``mempamal notify . --event EVENT``."""
    event = NOTIFY_JOBS[stem][0]
    python = next(iter(workflow.tasks.values())).command(opts["python"], ".")[0]
    argv = [python, "-m", "mempamal", "notify", ".", "--event", event, "--backend", "slurm"]
    out = [f"--job-name={job_name(opts, run_id, stem)}", "--output=logs/%x-%j.out"]
    for flag, value in (("--partition", opts["partition"]), ("--account", opts["account"]),
                        ("--qos", opts["qos"])):
        if value is not None:
            out.append(f"{flag}={value}")
    out += [f"--time={NOTIFY_MINUTES}", "--cpus-per-task=1", *opts["extra_directives"]]
    what = ("the first job that ends without success" if event == "failure"
            else "the end of every job of the submission")
    return render("slurm/job.sbatch.j2", opts["template_dir"],
                  description=f"Notification at {what} (URLs in slurm/notify.json).",
                  command=shlex.join(argv), run_id=run_id, array=False, setup=opts["setup"],
                  notes=[], directives=out)


def _mem(mem):
    """An int is megabytes; a string (``4G``) is passed as written."""
    if mem is None:
        return None
    return f"{mem}M" if isinstance(mem, int) else mem


def task_file_text(job: Job) -> str:
    return "".join(" ".join(line) + "\n" for line in job.lines)


def script_text(job: Job, workflow, opts: dict, run_id: str, sizing=None,
                then: list[str] = ()) -> str:
    """The sbatch script of one job.

    ``sizing``: ``(limits, comment lines)`` of auto; ``then``: stems of the
    plain jobs an element that ends last runs itself (:mod:`.tail`).
    """
    python = opts["python"]
    size, notes = sizing or ({}, [])
    common = dict(run_id=run_id, array=job.array, setup=opts["setup"], notes=notes,
                  directives=directives(job, workflow, opts, run_id, size))
    first = workflow.tasks[job.lines[0][0]].command(python, ".")
    tails = [w for stem in then for w in ("--then", f"slurm/{stem}.tasks")]
    if not job.array and len(job.task_ids) == 1:
        return render("slurm/job.sbatch.j2", opts["template_dir"],
                      description=f"Task {first[-1]}.",
                      command=shlex.join([*first[:-1], *tails, first[-1]]), **common)
    task_file = f"slurm/{job.stem}.tasks"
    argv = [*first[:-1], *tails, "--task-file", task_file]
    what = f"{len(job.task_ids)} task(s) ({job.task_ids[0]} ... {job.task_ids[-1]})"
    if not job.array:  # a packed plain job: its one line, task after task
        return render("slurm/job.sbatch.j2", opts["template_dir"],
                      description=f"Job {job.stem}: {what}, one after the other.",
                      command=shlex.join([*argv, "--index", "0"]), **common)
    return render("slurm/array.sbatch.j2", opts["template_dir"],
                  description=f"Array {job.stem}: {what}, {len(job.lines)} element(s).",
                  task_file=task_file, command=shlex.join(argv), **common)


def submission_args(job: Job, indices=None, throttle=None) -> tuple[str, list[str]]:
    """``(array spec or "-", dependency stems)`` of a job (all its elements by default).

    A stem the job needs only to have ended (``afterany``) is written ``any:STEM``.
    """
    soft = set(job.soft_deps)
    deps = [f"any:{d}" if d in soft else d for d in job.deps]
    if not job.array:
        return "-", deps
    idx = range(len(job.lines)) if indices is None else indices
    return array_spec(idx, throttle), deps


def dependency_option(deps: list[str], job_ids: dict[str, str]) -> str | None:
    """``afterok:1:2,afterany:3`` for ``deps`` (stems, ``any:STEM`` soft) with ids.

    Stems without an id (not submitted: their tasks are done) are left out;
    None when nothing is left.
    """
    ok = [job_ids[d] for d in deps if d in job_ids]
    any_ = [job_ids[d[4:]] for d in deps if d.startswith("any:") and d[4:] in job_ids]
    parts = ([f"afterok:{':'.join(ok)}"] if ok else []) + (
        [f"afterany:{':'.join(any_)}"] if any_ else [])
    return ",".join(parts) or None


def submit_text(jobs: list[Job], opts: dict, run_id: str) -> str:
    """submit.sh: every job, chained by its dependencies."""
    lines = []
    for job in jobs:
        spec, deps = submission_args(job, throttle=opts["max_parallel"])
        lines.append(" ".join(shlex.quote(w) for w in (job.stem, spec, *deps)))
    notify = [" ".join(shlex.quote(w) for w in (stem, kind, sep))
              for stem, (_, kind, sep) in NOTIFY_JOBS.items()] if opts["notify"] else []
    return render("slurm/submit.sh.j2", opts["template_dir"], run_id=run_id,
                  jobs_file=JOBS_FILE, submissions=lines, notify_jobs=notify,
                  notify_jobs_file=NOTIFY_JOBS_FILE)


def write_scripts(workflow, jobs: list[Job], opts: dict, run_id: str,
                  sizes: dict | None = None) -> list:
    """Write every script, task file and submit.sh into ``WORKDIR/slurm/``; return the paths.

    ``sizes``: ``{stem: (limits, comment lines)}`` for ``mem``/``time="auto"``.
    """
    out_dir = workflow.workdir.backend_dir("slurm")
    paths = []
    keep = {"submit.sh", JOBS_FILE}
    sizes = sizes or {}
    by_stem = {job.stem: job for job in jobs}
    then = tail_jobs(jobs, lambda stem: directives(
        by_stem[stem], workflow, opts, run_id, sizes.get(stem, ({}, []))[0]))
    for job in jobs:
        # every job gets a task file (one line for a plain job): status reads them
        # to know which tasks a recorded job ran
        paths.append(out_dir / f"{job.stem}.tasks")
        write_text(paths[-1], task_file_text(job))
        paths.append(out_dir / f"{job.stem}.sbatch")
        write_text(paths[-1], script_text(job, workflow, opts, run_id, sizes.get(job.stem),
                                          then[job.stem]))
    if opts["notify"]:
        from ...notify import save_urls

        save_urls(workflow.workdir, "slurm", opts["notify"])
        for stem in NOTIFY_JOBS:
            paths.append(out_dir / f"{stem}.sbatch")
            write_text(paths[-1], notify_script_text(workflow, opts, run_id, stem))
    paths.append(out_dir / "submit.sh")
    write_text(paths[-1], submit_text(jobs, opts, run_id))
    paths[-1].chmod(0o755)
    keep.update(p.name for p in paths)
    for old in out_dir.glob("*"):
        if old.suffix in (".sbatch", ".tasks") and old.name not in keep:
            old.unlink()  # left by an earlier write with other options
        elif old.name.endswith(".tasks.lock") and old.name[:-5] not in keep:
            old.unlink()  # the tail lock of a job no longer planned (see .tail)
    return paths
