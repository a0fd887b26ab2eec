"""Search spaces as scikit-learn users write them, translated to Optuna distributions."""

from __future__ import annotations

import math
import numbers

from ..errors import ValidationError

#: search -> static (candidates known at compile) or model-based (suggest tasks)
SEARCHES = {"grid": "static", "random": "static", "tpe": "adaptive", "cmaes": "adaptive",
            "qmc": "adaptive"}
#: scipy.stats distributions that have an Optuna equivalent
_CONTINUOUS = {"uniform": False, "loguniform": True, "reciprocal": True}


def import_optuna():
    """Optuna, or an error that names the extra to install."""
    try:
        import optuna
    except ImportError as exc:
        raise ValidationError(
            f"model-based search needs optuna ({exc}); install it with "
            "`pip install 'mempamal[optuna]'`"
        ) from exc
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def adaptive_settings(space: dict, search, batch_size) -> tuple[str, dict | None]:
    """The search's name, and for a model-based one what its suggest tasks need.

    ``space`` holds ``param_grid``, ``param_distributions``, ``n_iter``,
    ``random_state`` and ``candidates`` as the user gave them (the same for
    a :class:`~mempamal.Sweep` and an :class:`~mempamal.Experiment`).

    Raises before anything is written: an unknown search, a space that does
    not fit it, ``batch_size`` out of range, optuna missing.
    """
    grid, dists = space["param_grid"], space["param_distributions"]
    if search is None:
        search = "random" if dists is not None else "grid"
    if search not in SEARCHES:
        raise ValidationError(f"search={search!r} is not a search; expected one of "
                              f"{sorted(SEARCHES)}")
    if SEARCHES[search] == "static":
        if batch_size is not None:
            raise ValidationError(f"batch_size={batch_size!r} is for a model-based search "
                                  f"(tpe, cmaes, qmc); search={search!r} knows every "
                                  "candidate at compile time")
        if search == "grid" and dists is not None:
            raise ValidationError("search='grid' takes param_grid, not param_distributions")
        if search == "random" and grid is not None:
            raise ValidationError("search='random' takes param_distributions, not "
                                  "param_grid (or use search='grid')")
        return search, None
    n_iter = space["n_iter"]
    if batch_size is None and isinstance(n_iter, int) and n_iter >= 1:
        batch_size = min(8, n_iter)
    check_search(search, param_grid=grid, param_distributions=dists, n_iter=n_iter,
                 batch_size=batch_size)
    enqueued = space["candidates"]
    if enqueued is None:
        enqueued = []
    if (not isinstance(enqueued, (list, tuple))
            or not all(isinstance(c, dict) for c in enqueued)):
        raise ValidationError(f"candidates={enqueued!r}: expected a list of dicts")
    if len(enqueued) > n_iter:
        raise ValidationError(f"{len(enqueued)} candidates given to evaluate first, more "
                              f"than n_iter={n_iter}")
    names = set(dists)
    for k, cand in enumerate(enqueued):
        if set(cand) != names:
            raise ValidationError(f"candidate {k} ({cand!r}) must set exactly the "
                                  f"parameters of param_distributions: {sorted(names)}")
    seed = space["random_state"]
    if seed is None:
        # a static workflow must ask the same candidates when it runs again
        seed = 0
    elif not isinstance(seed, numbers.Integral) or isinstance(seed, bool):
        raise ValidationError(f"random_state must be an int or None for search={search!r}, "
                              f"got {seed!r}")
    return search, {
        "search": search, "param_distributions": dict(dists), "n_iter": int(n_iter),
        "batch_size": int(batch_size), "random_state": int(seed),
        "enqueued": [dict(c) for c in enqueued],
        # what the fingerprint sees of the space: scipy objects hash unstably
        "space": {k: list(dists[k]) if isinstance(dists[k], (list, tuple)) else repr(v)
                  for k, v in sorted(to_optuna(dists).items())},
    }


