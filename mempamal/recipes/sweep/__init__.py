"""Sweep: any Python function called on every candidate, as a workflow.

For trials packed ``k`` per task::

    trial-{first}-{last}   call the function for each of its trials
          |  (all)
    aggregate              out/final/trials.csv, out/final/summary.json

Files of trial ``NAME`` (zero-padded id): ``out/trials/NAME.json`` (its
result, written when it finishes), ``trials/NAME/`` (its own folder,
``trial.dir``), ``logs/trials/NAME.jsonl`` (what it reported).
"""

from __future__ import annotations

from .context import SweepContext, load_context
from .dag import build_tasks, default_trials_per_task, estimated_seconds


def run_task(ctx: SweepContext, task) -> None:
    """Run ``task`` of a sweep workdir."""
    from . import tasks

    tasks.run(ctx, task)


def load_results(ctx: SweepContext, partial: bool = False):
    """The :class:`~mempamal.recipes.sweep.results.SweepResults` of ``ctx``'s workdir."""
    from .results import SweepResults

    return SweepResults.from_context(ctx, partial=partial)


__all__ = ["SweepContext", "build_tasks", "default_trials_per_task", "estimated_seconds",
           "load_context", "load_results", "run_task"]
