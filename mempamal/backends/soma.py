"""The Soma-Workflow backend: export a workflow to soma-workflow and run it there.

``write`` produces ``WORKDIR/soma/workflow.json`` (``Helper.serialize``), a
file soma-workflow's GUI opens and its tools submit. ``run`` submits the
pending tasks with a ``WorkflowController`` and waits. By default this is
soma-workflow's light mode on this machine with every piece of soma state
(configuration, database, logs, scheduler settings, temporary files) inside
``WORKDIR/soma/runs/RUN/``, never in the user's home; ``resource=NAME`` uses a
resource of the user's own soma-workflow configuration instead (a cluster
whose ``SCHEDULER_TYPE`` is ``slurm`` or ``pbspro``, for example).

The controller lives in a child process (:mod:`.soma_driver`), see there why.
Outputs stay the truth: each run submits only the tasks whose outputs are
missing, and a task counts as done only if its outputs exist.

**Packing.** A soma job runs a line of tasks in one interpreter (``python -m
mempamal run-task . ID1 ID2 ...``), planned by :mod:`.packing`, the planner
the SLURM backend uses: with ``tasks_per_job="auto"`` each level's work
(every fit, then every select...) is balanced over the CPUs soma can use at
once, so a run pays about one interpreter start (~1 s) per CPU and level
rather than one per task. ``write`` exports the same jobs.

**A failure inside a line.** ``run-task`` goes on with the next tasks of its
line after a task fails (each task is independent of its line-mates, which
belong to the same level), then exits 1, so soma marks the job failed and
never starts the jobs that wait for it. Those can hold tasks that do not
depend on the failed one (a line of selects waits for every line of fits).
So when a round ends with failures, the tasks still pending that depend on no
failed task are planned again and submitted as a new soma workflow (a new
round); this stops when a round runs everything it was given or only tasks
downstream of a failure are left. Each task is judged on its own: done if its
outputs exist, failed if it started this round (its meta record says so)
and did not write them, not run otherwise.
"""

from __future__ import annotations

import configparser
import contextlib
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from ..errors import BackendError, ValidationError
from ..lock import run_lock
from ..runner import EXIT_NOT_READY
from ..workdir import read_meta, tail_text, write_json, write_text
from .base import Backend, RunReport, resume_in_background
from .packing import chained_lines, check_tasks_per_job, line_deps, timed_or_count_pack
from .progress import RunProgress
from .soma_jobs import (
    NATIVE_SPEC_SCHEDULERS,
    Line,
    build_workflow,
    name_lines,
    resource_scheduler_type,
    serialize,
)

#: soma state of this many past rounds is kept (for the GUI and post-mortems)
KEEP_RUNS = 5
#: ``tasks_per_job="auto"``: at most this much work in one soma job...
AUTO_JOB_SECONDS = 60.0
#: ... and at least this much. Lower than SLURM's: in light mode the slots are
#: this machine's CPUs, where an idle CPU costs more than an interpreter start
MIN_JOB_SECONDS = 3.0
#: characters soma's SLURM/PBS script generators do not escape (`cd "DIR"`)
_UNSAFE_IN_SCRIPTS = set('"$`\\\n')


