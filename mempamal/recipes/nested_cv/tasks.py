"""What each task kind computes: fit, select, aggregate.

Fits and scores go through scikit-learn's own ``_fit_and_score``, the function
``GridSearchCV`` and ``cross_validate`` call, so every number (and every
``error_score`` decision) is the one scikit-learn would produce.
"""

from __future__ import annotations

import sys
import warnings

import numpy as np
from scipy.stats import rankdata
from sklearn.base import clone
from sklearn.exceptions import FitFailedWarning

from ... import scoring as _scoring
from ...pickling import dump_pickle
from ...sklearn_compat import fit_and_score as _fit_and_score
from ...sklearn_compat import numpy_splits_direct, param_columns, param_names_cached
from ...workdir import Workdir, read_json, write_json, write_text
from .context import NestedCVContext as TaskContext


def fit_and_score(spec, X, y, train, test, params, return_estimator=False, scorer=None,
                  fit_params=None, score_params=None):
    """Fit a clone with ``params`` on ``train``, score on ``test``; a small dict.

    ``scorer``: the resolved scorer, when the caller scores many candidates
    (resolving it costs ~50 µs, a few per cent of a millisecond fit).
    ``fit_params``, ``score_params``: full-length per-sample values, sliced
    to ``train`` and ``test`` by scikit-learn.
    """
    if scorer is None:
        scorer = _scoring.resolve(spec["estimator"], spec["scoring"], spec["error_score"])
    res = _fit_and_score(
        clone(spec["estimator"]), X, y, scorer=scorer, train=train, test=test,
        parameters=params, fit_params=fit_params or None, score_params=score_params or None,
        return_train_score=spec["return_train_score"], return_estimator=return_estimator,
        error_score=spec["error_score"],
    )
    names = spec["scorer_names"]
    out = {
        "test_scores": _scoring.as_dict(res["test_scores"], names),
        "fit_time": res["fit_time"], "score_time": res["score_time"],
        "fit_error": res["fit_error"],
    }
    if spec["return_train_score"]:
        out["train_scores"] = _scoring.as_dict(res["train_scores"], names)
    if return_estimator:
        out["estimator"] = res["estimator"]
    return out


def run(ctx: TaskContext, task) -> None:
    """Run ``task`` (a :class:`~mempamal.workflow.Task`) of the context's workdir."""
    {"fit": run_fit, "select": run_select, "suggest": run_suggest,
     "aggregate": run_aggregate}[task.kind](ctx, task)


# -- fit ---------------------------------------------------------------------
def run_fit(ctx: TaskContext, task) -> None:
    """Fit and score a chunk of candidates on one inner split (or the outer split)."""
    o, i = task.args["o"], task.args["i"]
    if i is None:  # plain cross-validation: the outer split itself
        train, test = ctx.splits.outer[o]
    else:  # inner indices are relative to the outer-train subset
        outer_train = ctx.splits.outer_train(o)
        itrain, itest = ctx.splits.inner_split(o, i)
        train, test = outer_train[itrain], outer_train[itest]
    keep = ctx.spec["return_estimator"] and i is None
    scorer = _scoring.resolve(ctx.spec["estimator"], ctx.spec["scoring"],
                              ctx.spec["error_score"])
    where = "inner" if i is not None else "outer"
    fit_params, score_params = ctx.fit_params(f"{where}_fit"), ctx.fit_params(f"{where}_score")
    candidates = [ctx.candidate(o, c) for c in task.args["candidates"]]
    with param_names_cached(), numpy_splits_direct():
        rows = _with_shared_prefix(ctx.spec, ctx.X, ctx.y, train, test, candidates, scorer,
                                   keep or fit_params or score_params)
        if rows is None:
            # the compile's timed fit, when it is one of ours and made the same way
            kept = None if keep or fit_params or score_params else _timed_fit(ctx, task)
            rows = [kept[1] if kept and c == kept[0] else
                    fit_and_score(ctx.spec, ctx.X, ctx.y, train, test, params,
                                  return_estimator=keep, scorer=scorer,
                                  fit_params=fit_params, score_params=score_params)
                    for c, params in zip(task.args["candidates"], candidates)]
    doc = {"candidates": task.args["candidates"], "results": rows}
    if keep:  # its digest travels in the output that names it (trust rule)
        doc["estimator_sha256"] = dump_pickle(ctx.workdir.path(Workdir.estimator_output(o)),
                                              rows[0].pop("estimator"))
    # compact: json's C encoder (with an indent, json encodes in pure Python:
    # 0.5 of the 3 ms a W2 fit task spends outside its fits)
    write_json(ctx.workdir.path(task.outputs[0]), doc, indent=None)


