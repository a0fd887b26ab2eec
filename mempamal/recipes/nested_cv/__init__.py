"""Nested cross-validation: the first recipe.

For outer split o, inner split i and candidate chunk c::

    fit-o{o}-i{i}-c{c}   fit + score the candidates of chunk c on inner split (o, i)
          |  (all i, c of split o)
    select-o{o}          best candidate, refit on outer-train, score on outer-test
          |  (all o)
    aggregate            summary, cv_results, outer scores

Without inner cross-validation: ``fit-o{o}`` -> ``aggregate``. The result
equals ``cross_validate(GridSearchCV(...))`` on the same splits.

With a model-based search (``Experiment(..., search="tpe")``), each outer
split asks its candidates in rounds: ``suggest-o{o}-r{r}`` -> the round's
``fit-o{o}-i{i}-c{c}`` -> ``suggest-o{o}-r{r+1}`` ... -> ``select-o{o}``
(see :func:`~mempamal.recipes.nested_cv.dag.build_adaptive_tasks`).
"""

from __future__ import annotations

from .context import NestedCVContext, load_context
from .dag import build_tasks, chunks, estimated_seconds


def run_task(ctx: NestedCVContext, task) -> None:
    """Run ``task`` of a nested-CV workdir (scikit-learn imported here only)."""
    from . import tasks

    tasks.run(ctx, task)


def load_results(ctx: NestedCVContext, partial: bool = False):
    """The :class:`~mempamal.recipes.nested_cv.results.Results` of ``ctx``'s workdir."""
    from .results import Results

    return Results.from_context(ctx, partial=partial)


__all__ = ["NestedCVContext", "build_tasks", "chunks", "estimated_seconds", "load_context",
           "load_results", "run_task"]
