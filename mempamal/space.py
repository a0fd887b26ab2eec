"""Search spaces: the list of candidate parameter dicts.

Candidates are produced by scikit-learn's own ``ParameterGrid`` and
``ParameterSampler`` so that their order is exactly what ``GridSearchCV`` and
``RandomizedSearchCV`` use.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from sklearn.model_selection import ParameterGrid, ParameterSampler

from .errors import ValidationError


def make_candidates(
    param_grid=None,
    param_distributions=None,
    n_iter: int = 10,
    random_state=None,
    candidates=None,
) -> list[dict]:
    """Return the candidate parameter dicts of a search space.

    Exactly one of ``param_grid``, ``param_distributions`` and ``candidates``
    may be given; with none, the single empty candidate ``{}`` is returned
    (the estimator as it is).

    Parameters
    ----------
    param_grid : dict or list of dict, optional
        As for :class:`~sklearn.model_selection.GridSearchCV`.
    param_distributions : dict or list of dict, optional
        As for :class:`~sklearn.model_selection.RandomizedSearchCV`.
    n_iter : int, default=10
        Number of sampled candidates (random search only).
    random_state : int or None, optional
        Seed of the random search, as for ``RandomizedSearchCV``.
    candidates : list of dict, optional
        An explicit list of candidates, used as given.

    Returns
    -------
    list of dict
        The candidates, in scikit-learn's order.
    """
    given = [
        name
        for name, value in (
            ("param_grid", param_grid),
            ("param_distributions", param_distributions),
            ("candidates", candidates),
        )
        if value is not None
    ]
    if len(given) > 1:
        raise ValidationError(
            f"give only one of param_grid, param_distributions and candidates; "
            f"got {', '.join(given)}"
        )
    if param_grid is not None:
        try:
            return list(ParameterGrid(param_grid))
        except (TypeError, ValueError) as exc:
            raise ValidationError(f"invalid param_grid {param_grid!r}: {exc}") from exc
    if param_distributions is not None:
        if not isinstance(n_iter, int) or isinstance(n_iter, bool) or n_iter < 1:
            raise ValidationError(f"n_iter must be a positive int, got {n_iter!r}")
        try:
            return list(
                ParameterSampler(param_distributions, n_iter, random_state=random_state)
            )
        except (TypeError, ValueError) as exc:
            raise ValidationError(
                f"invalid param_distributions {param_distributions!r}: {exc}"
            ) from exc
    if candidates is not None:
        return _check_explicit(candidates)
    return [{}]


def _check_explicit(candidates) -> list[dict]:
    if isinstance(candidates, Mapping) or not isinstance(candidates, Sequence):
        raise ValidationError(
            f"candidates must be a list of dicts, got {type(candidates).__name__}"
        )
    if not candidates:
        raise ValidationError("candidates is an empty list; expected at least one dict")
    for k, cand in enumerate(candidates):
        if not isinstance(cand, Mapping):
            raise ValidationError(
                f"candidates[{k}] must be a dict of parameters, got {cand!r}"
            )
    return [dict(c) for c in candidates]
