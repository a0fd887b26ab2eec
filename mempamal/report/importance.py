"""Parameter importance of a sweep, by Optuna's fANOVA evaluator when optuna is installed.

The trials are handed to an in-memory study (``create_trial``/``add_trials``):
our files stay the storage, the study lives only while importances are computed.
"""

from __future__ import annotations

import math

from .common import axis_values, fmt_param, wants_log

#: trials at least, for importances to mean anything
MIN_TRIALS = 4
#: trials at most: fANOVA's time grows faster than linearly (about 10 s for
#: 500 trials, 10 min for 6,000), beyond it a random sample (seeded) is used
MAX_TRIALS = 300


def param_importances(trials, names, metric: str, mode: str) -> tuple[dict, str | None]:
    """``({parameter: importance}, note)``: empty with a note saying why when not computed.

    The note also says when a sample of the trials was used.

    Parameters
    ----------
    trials : DataFrame
        ``SweepResults.trials``.
    names : list of str
        The parameters to weigh (those that vary).
    metric, mode : str
        The sweep's metric and whether it is minimised or maximised.
    """
    try:
        import optuna
    except ImportError:
        return {}, ("Parameter importance needs optuna, which is not installed here: "
                    "pip install 'mempamal[optuna]' and write the report again.")
    done = trials[(trials["state"] == "done") & trials[metric].notna()]
    if len(done) < MIN_TRIALS:
        return {}, (f"Parameter importance needs at least {MIN_TRIALS} finished trials; "
                    f"{len(done)} so far.")
    sampled = None
    if len(done) > MAX_TRIALS:
        sampled = (f"Computed on a random sample of {MAX_TRIALS} of the {len(done)} "
                   "finished trials (fANOVA's time grows quickly with their number).")
        done = done.sample(MAX_TRIALS, random_state=0)
    dists, encode = {}, {}
    for name in names:
        dists[name], encode[name] = _distribution(optuna, done[f"param_{name}"].tolist())
    dists = {n: d for n, d in dists.items() if d is not None}
    if not dists:
        return {}, "No parameter takes more than one value among the finished trials."
    study_trials = [
        optuna.trial.create_trial(
            params={n: encode[n](row[f"param_{n}"]) for n in dists},
            distributions=dists, value=float(row[metric]))
        for _, row in done.iterrows()]
    old = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "study created" lines
    try:
        study = optuna.create_study(direction="minimize" if mode == "min" else "maximize")
        study.add_trials(study_trials)
        evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
        found = optuna.importance.get_param_importances(study, evaluator=evaluator)
    except Exception as exc:  # a report shows the rest rather than fail on this
        return {}, f"Parameter importance could not be computed: {type(exc).__name__}: {exc}"
    finally:
        optuna.logging.set_verbosity(old)
    return {k: float(v) for k, v in found.items() if not math.isnan(v)}, sampled


def _distribution(optuna, raw):
    """An Optuna distribution covering ``raw``, and how to encode a value for it."""
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    values, numeric = axis_values(raw)
    if len(set(values)) < 2:
        return None, None
    if numeric:
        lo, hi = min(values), max(values)
        if all(float(v).is_integer() for v in values) and all(
                isinstance(v, int) or float(v).is_integer() for v in raw):
            return IntDistribution(int(lo), int(hi), log=wants_log(values)), int
        return FloatDistribution(lo, hi, log=wants_log(values)), float
    choices = tuple(sorted(set(values)))
    return CategoricalDistribution(choices), fmt_param
