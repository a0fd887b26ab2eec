"""The ``mempamal`` command."""

from __future__ import annotations

import json
import shlex
import sys

import click

from .errors import MempamalError, TaskFailedError


def _parse_options(pairs, n_jobs=None, address=None, notify=()) -> dict:
    """``-o key=value`` pairs; values are JSON when they parse, else strings."""
    opts = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{pair!r}: expected KEY=VALUE", param_hint="-o")
        try:
            opts[key.replace("-", "_")] = json.loads(value)
        except ValueError:
            opts[key.replace("-", "_")] = value
    if n_jobs is not None:
        opts["n_jobs"] = n_jobs
    if address is not None:
        opts["address"] = address
    if notify:
        opts["notify"] = list(notify)
    return opts


def _compile(experiment_file, workdir, chunk_size):
    from .experiment_file import load_experiment_file

    exp, data, compile_opts = load_experiment_file(experiment_file)
    if data is None:  # a sweep: no data; --chunk-size is its trials per task
        if chunk_size is not None:
            compile_opts["trials_per_task"] = chunk_size
        return exp.compile(workdir, **compile_opts)
    if chunk_size is not None:
        compile_opts["chunk_size"] = chunk_size
    return exp.compile(workdir, *data, **compile_opts)


backend_opt = click.option("--backend", "-b", default="local", show_default=True,
                           help="local, slurm, soma or dask.")
options_opt = click.option("-o", "--option", "options", multiple=True, metavar="KEY=VALUE",
                           help="Backend option (repeatable), e.g. -o partition=debug.")
jobs_opt = click.option("-j", "--n-jobs", type=int, default=None,
                        help="Parallel tasks (local, soma, dask).")
workdir_arg = click.argument("workdir", type=click.Path(file_okay=False))
notify_opt = click.option("--notify", "notify", multiple=True, metavar="URL",
                          help="apprise URL told when the run ends and at its first failure "
                               "(repeatable), e.g. mailto://..., ntfys://TOPIC.")
address_opt = click.option("--scheduler-address", default=None, metavar="ADDRESS",
                           help="Dask scheduler to run on (--backend dask; "
                                "same as -o address=ADDRESS).")


@click.group()
@click.version_option(package_name="mempamal")
def cli():
    """Nested cross-validation of scikit-learn models as a DAG of shell tasks."""


@cli.command()
@click.argument("experiment_file", type=click.Path(dir_okay=False))
@click.option("--workdir", "-w", required=True, type=click.Path(file_okay=False))
@backend_opt
@jobs_opt
@options_opt
@address_opt
@notify_opt
@click.option("--chunk-size", type=int, default=None,
              help="Candidates per fit task (a sweep: trials per task).")
def run(experiment_file, workdir, backend, n_jobs, options, scheduler_address, notify,
        chunk_size):
    """Compile EXPERIMENT_FILE into WORKDIR and run it (resumes if already there)."""
    opts = _parse_options(options, n_jobs, scheduler_address, notify)
    _check_backend(backend, opts)
    wf = _compile(experiment_file, workdir, chunk_size)
    _run(wf, backend, opts)


def _check_backend(backend, opts) -> None:
    """Refuse a bad backend name or option before compiling writes anything."""
    from .backends import get_backend

    if backend:
        get_backend(backend, **opts)


@cli.command()
@workdir_arg
@backend_opt
@jobs_opt
@options_opt
@address_opt
@notify_opt
def resume(workdir, backend, n_jobs, options, scheduler_address, notify):
    """Run the tasks of WORKDIR whose outputs are missing."""
    from .workflow import Workflow

    opts = _parse_options(options, n_jobs, scheduler_address, notify or _handed_urls())
    _check_backend(backend, opts)
    _run(Workflow.load(workdir), backend, opts)


def _handed_urls() -> list[str]:
    """Notification URLs a ``submit`` handed to this background ``resume`` (not on its argv)."""
    import os

    from .backends.base import NOTIFY_ENV

    text = os.environ.pop(NOTIFY_ENV, None)  # popped: the tasks need not see them
    try:
        urls = json.loads(text) if text else []
    except ValueError:
        raise click.BadParameter(f"{NOTIFY_ENV} is not a JSON list of URLs") from None
    return urls if isinstance(urls, list) else [urls]


def _run(wf, backend, opts) -> None:
    from .results import load_results

    pending = len(wf.pending())
    click.echo(f"mempamal: {pending} of {len(wf)} tasks to run on {backend} "
               f"in {wf.workdir.root}", err=True)
    try:
        wf.run(backend, **opts)
    except TaskFailedError as exc:
        click.echo(f"mempamal: {exc}", err=True)
        not_run = getattr(getattr(exc, "report", None), "not_run", [])
        if not_run:
            click.echo(f"mempamal: {len(not_run)} task(s) not run because a task they "
                       "depend on failed", err=True)
        click.echo(f"mempamal: see `mempamal status {wf.workdir.root}` and the logs in "
                   f"{wf.workdir.logs_dir}; fix the cause and rerun to resume", err=True)
        sys.exit(1)
    if "aggregate" in wf.done():
        _print_results(load_results(wf.workdir.root))


