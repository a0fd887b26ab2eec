"""What a task reads from its workdir, loaded once per process and recipe.

A persistent worker runs many tasks of the same workdir; loading the pickled
description and memory-mapping the data once per process, not once per
task, is what keeps tiny tasks cheap. What is loaded depends on the
workflow's recipe (:mod:`mempamal.recipes`).
"""

from __future__ import annotations

import os
from functools import lru_cache

from .errors import WorkdirError
from .workdir import Workdir
from .workflow import Workflow, sha256_file


def load_context(root):
    """The task context of the workdir at ``root`` (its recipe's kind).

    Cached while workflow.json and experiment.pkl are unchanged: a change to
    either is loaded (and its digests verified) again.
    """
    wd = Workdir(root)
    try:
        stamp = tuple(os.stat(f).st_mtime_ns for f in (wd.workflow_file, wd.experiment_file))
    except FileNotFoundError as exc:
        raise WorkdirError(f"{str(wd.root)!r} is not a complete workdir: {exc}") from None
    return _load(str(wd.root), stamp)


@lru_cache(maxsize=4)
def _load(root: str, _stamp: tuple):
    from .recipes import get_recipe

    wd = Workdir(root)
    wf = _workflow(root, _stamp[0])
    return get_recipe(wf.recipe).load_context(wd, wf)


def load_workflow(root) -> Workflow:
    """The workflow of the workdir at ``root``, cached while workflow.json is unchanged.

    What deciding that a line of tasks is already done needs: no pickle is
    loaded, no scikit-learn imported.
    """
    wd = Workdir(root)
    try:
        stamp = os.stat(wd.workflow_file).st_mtime_ns
    except FileNotFoundError as exc:
        raise WorkdirError(f"{str(wd.root)!r} is not a complete workdir: {exc}") from None
    return _workflow(str(wd.root), stamp)


@lru_cache(maxsize=4)
def _workflow(root: str, _stamp: int) -> Workflow:
    return Workflow.load(Workdir(root))


def check_digest(wf: Workflow, name: str) -> None:
    """Refuse a workdir file that is not the one compiled (trust boundary)."""
    expected = wf.file_digest(name)
    actual = sha256_file(wf.workdir.path(name))
    if expected != actual:
        raise WorkdirError(
            f"{name} in {str(wf.workdir.root)!r} does not match workflow.json "
            f"(sha256 {actual[:12]}..., expected {str(expected)[:12]}...); "
            "refusing to load it"
        )


def load_compiled_pickle(wf: Workflow, name: str):
    """Unpickle the workdir file ``name`` after checking its compile-time digest."""
    from .pickling import load_pickle

    return load_pickle(wf.workdir.path(name), wf.file_digest(name), name,
                       recorded_in="in workflow.json")
