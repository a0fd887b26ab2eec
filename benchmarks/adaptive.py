"""Benchmarks of the adaptive search in rounds (issue 14).

Run from the repository root::

    python benchmarks/adaptive.py [--seeds 11] [--only quality,suggest,makespan] [--out FILE]

- quality: Branin (2-D, optimum 0.397887) and Hartmann-6 (6-D, optimum
  -3.32237), 40 trials in rounds of 8. The median over seeds of the best
  value found by mempamal's suggest rounds (each round rebuilt from JSON, as
  a suggest task does), beside Optuna's own TPE driven by ask/tell in the
  same rounds (batched), Optuna's TPE one trial at a time (sequential), and
  random search (scikit-learn's ParameterSampler, what ``search="random"``
  draws).
- suggest: one suggest round (tell 1,000 finished trials, ask 8) as the
  suggest task runs it, beside Optuna's ask of 8 in a live study holding
  the same 1,000 trials.
- makespan: 40 trials of 1 s in rounds of 8, local executor, 2 workers,
  end to end (suggest tasks included) against the ideal 40 x 1 s / 2.

Every figure comes from the same run. Nothing here is a test: no assertion.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy.stats import uniform

HERE = Path(__file__).resolve().parent

BRANIN_SPACE = {"x": uniform(-5, 15), "y": uniform(0, 15)}
HARTMANN_SPACE = {f"x{k}": uniform(0, 1) for k in range(6)}
_A = np.array([[10, 3, 17, 3.5, 1.7, 8], [0.05, 10, 17, 0.1, 8, 14],
               [3, 3.5, 1.7, 10, 17, 8], [17, 8, 0.05, 10, 0.1, 14]])
_P = 1e-4 * np.array([[1312, 1696, 5569, 124, 8283, 5886], [2329, 4135, 8307, 3736, 1004, 9991],
                      [2348, 1451, 3522, 2883, 3047, 6650], [4047, 8828, 8732, 5743, 1091, 381]])
_ALPHA = np.array([1.0, 1.2, 3.0, 3.2])


def branin(x, y):
    b, c, t = 5.1 / (4 * math.pi ** 2), 5 / math.pi, 1 / (8 * math.pi)
    return (y - b * x ** 2 + c * x - 6) ** 2 + 10 * (1 - t) * math.cos(x) + 10


def hartmann6(**p):
    x = np.array([p[f"x{k}"] for k in range(6)])
    return float(-np.sum(_ALPHA * np.exp(-np.sum(_A * (x - _P) ** 2, axis=1))))


PROBLEMS = {"branin": (branin, BRANIN_SPACE, 0.397887),
            "hartmann6": (hartmann6, HARTMANN_SPACE, -3.32237)}


def ours(func, space, seed, n_iter=40, batch=8):
    """mempamal's suggest rounds, each rebuilt from JSON (what suggest tasks do)."""
    from mempamal.adaptive import Finished, suggest_batch

    finished, previous, best = [], None, math.inf
    for r in range(n_iter // batch):
        out = json.loads(json.dumps(suggest_batch("tpe", space, "min", finished, batch, seed, r,
                                                  previous=previous)))
        previous = out
        for t in out["trials"]:
            value = func(**t["params"])
            best = min(best, value)
            finished.append(Finished(t["params"], value, "done", t["system_attrs"]))
    return best


def optuna_tpe(func, space, seed, n_iter=40, batch=8):
    """Optuna's TPE (constant liar) in a live study, ask/tell in rounds of ``batch``."""
    import optuna

    from mempamal.adaptive.space import to_optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=seed,
                                                                   constant_liar=True))
    dists = to_optuna(space)
    for _ in range(n_iter // batch):
        trials = [study.ask(dists) for _ in range(batch)]
        for trial in trials:
            study.tell(trial, func(**trial.params))
    return study.best_value


def random_search(func, space, seed, n_iter=40):
    from sklearn.model_selection import ParameterSampler

    return float(min(func(**p) for p in ParameterSampler(space, n_iter, random_state=seed)))


def quality(seeds):
    out = {}
    for name, (func, space, optimum) in PROBLEMS.items():
        runs = {"mempamal tpe rounds of 8": [], "optuna tpe batched 8": [],
                "optuna tpe sequential": [], "random": []}
        for seed in range(seeds):
            runs["mempamal tpe rounds of 8"].append(ours(func, space, seed))
            runs["optuna tpe batched 8"].append(optuna_tpe(func, space, seed))
            runs["optuna tpe sequential"].append(optuna_tpe(func, space, seed, batch=1))
            runs["random"].append(random_search(func, space, seed))
        out[name] = {"optimum": optimum,
                     **{k: {"median best": statistics.median(v), "all": v}
                        for k, v in runs.items()}}
        print(name, {k: round(statistics.median(v), 4) for k, v in runs.items()}, flush=True)
    return out


def suggest_timing(n=1000, batch=8, reps=3):
    """One suggest round after ``n`` finished trials, beside Optuna's ask in a live study."""
    import optuna

    from mempamal.adaptive import Finished, suggest_batch
    from mempamal.adaptive.space import to_optuna

    rng = np.random.default_rng(0)
    params = [{"x": float(rng.uniform(-5, 10)), "y": float(rng.uniform(0, 15))}
              for _ in range(n)]
    finished = [Finished(p, branin(**p)) for p in params]
    ours_s, theirs_s = [], []
    for _ in range(reps):
        t0 = time.perf_counter()
        json.dumps(suggest_batch("tpe", BRANIN_SPACE, "min", finished, batch, 0, 125))
        ours_s.append(time.perf_counter() - t0)
        study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0,
                                                                       constant_liar=True))
        dists = to_optuna(BRANIN_SPACE)
        study.add_trials([optuna.trial.create_trial(params=p, distributions=dists,
                                                    value=f.value)
                          for p, f in zip(params, finished)])
        t0 = time.perf_counter()
        for _ in range(batch):
            study.ask(dists)
        theirs_s.append(time.perf_counter() - t0)
    out = {"mempamal suggest (tell 1000 + ask 8) s": statistics.median(ours_s),
           "optuna ask 8 in a live study of 1000 s": statistics.median(theirs_s)}
    print(out, flush=True)
    return out


