"""Suggest rounds against Optuna itself, driven by ask/tell on the same rounds.

The oracle is one Optuna study kept alive: ask a batch, evaluate, tell, and
again. mempamal rebuilds a study from files for every round (nothing alive
in between); it must ask exactly the same candidates.
"""

from __future__ import annotations

import json
import math

import pytest
from conftest import requires_or_fail  # noqa: E402
from scipy.stats import loguniform, norm, randint, uniform

try:
    import optuna

    HAVE_OPTUNA = True
except ImportError:  # pragma: no cover - CI installs mempamal[all]
    HAVE_OPTUNA = False

pytestmark = requires_or_fail(HAVE_OPTUNA, "optuna is not installed (mempamal[optuna])")

from mempamal import ValidationError  # noqa: E402
from mempamal.adaptive import Finished, check_search, suggest_batch  # noqa: E402
from mempamal.adaptive.space import to_optuna  # noqa: E402
from mempamal.adaptive.suggest import make_sampler  # noqa: E402

SPACE = {"x": uniform(-5, 15), "y": uniform(0, 15), "k": randint(1, 5),
         "lr": loguniform(1e-4, 1e-1), "act": ["relu", "tanh"]}


def objective(p):
    """Branin on (x, y), plus terms for the other parameters; fails for k == 4, act tanh."""
    a, b, c, r, s, t = 1, 5.1 / (4 * math.pi ** 2), 5 / math.pi, 6, 10, 1 / (8 * math.pi)
    x, y = p["x"], p["y"]
    value = a * (y - b * x ** 2 + c * x - r) ** 2 + s * (1 - t) * math.cos(x) + s
    if p["k"] == 4 and p["act"] == "tanh":
        return None  # a failed trial: data, not the end of the search
    return value + 0.1 * p["k"] + abs(math.log10(p["lr"]) + 2)


def oracle(search, rounds, batch, seed):
    """One live study, ask/tell in rounds of ``batch``."""
    study = optuna.create_study(direction="minimize", sampler=make_sampler(search, seed))
    dists = to_optuna(SPACE)
    asked = []
    for _ in range(rounds):
        trials = [study.ask(dists) for _ in range(batch)]
        for trial in trials:
            value = objective(trial.params)
            if value is None:
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
            else:
                study.tell(trial, value)
            asked.append(dict(trial.params))
    return asked


def ours(search, rounds, batch, seed):
    """Rounds rebuilt from JSON files only (what suggest tasks read and write)."""
    finished, previous, asked = [], None, []
    for r in range(rounds):
        out = json.loads(json.dumps(suggest_batch(search, SPACE, "min", finished, batch, seed,
                                                  r, previous=previous)))
        previous = out
        for t in out["trials"]:
            value = objective(t["params"])
            finished.append(Finished(t["params"], value, "done" if value is not None
                                     else "failed", t["system_attrs"]))
            asked.append(t["params"])
    return asked


@pytest.mark.parametrize("search", ["tpe", "cmaes", "qmc"])
def test_rounds_rebuilt_from_files_ask_what_a_live_study_asks(search):
    expected = oracle(search, rounds=5, batch=8, seed=3)
    got = ours(search, rounds=5, batch=8, seed=3)
    assert len(got) == 40
    assert got == expected


def test_a_rerun_of_a_round_writes_the_same_file():
    first = suggest_batch("tpe", SPACE, "min", [], 8, 0, 0)
    assert suggest_batch("tpe", SPACE, "min", [], 8, 0, 0) == first
    assert suggest_batch("tpe", SPACE, "min", [], 8, 1, 0) != first


def test_enqueued_candidates_come_first():
    given = [{"x": 1.0, "y": 2.0, "k": 2, "lr": 0.01, "act": "relu"}]
    out = suggest_batch("tpe", SPACE, "min", [], 4, 0, 0, enqueued=given)
    assert out["trials"][0]["params"] == given[0]
    assert len(out["trials"]) == 4


def test_categories_that_optuna_cannot_hold_are_mapped_to_indices():
    from sklearn.svm import SVC

    space = {"est": [SVC(C=1), SVC(C=2)], "x": uniform(0, 1)}
    out = suggest_batch("tpe", space, "min", [], 4, 0, 0)
    assert all(t["params"]["est"] in space["est"] for t in out["trials"])


@pytest.mark.parametrize("kwargs, match", [
    (dict(search="bayes"), "search='bayes' is not a search"),
    (dict(param_grid={"x": [1]}, param_distributions=None), "not param_grid"),
    (dict(batch_size=0), "batch_size=0"),
    (dict(batch_size=50), "batch_size=50"),
    (dict(param_distributions={"x": norm(0, 1)}), r"param_distributions\['x'\].*'norm'"),
])
def test_bad_adaptive_search_input(kwargs, match):
    args = dict(search="tpe", param_grid=None, param_distributions={"x": uniform(0, 1)},
                n_iter=40, batch_size=8)
    args.update(kwargs)
    with pytest.raises(ValidationError, match=match):
        check_search(**args)


def test_random_search_still_takes_any_distribution():
    assert check_search("random", param_grid=None, param_distributions={"x": norm(0, 1)},
                        n_iter=10, batch_size=1) == "static"
