"""Fit parameters (``sample_weight``...): routed as ``cross_validate(GridSearchCV)`` does.

``compile(..., params={...})`` mirrors ``cross_validate(..., params=...)``.
At compile time the parameters are routed once, with scikit-learn's own
routers, to the four places that use them:

- ``inner_fit`` / ``inner_score``: what ``GridSearchCV`` gives each
  candidate's fit and its scorer;
- ``outer_fit``: what refits the best candidate on the outer-train set (the
  search's own ``fit`` parameters, as ``best_estimator_.fit`` gets them);
- ``outer_score``: what ``cross_validate`` gives its scorer.

Per-sample values are stored like X (``data/param-NAME.npy``, memory-mapped)
and referred to by name; ``_fit_and_score`` slices them to each train and
test set with the absolute indices of the full data, which is what slicing
to the outer-train set and then to an inner split gives.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import numpy as np

from ...errors import ValidationError

#: routed destinations, in the spec
DESTINATIONS = ("inner_fit", "inner_score", "outer_fit", "outer_score")


@dataclass(frozen=True)
class StoredParam:
    """A per-sample parameter stored as ``data/param-NAME`` (resolved in the task)."""

    name: str


def routing_enabled() -> bool:
    import sklearn

    return bool(sklearn.get_config().get("enable_metadata_routing", False))


def check_params(params, estimator, n_samples: int) -> dict:
    """Refuse malformed fit parameters before anything is written; a plain dict."""
    if params is None:
        return {}
    if not isinstance(params, dict) or not all(isinstance(k, str) for k in params):
        raise ValidationError(f"params must be a dict of fit parameters by name, got "
                              f"{type(params).__name__}")
    if "groups" in params:
        raise ValidationError("params['groups']: give groups to compile(groups=...), which "
                              "splits both the outer and the inner cross-validation")
    for key, value in params.items():
        length = _length(value)
        if key.rpartition("__")[2] == "sample_weight" and length != n_samples:
            raise ValidationError(
                f"params[{key!r}] has {length if length is not None else 'no'} values "
                f"but X has {n_samples} samples; expected one weight per sample")
    if not routing_enabled():
        for key in params:
            _check_fit_accepts(estimator, key, key)
    return dict(params)


def _length(value):
    if isinstance(value, (str, bytes)) or not hasattr(value, "__len__"):
        return None
    try:
        return len(value)
    except TypeError:
        return None


def _check_fit_accepts(estimator, name: str, key: str) -> None:
    """Without metadata routing, ``estimator.fit`` must take ``name`` (as sklearn passes it)."""
    steps = getattr(estimator, "named_steps", None)
    if steps is not None and hasattr(estimator, "steps"):  # Pipeline: step__param
        step, sep, param = name.partition("__")
        if not sep:
            raise ValidationError(
                f"params[{key!r}]: a Pipeline takes fit parameters as STEP__{name} (steps: "
                f"{list(steps)}), as scikit-learn's Pipeline.fit does")
        if step not in steps:
            raise ValidationError(f"params[{key!r}]: the Pipeline has no step {step!r}; its "
                                  f"steps are {list(steps)}")
        if steps[step] in (None, "passthrough"):
            raise ValidationError(f"params[{key!r}]: step {step!r} is passthrough")
        _check_fit_accepts(steps[step], param, key)
        return
    try:
        sig = inspect.signature(estimator.fit)
    except (TypeError, ValueError):
        return
    kinds = {p.kind for p in sig.parameters.values()}
    if inspect.Parameter.VAR_KEYWORD in kinds or name in sig.parameters:
        return
    accepted = [p for p in sig.parameters if p not in ("X", "y", "self")]
    raise ValidationError(f"params[{key!r}]: {type(estimator).__name__}.fit does not accept "
                          f"{name!r}; it accepts {accepted}")


def route(exp, params: dict, n_samples: int) -> tuple[dict, dict]:
    """Route ``params``; return ``(routed, per_sample)``.

    ``routed`` maps each of :data:`DESTINATIONS` to a dict whose per-sample
    values are :class:`StoredParam` placeholders; ``per_sample`` maps
    ``param-NAME`` to the array to store.
    """
    if not params:
        return {d: {} for d in DESTINATIONS}, {}
    raw = _route_raw(exp, params)
    per_sample, by_id = {}, {}
    for key, value in params.items():
        if _length(value) == n_samples:
            arr = value if hasattr(value, "shape") else np.asarray(value)
            per_sample[f"param-{key}"] = arr
            by_id[id(value)] = StoredParam(key)
    routed = {dest: {k: by_id.get(id(v), v) for k, v in raw[dest].items()}
              for dest in DESTINATIONS}
    return routed, per_sample


def _route_raw(exp, params: dict) -> dict:
    from sklearn.utils.metadata_routing import MetadataRouter, MethodMapping, process_routing

    from ...sklearn_compat import search_routed_params

    search = _search_like(exp)
    try:
        if routing_enabled():
            router = (MetadataRouter(owner="cross_validate")
                      .add(estimator=search,
                           method_mapping=MethodMapping().add(caller="fit", callee="fit"))
                      .add(scorer=exp.scorer(),
                           method_mapping=MethodMapping().add(caller="fit", callee="score")))
            outer = process_routing(router, "fit", **params)
            to_search, outer_score = dict(outer.estimator.fit), dict(outer.scorer.score)
        else:
            # cross_validate without routing: every parameter to the
            # search's fit, none to its own scorer
            to_search, outer_score = dict(params), {}
        if exp.inner_cv is None:
            return {"inner_fit": {}, "inner_score": {}, "outer_fit": to_search,
                    "outer_score": outer_score}
        inner = search_routed_params(search, to_search)
    except Exception as exc:  # noqa: BLE001 - sklearn's own message names the problem
        raise ValidationError(f"params {sorted(params)} cannot be routed: "
                              f"{type(exc).__name__}: {exc}") from exc
    # the search refits its best candidate with the parameters it gives
    # every candidate's fit
    return {"inner_fit": inner["fit"], "inner_score": inner["score"],
            "outer_fit": inner["fit"], "outer_score": outer_score}


def _search_like(exp):
    """The ``GridSearchCV`` (or the estimator) whose routing scikit-learn would use."""
    if exp.inner_cv is None:
        return exp.estimator
    from sklearn.model_selection import GridSearchCV

    return GridSearchCV(exp.estimator, param_grid={}, scoring=exp.scoring, cv=exp.inner_cv,
                        refit=exp.refit, error_score=exp.error_score)


def resolve(routed: dict, stored: dict) -> dict:
    """``routed`` (one destination) with its placeholders replaced by the stored arrays."""
    return {k: stored[v.name] if isinstance(v, StoredParam) else v for k, v in routed.items()}