def sleeper(x, y):
    time.sleep(1.0)
    return branin(x, y)


def makespan():
    """40 trials of 1 s in rounds of 8, 2 local workers, end to end."""
    from mempamal import Sweep, load_results

    # defined in the script (__main__): stored by value, as a user's would be
    sweep = Sweep(sleeper, param_distributions=BRANIN_SPACE, search="tpe", n_iter=40,
                  batch_size=8, random_state=0, metric="loss", mode="min")
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        wf = sweep.compile(Path(tmp) / "w")
        wf.run("local", n_jobs=2, progress=False)
        load_results(Path(tmp) / "w")
        wall = time.perf_counter() - t0
    out = {"makespan s": wall, "ideal s": 20.0, "makespan / ideal": wall / 20.0}
    print(out, flush=True)
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=11)
    parser.add_argument("--only", default="quality,suggest,makespan")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    only = set(args.only.split(","))
    import optuna

    import mempamal

    result = {"date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
              "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                          "platform": platform.platform()},
              "versions": {"mempamal": mempamal.__version__, "optuna": optuna.__version__},
              "seeds": args.seeds}
    if "quality" in only:
        result["quality (40 trials)"] = quality(args.seeds)
    if "suggest" in only:
        result["suggest"] = suggest_timing()
    if "makespan" in only:
        result["makespan"] = makespan()
    out = args.out or HERE / f"adaptive-{datetime.date.today().isoformat()}.json"
    Path(out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"written {out}")


if __name__ == "__main__":
    main()
