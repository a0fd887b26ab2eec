"""Results of a sweep, read from a working directory: trials, best, history, summary."""

from __future__ import annotations

import json
import os
from functools import cached_property

import numpy as np
import pandas as pd

from ...errors import WorkdirError
from ...workdir import Workdir
from .context import SweepContext

#: trial table columns after the metrics
_TAIL_COLUMNS = ["state", "error", "seconds", "peak_rss_mb", "host", "attempt"]


class SweepResults:
    """The trials of a sweep and what they returned.

    Attributes
    ----------
    trials : DataFrame
        One row per finished trial: ``trial``, ``candidate``,
        ``param_<name>`` per parameter, ``seed``, ``round`` (model-based
        search only: the round that asked its candidate), each returned metric,
        ``state`` (``done``, ``failed``, ``pruned``), ``error``, ``seconds``,
        ``peak_rss_mb``, ``host``, ``attempt``.
    summary : DataFrame
        One row per candidate: its parameters, ``n_done``, ``mean_<m>`` and
        ``std_<m>`` of each metric over its repeats, ``rank_<metric>``.
    best_params : dict
        The best candidate's parameters (on the mean over repeats).
    best : Series
        The best trial of that candidate.
    history : DataFrame
        What the trials reported: ``trial``, ``step``, one column per metric.
    """

    def __init__(self, ctx: SweepContext, docs: list[dict]) -> None:
        self._ctx = ctx
        self._docs = docs

    @classmethod
    def from_context(cls, ctx: SweepContext, partial: bool = False) -> SweepResults:
        """Read every finished trial of ``ctx``'s workdir."""
        wd, n = ctx.workdir, ctx.n_trials
        outputs = [Workdir.trial_output(ctx.name(t)) for t in range(n)]
        present = wd.existing(outputs)  # one directory listing
        docs = []
        for rel in outputs:
            if rel not in present:
                continue
            try:
                with open(wd.path(rel), encoding="utf-8") as fh:
                    docs.append(json.load(fh))
            except (OSError, ValueError):
                continue  # truncated by a crash: not finished
        if not docs or (not partial and len(docs) < n):
            raise WorkdirError(
                f"the sweep in {str(wd.root)!r} is not finished: {len(docs)} of "
                f"{n} trials done (run or resume it, or pass partial=True)")
        return cls(ctx, docs)

    def __repr__(self) -> str:
        return f"<SweepResults of {len(self._docs)} trials>"

    @property
    def metric(self) -> str:
        return self._ctx.spec["metric"]

    @property
    def mode(self) -> str:
        return self._ctx.spec["mode"]

    @cached_property
    def candidates(self) -> list[dict]:
        """Every candidate (of a model-based search: every one asked so far)."""
        return self._ctx.known_candidates()

    def _param_frame(self, candidate_index) -> pd.DataFrame:
        cands = self.candidates
        names = sorted({k for c in cands for k in c})
        return pd.DataFrame({f"param_{k}": [cands[c].get(k) for c in candidate_index]
                             for k in names}, index=range(len(candidate_index)))

    @cached_property
    def metric_names(self) -> list[str]:
        """Every metric a trial returned, ``metric`` first."""
        names = {k: None for d in self._docs for k in d.get("metrics", {})}
        names.pop(self.metric, None)
        return [self.metric, *sorted(names)]

    @cached_property
    def trials(self) -> pd.DataFrame:
        docs = self._docs
        frame = pd.DataFrame({"trial": [d["trial"] for d in docs],
                              "candidate": [d["candidate"] for d in docs]})
        frame = pd.concat([frame, self._param_frame([d["candidate"] for d in docs])], axis=1)
        frame["seed"] = [d["seed"] for d in docs]
        if self._ctx.adaptive is not None:  # which suggest task asked it
            frame["round"] = [d["round"] for d in docs]
        for m in self.metric_names:
            frame[m] = [d.get("metrics", {}).get(m, np.nan) for d in docs]
        for col in _TAIL_COLUMNS:
            frame[col] = [d.get(col) for d in docs]
        return frame

    # -- ranking ------------------------------------------------------------------
    @cached_property
    def summary(self) -> pd.DataFrame:
        t = self.trials
        n = len(self.candidates)
        # trials grouped by candidate once (sorted, cut at each candidate's
        # first row): a mask per candidate made 10,000 candidates quadratic
        cand = t["candidate"].to_numpy(dtype=int)
        order = np.argsort(cand, kind="stable")
        bounds = np.searchsorted(cand[order], np.arange(n + 1))
        done = (t["state"] == "done").to_numpy()[order]
        frame = pd.DataFrame({"candidate": np.arange(n), "n_trials": np.diff(bounds),
                              "n_done": np.bincount(cand[order][done], minlength=n)})
        for m in self.metric_names:
            # a failed repeat counts as NaN, as error_score=nan does in
            # GridSearchCV: a candidate that sometimes fails ranks last
            values = np.where(done, t[m].to_numpy(dtype=float)[order], np.nan)
            groups = [values[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
            frame[f"mean_{m}"] = [g.mean() if len(g) else np.nan for g in groups]
            frame[f"std_{m}"] = [g.std() if len(g) else np.nan for g in groups]
        frame = pd.concat([frame.iloc[:, :1], self._param_frame(list(frame["candidate"])),
                           frame.iloc[:, 1:]], axis=1)
        frame[f"rank_{self.metric}"] = _ranks(frame[f"mean_{self.metric}"], self.mode)
        return frame

    @property
    def best_candidate(self) -> int:
        """Index of the best candidate (best mean of ``metric``; NaN ranks last)."""
        ranks = self.summary[f"rank_{self.metric}"].to_numpy()
        return int(self.summary["candidate"].to_numpy()[int(np.argmin(ranks))])

    @property
    def best_params(self) -> dict:
        return dict(self.candidates[self.best_candidate])

    @property
    def best(self) -> pd.Series:
        t = self.trials
        mine = t[t["candidate"] == self.best_candidate]
        order = _ranks(mine[self.metric].where(mine["state"] == "done"), self.mode)
        return mine.iloc[int(np.argmin(order))]

    def ranked(self) -> pd.DataFrame:
        """The trials, best first (failed and NaN last)."""
        t = self.trials
        order = _ranks(t[self.metric].where(t["state"] == "done"), self.mode)
        return t.iloc[np.argsort(order, kind="stable")]

    # -- history --------------------------------------------------------------------
    @cached_property
    def history(self) -> pd.DataFrame:
        """Reported steps of every trial (the last attempt's value when a step repeats)."""
        rows = []
        folder = self._ctx.workdir.trial_metrics_file(self._ctx.name(0)).parent
        try:  # one listing: most trials of a big sweep report nothing
            reported = set(os.listdir(folder))
        except FileNotFoundError:
            reported = set()
        for t in range(self._ctx.n_trials):
            path = self._ctx.workdir.trial_metrics_file(self._ctx.name(t))
            if path.name not in reported:
                continue
            try:
                with open(path, encoding="utf-8") as fh:
                    lines = fh.readlines()
            except FileNotFoundError:
                continue
            for line in lines:
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue  # the line being written, or cut by a kill
                rec.pop("time", None)
                rec.pop("attempt", None)
                rows.append({"trial": t, **rec})
        if not rows:
            return pd.DataFrame(columns=["trial", "step"])
        frame = pd.DataFrame(rows)
        # attempt 2 resumes from a checkpoint and reports some steps again
        frame = frame.drop_duplicates(["trial", "step"], keep="last")
        return frame.sort_values(["trial", "step"], kind="stable").reset_index(drop=True)

    # -- output ---------------------------------------------------------------------
    def summary_dict(self) -> dict:
        """What ``out/final/summary.json`` holds (plain JSON-able data)."""
        t = self.trials
        counts = t["state"].value_counts()
        best = self.best
        return {
            "n_trials": int(len(t)), "n_done": int(counts.get("done", 0)),
            "n_failed": int(counts.get("failed", 0)),
            "n_pruned": int(counts.get("pruned", 0)),
            "metric": self.metric, "mode": self.mode, "repeats": self._ctx.spec["repeats"],
            "best_candidate": self.best_candidate,
            "best_params": _jsonable(self.best_params),
            "best_trial": int(best["trial"]), "best_value": _float(best[self.metric]),
            "best_mean": _float(self.summary.loc[self.summary["candidate"]
                                                 == self.best_candidate,
                                                 f"mean_{self.metric}"].iloc[0]),
            "candidates": [_jsonable(r) for r in self.summary.to_dict("records")],
        }

    def to_text(self, top: int = 10) -> str:
        """The best trials, the counts and the best candidate, for a terminal."""
        t = self.ranked()
        counts = t["state"].value_counts().to_dict()
        cols = [c for c in t.columns if c not in ("candidate", "error", "host")]
        with pd.option_context("display.width", 160, "display.max_columns", 30,
                               "display.max_colwidth", 40):
            table = t[cols].head(top).to_string(index=False)
            text = (f"{len(t)} of {self._ctx.n_trials} trials: "
                    + ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
                    + f"; best {self.mode} {self.metric}\n{table}\n")
            if self._ctx.spec["repeats"] > 1:
                s = self.summary.sort_values(f"rank_{self.metric}", kind="stable")
                text += f"\nmean over {self._ctx.spec['repeats']} repeats:\n"
                text += s.head(top).to_string(index=False) + "\n"
            failed = t[t["state"] == "failed"]
            if len(failed):
                text += f"\nfirst failure (trial {failed['trial'].iloc[0]}): "
                text += f"{failed['error'].iloc[0]}\n"
        return text + f"\nbest params: {self.best_params}"


def _ranks(values, mode: str) -> np.ndarray:
    """Rank 1 = best; NaN (and failed, given as NaN) last; ties share the lower rank."""
    v = np.asarray(values, dtype=float)
    if mode == "max":
        v = -v
    filled = np.where(np.isnan(v), np.inf, v)
    # pandas' rank, not scipy's rankdata: importing scipy.stats costs an
    # aggregate task ~0.9 s, more than ranking 10,000 trials
    return pd.Series(filled).rank(method="min").to_numpy(dtype=int)


def _float(v):
    v = float(v)
    return None if np.isnan(v) else v


def _jsonable(obj):
    """Plain data for summary.json: numbers, strings; anything else as its repr."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.integer, np.floating)):
        obj = obj.item()
    if isinstance(obj, float) and np.isnan(obj):
        return None
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    return repr(obj)
