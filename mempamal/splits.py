"""Outer and inner splits, computed once, exactly as scikit-learn would.

The inner splits of outer split ``o`` are computed on the outer-train subset
(``X[train]``, ``y[train]``, ``groups[train]``), as ``GridSearchCV.fit`` sees
it inside ``cross_validate``; their indices are relative to that subset.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np

from .errors import ValidationError


@dataclass(frozen=True)
class Splits:
    """Indices of every split of a nested cross-validation.

    Attributes
    ----------
    outer : list of (ndarray, ndarray)
        ``(train, test)`` indices into the full data, per outer split.
    inner : list of list of (ndarray, ndarray)
        ``inner[o][i]`` is ``(train, test)`` relative to ``outer[o][0]``;
        empty lists when there is no inner cross-validation.
    final : list of (ndarray, ndarray)
        The inner splits of the search on all the data (the final model),
        as ``GridSearchCV(cv=inner_cv).fit(X, y)`` makes them; empty without.
    n_samples : int
        Number of samples (the "outer-train set" of the final search).
    """

    outer: list
    inner: list
    final: list = field(default_factory=list)
    n_samples: int = 0

    @property
    def n_outer(self) -> int:
        return len(self.outer)

    def n_inner(self, o) -> int:
        """Inner splits of outer split ``o`` (``"final"``: of the final search)."""
        return len(self.final) if o == "final" else len(self.inner[o])

    def outer_train(self, o) -> np.ndarray:
        """The set the search of outer split ``o`` sees (all samples for ``"final"``)."""
        return np.arange(self.n_samples) if o == "final" else self.outer[o][0]

    def inner_split(self, o, i: int) -> tuple:
        """Inner split ``i`` of ``o``, relative to :meth:`outer_train`."""
        return self.final[i] if o == "final" else self.inner[o][i]

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Flatten into named arrays for ``numpy.savez``."""
        out = {"n_samples": np.asarray(self.n_samples)}
        for i, (itrain, itest) in enumerate(self.final):
            out[f"final_i{i}_train"], out[f"final_i{i}_test"] = itrain, itest
        for o, (train, test) in enumerate(self.outer):
            out[f"o{o}_train"], out[f"o{o}_test"] = train, test
            for i, (itrain, itest) in enumerate(self.inner[o]):
                out[f"o{o}_i{i}_train"], out[f"o{o}_i{i}_test"] = itrain, itest
        return out

    @classmethod
    def from_arrays(cls, arrays) -> Splits:
        """Inverse of :meth:`to_arrays`."""
        outer, inner = [], []
        o = 0
        while f"o{o}_train" in arrays:
            outer.append((arrays[f"o{o}_train"], arrays[f"o{o}_test"]))
            inner.append([])
            i = 0
            while f"o{o}_i{i}_train" in arrays:
                inner[o].append((arrays[f"o{o}_i{i}_train"], arrays[f"o{o}_i{i}_test"]))
                i += 1
            o += 1
        final = []
        while f"final_i{len(final)}_train" in arrays:
            k = len(final)
            final.append((arrays[f"final_i{k}_train"], arrays[f"final_i{k}_test"]))
        n = int(arrays["n_samples"]) if "n_samples" in arrays else 0
        return cls(outer, inner, final, n)


def compute_splits(estimator, X, y, groups, cv, inner_cv, final: bool = False) -> Splits:
    """Compute outer splits and, per outer-train subset, inner splits.

    Parameters
    ----------
    estimator : estimator
        Used only to know whether it is a classifier (stratification).
    X, y, groups : array-like
        The data, as given to the experiment.
    cv, inner_cv : int, splitter or iterable
        Outer and inner cross-validation; ``inner_cv`` may be None.
    final : bool, default=False
        Also split all the data with ``inner_cv`` (the final model's search).

    Returns
    -------
    Splits
    """
    from sklearn.base import is_classifier
    from sklearn.model_selection import check_cv
    from sklearn.utils import _safe_indexing
    from sklearn.utils.validation import _num_samples

    classifier = is_classifier(estimator)
    # copies, as scikit-learn's clone makes: a splitter holding a RandomState
    # instance is left as the user gave it, so compiling twice gives the
    # same splits, and every outer split's search starts its inner splitter
    # from the same state (cross_validate clones the search, and its cv,
    # for each outer split)
    outer = _split(check_cv(copy.deepcopy(cv), y, classifier=classifier), X, y, groups, "cv")
    inner = []
    for train, _ in outer:
        if inner_cv is None:
            inner.append([])
            continue
        sub = [None if a is None else _safe_indexing(a, train) for a in (X, y, groups)]
        splitter = check_cv(copy.deepcopy(inner_cv), sub[1], classifier=classifier)
        inner.append(_split(splitter, *sub, "inner_cv"))
    last = []
    if final and inner_cv is not None:
        splitter = check_cv(copy.deepcopy(inner_cv), y, classifier=classifier)
        last = _split(splitter, X, y, groups, "inner_cv")
    return Splits(outer, inner, last, _num_samples(X))


def _split(splitter, X, y, groups, name: str) -> list:
    try:
        pairs = [
            (np.asarray(tr, dtype=np.intp), np.asarray(te, dtype=np.intp))
            for tr, te in splitter.split(X, y, groups)
        ]
    except (ValueError, TypeError) as exc:
        raise ValidationError(f"{name}={splitter!r} cannot split the data: {exc}") from exc
    if not pairs:
        raise ValidationError(f"{name}={splitter!r} produced no split")
    for k, (tr, te) in enumerate(pairs):
        if len(tr) == 0 or len(te) == 0:
            raise ValidationError(
                f"{name}={splitter!r}: split {k} has an empty "
                f"{'train' if len(tr) == 0 else 'test'} set"
            )
    return pairs
