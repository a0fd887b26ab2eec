"""Sweep: any Python function, called on every candidate of a search space.

A :class:`Sweep` is the second kind of description mempamal compiles (the
first is :class:`~mempamal.Experiment`): the function, the candidates, how
many repeats (seeds) each gets, and which returned value ranks the trials.
It holds no data and does no I/O until :meth:`Sweep.compile`; every mistake
a user can make is refused by the constructor, naming the value.

The function is given as

- the function itself: stored by value when it lives in the user's script
  or files (:mod:`mempamal.pickling`), by reference when an installed
  package provides it;
- ``"package.module:func"``: imported by name in each task;
- ``"path/file.py:func"``: imported from that file in each task (its folder
  first on ``sys.path``); the file's content is part of the fingerprint,
  and a task refuses a file edited since the compile.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import numbers
import os
import sys
from pathlib import Path

from .errors import ValidationError

#: the parameter name through which a function asks for its trial context
TRIAL_PARAMETER = "trial"


class Sweep:
    """Call a Python function on every candidate of a search space, as a workflow.

    Parameters
    ----------
    func : callable or str
        The function, ``"package.module:func"`` or ``"path/file.py:func"``
        (a relative path is relative to the current directory). It takes
        the candidate's parameters by name, and a trial context
        (:class:`~mempamal.trial.Trial`) if it has a ``trial`` parameter. It
        returns a number (stored under ``metric``) or a dict of numbers.
    param_grid : dict or list of dict, optional
        Grid search space, as for ``GridSearchCV``.
    param_distributions : dict or list of dict, optional
        Random search space, as for ``RandomizedSearchCV`` (scipy.stats
        distributions or lists): the same candidates as scikit-learn's
        ``ParameterSampler`` with the same ``random_state``.
    n_iter : int, default=10
        Number of candidates of a random or model-based search.
    random_state : int, optional
        Seed of the random search, or of a model-based search's sampler
        (None means 0 there: a search compiled into a static workflow must
        ask the same candidates when it runs again).
    candidates : list of dict, optional
        An explicit list of candidates. With no space at all, the function
        is called once per repeat with its defaults. With a model-based
        search, evaluated first (Optuna's ``enqueue_trial``), within
        ``n_iter``.
    repeats : int, default=1
        Trials per candidate; each gets ``trial.seed`` 0, 1, ...,
        ``repeats - 1``. With more than one, the best candidate is chosen on
        the mean over its repeats.
    metric : str
        The returned value that ranks the trials.
    mode : {"min", "max"}
        Whether a smaller or a larger ``metric`` is better (no default: a
        loss and an accuracy are both common).
    on_error : {"continue", "raise"}, default="continue"
        A trial whose function raises is recorded as ``failed`` and the
        sweep goes on; ``"raise"`` fails its task instead.
    search : {"grid", "random", "tpe", "cmaes", "qmc"}, optional
        How candidates are chosen. By default ``"grid"`` with
        ``param_grid`` and ``"random"`` with ``param_distributions``: every
        candidate is known at compile time. ``"tpe"``, ``"cmaes"`` and
        ``"qmc"`` are model-based (Optuna's samplers, extra
        ``mempamal[optuna]``): ``n_iter`` candidates are asked in rounds of
        ``batch_size``, each round by a *suggest* task that reads the
        results of the earlier rounds; ``candidates`` given too are
        evaluated first. Nothing needs to stay alive between rounds.
    batch_size : int, optional
        Candidates per round of a model-based search (default
        ``min(8, n_iter)``): the trials of a round run in parallel.
    early_stopping : str or dict, optional
        ``"median"``, or ``{"rule": "median", "metric": ..., "mode": ...,
        "warmup_steps": 0, "min_trials": 5}``: ``trial.should_stop()`` is
        True when the trial's best reported value so far is worse than the
        median of the finished trials' values at its latest step (Optuna's
        ``MedianPruner``), read from their files. ``metric`` defaults to
        the sweep's. Such a trial is recorded ``pruned``.

    Examples
    --------
    >>> def f(x, y=1):
    ...     return (x - 2) ** 2 + y
    >>> sweep = Sweep(f, param_grid={"x": [1, 2, 3]}, metric="loss", mode="min")
    >>> sweep.n_trials
    3
    """

    def __init__(self, func, param_grid=None, *, param_distributions=None, n_iter: int = 10,
                 random_state=None, candidates=None, repeats: int = 1, metric=None,
                 mode=None, on_error: str = "continue", search=None, batch_size=None,
                 early_stopping=None) -> None:
        self.func_ref = func
        self.space = {
            "param_grid": param_grid, "param_distributions": param_distributions,
            "n_iter": n_iter, "random_state": random_state, "candidates": candidates,
        }
        self.repeats = repeats
        self.metric = metric
        self.mode = mode
        self.on_error = on_error
        self._check_options()
        _check_not_empty(self.space)
        from .adaptive.space import adaptive_settings

        self.search, self.adaptive = adaptive_settings(self.space, search, batch_size)
        self.early_stopping = _check_early_stopping(early_stopping, self.metric, self.mode)
        if self.adaptive is not None:
            # the enqueued candidates and one with every sampled name stand
            # for what suggest tasks will ask (checked against the signature)
            self.candidates = list(self.adaptive["enqueued"])
            checked = [*self.candidates, dict.fromkeys(param_distributions)]
        else:
            # here, not at the top: a task that imports the function from a
            # file uses this module, and must not pay scikit-learn's import
            from .space import make_candidates

            self.candidates = make_candidates(**self.space)
            if not self.candidates:
                raise ValidationError(f"the search space {_given_space(self.space)} holds "
                                      "no candidate; expected at least one")
            checked = self.candidates
        self.func, self.source = resolve_function(func)
        self.takes_trial = check_signature(self.func, checked, func)
        if self.early_stopping is not None and not self.takes_trial:
            raise ValidationError(
                f"early_stopping={early_stopping!r} needs a function that reports its "
                f"progress, but {_name(func)} has no {TRIAL_PARAMETER!r} parameter; add "
                "it, call trial.report(step, ...) and stop when trial.should_stop()")
        from .pickling import check_storable

        named = {"candidates": self.candidates}
        if self.adaptive is not None:
            named["param_distributions"] = self.adaptive["param_distributions"]
        if self.source["kind"] == "object":  # a reference is imported, never pickled
            named["func"] = self.func
        check_storable(named)

    def __repr__(self) -> str:
        how = "" if self.adaptive is None else (
            f"search={self.search!r} in rounds of {self.adaptive['batch_size']}, ")
        return (f"Sweep({_name(self.func_ref)}, {how}{self.n_candidates} candidates x "
                f"{self.repeats} repeats, metric={self.metric!r}, mode={self.mode!r})")

    @property
    def n_candidates(self) -> int:
        """Number of candidates (``n_iter`` for a model-based search)."""
        if self.adaptive is not None:
            return self.adaptive["n_iter"]
        return len(self.candidates)

    @property
    def n_trials(self) -> int:
        """Number of trials: candidates times repeats."""
        return self.n_candidates * self.repeats

    def _check_options(self) -> None:
        if not isinstance(self.metric, str) or not self.metric:
            raise ValidationError(f"metric must be the name of a returned value (a "
                                  f"non-empty str), got {self.metric!r}")
        if self.mode not in ("min", "max"):
            raise ValidationError(f"mode must be 'min' or 'max' (is a smaller or a larger "
                                  f"{self.metric!r} better?), got {self.mode!r}")
        r = self.repeats
        if not isinstance(r, numbers.Integral) or isinstance(r, bool) or r < 1:
            raise ValidationError(f"repeats must be a positive int, got {r!r}")
        self.repeats = int(r)
        if self.on_error not in ("continue", "raise"):
            raise ValidationError(f"on_error must be 'continue' or 'raise', got "
                                  f"{self.on_error!r}")

    def spec(self) -> dict:
        """Everything a trial task needs, as a picklable dict.

        A function given by reference is not pickled: each task imports it.
        """
        return {
            "func": self.func if self.source["kind"] == "object" else None,
            "source": dict(self.source), "takes_trial": self.takes_trial,
            "candidates": self.candidates, "repeats": self.repeats,
            "metric": self.metric, "mode": self.mode, "on_error": self.on_error,
            "search": self.search, "adaptive": self.adaptive,
            "early_stopping": self.early_stopping,
        }

    def compile(self, workdir, resources=None, trials_per_task=None, python=None,
                reuse=None):
        """Write the working directory and return its workflow.

        Runs nothing. If ``workdir`` already holds this same sweep (same
        fingerprint), its workflow is returned so that a run resumes; if it
        holds another one, :class:`~mempamal.errors.WorkdirError` is raised.

        Parameters
        ----------
        workdir : str or path-like
            The working directory (created if needed).
        resources : dict, optional
            Resource hints (``cpus``, ``mem_mb``, ``gpus``, ``time_min``) of
            one trial. Trials of a task run one after the other, so a task
            gets the same ``cpus``, ``mem_mb`` and ``gpus``, and
            ``time_min`` times its number of trials.
        trials_per_task : int, optional
            Trials run by one task. Default: one each up to 256 trials,
            beyond that as many per task as make 256 tasks (see
            :func:`mempamal.recipes.sweep.dag.default_trials_per_task`).
        python : str, optional
            Interpreter written in the task commands (default: this one).
        reuse : str, path-like or list of them, optional
            Earlier sweep workdirs of the same function (same code, or the
            same file content): every done trial of theirs with the same
            parameters and seed as one of this sweep is copied (result,
            reported metrics, ``trial.dir``), not run again -- more
            candidates, more ``n_iter`` or more ``repeats`` cost only the new
            trials. Not for model-based searches.

        Returns
        -------
        Workflow
        """
        from .recipes.sweep.compile import compile_sweep

        return compile_sweep(self, workdir, resources=resources,
                             trials_per_task=trials_per_task, python=python, reuse=reuse)


# -- the search space ------------------------------------------------------------
def _check_not_empty(space: dict) -> None:
    """Refuse a grid or distributions that are empty (``{}``, ``[]``, ``[{}]``)."""
    for key in ("param_grid", "param_distributions"):
        value = space[key]
        if value is None:
            continue
        parts = [value] if isinstance(value, dict) else value
        if not isinstance(parts, (list, tuple)) or not parts or any(
                isinstance(p, dict) and not p for p in parts):
            raise ValidationError(f"{key}={value!r} is an empty search space; expected a "
                                  "dict of parameter name -> values (or a list of them)")


#: rule -> its defaults (Optuna's MedianPruner: n_startup_trials=5, n_warmup_steps=0)
EARLY_STOPPING = {"median": {"warmup_steps": 0, "min_trials": 5}}


def _check_early_stopping(value, metric: str, mode: str) -> dict | None:
    """``early_stopping`` as a full dict (rule, metric, mode, warmup_steps, min_trials)."""
    if value is None:
        return None
    given = {"rule": value} if isinstance(value, str) else value
    if not isinstance(given, dict) or given.get("rule") not in EARLY_STOPPING:
        raise ValidationError(f"early_stopping={value!r}: expected one of "
                              f"{sorted(EARLY_STOPPING)} or a dict with 'rule' among them")
    out = {"rule": given["rule"], "metric": metric, "mode": mode,
           **EARLY_STOPPING[given["rule"]]}
    unknown = sorted(set(given) - set(out))
    if unknown:
        raise ValidationError(f"early_stopping: unknown key(s) {unknown}; expected some of "
                              f"{sorted(out)}")
    out.update(given)
    if not isinstance(out["metric"], str) or not out["metric"]:
        raise ValidationError(f"early_stopping metric must be a name, got {out['metric']!r}")
    if out["mode"] not in ("min", "max"):
        raise ValidationError(f"early_stopping mode must be 'min' or 'max', got "
                              f"{out['mode']!r}")
    for key in ("warmup_steps", "min_trials"):
        v = out[key]
        if not isinstance(v, numbers.Integral) or isinstance(v, bool) or v < 0:
            raise ValidationError(f"early_stopping {key} must be an int >= 0, got {v!r}")
        out[key] = int(v)
    return out


def _given_space(space: dict) -> str:
    given = {k: v for k, v in space.items() if v is not None and k not in ("n_iter",
                                                                        "random_state")}
    return ", ".join(f"{k}={v!r}" for k, v in given.items()) or "(none)"


# -- the function -----------------------------------------------------------------
def resolve_function(ref) -> tuple:
    """The function ``ref`` names, and how tasks find it again.

    Returns
    -------
    func : callable
    source : dict
        ``{"kind": "object"}``; ``{"kind": "module", "module": ..., "name": ...}``;
        or ``{"kind": "file", "path": absolute path, "name": ..., "sha256": ...}``.

    Raises
    ------
    ValidationError
        If ``ref`` is neither callable nor a reference that imports.
    """
    if callable(ref):
        return ref, {"kind": "object"}
    if not isinstance(ref, str) or ":" not in ref:
        raise ValidationError(
            f"func={ref!r}: expected a function, 'package.module:func' or "
            "'path/file.py:func'")
    where, _, name = ref.rpartition(":")
    if not where or not name:
        raise ValidationError(f"func={ref!r}: expected 'package.module:func' or "
                              "'path/file.py:func'")
    if where.endswith(".py") or "/" in where or os.sep in where:
        path = Path(where).expanduser().resolve()
        if not path.is_file():
            raise ValidationError(f"func={ref!r}: no file {str(path)!r}")
        source = {"kind": "file", "path": str(path), "name": name,
                  "sha256": _sha256(path)}
    else:
        source = {"kind": "module", "module": where, "name": name}
    try:
        func = load_function(source)
    except ValidationError:
        raise
    except Exception as exc:  # noqa: BLE001 - any import failure is the user's
        raise ValidationError(f"func={ref!r} does not import: {type(exc).__name__}: "
                              f"{exc}") from exc
    if not callable(func):
        raise ValidationError(f"func={ref!r} names a {type(func).__name__}, not a function")
    return func, source


def load_function(source: dict):
    """Import the function a ``source`` record (see :func:`resolve_function`) names."""
    if source["kind"] == "module":
        module = importlib.import_module(source["module"])
        what = f"module {source['module']!r}"
    else:
        module = _import_file(Path(source["path"]))
        what = f"file {source['path']!r}"
    obj = module
    for part in source["name"].split("."):
        if not hasattr(obj, part):
            raise ValidationError(f"{what} has no attribute {source['name']!r}")
        obj = getattr(obj, part)
    return obj


def _import_file(path: Path):
    """Import ``path`` as a module named after it, its folder first on ``sys.path``.

    As ``python path`` would see it: ``from helpers import x`` next to it works.
    """
    folder = str(path.parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    name = path.stem
    known = sys.modules.get(name)
    if known is not None:
        if os.path.abspath(getattr(known, "__file__", "") or "") == str(path):
            return known
        name = f"_mempamal_sweep_{name}"  # another module holds the name
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def _sha256(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def check_signature(func, candidates: list[dict], ref) -> bool:
    """Refuse parameters ``func`` does not accept; whether it takes a ``trial``.

    Every candidate's parameters must be accepted by name, and every
    parameter without a default (but ``trial``) given by every candidate.
    """
    try:
        sig = inspect.signature(func)
    except (TypeError, ValueError):  # a builtin without a signature: trust it
        return False
    params = sig.parameters
    by_name = {n: p for n, p in params.items()
               if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    takes_kwargs = any(p.kind == p.VAR_KEYWORD for p in params.values())
    takes_trial = TRIAL_PARAMETER in by_name
    accepted = sorted(n for n in by_name if n != TRIAL_PARAMETER)
    for k, cand in enumerate(candidates):
        if TRIAL_PARAMETER in cand:
            raise ValidationError(
                f"candidate {k} ({cand!r}) sets {TRIAL_PARAMETER!r}, the name through "
                "which the function receives its trial context; rename that parameter")
        unknown = sorted(set(cand) - set(by_name)) if not takes_kwargs else []
        if unknown:
            raise ValidationError(
                f"{_name(ref)} does not accept parameter(s) {unknown} (candidate {k}: "
                f"{cand!r}); it accepts {accepted}")
        missing = sorted(n for n, p in by_name.items()
                         if p.default is p.empty and n != TRIAL_PARAMETER and n not in cand)
        if missing:
            raise ValidationError(
                f"{_name(ref)} requires parameter(s) {missing}, which candidate {k} "
                f"({cand!r}) does not give; add them to the search space or give "
                "them defaults")
    return takes_trial


def _name(ref) -> str:
    if isinstance(ref, str):
        return repr(ref)
    return getattr(ref, "__qualname__", None) or repr(ref)
