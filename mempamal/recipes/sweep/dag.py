"""A sweep as a DAG of tasks (pure: no I/O).

For trials packed ``k`` per task::

    trial-{first}-{last}   run trials first..last one after the other
          |  (all)
    aggregate              out/final/trials.csv, out/final/summary.json

A model-based search asks its candidates in rounds, and the DAG stays
static: the whole search is known (and can be submitted) at once::

    suggest-r0 -> trials of round 0 -> suggest-r1 -> trials of round 1 -> ... -> aggregate

``suggest-r{r}`` writes ``out/suggest/r{r}.json``, the candidates of round
``r``; it depends on every trial task of round ``r - 1``. Trial tasks never
cross a round.

A trial task declares every one of its trials' result files as outputs:
it is done exactly when all its trials are, and a task killed mid-way is
pending again while the trials it finished keep their files (it skips them
when it runs again).
"""

from __future__ import annotations

import math

from ...workdir import Workdir
from ...workflow import Task, command_prefix

#: up to this many trials, one task each; beyond, this many tasks
MAX_TRIAL_TASKS = 256


def default_trials_per_task(n_trials: int) -> int:
    """Trials per task when the user does not say: a task each, up to 256 tasks.

    Nothing is known of a trial's duration before it runs (timing one at
    compile time could mean training a network), so the rule bounds costs
    both ways: with up to 256 trials each gets a task of its own and long
    trials spread over as many workers; beyond, trials are packed into 256
    tasks, so 10,000 quick trials cost 256 interpreter starts on a cluster
    (and 256 task records locally), not 10,000, while keeping 256 workers
    busy when trials are long. ``trials_per_task=1`` spreads any sweep fully.
    """
    if n_trials <= MAX_TRIAL_TASKS:
        return 1
    per_task = math.ceil(n_trials / MAX_TRIAL_TASKS)
    return math.ceil(n_trials / math.ceil(n_trials / per_task))  # equal packs


def trial_name(trial: int, width: int) -> str:
    """The zero-padded name of a trial's files (``0042``): ``ls`` lists them in order."""
    return f"{trial:0{width}d}"


def name_width(n_trials: int) -> int:
    return len(str(max(n_trials - 1, 0)))


def packs(n_trials: int, trials_per_task: int) -> list[range]:
    """Consecutive trials cut into packs of ``trials_per_task``."""
    return [range(s, min(s + trials_per_task, n_trials))
            for s in range(0, n_trials, trials_per_task)]


def suggest_output(round_index: int) -> str:
    """``out/suggest/rR.json``: the candidates a suggest task asked for round ``R``."""
    return f"out/suggest/r{round_index}.json"


def rounds(n_candidates: int, batch_size: int) -> list[range]:
    """Candidates of each round of a model-based search (the last may be smaller)."""
    return [range(s, min(s + batch_size, n_candidates))
            for s in range(0, n_candidates, batch_size)]


def build_tasks(n_trials: int, trials_per_task: int, python: str | None = None,
                resources: dict | None = None, batch_size: int | None = None,
                repeats: int = 1) -> list[Task]:
    """Tasks of a sweep, in topological order.

    Parameters
    ----------
    n_trials : int
        Number of trials (candidates times repeats).
    trials_per_task : int
        Trials per trial task.
    python : str, optional
        Interpreter of the task commands.
    resources : dict, optional
        Resource hints of one trial; a task gets ``time_min`` times its trials.
    batch_size : int, optional
        Candidates per round of a model-based search (None: no rounds).
    repeats : int, default=1
        Trials per candidate (a round holds ``batch_size * repeats`` trials).
    """
    per_trial = dict(resources or {})
    per_trial.setdefault("cpus", 1)
    prefix = command_prefix(python)
    width = name_width(n_trials)
    tasks: list[Task] = []
    shared: dict[int, dict] = {}  # one resources dict per pack size keeps 100,000 tasks small
    if batch_size is None:
        round_trials = [range(n_trials)]
    else:
        round_trials = [range(r.start * repeats, r.stop * repeats)
                        for r in rounds(n_trials // repeats, batch_size)]
    # a suggest task reads small files and asks Optuna: one CPU, little memory
    suggest_res = {"cpus": 1, "mem_mb": 1000, "time_min": 10}
    previous: list[str] = []  # the trial tasks of the previous round
    for r, trials in enumerate(round_trials):
        suggest = None
        if batch_size is not None:
            suggest = f"suggest-r{r}"
            deps = previous + ([f"suggest-r{r - 1}"] if r else [])
            # the round's trials need only have ended: a killed one is a
            # failed trial to Optuna, not the end of the search
            tasks.append(Task(suggest, "suggest", [suggest_output(r)], deps, suggest_res,
                              {"round": r}, prefix, soft_deps=list(previous)))
        previous = []
        for pack in packs_of(trials, trials_per_task):
            tasks.append(_trial_task(pack, width, per_trial, shared, suggest, prefix))
            previous.append(tasks[-1].id)
    aggregate_res = {"cpus": 1, **{k: v for k, v in per_trial.items() if k == "mem_mb"}}
    tasks.append(Task("aggregate", "aggregate", [Workdir.FINAL_TRIALS, Workdir.FINAL_SUMMARY],
                      [t.id for t in tasks if t.kind == "trial"], aggregate_res, {}, prefix))
    return tasks


def packs_of(trials: range, trials_per_task: int) -> list[range]:
    """The consecutive trials of ``trials`` cut into packs of ``trials_per_task``."""
    return [range(s, min(s + trials_per_task, trials.stop))
            for s in range(trials.start, trials.stop, trials_per_task)]


def _trial_task(pack: range, width: int, per_trial: dict, shared: dict, suggest, prefix):
    """The task running the trials of ``pack`` (after ``suggest`` when there is one)."""
    names = [trial_name(t, width) for t in pack]
    tid = f"trial-{names[0]}" if len(pack) == 1 else f"trial-{names[0]}-{names[-1]}"
    res = shared.get(len(pack))
    if res is None:
        res = dict(per_trial)
        if "time_min" in res:
            res["time_min"] = res["time_min"] * len(pack)
        shared[len(pack)] = res
    return Task(tid, "trial", [Workdir.trial_output(n) for n in names],
                [suggest] if suggest else [], res, {"trials": [pack.start, pack.stop]}, prefix)


def estimated_seconds(task: Task, meta: dict) -> float | None:
    """Rough work of one task; None for trials (nothing is timed before they run)."""
    per_trial = meta.get("seconds_per_trial")
    if task.kind == "aggregate":
        return 0.1 + 1e-4 * meta.get("n_trials", 0)  # reads one small file per trial
    if task.kind == "suggest":  # Optuna's import, then tell + ask
        return 2.0 + 1e-3 * meta.get("n_trials", 0)
    if not per_trial:
        return None
    start, stop = task.args["trials"]
    return per_trial * (stop - start)