def _timed_fit(ctx: TaskContext, task) -> tuple[int, dict] | None:
    """(candidate, row) of the fit the compile timed, when it is one of this task's.

    Its warnings are written to this task's log, as if it had made the fit.
    """
    where = ctx.workflow.meta.get("timed_fit")
    if not where or (where["o"], where["i"]) != (task.args["o"], task.args["i"]) \
            or where["candidate"] not in task.args["candidates"]:
        return None
    from ...context import check_digest

    if not ctx.workdir.path(Workdir.TIMED_FIT).exists():  # a cache of work: made again
        print(f"{Workdir.TIMED_FIT} is gone: fitting candidate {where['candidate']} again",
              flush=True)
        return None
    check_digest(ctx.workflow, Workdir.TIMED_FIT)  # changed: refused, as any compiled file
    kept = read_json(ctx.workdir.path(Workdir.TIMED_FIT))
    print(f"candidate {where['candidate']}: the fit the compile timed, not made again",
          flush=True)
    for line in kept["warnings"]:
        print(f"  warning (at compile): {line}", file=sys.stderr, flush=True)
    return where["candidate"], kept["row"]


def _with_shared_prefix(spec, X, y, train, test, candidates, scorer, excluded):
    """The candidates' rows with the Pipeline's unchanged first steps fitted once.

    None when that would not give scikit-learn's numbers (see :mod:`.prefix`).
    """
    from .prefix import SharedPrefix, shared_steps

    n = 0 if excluded or spec["return_train_score"] else shared_steps(spec["estimator"],
                                                                      candidates)
    if n == 0:
        return None
    try:
        shared = SharedPrefix(spec["estimator"], n, X, y, train, test)
    except Exception:  # noqa: BLE001 - each candidate then fails as scikit-learn's would
        return None
    spec = {**spec, "estimator": shared.estimator}
    return [shared.charge(fit_and_score(spec, shared.X, shared.y, shared.train, shared.test,
                                        params, scorer=scorer), len(candidates))
            for params in candidates]


# -- select ------------------------------------------------------------------
def inner_results(ctx: TaskContext, o: int) -> tuple[dict, list[str]]:
    """Inner ``cv_results`` of outer split ``o``, built as ``GridSearchCV`` does.

    Also returns the tracebacks of the fits that failed.
    """
    spec = ctx.spec
    errors: list[str] = []
    n_cand, n_splits = ctx.n_candidates, ctx.splits.n_inner(o)
    by_key: dict[str, np.ndarray] = {}

    def grid(key):
        return by_key.setdefault(key, np.full((n_cand, n_splits), np.nan))

    for dep in ctx.workflow.tasks[select_id(o)].deps:
        dep_task = ctx.workflow.tasks[dep]
        # check_inputs verified it (digest or parse) before this task started
        doc = read_json(ctx.workdir.path(dep_task.outputs[0]))
        i = dep_task.args["i"]
        for c, row in zip(doc["candidates"], doc["results"]):
            if row["fit_error"]:
                errors.append(row["fit_error"])
            grid("fit_time")[c, i] = row["fit_time"]
            grid("score_time")[c, i] = row["score_time"]
            for part in ("test", "train"):
                for name, v in row.get(f"{part}_scores", {}).items():
                    grid(f"{part}_{name}")[c, i] = v
    results = {}
    for key in ("fit_time", "score_time"):
        _store(results, key, by_key[key], splits=False, rank=False)
    for name in spec["scorer_names"]:
        _store(results, f"test_{name}", by_key[f"test_{name}"], splits=True, rank=True)
        if spec["return_train_score"]:
            _store(results, f"train_{name}", by_key[f"train_{name}"], splits=True, rank=False)
    return results, errors


