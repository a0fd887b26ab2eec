"""Experiment: a validated description of a nested cross-validation.

An :class:`Experiment` holds no data and does no I/O until :meth:`compile`,
which checks everything it can, then writes a working directory and returns
its :class:`~mempamal.workflow.Workflow`.
"""

from __future__ import annotations

import numbers

import numpy as np
from sklearn.base import clone

from . import scoring as _scoring
from .errors import ValidationError
from .space import make_candidates


class Experiment:
    """A scikit-learn nested cross-validation, described once.

    Parameters
    ----------
    estimator : estimator
        Any scikit-learn estimator or Pipeline.
    param_grid : dict or list of dict, optional
        Grid search space, as for ``GridSearchCV``.
    param_distributions : dict or list of dict, optional
        Random search space, as for ``RandomizedSearchCV``.
    n_iter : int, default=10
        Number of random candidates (of each outer split's search when
        model-based).
    random_state : int, optional
        Seed of the random search (same candidates as ``RandomizedSearchCV``),
        or of a model-based search's sampler, the same in every outer split
        (None means 0 there).
    candidates : list of dict, optional
        An explicit list of candidate parameter dicts.
    cv : int, splitter or iterable, default=5
        Outer cross-validation (evaluation).
    inner_cv : int, splitter, iterable or None, default=5
        Inner cross-validation (model selection). None means plain
        cross-validation of the estimator, like ``cross_validate``.
    scoring : str, callable, list or dict, optional
        As for ``GridSearchCV``; used by both the inner and outer loops.
    refit : bool, str or callable, default=True
        Which metric picks the best candidate (a name for multi-metric
        scoring), or a callable of ``cv_results`` returning an index.
    error_score : 'raise' or float, default=nan
        Score given to a fit that raises.
    return_train_score : bool, default=False
        Also score on the train sets.
    return_estimator : bool, default=False
        Keep the estimator refitted on each outer train set.
    final_model : bool, default=False
        Also run the same search on all the data (inner CV on X) and refit
        its best candidate on all of it, in the same workflow, in parallel
        with the outer splits: the model to keep
        (``load_results(W).final_estimator``), as
        ``GridSearchCV(...).fit(X, y)`` gives it.
    search : {"grid", "random", "tpe", "cmaes", "qmc"}, optional
        How candidates are chosen. By default ``"grid"`` with
        ``param_grid`` and ``"random"`` with ``param_distributions``.
        ``"tpe"``, ``"cmaes"`` and ``"qmc"`` are model-based (Optuna's
        samplers, extra ``mempamal[optuna]``): each outer split runs its own
        search of ``n_iter`` candidates on its inner CV, asked in rounds of
        ``batch_size`` by suggest tasks told the mean inner score of the
        refit metric; ``candidates`` given too are evaluated first.
    batch_size : int, optional
        Candidates per round of a model-based search (default
        ``min(8, n_iter)``); every inner split of a round runs in parallel.

    Examples
    --------
    >>> from sklearn.svm import SVC
    >>> exp = Experiment(SVC(), param_grid={"C": [1, 10]}, cv=3, inner_cv=2)
    >>> exp.n_candidates
    2
    """

    def __init__(
        self,
        estimator,
        param_grid=None,
        *,
        param_distributions=None,
        n_iter: int = 10,
        random_state=None,
        candidates=None,
        cv=5,
        inner_cv=5,
        scoring=None,
        refit=True,
        error_score=np.nan,
        return_train_score: bool = False,
        return_estimator: bool = False,
        final_model: bool = False,
        search=None,
        batch_size=None,
    ) -> None:
        from .validation import as_cv

        self.estimator = estimator
        self.cv = as_cv(cv, "cv")
        self.inner_cv = as_cv(inner_cv, "inner_cv")
        self.scoring = scoring
        self.refit = refit
        self.error_score = error_score
        self.return_train_score = bool(return_train_score)
        self.return_estimator = bool(return_estimator)
        self.final_model = bool(final_model)
        self.space = {
            "param_grid": param_grid, "param_distributions": param_distributions,
            "n_iter": n_iter, "random_state": random_state, "candidates": candidates,
        }
        from .adaptive.space import adaptive_settings

        self.search, self.adaptive = adaptive_settings(self.space, search, batch_size)
        if self.adaptive is None:
            self.candidates = make_candidates(**self.space)
        else:
            self.candidates = list(self.adaptive["enqueued"])
            if self.inner_cv is None:
                raise ValidationError(f"search={search!r} chooses candidates on an inner "
                                      "cross-validation, but inner_cv=None")
        self._validate()

    def __repr__(self) -> str:
        return (f"Experiment({self.estimator!r}, {self.n_candidates} candidates, "
                f"cv={self.cv!r}, inner_cv={self.inner_cv!r}, scoring={self.scoring!r})")

    @property
    def n_candidates(self) -> int:
        """Number of candidates (of each outer split's search when model-based)."""
        if self.adaptive is not None:
            return self.adaptive["n_iter"]
        return len(self.candidates)

    def probe_candidates(self) -> list[dict]:
        """Candidates checked at construction and fitted once at compile.

        A model-based search knows only the candidates given to evaluate
        first; one drawn from the space stands for those suggest tasks ask.
        """
        if self.adaptive is None or len(self.candidates) == self.n_candidates:
            return self.candidates
        from sklearn.model_selection import ParameterSampler

        drawn = ParameterSampler(self.adaptive["param_distributions"], 1,
                                 random_state=self.adaptive["random_state"])
        return [*self.candidates, *[dict(c) for c in drawn]]

    @property
    def scorer_names(self) -> list[str]:
        """Metric names (``["score"]`` for single-metric scoring)."""
        return _scoring.scorer_names(self.estimator, self.scoring)

    @property
    def refit_metric(self) -> str:
        """Name of the metric that ranks candidates."""
        return self.refit if isinstance(self.refit, str) else "score"

    def scorer(self):
        """The scorer scikit-learn would build from ``scoring``."""
        return _scoring.resolve(self.estimator, self.scoring, self.error_score)

    # -- validation ------------------------------------------------------------
    def _validate(self) -> None:
        from .validation import check_estimator_and_candidates

        check_estimator_and_candidates(self.estimator, self.probe_candidates())
        es = self.error_score
        if not (es == "raise" if isinstance(es, str) else isinstance(es, numbers.Number)):
            raise ValidationError(f"error_score must be 'raise' or a number, got {es!r}")
        names = self.scorer_names  # raises on bad scoring
        self.scorer()
        from .pickling import check_storable

        check_storable({"scoring": self.scoring, "refit": self.refit,
                        "cv": self.cv, "inner_cv": self.inner_cv,
                        "candidates": self.candidates})
        if _scoring.is_multimetric(self.scoring):
            if not (callable(self.refit) or (isinstance(self.refit, str)
                                             and self.refit in names)):
                raise ValidationError(
                    f"refit={self.refit!r}: with multi-metric scoring, refit must be "
                    f"one of the metric names {names} or a callable"
                )
        elif not (self.refit is True or callable(self.refit)):
            raise ValidationError(
                f"refit={self.refit!r}: with single-metric scoring, refit must be "
                "True or a callable (the nested CV always refits the best candidate)"
            )
        if self.final_model and self.inner_cv is None:
            raise ValidationError(
                "final_model=True runs the search on all the data with inner_cv, but "
                "inner_cv=None; give an inner cross-validation (or fit the estimator "
                "yourself: there is nothing to choose)"
            )
        if self.inner_cv is None and self.n_candidates > 1:
            raise ValidationError(
                f"inner_cv=None but the search space has {self.n_candidates} "
                "candidates; an inner cross-validation is needed to choose between them"
            )

    def clone_spec(self) -> dict:
        """Everything a task needs, as a picklable dict (no data)."""
        return {
            "estimator": clone(self.estimator),
            "candidates": self.candidates,
            "scoring": self.scoring,
            "scorer_names": self.scorer_names,
            "refit": self.refit,
            "refit_metric": self.refit_metric,
            "error_score": self.error_score,
            "return_train_score": self.return_train_score,
            "return_estimator": self.return_estimator,
            "nested": self.inner_cv is not None,
            "final_model": self.final_model,
            "search": self.search,
            "adaptive": self.adaptive,
        }

    # -- compile ---------------------------------------------------------------
    def compile(self, workdir, X, y=None, groups=None, *, params=None, chunk_size=None,
                python=None, resources=None, reuse=None):
        """Write the working directory and return its workflow.

        Runs nothing. If ``workdir`` already holds this same experiment (same
        fingerprint), its workflow is returned so that a run resumes; if it
        holds another one, :class:`~mempamal.errors.WorkdirError` is raised.

        Parameters
        ----------
        workdir : str or path-like
            The working directory (created if needed).
        X : array-like or DataFrame
            Features.
        y : array-like, optional
            Target.
        groups : array-like, optional
            Group labels for group-aware splitters (outer and inner).
        params : dict, optional
            Fit parameters, as for ``cross_validate(..., params=...)``:
            ``{"sample_weight": w}``, or ``{"STEP__sample_weight": w}`` for a
            Pipeline; per-sample values are sliced to every train and test
            set as scikit-learn slices them, with or without
            ``sklearn.set_config(enable_metadata_routing=True)``.
        reuse : str, path-like or list of them, optional
            Earlier workdirs whose (candidate, split) results are reused
            instead of recomputed -- to grow a grid: every result computed
            there for the same estimator, scoring, data, fit parameters,
            candidate and split. Refused when their data or splits differ.
        chunk_size : int, optional
            Candidates per fit task. Default: chosen from the time of one
            fit so that a task lasts about two seconds.
        python : str, optional
            Interpreter written in the task commands (default: this one).
        resources : dict, optional
            Resource hints per task (``cpus``, ``mem_mb``, ``time_min``,
            ``gpus``), translated by the backends.

        Returns
        -------
        Workflow
        """
        from .recipes.nested_cv.compile import compile_experiment

        return compile_experiment(self, workdir, X, y, groups, params=params,
                                  chunk_size=chunk_size, python=python, resources=resources,
                                  reuse=reuse)
