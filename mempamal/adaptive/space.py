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
