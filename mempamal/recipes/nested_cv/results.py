"""Results of a nested cross-validation, read from a working directory."""

from __future__ import annotations

from functools import cached_property

import numpy as np
import pandas as pd

from ...errors import WorkdirError
from ...pickling import load_pickle
from ...workdir import Workdir, read_json
from .context import NestedCVContext as TaskContext


class Results:
    """Outer scores, best parameters and inner ``cv_results`` of a run.

    Attributes
    ----------
    best_params : list of dict
        Best candidate of each outer split.
    best_index : list of int
        Its index in the candidate list.
    outer_scores : DataFrame
        One row per outer split: ``test_<scorer>`` (``test_score`` for a
        single metric), ``train_<scorer>`` if asked, ``fit_time``,
        ``score_time``, ``best_index``, ``best_params``.
    cv_results : DataFrame
        Inner results, with scikit-learn's ``cv_results_`` columns plus
        ``outer_split``, one row per (outer split, candidate).
    summary : DataFrame
        Mean and standard deviation of each outer score.
    """

    def __init__(self, ctx: TaskContext, outer_docs: dict[int, dict]) -> None:
        self._ctx = ctx
        self._docs = outer_docs

    @classmethod
    def from_context(cls, ctx: TaskContext, partial: bool = False) -> Results:
        """Read every finished outer split of ``ctx``'s workdir."""
        nested = ctx.spec["nested"]
        docs = {}
        for o in range(ctx.splits.n_outer):
            rel = Workdir.select_output(o) if nested else Workdir.fit_output(o, None, 0)
            try:
                doc = read_json(ctx.workdir.path(rel))
            except FileNotFoundError:
                continue
            docs[o] = doc if nested else {
                "best_index": 0, "outer": doc["results"][0], "inner": None,
                "estimator_sha256": doc.get("estimator_sha256")}
        if not docs or (not partial and len(docs) < ctx.splits.n_outer):
            raise WorkdirError(
                f"the run in {str(ctx.workdir.root)!r} is not finished: "
                f"{len(docs)} of {ctx.splits.n_outer} outer splits done "
                "(run or resume it, or pass partial=True)"
            )
        return cls(ctx, docs)

    def __repr__(self) -> str:
        return f"<Results of {len(self._docs)} outer splits>\n{self.summary}"

    @property
    def outer_splits(self) -> list[int]:
        return sorted(self._docs)

    @property
    def scorer_names(self) -> list[str]:
        return list(self._ctx.spec["scorer_names"])

    @property
    def best_index(self) -> list[int]:
        return [self._docs[o]["best_index"] for o in self.outer_splits]

    def _candidates(self, o) -> list[dict]:
        """Outer split ``o``'s candidates (a model-based search asks its own)."""
        return self._docs[o].get("candidates") or self._ctx.spec["candidates"]

    @property
    def best_params(self) -> list[dict]:
        return [dict(self._candidates(o)[self._docs[o]["best_index"]])
                for o in self.outer_splits]

    @cached_property
    def outer_scores(self) -> pd.DataFrame:
        rows = []
        for o, best, params in zip(self.outer_splits, self.best_index, self.best_params):
            outer = self._docs[o]["outer"]
            row = {"outer_split": o}
            for part in ("test", "train"):
                for name, v in outer.get(f"{part}_scores", {}).items():
                    row[f"{part}_{name}"] = v
            row.update(fit_time=outer["fit_time"], score_time=outer["score_time"],
                       best_index=best, best_params=params,
                       fit_error=outer["fit_error"])
            rows.append(row)
        return pd.DataFrame(rows)

    @cached_property
    def cv_results(self) -> pd.DataFrame:
        if not self._ctx.spec["nested"]:
            return pd.DataFrame()
        frames = []
        for o in self.outer_splits:
            cands = self._candidates(o)
            params = pd.DataFrame({f"param_{k}": [c.get(k) for c in cands]
                                   for k in sorted({k for c in cands for k in c})})
            frame = _with_params(self._docs[o]["inner"], params, cands)
            frame.insert(0, "outer_split", o)
            frames.append(frame)
        return pd.concat(frames, ignore_index=True)

    # -- the final model (Experiment(..., final_model=True)) --------------------
    @cached_property
    def _final_doc(self) -> dict:
        if not self._ctx.spec.get("final_model"):
            raise WorkdirError("no final model: compile an Experiment(..., final_model=True)")
        try:
            return read_json(self._ctx.workdir.path(Workdir.select_output("final")))
        except FileNotFoundError:
            raise WorkdirError(
                f"the final model of {str(self._ctx.workdir.root)!r} is not fitted yet "
                "(task select-final); run or resume the workflow") from None

    @property
    def final_params(self) -> dict:
        """Best candidate of the search on all the data (``GridSearchCV.best_params_``)."""
        cands = self._final_doc.get("candidates") or self._ctx.spec["candidates"]
        return dict(cands[self._final_doc["best_index"]])

    @property
    def final_cv_results(self) -> pd.DataFrame:
        """``cv_results_`` of the search on all the data."""
        cands = self._final_doc.get("candidates") or self._ctx.spec["candidates"]
        params = pd.DataFrame({f"param_{k}": [c.get(k) for c in cands]
                               for k in sorted({k for c in cands for k in c})})
        return _with_params(self._final_doc["inner"], params, cands)

    @property
    def final_estimator(self):
        """The best candidate refitted on all the data (``GridSearchCV.best_estimator_``).

        ``final_versions`` names the releases it was fitted with.
        """
        return load_pickle(self._ctx.workdir.path(Workdir.estimator_output("final")),
                           self._final_doc.get("estimator_sha256"), "the final estimator",
                           recorded_in="by the task that fitted it")

    @property
    def final_versions(self) -> dict:
        """scikit-learn, numpy and Python versions the final estimator was fitted with."""
        return dict(self._final_doc["versions"])

    @cached_property
    def summary(self) -> pd.DataFrame:
        cols = [c for c in self.outer_scores.columns if c.startswith(("test_", "train_"))]
        values = self.outer_scores[cols].to_numpy(dtype=float)
        return pd.DataFrame({"mean": values.mean(axis=0), "std": values.std(axis=0)},
                            index=pd.Index(cols, name="metric"))

    def summary_dict(self) -> dict:
        """The summary as plain JSON-able data."""
        out = {
            "n_outer_splits": len(self._docs),
            "scores": {m: {"mean": float(r["mean"]), "std": float(r["std"])}
                       for m, r in self.summary.iterrows()},
            "best_index": self.best_index,
        }
        if self._ctx.spec.get("final_model"):
            out["final_best_index"] = self._final_doc["best_index"]
        return out

    @property
    def estimators(self) -> list:
        """The estimators refitted on each outer train set.

        Only with ``Experiment(..., return_estimator=True)``.
        """
        if not self._ctx.spec["return_estimator"]:
            raise WorkdirError("estimators were not kept: compile with return_estimator=True")
        return [load_pickle(self._ctx.workdir.path(Workdir.estimator_output(o)),
                            self._docs[o].get("estimator_sha256"),
                            f"the estimator of outer split {o}",
                            recorded_in="by the task that fitted it")
                for o in self.outer_splits]

    def to_text(self) -> str:
        """The outer scores table and the summary, for a terminal."""
        with pd.option_context("display.width", 160, "display.max_columns", 30,
                               "display.max_colwidth", 60):
            table = self.outer_scores.drop(columns=["fit_error"])
            return f"{table.to_string(index=False)}\n\n{self.summary.to_string()}"

    def test_scores(self, name: str | None = None) -> np.ndarray:
        """Outer test scores of metric ``name`` (the refit metric by default)."""
        name = name or self._ctx.spec["refit_metric"]
        return self.outer_scores[f"test_{name}"].to_numpy(dtype=float)


def _with_params(inner: dict, params: pd.DataFrame, cands: list) -> pd.DataFrame:
    """Inner results as a cv_results_ frame: times, param_* columns, params, scores."""
    inner = pd.DataFrame(inner)
    frame = pd.concat([inner.iloc[:, :4], params, inner.iloc[:, 4:]], axis=1)
    frame.insert(4 + params.shape[1], "params", cands)
    return frame
