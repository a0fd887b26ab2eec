"""Recipes: descriptions of work compiled into workflows.

A recipe is a module (or package) that owns its task kinds, what they
compute, their aggregation and its results object. The runner and the
readers dispatch on ``workflow.meta["recipe"]``; backends only run task ids
and never learn what a recipe is. A recipe module provides:

``load_context(workdir, workflow)``
    What its tasks need (the pickled description, data...), loaded once per
    process; an object with ``workdir`` and ``workflow`` attributes.
``run_task(ctx, task)``
    Compute one task, writing its outputs atomically.
``load_results(ctx, partial=False)``
    Its results object (with a ``to_text()`` for the command line).
``estimated_seconds(task, meta)``
    Rough seconds of work of a task, or None when nothing was timed (cluster
    backends pack short tasks per job with it).
"""

from __future__ import annotations

from importlib import import_module

from ..errors import WorkdirError

#: recipe name -> module
RECIPES = {"nested_cv": "mempamal.recipes.nested_cv", "sweep": "mempamal.recipes.sweep"}


def get_recipe(name: str):
    """The module of recipe ``name``."""
    try:
        return import_module(RECIPES[name])
    except KeyError:
        raise WorkdirError(
            f"workflow recipe {name!r} is unknown to this mempamal; expected one of "
            f"{sorted(RECIPES)}"
        ) from None
