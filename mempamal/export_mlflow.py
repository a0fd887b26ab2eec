"""Export a workdir's results to MLflow, the tracker most users already open.

One parent run per workdir and one child run per outer split (nested CV) or
per trial (sweep), with params, metrics, the reported history as step
metrics, tags (workdir, backend, versions, state), and the final model as an
artefact. Runs are found again by their ``mempamal.*`` tags, so exporting
twice does not duplicate: what is already there is left, what is new (a run
that finished since) is added.

``mlflow`` is an optional extra (``pip install mempamal[mlflow]``), imported
here only.
"""

from __future__ import annotations

import json
import math
import os
import time

from .errors import MempamalError, ValidationError

#: MLflow 3's default store
DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
DEFAULT_EXPERIMENT = "mempamal"


def export_mlflow(workdir, tracking_uri: str | None = None,
                  experiment_name: str = DEFAULT_EXPERIMENT) -> dict:
    """Log ``workdir``'s results to MLflow; return ``{"parent": run_id, "children": n}``.

    Parameters
    ----------
    workdir : str or path-like
        A compiled workdir; a run still going is exported as it stands.
    tracking_uri : str, optional
        Where to log (default ``sqlite:///mlflow.db``, in the current folder).
    experiment_name : str, default="mempamal"
        The MLflow experiment the runs go to (created if needed).
    """
    from .results import load_results
    from .workflow import Workflow

    client = _client(tracking_uri or DEFAULT_TRACKING_URI)
    wf = Workflow.load(workdir)
    res = load_results(workdir, partial=True)
    experiment_id = _experiment(client, experiment_name, tracking_uri)
    fp = wf.meta["fingerprint"]
    tags = _tags(wf)
    parent = _find_or_create(client, experiment_id, {"mempamal.fingerprint": fp,
                                                     "mempamal.role": "parent"},
                             run_name=os.path.basename(str(wf.workdir.root)), tags=tags)
    children = _children(wf, res)
    for key, child in children.items():
        run = _find_or_create(client, experiment_id,
                              {"mempamal.fingerprint": fp, "mempamal.child": key},
                              run_name=key, tags={**tags, "mlflow.parentRunId": parent,
                                                  **child.get("tags", {})})
        _log_once(client, run, child)
        client.set_terminated(run, status=child.get("status", "FINISHED"))
    _log_once(client, parent, _parent_data(wf, res))
    _log_final_model(client, parent, res)
    client.set_terminated(parent, status=_status(wf))
    return {"parent": parent, "children": len(children)}


def _client(uri: str):
    try:
        from mlflow.tracking import MlflowClient
    except ImportError as exc:
        raise MempamalError("exporting to MLflow needs mlflow: pip install "
                            f"'mempamal[mlflow]' ({exc})") from exc
    try:
        client = MlflowClient(tracking_uri=uri)
        client.search_experiments(max_results=1)  # opens the store now
    except Exception as exc:  # noqa: BLE001 - mlflow raises many kinds
        raise ValidationError(f"MLflow cannot open the tracking URI {uri!r}: "
                              f"{type(exc).__name__}: {exc}") from exc
    return client


def _experiment(client, name: str, uri) -> str:
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    return client.create_experiment(name)


def _find_or_create(client, experiment_id: str, keys: dict, run_name: str, tags: dict) -> str:
    query = " and ".join(f"tags.`{k}` = '{v}'" for k, v in keys.items())
    found = client.search_runs([experiment_id], filter_string=query, max_results=1)
    if found:
        return found[0].info.run_id
    run = client.create_run(experiment_id, run_name=run_name, tags={**tags, **keys})
    return run.info.run_id


