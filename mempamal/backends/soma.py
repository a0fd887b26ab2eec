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
missing, and a job counts as done only if it exited 0 and its outputs exist.
"""

from __future__ import annotations

import configparser
import contextlib
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
from .progress import RunProgress
from .soma_jobs import (
    NATIVE_SPEC_SCHEDULERS,
    build_workflow,
    resource_scheduler_type,
    serialize,
)

#: soma state of this many past runs is kept (for the GUI and post-mortems)
KEEP_RUNS = 5
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
        polls: the latency added per dependency level.
    scheduler_type : str or None
        How ``write`` spells resource hints (``slurm``, ``pbspro``); default:
        the resource's ``SCHEDULER_TYPE``, none in light mode.
    native_specification : str, list of str or None
        Given to every job as is, instead of the spelling derived from the
        tasks' resource hints.
    """

    name = "soma"
    options = {"n_jobs": None, "resource": None, "queue": None, "progress": None,
               "python": None, "refreshment_interval": 0.5, "scheduler_type": None,
               "native_specification": None}

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
        soma_wf = self._soma_workflow(workflow, list(workflow.tasks.values()))
        return [serialize(path, soma_wf)]

    def _soma_workflow(self, workflow, tasks, out_dir=None):
        light = self.opts["resource"] is None
        return build_workflow(
            tasks, workflow.workdir.root, python=self.opts["python"],
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
        run_dir = self._new_run_dir(workflow)
        spec = self._prepare(workflow, pending, run_dir)
        ids = {t.id for t in pending}
        with RunProgress(len(pending), self.opts["progress"], label="soma") as bar:
            events = _drive(spec, run_dir, self._driver_env(run_dir))
            for ev in events:
                if ev["event"] == "job" and ev["task"] in ids:
                    ok = self._record(workflow, ev, run_dir, report)
                    bar.advance(ok)
                elif ev["event"] == "error":
                    raise BackendError(f"soma-workflow failed: {ev['message']} "
                                       f"(log: {run_dir / 'driver.log'})")
        reached = set(report.executed)
        report.not_run = [t.id for t in pending if t.id not in reached]
        if report.not_run and not report.failures:
            raise BackendError(
                f"soma-workflow ended without running {len(report.not_run)} task(s) "
                f"({report.not_run[:5]}...); see {run_dir / 'driver.log'}")
        return report

    def _check_paths(self, workflow) -> None:
        """Refuse workdirs soma's SLURM/PBS scripts would break on (or run code from)."""
        bad = _UNSAFE_IN_SCRIPTS & set(str(workflow.workdir.root))
        if bad and self.opts["scheduler_type"] in NATIVE_SPEC_SCHEDULERS:
            raise ValidationError(
                f"workdir {str(workflow.workdir.root)!r} contains {sorted(bad)}, which "
                f"soma-workflow's {self.opts['scheduler_type']} scheduler writes unescaped "
                "into job scripts; use a workdir path without them")

    def _new_run_dir(self, workflow) -> Path:
        runs = workflow.workdir.backend_dir(self.name) / "runs"
        runs.mkdir(parents=True, exist_ok=True)
        for old in sorted(p for p in runs.iterdir() if p.is_dir())[:-(KEEP_RUNS - 1) or None]:
            shutil.rmtree(old, ignore_errors=True)
        # one directory (and soma database) per run: two controllers starting
        # on one fresh database can fail ("no such table: db_version")
        run_dir = runs / f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
        for sub in ("jobs", "state", "tmp", "home"):
            (run_dir / sub).mkdir(parents=True, exist_ok=True)
        return run_dir

    def _prepare(self, workflow, pending, run_dir) -> dict:
        """Write the run's soma workflow and (light mode) soma configuration."""
        soma_wf = self._soma_workflow(workflow, pending, out_dir=run_dir / "jobs")
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

    def _record(self, workflow, ev, run_dir, report) -> bool:
        """Book one finished job; True if it succeeded."""
        tid = ev["task"]
        task = workflow.tasks[tid]
        if ev["exit_status"] == "aborted_before_running" or ev["exit_value"] == EXIT_NOT_READY:
            # never started, or started by soma before it knew a dependency had
            # failed, and refused by the task itself: counted in not_run
            return False
        report.executed.append(tid)
        wd = workflow.workdir
        # an exit value soma did not store yet (None) is fine if the outputs are there
        if ev["status"] == "done" and ev["exit_value"] in (0, None) \
                and len(wd.existing(task.outputs)) == len(task.outputs):
            return True
        report.failures[tid] = _failure_reason(wd, tid, ev, run_dir)
        return False



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


def _failure_reason(wd, tid: str, ev: dict, run_dir: Path) -> str:
    """Why a job failed: the task's own error if it recorded one, else soma's view + stderr."""
    meta = read_meta(wd, tid) or {}
    if ev["exit_value"] is not None:
        how = f"exit status {ev['exit_value']}"
    else:
        how = f"soma-workflow: {ev['status']} ({ev['exit_status']}" + (
            f", signal {ev['signal']})" if ev.get("signal") else ")")
    stderr = tail_text(run_dir / "jobs" / f"{tid}.err", lines=5).strip()
    if meta.get("state") == "failed" and meta.get("error"):
        why = f"{how}; stderr: {stderr}" if meta["error"] in stderr else \
            f"{meta['error']} ({how}; stderr: {stderr or '(empty)'})"
    else:
        why = f"{how}; stderr: {stderr or '(empty)'}"
        if ev["exit_value"] == 0:
            why = f"exited 0 but its outputs are missing; stderr: {stderr or '(empty)'}"
        # the task died before it could say so: record it, for `mempamal status`
        meta.update(task=tid, state="failed", error=why,
                    error_type=meta.get("error_type") or "JobFailed",
                    scheduler_state=f"soma:{ev['exit_status']}")
        write_json(wd.meta_file(tid), meta)
    return why
