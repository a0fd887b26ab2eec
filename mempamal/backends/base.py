"""The Backend interface and the registry of backends by name."""

from __future__ import annotations

import contextvars
import importlib
import json
import os
import socket
import subprocess
import sys
from dataclasses import dataclass, field

from ..errors import BackendError, TaskFailedError, ValidationError
from ..workdir import read_meta

#: name -> "module:Class", imported only when asked for (optional extras)
_REGISTRY: dict[str, str] = {
    "local": "mempamal.backends.local:LocalBackend",
    "slurm": "mempamal.backends.slurm:SlurmBackend",
    "soma": "mempamal.backends.soma:SomaBackend",
    "dask": "mempamal.backends.dask:DaskBackend",
}
#: what to install when a backend's import fails
_EXTRAS = {"soma": "mempamal[soma]", "dask": "mempamal[dask]"}


def register_backend(name: str, target: str) -> None:
    """Register backend ``name`` as ``"module:Class"`` (imported lazily)."""
    _REGISTRY[name] = target


def available_backends() -> list[str]:
    """Names of the registered backends."""
    return sorted(_REGISTRY)


def get_backend(name: str, **options) -> Backend:
    """Instantiate backend ``name`` with validated ``options``."""
    if isinstance(name, Backend):
        return name
    try:
        target = _REGISTRY[name]
    except KeyError:
        raise ValidationError(
            f"unknown backend {name!r}; expected one of {available_backends()}"
        ) from None
    module, _, cls = target.partition(":")
    try:
        mod = importlib.import_module(module)
    except ImportError as exc:
        extra = _EXTRAS.get(name)
        hint = f"; install it with `pip install {extra}`" if extra else ""
        raise BackendError(f"backend {name!r} is not available ({exc}){hint}") from exc
    return getattr(mod, cls)(**options)


#: ``listener(task_id, reason)`` told of each failure as a backend books it, while
#: :meth:`~mempamal.workflow.Workflow.run` runs (the first-failure notification)
failure_listener: contextvars.ContextVar = contextvars.ContextVar("failure_listener",
                                                                  default=None)


class _FailureBook(dict):
    """``{task_id: reason}`` that tells :data:`failure_listener` of each new entry.

    Every backend books a failure with ``report.failures[tid] = reason`` the
    moment it learns of it; hooking the booking tells a listener at that
    moment without each backend knowing about notifications.
    """

    def __setitem__(self, tid, reason) -> None:
        new = tid not in self
        super().__setitem__(tid, reason)
        listener = failure_listener.get()
        if new and listener is not None:
            listener(tid, reason)


@dataclass
class RunReport:
    """What a run did.

    Attributes
    ----------
    executed : list of str
        Tasks that ran (successfully or not) during this run.
    failures : dict
        ``{task_id: reason}`` of the tasks that failed.
    not_run : list of str
        Tasks not run because something upstream failed.
    """

    executed: list = field(default_factory=list)
    failures: dict = field(default_factory=_FailureBook)
    not_run: list = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures

    def raise_for_failures(self) -> RunReport:
        """Raise :class:`TaskFailedError` (carrying this report) if a task failed."""
        if self.failures:
            err = TaskFailedError(self.failures)
            err.report = self
            raise err
        return self


class Backend:
    """Base class: translate a workflow into runs on some executor.

    Subclasses set ``name`` and ``options`` (valid option -> default) and
    implement :meth:`submit` (and :meth:`write` where they produce files).
    """

    name = "base"
    options: dict = {}
    #: options every backend takes (``notify``: apprise URLs told when a run ends)
    common_options: dict = {"notify": None}
    #: True when the backend's own artefacts send the notifications (SLURM's
    #: notify jobs); otherwise the process that runs the workflow sends them
    sends_notifications = False

    def __init__(self, **options) -> None:
        valid = {**self.common_options, **self.options}
        unknown = sorted(set(options) - set(valid))
        if unknown:
            raise ValidationError(
                f"unknown option(s) {unknown} for backend {self.name!r}; "
                f"valid options: {sorted(valid)}"
            )
        self.opts = {**valid, **options}
        from ..notify import check_urls

        # refused here, before anything is written, naming the bad scheme
        self.opts["notify"] = check_urls(self.opts["notify"])
        self.validate()

    def validate(self) -> None:
        """Check option values; raise ValidationError naming the bad one."""

    def write(self, workflow) -> list:
        """Write this backend's artefacts (scripts...); return their paths."""
        return []

    def submit(self, workflow):
        """Start the pending tasks; return a handle without waiting."""
        raise NotImplementedError

    def run(self, workflow) -> RunReport:
        """Submit the pending tasks and wait for them."""
        raise NotImplementedError

    def status(self, workflow) -> dict[str, str]:
        """``{task_id: state}``: done, failed, running or pending."""
        return file_status(workflow)


def resume_in_background(workflow, backend: str, options: dict):
    """Start ``mempamal resume WORKDIR --backend NAME -o KEY=VALUE...`` detached.

    ``submit`` of the backends whose engine lives in the submitting process
    (local, Soma-Workflow light mode, Dask): the caller returns at once and
    the run goes on, logging to ``WORKDIR/NAME/run.log``.

    Returns
    -------
    subprocess.Popen
    """
    wd = workflow.workdir
    argv = [sys.executable, "-m", "mempamal", "resume", str(wd.root), "--backend", backend]
    env = None
    for key, value in options.items():
        if key == "notify" and value:
            # URLs may hold tokens: any user of the machine can read a command
            # line (ps), only its owner an environment
            env = {**os.environ, NOTIFY_ENV: json.dumps(value)}
        elif value is not None:
            argv += ["-o", f"{key}={json.dumps(value)}"]
    logs = wd.backend_dir(backend)
    logs.mkdir(mode=0o755, parents=True, exist_ok=True)
    with open(logs / "run.log", "ab") as log:  # the child keeps its own descriptor
        return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env,
                                stdin=subprocess.DEVNULL, start_new_session=True)


#: how :func:`resume_in_background` hands notification URLs to the run it starts
NOTIFY_ENV = "MEMPAMAL_NOTIFY_URLS"


def file_status(workflow) -> dict[str, str]:
    """Task states from the workdir alone: outputs first, then meta records."""
    wd = workflow.workdir
    done = workflow.done()
    # one directory listing tells which tasks ever started (100,000 failed
    # opens would cost a second)
    started = wd.with_meta(t for t in workflow.tasks if t not in done)
    states = {}
    for tid in workflow.tasks:
        if tid in done:
            states[tid] = "done"
            continue
        meta = read_meta(wd, tid) if tid in started else None
        if meta is None:
            states[tid] = "pending"
        elif meta.get("state") == "failed":
            states[tid] = "failed"
        elif meta.get("state") == "running" and _maybe_alive(meta):
            states[tid] = "running"
        else:
            states[tid] = "pending"
    return states


def _maybe_alive(meta: dict) -> bool:
    """False only when we can tell the process that ran the task is gone."""
    if meta.get("host") != socket.gethostname() or meta.get("slurm_job"):
        return True
    try:
        os.kill(int(meta["pid"]), 0)
    except (ProcessLookupError, KeyError, ValueError):
        return False
    except PermissionError:
        return True
    return True