@cli.command(name="compile")
@click.argument("experiment_file", type=click.Path(dir_okay=False))
@click.option("--workdir", "-w", required=True, type=click.Path(file_okay=False))
@click.option("--backend", "-b", default=None, help="Also write this backend's scripts.")
@options_opt
@click.option("--chunk-size", type=int, default=None,
              help="Candidates per fit task (a sweep: trials per task).")
def compile_cmd(experiment_file, workdir, backend, options, chunk_size):
    """Compile EXPERIMENT_FILE into WORKDIR; runs nothing."""
    _check_backend(backend, _parse_options(options))
    wf = _compile(experiment_file, workdir, chunk_size)
    click.echo(f"mempamal: {len(wf)} tasks in {wf.workdir.workflow_file}")
    if backend:
        for path in wf.write(backend, **_parse_options(options)):
            click.echo(str(path))


@cli.command()
@workdir_arg
@backend_opt
@jobs_opt
@options_opt
@notify_opt
def submit(workdir, backend, n_jobs, options, notify):
    """Submit the pending tasks of WORKDIR and return at once."""
    from .workflow import Workflow

    opts = _parse_options(options, n_jobs, notify=notify)
    _check_backend(backend, opts)
    wf = Workflow.load(workdir)
    handle = wf.submit(backend, **opts)
    click.echo(f"mempamal: submitted: {_submission_text(handle, wf, backend)}")


def _submission_text(handle, wf, backend: str) -> str:
    """What a submission is, for a person: a background run's process and log, or the jobs."""
    import subprocess

    if isinstance(handle, subprocess.Popen):  # local, Soma-Workflow, Dask: a detached run
        log = wf.workdir.backend_dir(backend) / "run.log"
        return (f"the run goes on in the background (process {handle.pid}, log {log}); "
                f"follow it with: mempamal watch {shlex.quote(str(wf.workdir.root))}")
    return str(handle)


