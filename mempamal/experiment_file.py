"""Load an experiment file: a plain Python file defining the experiment and its data.

The file must define ``experiment`` (an :class:`~mempamal.Experiment`) and
either ``X`` and ``y`` (optionally ``groups``) or a function ``load_data()``
returning ``(X, y)`` or ``(X, y, groups)``. It may define ``compile_options``
(a dict passed to :meth:`~mempamal.Experiment.compile`, e.g. ``chunk_size``).

Or it defines ``sweep`` (a :class:`~mempamal.Sweep`), which needs no data;
its ``compile_options`` go to :meth:`~mempamal.Sweep.compile`
(``resources``, ``trials_per_task``).
"""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

from .errors import ValidationError
from .experiment import Experiment


def run_user_file(path) -> dict:
    """Run a user's Python file as ``python FILE`` would; return its namespace.

    Its folder goes first on ``sys.path`` (so ``from mymodule import f`` finds
    the modules next to it) and counts as the user's own: what the file
    defines, and those modules, are stored by value for the tasks
    (:mod:`mempamal.pickling`).
    """
    from .pickling import add_local_root

    folder = str(Path(path).resolve().parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    add_local_root(folder)
    return runpy.run_path(str(path), run_name="__mempamal_experiment__")


def load_experiment_file(path) -> tuple[Experiment, tuple, dict]:
    """Run ``path``; return ``(experiment, (X, y, groups), compile_options)``.

    For a file that defines ``sweep``: ``(sweep, None, compile_options)``.
    """
    from .sweep import Sweep

    path = Path(path)
    if not path.is_file():
        raise ValidationError(f"experiment file {str(path)!r} does not exist")
    ns = run_user_file(path)
    exp = ns.get("experiment")
    if isinstance(ns.get("sweep"), Sweep) and exp is None:
        return ns["sweep"], None, dict(ns.get("compile_options", {}))
    if not isinstance(exp, Experiment):
        raise ValidationError(
            f"{str(path)!r} must define `experiment = mempamal.Experiment(...)` or "
            f"`sweep = mempamal.Sweep(...)`; found {type(exp).__name__}"
        )
    if "load_data" in ns:
        data = tuple(ns["load_data"]())
    elif "X" in ns:
        data = (ns["X"], ns.get("y"), ns.get("groups"))
    else:
        raise ValidationError(f"{str(path)!r} must define X and y, or load_data()")
    if len(data) not in (2, 3):
        raise ValidationError(
            f"load_data() in {str(path)!r} returned {len(data)} items; expected (X, y) "
            "or (X, y, groups)"
        )
    data = data + (None,) * (3 - len(data))
    return exp, data, dict(ns.get("compile_options", {}))
