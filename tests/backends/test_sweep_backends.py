"""The same sweep on every backend gives the table of direct evaluation.

The oracle is the function called directly on the same trials; the local
executor (persistent workers and subprocess mode), a real SLURM, real
Soma-Workflow (light mode) and a real Dask LocalCluster run the same tasks.
Under CI=true a missing component fails instead of skipping.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import sweep_funcs
from conftest import has_module, requires_or_fail, slurm_answers

from mempamal import Sweep, load_results


def _by_value_function():
    """A function the tasks can only get by value (it is local to this one)."""
    offset = 0.25

    def shifted(x, y=0.0, trial=None):
        for step in range(2):
            trial.report(step, loss=x * step + offset)
        if x == 3.0 and y == 1.0:
            raise RuntimeError("this candidate fails")
        return {"loss": (x - 2) ** 2 + y + offset + trial.seed, "seed_seen": trial.seed}

    return shifted


FUNCTIONS = {
    "by value": _by_value_function,
    "file": lambda: f"{sweep_funcs.__file__}:quadratic",
}

BACKENDS = {
    "local": ("local", {"n_jobs": 2, "progress": False}, []),
    "local-subprocess": ("local", {"n_jobs": 2, "subprocess": True, "progress": False}, []),
    "slurm": ("slurm", {"poll_interval": 0.5, "progress": False},
              [pytest.mark.slurm, requires_or_fail(slurm_answers(),
                                                   "no SLURM cluster answers (sbatch/squeue)")]),
    "soma": ("soma", {"refreshment_interval": 0.1, "n_jobs": 2, "progress": False},
             [pytest.mark.soma, requires_or_fail(has_module("soma_workflow"),
                                                 "soma-workflow not installed")]),
    "dask": ("dask", {"n_jobs": 2, "progress": False},
             [pytest.mark.dask, requires_or_fail(has_module("distributed"),
                                                 "dask.distributed is not installed")]),
}

@pytest.fixture
def fake_home(tmp_path, monkeypatch):
    """Soma-Workflow writes its configuration in HOME: give it the test's."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("SOMA_WORKFLOW_CONFIG", raising=False)
    return home


def _sweep(func):
    return Sweep(func, param_grid={"x": [1.0, 2.0, 3.0], "y": [0.0, 1.0]}, repeats=2,
                 metric="loss", mode="min")


class _DirectTrial:
    """What a function sees of its trial when the oracle calls it directly."""

    def __init__(self, trial_id, seed):
        self.id, self.seed, self.reported = trial_id, seed, []

    def report(self, step, **metrics):
        self.reported.append({"trial": self.id, "step": step, **metrics})


def _direct(func, sweep):
    """The oracle: the function called directly on the sweep's trials, in order."""
    rows, history = [], []
    for trial_id, (params, seed) in enumerate(
            (p, s) for p in sweep.candidates for s in range(sweep.repeats)):
        trial = _DirectTrial(trial_id, seed)
        try:
            out = func(**params, trial=trial)
        except RuntimeError as exc:
            rows.append({"trial": trial_id, "seed": seed, "state": "failed",
                         "error": str(exc)})
        else:
            rows.append({"trial": trial_id, "seed": seed, "state": "done", **out})
        history += trial.reported
    return pd.DataFrame(rows), pd.DataFrame(history)


def _function(function):
    made = FUNCTIONS[function]()
    return made if callable(made) else sweep_funcs.quadratic


#: (backend, function): every backend runs the function stored by value; the
#: fresh interpreters of subprocess mode and SLURM also import one from its file
CASES = [(b, "by value") for b in BACKENDS] + [("local-subprocess", "file"),
                                                ("slurm", "file")]


@pytest.mark.slow
@pytest.mark.parametrize(("backend", "function"),
                         [pytest.param(b, f, marks=BACKENDS[b][2], id=f"{b}-{f}")
                          for b, f in CASES])
def test_same_trial_table_as_direct_evaluation(tmp_path, fake_home, backend, function):
    name, options, _ = BACKENDS[backend]
    sweep = _sweep(FUNCTIONS[function]())
    expected, expected_history = _direct(_function(function), sweep)
    wf = sweep.compile(tmp_path / backend, trials_per_task=5)
    wf.run(name, **options)
    assert wf.status(name) == {tid: "done" for tid in wf.tasks}
    got = load_results(wf.workdir.root)
    trials = got.trials
    assert len(trials) == 12 and (trials["attempt"] == 1).all()
    for col in ("trial", "seed", "state"):
        assert trials[col].tolist() == expected[col].tolist(), col
    for col in set(expected.columns) - {"trial", "seed", "state", "error"}:
        np.testing.assert_allclose(trials[col].to_numpy(dtype=float),
                                   expected[col].to_numpy(dtype=float), err_msg=col)
    if "error" in expected:
        failed = expected["state"] == "failed"
        assert all(want in str(have) for want, have in
                   zip(expected["error"][failed], trials["error"][failed]))
    if len(expected_history):
        pd.testing.assert_frame_equal(got.history.reset_index(drop=True),
                                      expected_history, check_dtype=False)
    done = expected[expected["state"] == "done"]
    best = done.loc[done.groupby(done["trial"] // sweep.repeats)["loss"]
                    .transform("mean").idxmin()]
    assert got.best_params == sweep.candidates[int(best["trial"]) // sweep.repeats]


#: what a program a trial starts sees: its task's ``cpus``, on Dask too,
#: whose nannies give their workers OMP_NUM_THREADS=1
THREADS_SEEN = {"slurm": 2, "soma": 2, "dask": 2}


@pytest.mark.parametrize("backend", [pytest.param(b, marks=BACKENDS[b][2], id=b)
                                     for b in THREADS_SEEN])
def test_a_program_a_trial_starts_is_told_the_threads_of_its_task(tmp_path, fake_home,
                                                                   backend):
    name, options, _ = BACKENDS[backend]
    sweep = Sweep(sweep_funcs.child_threads, param_grid={"x": [0, 1]}, metric="omp",
                  mode="min")
    wf = sweep.compile(tmp_path / "w", resources={"cpus": 2}, trials_per_task=1)
    wf.run(name, **options)
    trials = load_results(wf.workdir.root).trials
    assert trials["omp"].tolist() == [THREADS_SEEN[backend]] * 2
    assert trials["openblas"].tolist() == [THREADS_SEEN[backend]] * 2