class SomaBackend(Backend):
    """Run the workflow through soma-workflow.

    Options
    -------
    n_jobs : int
        Jobs run at once in light mode (default: the number of CPUs; -1 too).
    resource : str or None
        A resource of the user's soma-workflow configuration; None: light mode
        on this machine with all soma state inside the workdir.
    queue : str or None
        Queue the jobs go to (resources with queues).
    progress : bool or None
        Show a progress bar (None: when standard error is a terminal).
    python : str or None
        Interpreter of the task commands (default: the one compiled in).
    refreshment_interval : float
        Seconds between two passes of soma's engine loop and of our status
        polls: the latency added per dependency level and at both ends of a
        run (default 0.2: with packing a run has few jobs, and polling every
        0.2 s rather than 0.5 s cost about 2 % of a core more in light mode).
    scheduler_type : str or None
        How ``write`` spells resource hints (``slurm``, ``pbspro``); default:
        the resource's ``SCHEDULER_TYPE``, none in light mode.
    native_specification : str, list of str or None
        Given to every job as is, instead of the spelling derived from the
        tasks' resource hints.
    tasks_per_job : int or "auto"
        Tasks run one after the other by one soma job (one interpreter).
        ``"auto"`` (default): each level's work is cut into about one job per
        CPU (``n_jobs`` in light mode; a resource's CPUs when soma's
        scheduler is SLURM and ``sinfo`` answers; else unknown), each with
        MIN_JOB_SECONDS to AUTO_JOB_SECONDS of work estimated from the fit
        timed at compile time; 1 when there is no timing (an explicit
        ``chunk_size``). 1: one job per task.
    """

    name = "soma"
    options = {"n_jobs": None, "resource": None, "queue": None, "progress": None,
               "python": None, "refreshment_interval": 0.2, "scheduler_type": None,
               "native_specification": None, "tasks_per_job": "auto"}

    def validate(self) -> None:
        o = self.opts
        n = o["n_jobs"]
        if n is None or n == -1:
            o["n_jobs"] = os.cpu_count() or 1
        elif not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ValidationError(f"n_jobs must be a positive int or -1, got {n!r}")
        for key in ("resource", "queue", "python", "scheduler_type"):
            if o[key] is not None and (not isinstance(o[key], str) or not o[key]):
                raise ValidationError(f"{key} must be a non-empty string or None, "
                                      f"got {o[key]!r}")
        r = o["refreshment_interval"]
        if isinstance(r, bool) or not isinstance(r, int | float) or not 0 < r <= 60:
            raise ValidationError(
                f"refreshment_interval must be a number of seconds in (0, 60], got {r!r}")
        ns = o["native_specification"]
        if ns is not None and not (isinstance(ns, str) or (
                isinstance(ns, list) and all(isinstance(s, str) for s in ns))):
            raise ValidationError(
                f"native_specification must be a string or a list of strings, got {ns!r}")
        check_tasks_per_job(o["tasks_per_job"])
        if o["progress"] is not None and not isinstance(o["progress"], bool):
            raise ValidationError(f"progress must be true, false or None, got {o['progress']!r}")
        if o["scheduler_type"] is None:
            # also checks that the resource exists, before anything is written
            o["scheduler_type"] = (resource_scheduler_type(o["resource"])
                                   if o["resource"] else "local_basic")

    # -- write -----------------------------------------------------------------
    def write(self, workflow) -> list:
        """Write ``WORKDIR/soma/workflow.json`` (every task) and return its path."""
        wd = workflow.workdir
        path = wd.backend_dir(self.name) / "workflow.json"
        tasks = workflow.tasks
        soma_wf = self._soma_workflow(workflow, self.plan(workflow, tasks), tasks)
        return [serialize(path, soma_wf)]

    def plan(self, workflow, tasks: dict) -> list[Line]:
        """The soma jobs running ``tasks`` (id -> task, topological order).

        Dependencies on tasks outside ``tasks`` are taken as done.
        """
        given = self.opts["tasks_per_job"]
        if given == 1:
            # one job per task, exactly as before packing existed
            lines = [[tid] for tid in tasks]
            return name_lines(lines, line_deps(lines, tasks))
        if given != "auto":
            return name_lines(*chained_lines(tasks, given))
        pack = timed_or_count_pack(tasks, workflow.estimated_seconds(), self._slots(),
                                   MIN_JOB_SECONDS, AUTO_JOB_SECONDS)
        return name_lines(*chained_lines(tasks, pack=pack))

    def _slots(self):
        """``slots(tasks_of_a_level)``: how many of them soma runs at once (None: unknown)."""
        if self.opts["resource"] is None:
            cpus = self.opts["n_jobs"]
        elif self.opts["scheduler_type"] == "slurm":
            from .slurm.commands import cluster_cpus

            # the resource's cluster, if its sinfo answers here (a login node)
            cpus = cluster_cpus(self.opts["queue"])
        else:
            cpus = None

        def slots(tasks):
            per_task = max(int(t.resources.get("cpus", 1) or 1) for t in tasks)
            return None if cpus is None else max(1, cpus // min(per_task, cpus))

        return slots

    def _soma_workflow(self, workflow, lines, tasks, out_dir=None):
        light = self.opts["resource"] is None
        return build_workflow(
            lines, tasks, workflow.workdir.root, python=self.opts["python"],
            name=f"mempamal {workflow.workdir.root.name}", out_dir=out_dir,
            scheduler_type=self.opts["scheduler_type"],
            native_specification=self.opts["native_specification"],
            max_cpus=self.opts["n_jobs"] if light else None)

    # -- run / submit ------------------------------------------------------------
    def run(self, workflow) -> RunReport:
        """Submit the pending tasks, wait, and raise if a task failed."""
        wd = workflow.workdir
        where = self.opts["resource"] or "light mode"
        with run_lock(wd, f"soma run ({where}, n_jobs={self.opts['n_jobs']})"):
            wd.remove_temporaries()
            report = self._run_locked(workflow)
        return report.raise_for_failures()

    def submit(self, workflow):
        """Run in a detached background process; return its ``Popen``.

        Soma-workflow's engine must outlive the jobs (light mode and its SLURM
        scheduler type): the background ``mempamal resume`` keeps it alive.
        """
        return resume_in_background(workflow, self.name, {
            k: v for k, v in self.opts.items() if k != "progress"})

    def _run_locked(self, workflow) -> RunReport:
        pending = workflow.pending()
        report = RunReport()
        if not pending:
            return report
        self._check_paths(workflow)
        todo = pending
        with RunProgress(len(pending), self.opts["progress"], label="soma") as bar:
            for round_no in itertools.count():
                failures_before = len(report.failures)
                self._run_round(workflow, todo, round_no, report, bar)
                reached = set(report.executed)
                left = [t for t in todo if t.id not in reached]
                if not left:
                    break
                if len(report.failures) == failures_before:
                    raise BackendError(
                        f"soma-workflow ended without running {len(left)} task(s) "
                        f"({[t.id for t in left[:5]]}...); see {self._last_run_dir}/driver.log")
                # what soma did not start because a line it waited for failed,
                # although none of its own inputs come from a failed task (or
                # it needs a failed task only to have ended: soma-workflow has
                # no "after any", so such a task runs in the next round)
                blocked = workflow.blocked_by(set(report.failures))
                todo = [t for t in left if t.id not in blocked]
                if not todo:
                    break
        reached = set(report.executed)
        report.not_run = [t.id for t in pending if t.id not in reached]
        return report

    def _run_round(self, workflow, todo, round_no: int, report, bar) -> None:
        """Submit ``todo`` as one soma workflow, wait, book each task of each ended job."""
        run_dir = self._last_run_dir = self._new_run_dir(workflow, round_no)
        tasks = {t.id: t for t in todo}
        lines = self.plan(workflow, tasks)
        spec = self._prepare(workflow, lines, tasks, run_dir)
        by_name = {line.name: line for line in lines}
        # a task started by this round has a higher attempt number than this
        wd = workflow.workdir
        before = {tid: int((read_meta(wd, tid) or {}).get("attempt", 0))
                  for tid in wd.with_meta(tasks)}
        for ev in _drive(spec, run_dir, self._driver_env(run_dir)):
            if ev["event"] == "job" and ev["task"] in by_name:
                for ok in self._record(workflow, ev, by_name[ev["task"]], before, run_dir,
                                       report):
                    bar.advance(ok)
            elif ev["event"] == "error":
                raise BackendError(f"soma-workflow failed: {ev['message']} "
                                   f"(log: {run_dir / 'driver.log'})")

    def _check_paths(self, workflow) -> None:
        """Refuse workdirs soma's SLURM/PBS scripts would break on (or run code from)."""
        bad = _UNSAFE_IN_SCRIPTS & set(str(workflow.workdir.root))
        if bad and self.opts["scheduler_type"] in NATIVE_SPEC_SCHEDULERS:
            raise ValidationError(
                f"workdir {str(workflow.workdir.root)!r} contains {sorted(bad)}, which "
                f"soma-workflow's {self.opts['scheduler_type']} scheduler writes unescaped "
                "into job scripts; use a workdir path without them")

    def _new_run_dir(self, workflow, round_no: int = 0) -> Path:
        runs = workflow.workdir.backend_dir(self.name) / "runs"
        runs.mkdir(parents=True, exist_ok=True)
        for old in sorted(p for p in runs.iterdir() if p.is_dir())[:-(KEEP_RUNS - 1) or None]:
            shutil.rmtree(old, ignore_errors=True)
        # one directory (and soma database) per round: two controllers starting
        # on one fresh database can fail ("no such table: db_version")
        name = f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
        run_dir = runs / (f"{name}-r{round_no}" if round_no else name)
        for sub in ("jobs", "state", "tmp", "home"):
            (run_dir / sub).mkdir(parents=True, exist_ok=True)
        return run_dir

    def _prepare(self, workflow, lines, tasks, run_dir) -> dict:
        """Write the round's soma workflow and (light mode) soma configuration."""
        soma_wf = self._soma_workflow(workflow, lines, tasks, out_dir=run_dir / "jobs")
        serialize(run_dir / "workflow.json", soma_wf)
        light = self.opts["resource"] is None
        if light:
            _write_light_config(run_dir, self.opts["n_jobs"],
                                self.opts["refreshment_interval"])
        spec = {
            "workflow_file": str(run_dir / "workflow.json"),
            "log": str(run_dir / "driver.log"),
            "resource": socket.gethostname() if light else self.opts["resource"],
            "queue": self.opts["queue"], "name": soma_wf.name,
            "refreshment_interval": self.opts["refreshment_interval"],
            "tmp": str(run_dir / "tmp") if light else None,
            # jobs keep the user's HOME; only soma's controller gets the fake one
            "env": {"HOME": os.environ["HOME"]} if light and "HOME" in os.environ else None,
        }
        write_json(run_dir / "driver.json", spec)
        return spec

    def _driver_env(self, run_dir) -> dict:
        env = dict(os.environ)
        if self.opts["resource"] is None:
            env["HOME"] = str(run_dir / "home")
            env["SOMA_WORKFLOW_CONFIG"] = str(run_dir / "soma-workflow.cfg")
        return env

    def _record(self, workflow, ev, line, before, run_dir, report) -> list[bool]:
        """Book each task of one ended job; one bool per task that ran (succeeded?).

        Done: its outputs exist. Failed: it started in this round (its attempt
        number grew) without writing them. Not run (nothing booked): never
        started, or refused by the task because a dependency was not done
        (soma can start a job before it knows a dependency failed). A job that
        failed before any of its tasks could say so (a bad interpreter...)
        fails every task of its line it did not complete.
        """
        wd = workflow.workdir
        if ev["exit_status"] == "aborted_before_running":
            return []
        booked, blamed, unexplained = [], False, []
        for tid in line.task_ids:
            task = workflow.tasks[tid]
            if len(wd.existing(task.outputs)) == len(task.outputs):
                report.executed.append(tid)
                booked.append(True)
                continue
            meta = read_meta(wd, tid) or {}
            if int(meta.get("attempt", 0)) > before.get(tid, 0):
                report.executed.append(tid)
                report.failures[tid] = _failure_reason(wd, tid, ev, line, run_dir, meta)
                booked.append(False)
                blamed = True
            elif _inputs_ready(workflow, task):
                unexplained.append(tid)
            # else: its inputs are missing, so it was refused or never reached
            # (soma may report a refused job before storing its exit value 75)
        job_ok = ev["status"] == "done" and ev["exit_value"] in (0, None)
        if unexplained and not blamed and not job_ok and ev["exit_value"] != EXIT_NOT_READY:
            for tid in unexplained:
                report.executed.append(tid)
                report.failures[tid] = _failure_reason(wd, tid, ev, line, run_dir, {})
                booked.append(False)
        return booked


def _inputs_ready(workflow, task) -> bool:
    """Whether every dependency of ``task`` has its outputs (soma could have run it).

    Soft ones too: soma-workflow runs a job only after its dependencies
    succeeded, so a task after a failed soft dependency was never reached in
    this round (it runs in the next one).
    """
    wd = workflow.workdir
    return all(len(wd.existing(workflow.tasks[d].outputs)) == len(workflow.tasks[d].outputs)
               for d in task.deps)


def _write_light_config(run_dir: Path, n_jobs: int, interval: float) -> None:
    """Soma's light-mode configuration and local scheduler settings for this run.

    Paths are relative to the run directory (the driver's working directory):
    soma passes some through ``os.path.expandvars`` and configparser
    interpolation, which a workdir name with ``$`` or ``%`` would break.
    """
    host = socket.gethostname()
    cfg = configparser.ConfigParser(interpolation=None)
    cfg.optionxform = str  # soma's keys are upper case
    cfg[host] = {"SOMA_WORKFLOW_DIR": "state", "DATABASE_FILE": "state/soma_workflow.db",
                 "TRANSFERED_FILES_DIR": "state/transfered_files",
                 "ENGINE_LOG_DIR": "state/logs", "SHARED_TEMPORARY_DIR": "tmp"}
    _write_ini(run_dir / "soma-workflow.cfg", cfg)
    sched = configparser.ConfigParser(interpolation=None)
    sched.optionxform = str
    # CPU_NB = MAX_CPU_NB: exactly n_jobs at once, whatever the machine's load;
    # without SCHEDULER_INTERVAL no job ever starts
    sched[host] = {"CPU_NB": str(n_jobs), "MAX_CPU_NB": str(n_jobs),
                   "SCHEDULER_INTERVAL": str(min(float(interval), 0.1))}
    _write_ini(run_dir / "home" / ".soma-workflow-scheduler.cfg", sched)


def _write_ini(path: Path, parser) -> None:
    import io

    buf = io.StringIO()
    parser.write(buf)
    write_text(path, buf.getvalue())


def _drive(spec, run_dir: Path, env: dict):
    """Run the driver; yield its events. Ctrl-C stops the soma workflow first."""
    # run as a file, not `-m`: importing the mempamal package (scikit-learn...)
    # would cost seconds; -P keeps mempamal/backends/ off sys.path
    driver = Path(__file__).with_name("soma_driver.py")
    argv = [sys.executable, "-P", str(driver), str(run_dir / "driver.json")]
    # its own session: a terminal's Ctrl-C reaches us only, and we stop the
    # workflow (killing its jobs) through the driver rather than orphan them
    proc = subprocess.Popen(argv, cwd=run_dir, env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, text=True, start_new_session=True)
    ended = False
    try:
        for line in proc.stdout:
            with contextlib.suppress(ValueError):
                ev = json.loads(line)
                ended = ended or ev.get("event") in ("end", "error")
                yield ev
        code = proc.wait()
    except BaseException:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
        raise
    if not ended:
        raise BackendError(f"the soma-workflow driver exited with status {code} before "
                           f"the end of the workflow: {tail_text(run_dir / 'driver.log').strip()}")


def _line_stderr(run_dir: Path, line, tid: str) -> str:
    """What the job's stderr says about ``tid`` (``run-task`` names each failed task),
    else its last lines.
    """
    path = run_dir / "jobs" / f"{line.stem}.err"
    text = tail_text(path, lines=200)
    if len(line.task_ids) > 1:
        mine = [x for x in text.splitlines() if f" {tid} " in x or x.endswith(f" {tid}")]
        if mine:
            return "\n".join(mine[-5:]).strip()
    return tail_text(path, lines=5).strip()


def _failure_reason(wd, tid: str, ev: dict, line, run_dir: Path, meta: dict) -> str:
    """Why a task failed: its own error if it recorded one, else soma's view + stderr."""
    if ev["exit_value"] is not None:
        how = f"exit status {ev['exit_value']}"
    else:
        how = f"soma-workflow: {ev['status']} ({ev['exit_status']}" + (
            f", signal {ev['signal']})" if ev.get("signal") else ")")
    if len(line.task_ids) > 1:
        how += f" of soma job {line.name!r}"
    stderr = _line_stderr(run_dir, line, tid)
    if meta.get("state") == "failed" and meta.get("error"):
        return f"{how}; stderr: {stderr}" if meta["error"] in stderr else \
            f"{meta['error']} ({how}; stderr: {stderr or '(empty)'})"
    why = f"{how}; stderr: {stderr or '(empty)'}"
    if ev["exit_value"] == 0:
        why = f"exited 0 but its outputs are missing; stderr: {stderr or '(empty)'}"
    elif meta.get("state") == "running":
        why = f"killed while it ran: {why}"
    # the task died before it could say so: record it, for `mempamal status`
    meta = {**meta, "task": tid, "state": "failed", "error": why,
            "error_type": meta.get("error_type") or "JobFailed",
            "scheduler_state": f"soma:{ev['exit_status']}"}
    write_json(wd.meta_file(tid), meta)
    return why
