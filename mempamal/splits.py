"""Outer and inner splits, computed once, exactly as scikit-learn would.

The inner splits of outer split ``o`` are computed on the outer-train subset
(``X[train]``, ``y[train]``, ``groups[train]``), as ``GridSearchCV.fit`` sees
it inside ``cross_validate``; their indices are relative to that subset.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

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
    """

    outer: list
    inner: list

    @property
    def n_outer(self) -> int:
        return len(self.outer)

    def n_inner(self, o: int) -> int:
        return len(self.inner[o])

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Flatten into named arrays for ``numpy.savez``."""
        out = {}
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
        return cls(outer, inner)


def compute_splits(estimator, X, y, groups, cv, inner_cv) -> Splits:
    """Compute outer splits and, per outer-train subset, inner splits.

    Parameters
    ----------
    estimator : estimator
        Used only to know whether it is a classifier (stratification).
    X, y, groups : array-like
        The data, as given to the experiment.
    cv, inner_cv : int, splitter or iterable
        Outer and inner cross-validation; ``inner_cv`` may be None.

    Returns
    -------
    Splits
    """
    from sklearn.base import is_classifier
    from sklearn.model_selection import check_cv
    from sklearn.utils import _safe_indexing

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
    return Splits(outer, inner)


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
