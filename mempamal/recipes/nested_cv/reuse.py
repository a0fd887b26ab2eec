"""Reuse the (candidate, split) results of earlier workdirs: grow a grid without refitting.

A fit result is keyed by its content -- a hash of what determines it: the
estimator and scoring (everything of the experiment but its candidates), the
data and fit parameters, the candidate's parameters, and the train and test
indices of its split -- never by its position in a grid. ``compile(...,
reuse=W1)`` writes, at compile time, the outputs of the fit tasks whose every
(candidate, split) result is found in W1; those tasks are then done, and only
new candidates are fitted. Selects and the aggregate run again.
"""

from __future__ import annotations

from ...compiler import reuse_workdirs
from ...errors import ValidationError
from ...pickling import fingerprint
from ...workdir import Workdir, read_json, write_json

#: what a fit result depends on, besides its candidate and split, by name
_BASE_PARTS = ("estimator", "scoring", "error_score", "return_train_score", "params")


def base_parts(spec: dict, X, y, per_sample: dict) -> dict:
    """Hashes of everything a fit result depends on, but its candidate and split."""
    parts = {name: fingerprint(spec.get(name)) for name in _BASE_PARTS}
    parts["data"] = fingerprint((X, y))
    parts["fit parameter values"] = fingerprint(sorted(per_sample.items()))
    return parts


def as_workdirs(reuse) -> list[Workdir]:
    """``reuse=`` as a list of workdirs, each checked to be a nested-CV workdir."""
    return reuse_workdirs(reuse, "nested_cv", "a nested cross-validation")


def _split_keys(splits) -> dict:
    """``{(o, i): key}`` of every fit-task split (absolute train and test indices)."""
    keys = {}
    for o in range(splits.n_outer):
        if splits.n_inner(o) == 0:
            keys[(o, None)] = fingerprint(splits.outer[o])
        for i in range(splits.n_inner(o)):
            keys[(o, i)] = fingerprint(_absolute(splits, o, i))
    for i in range(len(splits.final)):
        keys[("final", i)] = fingerprint(_absolute(splits, "final", i))
    return keys


def _absolute(splits, o, i):
    outer_train = splits.outer_train(o)
    itrain, itest = splits.inner_split(o, i)
    return outer_train[itrain], outer_train[itest]


class ReuseIndex:
    """The fit results of earlier workdirs, by content key."""

    def __init__(self, spec, X, y, per_sample, splits, workdirs) -> None:
        self.base = base_parts(spec, X, y, per_sample)
        self.split_keys = _split_keys(splits)
        self.candidate_keys = [fingerprint(c) for c in spec["candidates"]]
        self.rows: dict[tuple, dict] = {}
        self.sources: list[str] = []
        for wd in workdirs:
            self._add(wd)

    def _add(self, wd: Workdir) -> None:
        from ...context import load_context

        ctx = load_context(wd.root)
        other = base_parts(ctx.spec, ctx.X, ctx.y,
                           {f"param-{k}": v for k, v in ctx.stored_params.items()})
        differ = [name for name in self.base if self.base[name] != other[name]]
        if differ:
            raise ValidationError(
                f"reuse={str(wd.root)!r}: its {', '.join(differ)} differ from this "
                "experiment's, so none of its results can be reused; reuse a workdir of "
                "the same estimator, scoring and data"
            )
        theirs = _split_keys(ctx.splits)
        if not set(theirs.values()) & set(self.split_keys.values()):
            raise ValidationError(
                f"reuse={str(wd.root)!r}: its splits differ from this experiment's (no "
                "outer or inner train/test set in common: another cv, inner_cv, shuffle "
                "seed or groups?), so none of its results can be reused"
            )
        cand_keys = [fingerprint(c) for c in ctx.spec["candidates"]]
        for task in ctx.workflow.tasks.values():
            if task.kind != "fit":
                continue
            try:
                doc = read_json(ctx.workdir.path(task.outputs[0]))
            except (FileNotFoundError, ValueError):
                continue  # not done (or damaged): nothing to take from it
            split = theirs[(task.args["o"], task.args["i"])]
            for c, row in zip(doc["candidates"], doc["results"]):
                self.rows[(cand_keys[c], split)] = row
        self.sources.append(str(wd.root))

    def row(self, candidate: int, o, i) -> dict | None:
        """The earlier result of ``candidate`` on split ``(o, i)``, if any."""
        return self.rows.get((self.candidate_keys[candidate], self.split_keys[(o, i)]))

    def reusable_candidates(self) -> set[int]:
        """Candidates whose results exist for every split."""
        return {c for c in range(len(self.candidate_keys))
                if all(self.row(c, o, i) is not None for (o, i) in self.split_keys)}

    def write_outputs(self, wd: Workdir, tasks, keep_outer_estimators: bool) -> list[str]:
        """Write the outputs of the fit tasks found whole; return their ids.

        A plain cross-validation's fit that must keep its estimator
        (``return_estimator``) is fitted again: only scores are reused.
        """
        written = []
        for task in tasks:
            o, i = task.args.get("o"), task.args.get("i")
            if task.kind != "fit" or (i is None and keep_outer_estimators):
                continue
            rows = [self.row(c, o, i) for c in task.args["candidates"]]
            if any(r is None for r in rows):
                continue
            write_json(wd.path(task.outputs[0]), {
                "candidates": task.args["candidates"], "results": rows,
                "reused_from": self.sources})
            written.append(task.id)
        return written
