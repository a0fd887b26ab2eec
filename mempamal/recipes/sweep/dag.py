"""A sweep as a DAG of tasks (pure: no I/O).

For trials packed ``k`` per task::

    trial-{first}-{last}   run trials first..last one after the other
          |  (all)
    aggregate              out/final/trials.csv, out/final/summary.json

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


def build_tasks(n_trials: int, trials_per_task: int, python: str | None = None,
                resources: dict | None = None) -> list[Task]:
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
    """
    per_trial = dict(resources or {})
    per_trial.setdefault("cpus", 1)
    prefix = command_prefix(python)
    width = name_width(n_trials)
    tasks: list[Task] = []
    shared: dict[int, dict] = {}  # one resources dict per pack size keeps 100,000 tasks small
    for pack in packs(n_trials, trials_per_task):
        names = [trial_name(t, width) for t in pack]
        tid = f"trial-{names[0]}" if len(pack) == 1 else f"trial-{names[0]}-{names[-1]}"
        res = shared.get(len(pack))
        if res is None:
            res = dict(per_trial)
            if "time_min" in res:
                res["time_min"] = res["time_min"] * len(pack)
            shared[len(pack)] = res
        tasks.append(Task(tid, "trial", [Workdir.trial_output(n) for n in names], [], res,
                          {"trials": [pack.start, pack.stop]}, prefix))
    aggregate_res = {"cpus": 1, **{k: v for k, v in per_trial.items() if k == "mem_mb"}}
    tasks.append(Task("aggregate", "aggregate", [Workdir.FINAL_TRIALS, Workdir.FINAL_SUMMARY],
                      [t.id for t in tasks], aggregate_res, {}, prefix))
    return tasks


def estimated_seconds(task: Task, meta: dict) -> float | None:
    """Rough work of one task; None for trials (nothing is timed before they run)."""
    per_trial = meta.get("seconds_per_trial")
    if task.kind == "aggregate":
        return 0.1 + 1e-4 * meta.get("n_trials", 0)  # reads one small file per trial
    if not per_trial:
        return None
    start, stop = task.args["trials"]
    return per_trial * (stop - start)