def _log_once(client, run_id: str, data: dict) -> None:
    """Log params and metrics the run does not hold yet (exporting twice adds nothing)."""
    from mlflow.entities import Metric, Param

    have = client.get_run(run_id).data
    now = int(time.time() * 1000)
    params = [Param(k, _text(v)) for k, v in data.get("params", {}).items()
              if k not in have.params]
    history = {k: [(int(step), float(v)) for step, v in steps if _number(v)]
               for k, steps in data.get("history", {}).items()}
    history = {k: steps for k, steps in history.items() if steps}
    metrics = [Metric(k, float(v), now, 0) for k, v in data.get("metrics", {}).items()
               if k not in have.metrics and k not in history and _number(v)]
    for key, steps in history.items():
        if key in have.metrics:
            continue
        metrics += [Metric(key, v, now, step) for step, v in steps]
        # a reported metric is one series: the returned value ends it (one
        # step later) only when it is not the last reported value already
        final = data.get("metrics", {}).get(key)
        last_step, last = max(steps)
        if _number(final) and float(final) != last:
            metrics.append(Metric(key, float(final), now, last_step + 1))
    # MLflow's batch limits: 100 params, 1000 metrics per call
    for start in range(0, len(params), 100):
        client.log_batch(run_id, params=params[start:start + 100])
    for start in range(0, len(metrics), 1000):
        client.log_batch(run_id, metrics=metrics[start:start + 1000])


def _number(v) -> bool:
    try:
        return not math.isnan(float(v))
    except (TypeError, ValueError):
        return False


def _text(v) -> str:
    text = v if isinstance(v, str) else json.dumps(v, default=repr)
    return text[:6000]  # MLflow's limit on a param value


def _tags(wf) -> dict:
    versions = wf.meta.get("versions", {})
    tags = {"mempamal.workdir": str(wf.workdir.root), "mempamal.recipe": wf.recipe,
            "mempamal.backend": wf.last_backend()}
    tags.update({f"mempamal.version.{k}": str(v) for k, v in versions.items()})
    return tags


def _status(wf) -> str:
    from .backends.base import file_status

    states = set(file_status(wf).values())
    if "failed" in states:
        return "FAILED"
    return "FINISHED" if states == {"done"} else "RUNNING"


def _children(wf, res) -> dict:
    if wf.recipe == "sweep":
        return _trial_children(res)
    out = {}
    for _, row in res.outer_scores.iterrows():
        o = int(row["outer_split"])
        metrics = {k: row[k] for k in row.index if k.startswith(("test_", "train_"))}
        metrics.update(fit_time=row["fit_time"], score_time=row["score_time"])
        out[f"outer-{o}"] = {"params": dict(row["best_params"]), "metrics": metrics,
                             "tags": {"mempamal.outer_split": str(o)}}
    return out


def _trial_children(res) -> dict:
    out = {}
    history = getattr(res, "history", None)
    for _, row in res.trials.iterrows():
        trial = str(row["trial"])
        params = {k[len("param_"):]: row[k] for k in row.index if k.startswith("param_")}
        skip = {"trial", "seed", "state", "error", "host", "attempt"}
        metrics = {k: row[k] for k in row.index
                   if k not in skip and not k.startswith("param_") and _number(row[k])}
        steps = {}
        if history is not None and len(history):
            mine = history[history["trial"].astype(str) == trial]
            for col in mine.columns:
                if col in ("trial", "step"):
                    continue
                steps[col] = [(s, v) for s, v in zip(mine["step"], mine[col]) if _number(v)]
        state = str(row.get("state"))
        out[f"trial-{trial}"] = {"params": {**params, "seed": row.get("seed")},
                                 "metrics": metrics, "history": steps,
                                 "tags": {"mempamal.state": state},
                                 "status": "FAILED" if state == "failed" else "FINISHED"}
    return out


def _parent_data(wf, res) -> dict:
    params = {"recipe": wf.recipe, "workdir": str(wf.workdir.root)}
    metrics = {}
    if wf.recipe == "sweep":
        best = getattr(res, "best_params", None)
        if best:
            params.update({f"best.{k}": v for k, v in best.items()})
    else:
        for metric, row in res.summary.iterrows():
            metrics[f"{metric}_mean"] = row["mean"]
            metrics[f"{metric}_std"] = row["std"]
        params["n_candidates"] = wf.meta.get("n_candidates")
        params["n_outer"] = wf.meta.get("n_outer")
    return {"params": params, "metrics": metrics}


def _log_final_model(client, run_id: str, res) -> None:
    """The final estimator (``final_model=True``) as an MLflow sklearn model artefact."""
    try:
        estimator = res.final_estimator
    except (MempamalError, AttributeError):
        return
    have = {a.path for a in client.list_artifacts(run_id)}
    if "final_model" in have:
        return
    import tempfile

    import mlflow.sklearn

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "final_model")
        mlflow.sklearn.save_model(estimator, path)
        client.log_artifacts(run_id, path, artifact_path="final_model")
