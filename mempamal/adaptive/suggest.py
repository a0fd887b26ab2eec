"""One round of a model-based search: tell the finished trials, ask the next batch."""

from __future__ import annotations

from dataclasses import dataclass, field

from .space import from_optuna, import_optuna, is_number, to_optuna, to_optuna_params

#: a trial's outcome, as a suggest task tells it
STATES = ("done", "failed", "pruned")


@dataclass
class Finished:
    """A trial of an earlier round, as read from its files.

    Attributes
    ----------
    params : dict
        Its candidate, in the user's values.
    value : float or None
        The value of the ranking metric (None or NaN when it failed).
    state : str
        ``done``, ``failed`` (raised, killed, timed out) or ``pruned``.
    system_attrs : dict
        What the sampler attached to it when it was asked (its own state).
    intermediate : dict
        ``{step: value}`` reported before it was pruned.
    """

    params: dict
    value: float | None
    state: str = "done"
    system_attrs: dict = field(default_factory=dict)
    intermediate: dict = field(default_factory=dict)


def make_sampler(search: str, random_state: int, options: dict | None = None):
    """The Optuna sampler of ``search``, seeded with ``random_state``."""
    optuna = import_optuna()
    opts = dict(options or {})
    samplers = optuna.samplers
    if search == "tpe":  # Optuna 5: multivariate, with constant liar for a batch
        opts.setdefault("constant_liar", True)
        return samplers.TPESampler(seed=int(random_state), **opts)
    if search == "cmaes":
        return samplers.CmaEsSampler(seed=int(random_state), **opts)
    if search == "qmc":
        opts.setdefault("scramble", True)
        return samplers.QMCSampler(seed=int(random_state), **opts)
    raise ValueError(f"search {search!r} has no sampler")


def _random_states(obj, path="sampler", seen=None):
    """Every numpy RandomState a sampler holds, by attribute path (a fixed order)."""
    import numpy as np

    seen = set() if seen is None else seen
    if id(obj) in seen:
        return []
    seen.add(id(obj))
    if isinstance(obj, np.random.RandomState):
        return [(path, obj)]
    module = type(obj).__module__ or ""
    if not module.startswith("optuna") or isinstance(obj, type):
        return []
    if hasattr(obj, "rng") and type(obj).__name__ == "LazyRandomState":
        return [(path, obj.rng)]
    found = []
    for name in sorted(getattr(obj, "__dict__", {})):  # objects with slots hold no RNG here
        found += _random_states(getattr(obj, name), f"{path}.{name}", seen)
    return found


def rng_states(sampler) -> dict:
    """The sampler's random states as JSON: a later round continues them exactly."""
    out = {}
    for path, rng in _random_states(sampler):
        kind, keys, pos, has_gauss, cached = rng.get_state()
        out[path] = [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)]
    return out


def set_rng_states(sampler, states: dict) -> None:
    """Restore what :func:`rng_states` saved (a missing path keeps its fresh seed)."""
    import numpy as np

    for path, rng in _random_states(sampler):
        if path in states:
            kind, keys, pos, has_gauss, cached = states[path]
            rng.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))


def suggest_batch(search: str, param_distributions: dict, mode: str, finished: list[Finished],
                  batch_size: int, random_state: int, round_index: int,
                  enqueued: list[dict] | None = None, previous: dict | None = None,
                  sampler_options: dict | None = None) -> dict:
    """Rebuild the study from ``finished``, ask ``batch_size`` candidates.

    With the state the previous round wrote (its random states, the trials'
    and the study's sampler attributes), the rebuilt study asks exactly what
    one Optuna study kept alive and driven by ask/tell in the same rounds
    would ask.

    Parameters
    ----------
    search : {"tpe", "cmaes", "qmc"}
        The sampler.
    param_distributions : dict
        The space as the user wrote it (scipy.stats distributions, lists).
    mode : {"min", "max"}
        Whether the metric is minimised or maximised.
    finished : list of Finished
        Every trial of the earlier rounds, in a fixed order.
    batch_size : int
        Candidates to ask.
    random_state : int
        The search's seed (the sampler's).
    round_index : int
        This round (0 first).
    enqueued : list of dict, optional
        Candidates to evaluate first in this round (``study.enqueue_trial``).
    previous : dict, optional
        What the previous round returned (None for round 0).
    sampler_options : dict, optional
        Keyword arguments of the Optuna sampler.

    Returns
    -------
    dict
        ``{"round", "trials": [{"params", "system_attrs"}], "study_attrs",
        "rng"}``, JSON-able: what the round's trial tasks read, and what the
        next round continues from.
    """
    optuna = import_optuna()
    distributions = to_optuna(param_distributions)
    sampler = make_sampler(search, random_state, sampler_options)
    previous = previous or {}
    set_rng_states(sampler, previous.get("rng", {}))
    study = optuna.create_study(direction="minimize" if mode == "min" else "maximize",
                                sampler=sampler)
    for key, value in previous.get("study_attrs", {}).items():
        # the sampler's study-wide state (QMC's position in its sequence)
        study._storage.set_study_system_attr(study._study_id, key, value)
    study.add_trials([_frozen(optuna, distributions, param_distributions, f)
                      for f in finished])
    for params in enqueued or []:
        study.enqueue_trial(to_optuna_params(param_distributions, params))
    asked = [study.ask(distributions) for _ in range(batch_size)]
    trials = []
    for trial in asked:
        frozen = study._storage.get_trial(trial._trial_id)
        trials.append({"params": from_optuna(param_distributions, dict(frozen.params)),
                       "system_attrs": _jsonable(frozen.system_attrs)})
    attrs = study._storage.get_study_system_attrs(study._study_id)
    return {"round": round_index, "trials": trials, "study_attrs": _jsonable(attrs),
            "rng": rng_states(sampler)}


def _frozen(optuna, distributions, param_distributions, f: Finished):
    state = optuna.trial.TrialState
    params = to_optuna_params(param_distributions, f.params)
    common = dict(params=params, distributions={k: distributions[k] for k in params},
                  system_attrs=dict(f.system_attrs or {}))
    if f.state == "done" and is_number(f.value):
        return optuna.trial.create_trial(value=float(f.value), **common)
    if f.state == "pruned":
        steps = {int(k): float(v) for k, v in (f.intermediate or {}).items() if is_number(v)}
        return optuna.trial.create_trial(state=state.PRUNED, intermediate_values=steps,
                                         **common)
    # raised, killed, timed out, or NaN: Optuna is told it failed
    return optuna.trial.create_trial(state=state.FAIL, **common)


def _jsonable(attrs: dict) -> dict:
    import json

    out = {}
    for key, value in attrs.items():
        try:
            json.dumps(value)
        except (TypeError, ValueError):
            continue  # nothing a sampler needs again is unserialisable in RDB storages
        out[key] = value
    return out
