"""Export to a real MLflow (sqlite store in a temporary folder), read back with MlflowClient."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from conftest import requires_or_fail
from helpers import iris
from sklearn.model_selection import StratifiedKFold
from sklearn.svm import SVC

from mempamal import Experiment, ValidationError, load_results

try:
    from mlflow.tracking import MlflowClient
    HAVE_MLFLOW = True
except ImportError:  # pragma: no cover - CI installs mempamal[all]
    HAVE_MLFLOW = False

pytestmark = [requires_or_fail(HAVE_MLFLOW, "mlflow is not installed (mempamal[mlflow])")]


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    """MLflow may create its default store (mlflow.db) in the current folder."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("export")
    X, y = iris()
    exp = Experiment(SVC(), param_grid={"C": [0.1, 1.0, 10.0]},
                     cv=StratifiedKFold(3, shuffle=True, random_state=0), inner_cv=3,
                     scoring=["accuracy", "f1_macro"], refit="accuracy", final_model=True)
    wf = exp.compile(tmp / "w", X, y)
    wf.run("local", n_jobs=2, progress=False)
    return tmp, wf


def _export(tmp, workdir, uri):
    return subprocess.run([sys.executable, "-m", "mempamal", "export", str(workdir),
                           "--mlflow", uri], capture_output=True, text=True, cwd=tmp)


def test_export_round_trip_and_no_duplicates(finished):
    tmp, wf = finished
    uri = f"sqlite:///{tmp}/mlflow.db"
    for _ in range(2):  # exporting twice does not duplicate
        out = _export(tmp, wf.workdir.root, uri)
        assert out.returncode == 0, out.stderr
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("mempamal")
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if r.data.tags.get("mempamal.role") == "parent"]
    children = [r for r in runs if "mempamal.child" in r.data.tags]
    assert len(parents) == 1 and len(children) == 3 and len(runs) == 4
    parent = parents[0]
    res = load_results(wf.workdir.root)
    assert parent.data.tags["mempamal.workdir"] == str(wf.workdir.root)
    assert parent.data.tags["mempamal.version.scikit-learn"]
    assert parent.info.status == "FINISHED"
    np.testing.assert_allclose(parent.data.metrics["test_accuracy_mean"],
                               res.summary.loc["test_accuracy", "mean"])
    for child in children:
        o = int(child.data.tags["mempamal.outer_split"])
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert child.data.metrics["test_f1_macro"] == pytest.approx(
            res.outer_scores.loc[o, "test_f1_macro"], abs=1e-12)
        assert float(child.data.params["C"]) == res.best_params[o]["C"]
        assert len(client.get_metric_history(child.info.run_id, "test_accuracy")) == 1
    # the final model is an artefact MLflow itself can load
    import mlflow
    import mlflow.sklearn

    mlflow.set_tracking_uri(uri)
    model = mlflow.sklearn.load_model(f"runs:/{parent.info.run_id}/final_model")
    X, _ = iris()
    np.testing.assert_array_equal(model.predict(X), res.final_estimator.predict(X))


def test_a_tracking_uri_mlflow_cannot_open_is_a_clear_error(finished, tmp_path):
    from mempamal.export_mlflow import export_mlflow

    _, wf = finished
    with pytest.raises(ValidationError, match="MLflow cannot open the tracking URI 'nosuch://x'"):
        export_mlflow(wf.workdir.root, "nosuch://x")
    out = _export(tmp_path, wf.workdir.root, "nosuch://x")
    assert out.returncode == 2 and "cannot open the tracking URI" in out.stderr


def test_sweep_exports_a_child_per_trial_with_its_history(tmp_path):
    import functools

    import sweep_funcs

    from mempamal import Sweep

    n_steps = 3
    func = functools.partial(sweep_funcs.checkpointed, n_steps=n_steps,
                             log=str(tmp_path / "calls.log"), step_seconds=0.0)
    sweep = Sweep(func, param_grid={"x": [0.5, 2.0]}, metric="loss", mode="min")
    wf = sweep.compile(tmp_path / "w")
    wf.run("local", n_jobs=2, progress=False)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    for _ in range(2):
        out = _export(tmp_path, wf.workdir.root, uri)
        assert out.returncode == 0, out.stderr
    client = MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name("mempamal").experiment_id])
    children = {float(r.data.params["x"]): r for r in runs if "mempamal.child" in r.data.tags}
    assert len(runs) == 3 and set(children) == {0.5, 2.0}
    for x, child in children.items():
        # the oracle: the loop's own arithmetic, step by step
        total, losses = 0.0, []
        for step in range(n_steps):
            total += x * step
            losses.append(1.0 / (1 + total))
        history = client.get_metric_history(child.info.run_id, "loss")
        assert [m.step for m in sorted(history, key=lambda m: m.step)] == list(range(n_steps))
        assert [m.value for m in sorted(history, key=lambda m: m.step)] == pytest.approx(losses)
        assert child.data.tags["mempamal.state"] == "done"
        assert child.info.status == "FINISHED"
