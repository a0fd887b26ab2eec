"""The SLURM backend: sbatch array scripts chained by ``afterok`` dependencies.

``write`` renders ``WORKDIR/slurm/``: one script (plus a task file) per job
and ``submit.sh``, which a person can read, edit and run by hand on a login
node. ``submit`` runs the same sbatch commands for the pending tasks only
(array index lists such as ``--array=3,7,9``) and returns at once; ``status``
asks squeue once for every recorded job; ``run`` submits and polls.
See :mod:`.plan` for how tasks become jobs, and :mod:`.tail` for the array
element that ends last running the next plain job's line itself.
"""

from __future__ import annotations

import sys
import time

from ...lock import run_lock
from ...workdir import read_meta, write_json
from ..base import Backend, RunReport, file_status
from ..packing import timed_or_count_pack
from ..progress import RunProgress
from . import commands, options, scripts, sizing
from .commands import ACTIVE_STATES, Record
from .plan import Job, plan_jobs
from .states import assignments, task_states

#: ``tasks_per_job="auto"``: at most this much work in one array element...
AUTO_JOB_SECONDS = 60.0
#: ... and at least this much, so that its interpreter start-up stays ~10 %
MIN_JOB_SECONDS = 10.0
#: how often ``run`` looks for the last outputs between two squeue calls
FILE_POLL_SECONDS = 0.25

__all__ = ["SlurmBackend", "Submission"]