@cli.command()
@workdir_arg
@click.option("--backend", "-b", default=None, help="Also ask this backend's scheduler.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def status(workdir, backend, as_json):
    """Counts of tasks per kind and state; failures with their logs."""
    from .status import status_report

    report = status_report(workdir, backend)
    if as_json:
        click.echo(json.dumps(report, indent=1))
        return
    from .status import print_status

    print_status(report)
    sys.exit(1 if report["failures"] else 0)


@cli.command()
@workdir_arg
@click.option("--backend", "-b", default=None, help="Backend to ask (default: the last one).")
@click.option("--interval", type=click.FloatRange(min=0.1), default=1.0, show_default=True,
              help="Seconds between two refreshes.")
@click.option("--once", is_flag=True, help="Print one picture and exit.")
@click.option("--json", "as_json", is_flag=True, help="One snapshot, machine-readable.")
def watch(workdir, backend, interval, once, as_json):
    """Live view of WORKDIR's run until it ends (Ctrl-C stops the watch, not the run)."""
    from .watch import Watcher, render, watch_snapshot
    from .watch import watch as watch_live

    if as_json:
        click.echo(json.dumps(watch_snapshot(workdir, backend), indent=1, default=str))
    elif once:
        from rich.console import Console

        Console().print(render(Watcher(workdir, backend).snapshot()))
    else:
        watch_live(workdir, backend, interval)


@cli.command(name="ls")
@click.argument("root", default=".", type=click.Path(file_okay=False))
@click.option("--sort", default="created", show_default=True,
              type=click.Choice(["created", "path", "recipe", "state", "tasks", "best",
                                 "backend", "duration"]),
              help="Column to sort by (rows without a value last).")
@click.option("--reverse", "-r", is_flag=True, help="Largest (or latest) first.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def ls_cmd(root, sort, reverse, as_json):
    """The workdirs under ROOT (default: here): recipe, state, best score, duration."""
    from .ls import list_workdirs, print_rows

    rows = list_workdirs(root, sort, reverse)
    if as_json:
        click.echo(json.dumps(rows, indent=1))
    else:
        print_rows(rows, root)


@cli.command()
@workdir_arg
def verify(workdir):
    """Check every output against its recorded sha256; delete damaged ones."""
    from .runner import verify as verify_outputs
    from .workflow import Workflow

    found = verify_outputs(Workflow.load(workdir))
    for tid, problems in sorted(found.items()):
        for rel, why in problems:
            click.echo(f"{tid}: {rel}: {why} (deleted)")
    click.echo(f"mempamal: {len(found)} task(s) to recompute"
               + ("; run `mempamal resume` to do so" if found else ""))
    sys.exit(1 if found else 0)


@cli.command()
@workdir_arg
@click.option("--partial", is_flag=True,
              help="Report finished outer splits (or trials) only.")
def results(workdir, partial):
    """Print the outer scores table and the summary (a sweep: its best trials)."""
    from .results import load_results

    _print_results(load_results(workdir, partial=partial))


def _print_results(res) -> None:
    click.echo(res.to_text())


@cli.command()
@workdir_arg
@click.option("-o", "--output", "output", type=click.Path(dir_okay=False), default=None,
              metavar="FILE.html", help="Where to write it (default: WORKDIR/report.html).")
def report(workdir, output):
    """Write one self-contained HTML report of WORKDIR (a running one: partial)."""
    from .report import write_report

    click.echo(f"mempamal: report written to {write_report(workdir, output)}")


@cli.command()
@workdir_arg
@click.option("--mlflow", "mlflow_uri", is_flag=False, flag_value="sqlite:///mlflow.db",
              default=None, metavar="[TRACKING_URI]",
              help="Export to MLflow (default store: sqlite:///mlflow.db).")
@click.option("--experiment-name", default="mempamal", show_default=True,
              help="MLflow experiment of the runs.")
def export(workdir, mlflow_uri, experiment_name):
    """Export WORKDIR's results (one parent run, a child per outer split or trial)."""
    if mlflow_uri is None:
        raise click.UsageError("say where to export: --mlflow [TRACKING_URI]")
    from .export_mlflow import export_mlflow

    done = export_mlflow(workdir, mlflow_uri, experiment_name)
    click.echo(f"mempamal: exported to {mlflow_uri}: parent run {done['parent']} with "
               f"{done['children']} child run(s)")


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def queue(as_json):
    """The local runs of this machine, running and waiting, oldest first."""
    import time

    from .slots import live_tickets, n_cpu_slots, slots_dir

    tickets = live_tickets()
    if as_json:
        click.echo(json.dumps(tickets, indent=1))
        return
    click.echo(f"mempamal: {len(tickets)} local run(s) on {n_cpu_slots()} CPU slot(s) "
               f"({slots_dir()})")
    for t in tickets:
        state = "waiting" if t.get("waiting") and not t.get("held") else "running"
        age = time.time() - t["submitted"]
        click.echo(f"  {state:8} {t['done']}/{t['total']} tasks  {t['held']} slot(s)  "
                   f"pid {t['pid']}  {age:.0f}s  {t['workdir']}")


@cli.command(name="notify")
@workdir_arg
@click.option("--event", type=click.Choice(["end", "failure"]), required=True,
              help="end: the run ended (done or not); failure: a job failed.")
@click.option("--backend", "-b", default=None,
              help="Backend to ask for the states (default: the last one used).")
@click.option("--url", "urls", multiple=True, metavar="URL",
              help="apprise URL (repeatable; default: those the submission saved).")
def notify_cmd(workdir, event, backend, urls):
    """Send WORKDIR's end-of-run or failure message (what SLURM's notify jobs run)."""
    from .notify import notify_main

    sys.exit(notify_main(workdir, event, backend, list(urls)))


@cli.command(name="run-task")
@workdir_arg
@click.argument("task_ids", nargs=-1)
@click.option("--task-file", type=click.Path(dir_okay=False),
              help="File whose line INDEX holds the task ids to run (array jobs).")
@click.option("--index", type=int, default=None, help="Line of --task-file (from 0).")
@click.option("--force", is_flag=True, help="Run even if the outputs exist.")
@click.option("--then", "then", multiple=True, type=click.Path(dir_okay=False),
              metavar="TASK_FILE",
              help="Then, if every dependency of its tasks is done, run this one-line "
                   "task file here too (a SLURM element that ends last; repeatable).")
def run_task_cmd(workdir, task_ids, task_file, index, force, then):
    """Run tasks of WORKDIR in this process (what every backend runs)."""
    from .runner import run_tasks_main

    ids = list(task_ids)
    if task_file is not None:
        if index is None:
            raise click.UsageError("--task-file needs --index")
        with open(task_file, encoding="utf-8") as fh:
            lines = fh.read().splitlines()
        if not 0 <= index < len(lines):
            raise click.UsageError(f"--index {index}: {task_file} has {len(lines)} lines")
        ids += lines[index].split()
    if not ids:
        raise click.UsageError("no task id given")
    status = run_tasks_main(workdir, ids, force=force)
    if status == 0 and then:
        from .backends.slurm.tail import run_tails

        try:
            run_tails(workdir, then, lambda tail: run_tasks_main(workdir, tail))
        except Exception as exc:  # noqa: BLE001 - a shortcut: the tails' own jobs run them
            click.echo(f"mempamal: downstream tasks left to their own job: "
                       f"{type(exc).__name__}: {exc}", err=True)
    sys.exit(status)


def main() -> None:
    """Entry point: run the command, turning mempamal errors into messages."""
    try:
        cli(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("mempamal: interrupted; rerun to resume", err=True)
        sys.exit(130)
    except KeyboardInterrupt:
        click.echo("mempamal: interrupted; nothing half-written is kept; rerun to resume",
                   err=True)
        sys.exit(130)
    except click.exceptions.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except MempamalError as exc:
        click.echo(f"mempamal: error: {exc}", err=True)
        sys.exit(2)