def _store(results: dict, key: str, array: np.ndarray, splits: bool, rank: bool) -> None:
    """scikit-learn's ``BaseSearchCV._format_results._store``, same arithmetic."""
    if splits:
        for k in range(array.shape[1]):
            results[f"split{k}_{key}"] = array[:, k]
    means = np.average(array, axis=1)
    results[f"mean_{key}"] = means
    results[f"std_{key}"] = np.sqrt(np.average((array - means[:, np.newaxis]) ** 2, axis=1))
    if rank:
        if np.isnan(means).all():
            ranks = np.ones_like(means, dtype=np.int32)
        else:
            filled = np.nan_to_num(means, nan=np.nanmin(means) - 1)
            ranks = rankdata(-filled, method="min").astype(np.int32, copy=False)
        results[f"rank_{key}"] = ranks


def sklearn_cv_results(candidates: list[dict], results: dict) -> dict:
    """``results`` with ``param_<name>`` masked arrays and ``params``, in sklearn's key order."""
    keys = list(results)
    times = [k for k in keys if k.endswith(("_fit_time", "_score_time"))]
    full = {k: results[k] for k in times}
    full.update(param_columns(candidates))
    full["params"] = candidates
    full.update((k, results[k]) for k in keys if k not in full)
    return full


def best_index(spec, results: dict, candidates: list[dict] | None = None) -> int:
    """The candidate ``GridSearchCV`` would pick (its rank and tie-break).

    ``candidates``: those the results are of (default: the spec's).
    """
    if candidates is None:
        candidates = spec["candidates"]
    if callable(spec["refit"]):
        # the callable sees cv_results as scikit-learn builds it
        full = sklearn_cv_results(candidates, results)
        idx = spec["refit"](full)
        if not isinstance(idx, (int, np.integer)) or not 0 <= idx < len(candidates):
            raise ValueError(f"refit callable returned {idx!r}; expected a candidate index")
        return int(idx)
    return int(results[f"rank_test_{spec['refit_metric']}"].argmin())


def select_id(o) -> str:
    """The select task of outer split ``o`` (or of the final model's search)."""
    return "select-final" if o == "final" else f"select-o{o}"


def run_select(ctx: TaskContext, task) -> None:
    """Pick the best candidate of outer split o, refit on outer-train, score on outer-test.

    For the final model (``o="final"``): refit the best candidate on all the data.
    """
    o = task.args["o"]
    results, errors = inner_results(ctx, o)
    if errors:
        # what GridSearchCV's FitFailedWarning says, in this task's log
        total = ctx.n_candidates * ctx.splits.n_inner(o)
        warnings.warn(f"{len(errors)} fits failed out of a total of {total}; their score "
                      f"is error_score={ctx.spec['error_score']!r}. First traceback:\n"
                      f"{errors[0]}", FitFailedWarning, stacklevel=1)
    candidates = ctx.candidates_of(o)
    best = best_index(ctx.spec, results, candidates)
    if o == "final":
        _refit_final(ctx, task, best, results, candidates)
        return
    train, test = ctx.splits.outer[o]
    keep = ctx.spec["return_estimator"]
    outer = fit_and_score(ctx.spec, ctx.X, ctx.y, train, test, candidates[best],
                          return_estimator=keep, fit_params=ctx.fit_params("outer_fit"),
                          score_params=ctx.fit_params("outer_score"))
    doc = {"best_index": best, "outer": outer,
           "inner": {k: v.tolist() for k, v in results.items()}}
    if ctx.spec.get("adaptive"):  # this split's own candidates, asked round by round
        doc["candidates"] = candidates
    if keep:  # its digest travels in the output that names it (trust rule)
        doc["estimator_sha256"] = dump_pickle(ctx.workdir.path(Workdir.estimator_output(o)),
                                              outer.pop("estimator"))
    write_json(ctx.workdir.path(task.outputs[0]), doc)