class SlurmBackend(Backend):
    """Run a workflow on SLURM through generated sbatch scripts.

    Options
    -------
    partition, account, qos : str
        ``--partition``, ``--account``, ``--qos``.
    time : int or str
        Time limit per job: minutes, or a SLURM time (``"1:30:00"``).
    mem : int or str
        Memory per job: megabytes, or ``"4G"``.
    cpus_per_task : int
        Default: the tasks' ``cpus`` hint.
    gres : str
        Generic resources, e.g. ``"gpu:1"``.
    max_parallel : int
        Array throttle: at most this many elements of each array run at once.
    max_array_size : int
        Longest array (default: the cluster's MaxArraySize, else 1001).
    tasks_per_job : int or "auto"
        Task ids run one after the other by one array element (packing).
        ``"auto"`` (default): the work of each level (all fits, all selects...)
        is cut into about one element per CPU of the partition (``sinfo``),
        each with 10 to 60 s of work estimated from the fit timed at compile
        time; 1 when there is no timing (an explicit ``chunk_size``).
    setup : list of str
        Shell lines run before the task (``module load``, ``source venv/bin/activate``).
    extra_directives : list of str
        More sbatch options, e.g. ``["--constraint=skylake"]``.
    python : str
        Interpreter on the cluster (default: the one the workflow was compiled with).
    job_name : str
        Prefix of every job name (followed by the run id and the job's stem).
    template_dir : str
        Directory of user templates overriding ``slurm/*.j2`` (whole or by block).
    poll_interval : float
        Seconds between two squeue calls while ``run`` waits.
    progress : bool or None
        Progress bar while ``run`` waits (None: when stderr is a terminal).
    """

    name = "slurm"
    options = options.DEFAULTS
    #: the submission's notify jobs send the messages (nothing else stays alive)
    sends_notifications = True

    def validate(self) -> None:
        options.validate(self.opts)

    # -- writing ---------------------------------------------------------------
    def plan(self, workflow) -> list[Job]:
        """The jobs of ``workflow`` under these options."""
        size = self.opts["max_array_size"] or commands.cluster_max_array_size()
        given = self.opts["tasks_per_job"]
        if given != "auto":
            return plan_jobs(workflow, size, given)
        return plan_jobs(workflow, size, pack=timed_or_count_pack(
            workflow.tasks, workflow.estimated_seconds(), self._slots(), MIN_JOB_SECONDS,
            AUTO_JOB_SECONDS))

    def _slots(self):
        """``slots(tasks_of_a_level)``: how many of them the partition runs at once.

        ``tasks_per_job="auto"`` cuts each level into lines for that many
        CPUs: each array element is a fresh interpreter (~1 s to import
        scikit-learn), so a line holds at least MIN_JOB_SECONDS and at most
        AUTO_JOB_SECONDS of the work the compile timed, or, untimed, a few
        lines per CPU by count.
        """
        cpus = commands.cluster_cpus(self.opts["partition"])
        throttle = self.opts["max_parallel"]

        def slots(tasks):
            per_task = self.opts["cpus_per_task"] or max(t.resources.get("cpus", 1)
                                                         for t in tasks)
            n = None if cpus is None else max(1, cpus // per_task)
            if throttle is not None:
                n = throttle if n is None else min(n, throttle)
            return n

        return slots

    def write(self, workflow) -> list:
        """Write ``WORKDIR/slurm/`` (scripts, task files, submit.sh); return the paths."""
        jobs = self.plan(workflow)
        return scripts.write_scripts(workflow, jobs, self.opts, run_id(workflow))

    # -- submitting ------------------------------------------------------------
    def submit(self, workflow) -> Submission:
        """Submit the pending tasks and their downstream jobs; return the job records.

        Raises
        ------
        BackendError
            If sbatch is not on PATH, or jobs of an earlier submission still run.
        ExternalCommandError
            If sbatch refuses a job (its stderr is in the message); the jobs
            already submitted by this call are cancelled.
        """
        with run_lock(workflow.workdir, "slurm submission"):
            sub = Submission(self._submit(workflow))
            sub.notify = self._notify_records
            return sub

    def _submit(self, workflow) -> list[Record]:
        wd = workflow.workdir
        self._notify_records: list[Record] = []
        done = workflow.done()
        if len(done) == len(workflow.tasks):
            # nothing to submit: even while the last job of a run that just
            # returned is still completing in SLURM
            return []
        self._refuse_if_active(workflow)
        wd.remove_temporaries()
        jobs = self.plan(workflow)
        sizes, given = self._sizes(workflow, jobs)
        scripts.write_scripts(workflow, jobs, self.opts, run_id(workflow), sizes)
        submitted: dict[str, str] = {}
        records: list[Record] = []
        try:
            for job in jobs:
                todo = [k for k, line in enumerate(job.lines)
                        if any(t not in done for t in line)]
                if not todo:
                    continue
                spec, deps = scripts.submission_args(job, todo, self.opts["max_parallel"])
                argv = [f"--chdir={wd.root}"]
                if job.array:
                    argv.append(f"--array={spec}")
                dependency = scripts.dependency_option(deps, submitted)
                if dependency:
                    argv += [f"--dependency={dependency}", "--kill-on-invalid-dep=yes"]
                argv.append(str(wd.backend_dir("slurm") / f"{job.stem}.sbatch"))
                submitted[job.stem] = commands.sbatch(argv)
                records.append(Record(submitted[job.stem], job.stem, spec))
            if records and self.opts["notify"]:
                self._submit_notify_jobs(wd, [r.job for r in records])
        except BaseException:
            # a refused job leaves its upstream jobs orphaned: take them back
            commands.scancel([r.job for r in records + self._notify_records])
            raise
        if self._notify_records:
            commands.append_records(wd.backend_dir("slurm") / scripts.NOTIFY_JOBS_FILE,
                                    self._notify_records, "mempamal")
        if records:
            commands.append_records(jobs_file(workflow), records, "mempamal")
            sizing.save_sizes(workflow, given)
        return records

    def _submit_notify_jobs(self, wd, job_ids: list[str]) -> None:
        """The failure watchdog and the end job: they send from a compute node."""
        for stem, (_, kind, sep) in scripts.NOTIFY_JOBS.items():
            job = commands.sbatch([f"--chdir={wd.root}",
                                   f"--dependency={scripts.dependency(kind, sep, job_ids)}",
                                   "--kill-on-invalid-dep=yes",
                                   str(wd.backend_dir("slurm") / f"{stem}.sbatch")])
            self._notify_records.append(Record(job, stem, "-"))

    def _sizes(self, workflow, jobs) -> tuple[dict, dict]:
        """``mem``/``time="auto"``: each job's limits and why (see :mod:`.sizing`)."""
        if "auto" not in (self.opts["mem"], self.opts["time"]):
            return {}, {}
        self.status(workflow)  # names how the last submission's tasks ended (OOM...)
        limits = commands.partition_limits(self.opts["partition"])
        sizes, given = sizing.plan_sizes(workflow, jobs, self.opts, limits)
        for _, notes in sizes.values():
            for note in notes:
                if "escalated" in note or "nothing measured" in note or "capped" in note:
                    print(f"mempamal: slurm: {note}", file=sys.stderr)
        return sizes, given

    def _refuse_if_active(self, workflow) -> None:
        from ...errors import BackendError

        rows = commands.squeue({r.job for r in commands.read_records(jobs_file(workflow))})
        active = sorted({r["array_job"] for r in rows if r["state"] in ACTIVE_STATES}, key=int)
        if active:
            raise BackendError(
                f"jobs {', '.join(active)} of an earlier submission of "
                f"{str(workflow.workdir.root)!r} are still queued or running; wait for them "
                f"or cancel them (scancel {' '.join(active)}) before submitting again")

    # -- waiting ---------------------------------------------------------------
    def run(self, workflow) -> RunReport:
        """Submit, wait until the submitted jobs ended, report; raise on failures.

        squeue is asked every ``poll_interval`` seconds; in between, the
        outputs of the last tasks are looked at (a few stat calls), so the run
        returns as soon as they exist instead of at the next poll.
        """
        before = workflow.done()
        todo = [t for t in workflow.tasks if t not in before]
        records = self.submit(workflow)
        ids = {r.job for r in records}
        last = _last_outputs(workflow, todo)
        tick = min(FILE_POLL_SECONDS, self.opts["poll_interval"])
        with RunProgress(len(todo), self.opts["progress"], "slurm") as bar:
            seen = 0
            while ids:
                n_done = len(workflow.done() - before)
                for _ in range(n_done - seen):
                    bar.advance(True)
                seen = n_done
                rows = commands.squeue(ids)
                if not any(r["state"] in ACTIVE_STATES for r in rows):
                    break
                # one squeue call every few seconds: SLURM asks users not to poll
                # the controller more often, and cluster tasks last seconds to hours
                deadline = time.monotonic() + self.opts["poll_interval"]
                finished = len(workflow.workdir.existing(last)) == len(last)
                while not finished and time.monotonic() < deadline:
                    time.sleep(tick)
                    finished = len(workflow.workdir.existing(last)) == len(last)
                if finished:
                    for _ in range(len(todo) - seen):
                        bar.advance(True)
                    break
        return self._report(workflow, todo).raise_for_failures()

    def _report(self, workflow, todo) -> RunReport:
        states = self.status(workflow)
        report = RunReport()
        for tid in todo:
            meta = read_meta(workflow.workdir, tid) or {}
            if states[tid] == "failed":
                report.executed.append(tid)
                report.failures[tid] = meta.get("error") or "failed"
            elif states[tid] == "done":
                report.executed.append(tid)
            else:
                report.not_run.append(tid)
        return report

    # -- status ----------------------------------------------------------------
    def status(self, workflow) -> dict[str, str]:
        """``{task_id: state}`` from the outputs, the meta records and one squeue call.

        States: done, queued, running, failed, cancelled, pending (not submitted).
        Records the scheduler's verdict (OUT_OF_MEMORY, TIMEOUT...) and the SLURM
        log in the meta record of each task a job ended.
        """
        return self.status_and_queue(workflow)[0]

    def status_and_queue(self, workflow) -> tuple[dict[str, str], list[dict]]:
        """:meth:`status` and the squeue rows it was read from (``watch``: one call a poll)."""
        wd = workflow.workdir
        file_states = file_status(workflow)
        records = commands.read_records(jobs_file(workflow))
        if not records:
            return file_states, []
        lines = _TaskFiles(wd.backend_dir("slurm"))
        assigned = assignments(records, lines)
        # one listing says which tasks ever started: a failed open per task that
        # never did would cost a second on 100,000 tasks
        started = wd.with_meta(t for t, s in file_states.items() if s != "done")
        metas = {tid: read_meta(wd, tid) if tid in started else None
                 for tid, s in file_states.items() if s != "done"}
        ids = {r.job for r in records} | {str(m["slurm_job"]) for m in metas.values()
                                           if m and m.get("slurm_job")}
        rows = commands.squeue(ids)
        rid = run_id(workflow)
        states, updates = task_states(
            file_states, assigned, rows, metas,
            lambda stem: scripts.job_name(self.opts, rid, stem))
        _name_memory_kills(wd, states, metas, updates)
        for tid, meta in updates.items():
            if meta != metas.get(tid):
                write_json(wd.meta_file(tid), meta)
        return states, rows


def _name_memory_kills(wd, states: dict, metas: dict, updates: dict) -> None:
    """A failed task whose SLURM log says it went past ``--mem`` ended OUT_OF_MEMORY.

    Without cgroups SLURM calls such a job FAILED; the log has the limit and
    the peak it saw.
    """
    from ...workdir import tail_text

    for tid, state in states.items():
        meta = updates.get(tid) or metas.get(tid) or {}
        log = meta.get("scheduler_log")
        if state != "failed" or not log or meta.get("error_type") == "OUT_OF_MEMORY":
            continue
        found = sizing.oom_from_log(tail_text(wd.path(log), 50))
        if found is None:
            continue
        limit, peak = found["mem_limit_mb"], found["mem_peak_mb"]
        said = (f"its memory went past the job's --mem limit of {limit:.0f} MB (peak seen "
                f"{peak:.0f} MB)" if limit else "it went past the job's --mem limit")
        updates[tid] = {**meta, **found, "state": "failed", "error_type": "OUT_OF_MEMORY",
                        "scheduler_state": "OUT_OF_MEMORY (exceeded job memory limit)",
                        "error": f"OUT_OF_MEMORY: SLURM killed the task: {said}; see {log}"}


def _last_outputs(workflow, todo) -> list[str]:
    """Outputs of the tasks of ``todo`` that no other task of ``todo`` reads: made last."""
    read = {d for tid in todo for d in workflow.tasks[tid].deps}
    return [o for tid in todo if tid not in read for o in workflow.tasks[tid].outputs]


class Submission(list):
    """The :class:`~.commands.Record` of each job one submission made.

    ``notify`` holds the records of its notify jobs (with ``notify`` URLs).
    """

    notify: list = []

    def __str__(self) -> str:
        if not self:
            return "nothing to submit: every task is done"
        text = f"{len(self)} SLURM job(s): " + ", ".join(f"{r.stem}={r.job}" for r in self)
        if self.notify:
            text += "; notify jobs: " + ", ".join(f"{r.stem}={r.job}" for r in self.notify)
        return text


class _TaskFiles:
    """``stem -> task-id lines`` read once from ``slurm/STEM.tasks``."""

    def __init__(self, directory) -> None:
        self.dir = directory
        self.cache: dict[str, list] = {}

    def __call__(self, stem: str) -> list:
        if stem not in self.cache:
            try:
                text = (self.dir / f"{stem}.tasks").read_text(encoding="utf-8")
                self.cache[stem] = [line.split() for line in text.splitlines()]
            except FileNotFoundError:
                self.cache[stem] = []
        return self.cache[stem]


def run_id(workflow) -> str:
    """The run's id in every job name: the start of the experiment's fingerprint."""
    return str(workflow.meta.get("fingerprint", "nofingerprint"))[:8]


def jobs_file(workflow):
    """Where submit.sh and the backend record job ids."""
    return workflow.workdir.backend_dir("slurm") / scripts.JOBS_FILE