def check_search(search, *, param_grid, param_distributions, n_iter, batch_size) -> str:
    """Validate ``search`` against the space given; return its kind (static/adaptive)."""
    if search not in SEARCHES:
        raise ValidationError(f"search={search!r} is not a search; expected one of "
                              f"{sorted(SEARCHES)}")
    if SEARCHES[search] == "static":
        return "static"
    if param_grid is not None:
        raise ValidationError(f"search={search!r} samples a space: give param_distributions "
                              "(scipy.stats distributions and lists), not param_grid")
    if param_distributions is None:
        raise ValidationError(f"search={search!r} needs param_distributions")
    if not isinstance(n_iter, int) or isinstance(n_iter, bool) or n_iter < 1:
        raise ValidationError(f"n_iter must be a positive int, got {n_iter!r}")
    if (not isinstance(batch_size, int) or isinstance(batch_size, bool)
            or not 1 <= batch_size <= n_iter):
        raise ValidationError(f"batch_size={batch_size!r}: expected an int between 1 and "
                              f"n_iter={n_iter}")
    import_optuna()
    to_optuna(param_distributions)  # refuses what Optuna cannot sample, naming it
    return "adaptive"


def to_optuna(param_distributions) -> dict:
    """``{name: optuna distribution}`` for a dict of scipy.stats distributions and lists.

    Lists become categorical distributions (over their indices when the
    values are not plain numbers or strings, e.g. estimators); a distribution
    with no Optuna equivalent is refused, naming the parameter.
    """
    optuna = import_optuna()
    dist = optuna.distributions
    if not isinstance(param_distributions, dict):
        raise ValidationError("model-based search takes one dict of distributions, got "
                              f"{type(param_distributions).__name__}")
    out = {}
    for name, spec in param_distributions.items():
        if isinstance(spec, (list, tuple)):
            if not spec:
                raise ValidationError(f"param_distributions[{name!r}] is an empty list")
            plain = all(v is None or isinstance(v, (bool, int, float, str)) for v in spec)
            out[name] = dist.CategoricalDistribution(list(spec) if plain
                                                     else list(range(len(spec))))
            continue
        out[name] = _scipy_to_optuna(name, spec, dist)
    return out


def _scipy_to_optuna(name, spec, dist):
    frozen = getattr(spec, "dist", None)
    kind = getattr(frozen, "name", None)
    if kind is None or not hasattr(spec, "support"):
        raise ValidationError(f"param_distributions[{name!r}]={spec!r}: expected a list or "
                              "a scipy.stats uniform, loguniform or randint distribution")
    low, high = spec.support()
    if kind in _CONTINUOUS:
        return dist.FloatDistribution(float(low), float(high), log=_CONTINUOUS[kind])
    if kind == "randint":
        return dist.IntDistribution(int(low), int(high))
    raise ValidationError(
        f"param_distributions[{name!r}] is a scipy.stats {kind!r} distribution, which "
        "model-based search cannot sample (no Optuna equivalent); use uniform, "
        "loguniform, randint or a list -- or search='random', which takes any"
    )


def from_optuna(param_distributions: dict, params: dict) -> dict:
    """Optuna's sampled values back to the user's values (list indices -> items)."""
    out = {}
    for name, value in params.items():
        spec = param_distributions[name]
        if isinstance(spec, (list, tuple)) and not all(
                v is None or isinstance(v, (bool, int, float, str)) for v in spec):
            value = spec[int(value)]
        out[name] = value
    return out


def to_optuna_params(param_distributions: dict, params: dict) -> dict:
    """The user's values as Optuna holds them (items of non-plain lists -> indices)."""
    out = {}
    for name, value in params.items():
        spec = param_distributions.get(name)
        if isinstance(spec, (list, tuple)) and not all(
                v is None or isinstance(v, (bool, int, float, str)) for v in spec):
            value = next(k for k, v in enumerate(spec) if v is value or v == value)
        elif isinstance(value, numbers.Integral) and not isinstance(value, bool):
            value = int(value)
        elif isinstance(value, numbers.Real) and not isinstance(value, bool):
            value = float(value)
        out[name] = value
    return out


def is_number(value) -> bool:
    """A finite real number (what Optuna can be told)."""
    return (isinstance(value, numbers.Real) and not isinstance(value, bool)
            and math.isfinite(float(value)))