def _refit_final(ctx: TaskContext, task, best: int, results: dict,
                 candidates: list[dict]) -> None:
    """What ``GridSearchCV.fit(X, y)`` does last: refit the best candidate on all data."""
    import platform
    import time

    import sklearn

    from ...sklearn_compat import refit_on_all

    params = candidates[best]
    start = time.perf_counter()
    estimator = refit_on_all(clone(ctx.spec["estimator"]), params, ctx.X, ctx.y,
                             ctx.fit_params("outer_fit"))
    doc = {"best_index": best, "refit_time": time.perf_counter() - start,
           "inner": {k: v.tolist() for k, v in results.items()},
           # what it was fitted with: load it with the same releases
           "versions": {"scikit-learn": sklearn.__version__, "numpy": np.__version__,
                        "python": platform.python_version()}}
    if ctx.spec.get("adaptive"):  # the final search's own candidates
        doc["candidates"] = candidates
    doc["estimator_sha256"] = dump_pickle(ctx.workdir.path(Workdir.estimator_output("final")),
                                          estimator)
    write_json(ctx.workdir.path(task.outputs[0]), doc)


# -- suggest -----------------------------------------------------------------
def run_suggest(ctx: TaskContext, task) -> None:
    """Ask the candidates of round ``r`` of outer split ``o``'s search; write them atomically.

    Optuna is told, for each candidate of the earlier rounds, the mean of
    its inner test scores of the refit metric (what ``GridSearchCV`` ranks),
    maximised; a candidate whose mean is NaN (a failed fit, or a fit task
    killed without output) is told FAIL.
    Everything read is final once the dependencies are done and Optuna is
    seeded: run again after a crash, the task writes the same file.
    """
    from ...adaptive import Finished, suggest_batch
    from .dag import suggest_output

    spec, a = ctx.spec, ctx.spec["adaptive"]
    o, r = task.args["o"], task.args["round"]
    batch = a["batch_size"]
    n_known = r * batch
    metric = spec["refit_metric"]
    if metric not in spec["scorer_names"]:  # a callable refit: rank on the first metric
        metric = spec["scorer_names"][0]
    scores = np.full((n_known, ctx.splits.n_inner(o)), np.nan)
    for prev in _fits_of_earlier_rounds(ctx, o, r):
        try:
            doc = read_json(ctx.workdir.path(prev.outputs[0]))
        except FileNotFoundError:  # killed or timed out (a soft dependency): failed
            continue
        for c, row in zip(doc["candidates"], doc["results"]):
            scores[c, prev.args["i"]] = row["test_scores"].get(metric, np.nan)
    finished = []
    for c in range(n_known):
        asked = ctx.suggested(o, c // batch)["trials"][c % batch]
        mean = float(np.average(scores[c]))  # GridSearchCV's mean: NaN if a split failed
        finished.append(Finished(asked["params"], mean if np.isfinite(mean) else None,
                                 "done" if np.isfinite(mean) else "failed",
                                 asked["system_attrs"]))
    n_ask = min(batch, ctx.n_candidates - n_known)
    out = suggest_batch(a["search"], a["param_distributions"], "max", finished, n_ask,
                        a["random_state"], r,
                        enqueued=a["enqueued"][n_known:],
                        previous=ctx.suggested(o, r - 1) if r else None)
    write_json(ctx.workdir.path(suggest_output(o, r)), out)


def _fits_of_earlier_rounds(ctx: TaskContext, o: int, r: int) -> list:
    """The fit tasks of outer split ``o`` in rounds before ``r``."""
    return [t for t in ctx.workflow.tasks.values()
            if t.kind == "fit" and t.args.get("o") == o and t.args.get("round", r) < r]


# -- aggregate -----------------------------------------------------------------
def run_aggregate(ctx: TaskContext, task) -> None:
    """Write summary.json, cv_results.csv and outer_scores.csv."""
    from .results import Results

    res = Results.from_context(ctx)
    write_text(ctx.workdir.path(Workdir.FINAL_CV_RESULTS),
               res.cv_results.to_csv(index=False))
    write_text(ctx.workdir.path(Workdir.FINAL_OUTER_SCORES),
               res.outer_scores.to_csv(index=False))
    write_json(ctx.workdir.path(Workdir.FINAL_SUMMARY), res.summary_dict())
