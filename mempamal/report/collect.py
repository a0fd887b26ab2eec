"""What a report reads from a workdir: states, meta records, results, description.

Everything is read from files, during a run or long after it; nothing asks
a scheduler (a report is written from any machine that sees the files).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from ..errors import WorkdirError
from ..workdir import Workdir, read_meta
from ..workflow import Workflow


@dataclass
class RunData:
    """One workdir as the report sections see it.

    Attributes
    ----------
    workflow : Workflow
    states : dict
        ``{task_id: state}`` from the files (done, running, failed, pending).
    metas : dict
        ``{task_id: meta record}`` of every task that started.
    status : dict
        :func:`mempamal.status.status_report` (failures grouped by cause).
    now : float
        When the report was read (the end of a running task's bar).
    results : object or None
        ``load_results(workdir, partial=True)``, None when nothing is finished.
    results_note : str or None
        Why ``results`` is None.
    spec : dict or None
        The compiled description (estimator, candidates...) when it loads here.
    """

    workflow: Workflow
    states: dict
    metas: dict
    status: dict
    now: float
    results: object = None
    results_note: str | None = None
    spec: dict | None = None
    context: object = None
    counts: dict = field(default_factory=dict)

    @property
    def recipe(self) -> str:
        return self.workflow.recipe

    @property
    def finished(self) -> bool:
        """Whether every task is done (the report is then complete)."""
        return all(s == "done" for s in self.states.values())


def check_workdir(workdir) -> Workdir:
    """The :class:`Workdir` at ``workdir``; a clear error when it is not one."""
    wd = Workdir(workdir)
    if not wd.root.is_dir():
        raise WorkdirError(f"cannot report on {str(workdir)!r}: no such directory")
    if not wd.workflow_file.is_file():
        raise WorkdirError(
            f"cannot report on {str(workdir)!r}: it is not a mempamal workdir "
            f"(no {wd.workflow_file.name}; compile an experiment or a sweep into it first)")
    return wd


def collect(workdir) -> RunData:
    """Read everything the report shows from ``workdir``."""
    from ..status import status_report

    wd = check_workdir(workdir)
    context, note = _load_context(wd)
    # the context holds the workflow: loading a 100,000-task one again costs seconds
    wf = context.workflow if context is not None else Workflow.load(wd)
    now = time.time()
    # "local": the states the files say; never a scheduler query from a report
    status = status_report(wd.root, backend="local", workflow=wf, usage=False)
    states = status["states"]
    # one directory listing, not one stat per task (100,000 tasks, NFS)
    present = wd.existing(Workdir.meta_relative(tid) for tid in states)
    metas = {}
    for tid in states:
        if Workdir.meta_relative(tid) in present:
            meta = read_meta(wd, tid)
            if meta is not None:
                metas[tid] = meta
    run = RunData(wf, states, metas, status, now, results_note=note, context=context,
                  spec=None if context is None else context.spec)
    for state in states.values():
        run.counts[state] = run.counts.get(state, 0) + 1
    if context is not None:
        _load_results(run)
    return run


def _load_context(wd: Workdir):
    """``(context, None)``, or ``(None, why)`` when the experiment cannot be loaded here.

    A report must still show the run (timeline, failures) then: the
    experiment may unpickle only where its own modules are importable.
    """
    from ..context import load_context

    try:
        return load_context(wd.root), None
    except Exception as exc:  # any unpickling error: reported on the page, not raised
        return None, (f"the experiment in {str(wd.root)!r} cannot be loaded here "
                      f"({type(exc).__name__}: {exc})")


def _load_results(run: RunData) -> None:
    """The results so far, or a note saying why there are none (nothing finished yet)."""
    from ..results import load_results

    root = run.workflow.workdir.root
    try:
        run.results = load_results(root, partial=True)
    except WorkdirError:
        # with partial=True: nothing is finished yet, which the sections say
        # in their own words ("No outer split is finished yet")
        run.results = None
    except Exception as exc:  # a damaged output: the rest of the page still shows
        run.results_note = f"results cannot be read: {type(exc).__name__}: {exc}"
