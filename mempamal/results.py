"""Results of a run, read from its working directory, whatever its recipe."""

from __future__ import annotations


def load_results(workdir, partial: bool = False):
    """Read the results of the run in ``workdir``.

    Parameters
    ----------
    workdir : str or path-like
        A compiled (and run) working directory.
    partial : bool, default=False
        Accept a run that is not finished (only what is finished is reported).

    Returns
    -------
    Results or SweepResults
        The results object of the workdir's recipe: outer scores and inner
        ``cv_results`` of a nested CV, or the trial table of a sweep.
    """
    from .context import load_context
    from .recipes import get_recipe

    ctx = load_context(workdir)
    return get_recipe(ctx.workflow.recipe).load_results(ctx, partial=partial)


def __getattr__(name):
    if name == "Results":  # the nested-CV results class, under its historic name
        from .recipes.nested_cv.results import Results

        return Results
    raise AttributeError(name)
