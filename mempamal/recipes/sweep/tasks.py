"""What a sweep's tasks compute: trials (several per task), then the aggregate.

Each finished trial's result is its own small file, renamed into place, so a
task killed mid-way loses only the trial it was running; run again, it skips
the trials whose file exists. Trial result files are not fsynced: one fsync
per trial costs more than a quick trial, a killed process cannot lose what
it handed to the kernel, and a file a power loss truncated does not parse and
is computed again.
"""

from __future__ import annotations

import json
import os
import socket
import time
import traceback

from ...errors import MempamalError
from ...measure import TaskUsage
from ...trial import Trial, TrialStopped, as_number
from ...workdir import (
    Workdir,
    open_log,
    read_json,
    replace_text,
    write_json,
    write_text,
)
from .context import SweepContext
from .dag import rounds, suggest_output


class SweepStopped(MempamalError):
    """The sweep cannot go on (a function that never returns its metric)."""


def run(ctx: SweepContext, task) -> None:
    """Run ``task`` (a :class:`~mempamal.workflow.Task`) of the context's workdir."""
    {"trial": run_trials, "suggest": run_suggest,
     "aggregate": run_aggregate}[task.kind](ctx, task)


def check_not_stopped(ctx: SweepContext) -> None:
    """Refuse to start a trial once one trial found the sweep cannot go on."""
    try:
        stop = read_json(ctx.workdir.path(Workdir.SWEEP_STOP))
    except FileNotFoundError:
        return
    except ValueError:
        stop = {"message": "(unreadable stop record)"}
    raise SweepStopped(f"the sweep was stopped: {stop.get('message')}")


# -- trials ------------------------------------------------------------------------
def run_trials(ctx: SweepContext, task) -> None:
    """Run the trials of ``task`` that have no result yet, one after the other."""
    check_not_stopped(ctx)
    ctx.func  # noqa: B018 - an import error fails the task, not each of its trials
    wd = ctx.workdir
    start, stop = task.args["trials"]
    present = wd.existing(task.outputs)
    journal = wd.trial_journal(task.id)
    started = _started_before(journal)
    with open_log(journal) as jfh:
        for t in range(start, stop):
            rel = Workdir.trial_output(ctx.name(t))
            if rel in present and _readable(wd.path(rel)):
                continue  # finished in an earlier attempt of this task
            check_not_stopped(ctx)
            attempt = started.get(t, 0) + 1
            # before the call: a kill now still counts as this trial's attempt
            jfh.write(json.dumps({"trial": t, "attempt": attempt, "start": time.time(),
                                  "host": socket.gethostname(), "pid": os.getpid()}) + "\n")
            jfh.flush()
            doc = run_trial(ctx, task, t, attempt)
            replace_text(wd.path(rel), json.dumps(doc, allow_nan=True) + "\n")


def _started_before(journal) -> dict[int, int]:
    """``{trial: attempts started}`` from a task's journal (empty the first time)."""
    counts: dict[int, int] = {}
    try:
        with open(journal, encoding="utf-8") as fh:
            for line in fh:
                try:
                    t = json.loads(line)["trial"]
                except (ValueError, KeyError, TypeError):
                    continue  # a line a kill cut short
                counts[t] = counts.get(t, 0) + 1
    except FileNotFoundError:
        pass
    return counts


def _readable(path) -> bool:
    try:
        read_json(path)
        return True
    except (OSError, ValueError):
        return False


def run_trial(ctx: SweepContext, task, t: int, attempt: int) -> dict:
    """Call the function for trial ``t``; its result record."""
    spec, wd = ctx.spec, ctx.workdir
    c, seed = ctx.candidate_of(t)
    params = ctx.params_of(c)
    name = ctx.name(t)
    doc = {"trial": t, "candidate": c, "seed": seed, "attempt": attempt,
           "host": socket.gethostname(), "start": time.time()}
    if ctx.adaptive is not None:
        doc["round"] = ctx.round_of(c)
    stopper = None
    if spec.get("early_stopping") is not None:
        from ...adaptive.stopping import MedianStopper

        stopper = MedianStopper(wd, spec["early_stopping"])
    trial = Trial(t, params, seed, attempt, wd.trial_dir(name), wd.trial_metrics_file(name),
                  stopper)
    kwargs = dict(params)
    if spec["takes_trial"]:
        kwargs["trial"] = trial
    usage = TaskUsage.start()  # the trial's own time and peak memory
    try:
        value = ctx.func(**kwargs)
    except TrialStopped:
        # stopped by the function itself: it keeps what it reported last
        doc.update(state="pruned", metrics=dict(trial.last_values), error=None,
                   error_type=None)
    except Exception as exc:
        if spec["on_error"] == "raise":
            print(f"mempamal: trial {t} ({params!r}, seed {seed}) failed; "
                  "on_error='raise' fails its task", flush=True)
            raise
        print(f"mempamal: trial {t} ({params!r}, seed {seed}) failed:", flush=True)
        traceback.print_exc()
        doc.update(state="failed", metrics={}, error=f"{type(exc).__name__}: {exc}",
                   error_type=type(exc).__name__)
    else:
        doc.update(state="pruned" if trial.stopped else "done",
                   metrics=_metrics(ctx, task, t, value), error=None, error_type=None)
    finally:
        trial.close()
        used = usage.stop()
    doc.update(end=time.time(), seconds=used["seconds"], cpu_seconds=used["cpu_seconds"],
               peak_rss_mb=used["peak_rss_mb"])
    return doc


def _metrics(ctx: SweepContext, task, t: int, value) -> dict:
    """The returned value as ``{name: number}``; stops the sweep when it cannot rank.

    A function that does not return ``metric`` (or returns something that is
    not a number or a dict of numbers) will not in the next trial either:
    the first trial that finishes says so, and the run stops there.
    """
    metric = ctx.spec["metric"]
    problem = None
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            try:
                out[str(k)] = as_number(v, f"the returned value {k!r}")
            except TypeError as exc:
                problem = f"{exc}; return a number or a dict of numbers"
                break
        if problem is None and metric not in out:
            problem = (f"the function returned {sorted(out)} but not metric={metric!r}; "
                       f"return {{{metric!r}: value, ...}} or give metric= one of "
                       f"{sorted(out)}")
    else:
        try:
            out = {metric: as_number(value, "the returned value")}
        except TypeError:
            problem = (f"the function returned {value!r}; expected a number or a dict "
                       f"of numbers holding metric={metric!r}")
    if problem is None:
        return out
    message = f"trial {t} (task {task.id}): {problem}; fix it and compile again"
    write_json(ctx.workdir.path(Workdir.SWEEP_STOP), {"message": message, "trial": t,
                                                      "task": task.id})
    raise SweepStopped(message)


# -- suggest -----------------------------------------------------------------------
def run_suggest(ctx: SweepContext, task) -> None:
    """Ask the candidates of round ``task.args["round"]`` and write them atomically.

    Everything it reads (the earlier rounds' files, the trials' results) is
    final once its dependencies are done, and Optuna is seeded with
    ``random_state``: run again after a crash, it writes the same file.
    """
    check_not_stopped(ctx)
    from ...adaptive import suggest_batch

    a, r = ctx.adaptive, task.args["round"]
    batch = a["batch_size"]
    finished = finished_candidates(ctx, r * batch)
    if r > 0 and all(f.state == "failed" for f in finished[(r - 1) * batch:]):
        message = (f"every trial of round {r - 1} failed (see their errors with `mempamal "
                   f"results`); round {r} would fail too: fix the function and compile "
                   "again")
        write_json(ctx.workdir.path(Workdir.SWEEP_STOP), {"message": message,
                                                          "task": task.id})
        raise SweepStopped(message)
    asked = len(rounds(ctx.n_candidates, batch)[r])
    out = suggest_batch(a["search"], a["param_distributions"], ctx.spec["mode"], finished,
                        asked, a["random_state"], r, enqueued=a["enqueued"][r * batch:],
                        previous=ctx.suggested(r - 1) if r else None)
    write_json(ctx.workdir.path(suggest_output(r)), out)


def finished_candidates(ctx: SweepContext, n: int) -> list:
    """The first ``n`` candidates as Optuna is told them (repeats: their mean).

    A candidate is ``done`` when every repeat is, with the mean of the
    metric; ``pruned`` when one was pruned and none failed, with the
    intermediate values of the first pruned repeat; ``failed`` otherwise
    (raised, NaN, or no result: killed, timed out).
    """
    from ...adaptive import Finished
    from ...adaptive.space import is_number
    from ...adaptive.stopping import read_history

    spec, wd, batch = ctx.spec, ctx.workdir, ctx.adaptive["batch_size"]
    metric = spec["metric"]
    rule_metric = (spec.get("early_stopping") or {}).get("metric", metric)
    out = []
    for c in range(n):
        r = ctx.round_of(c)
        asked = ctx.suggested(r)["trials"][c - r * batch]
        docs = []
        for s in range(spec["repeats"]):
            try:
                docs.append(read_json(wd.path(Workdir.trial_output(
                    ctx.name(c * spec["repeats"] + s)))))
            except (OSError, ValueError):
                docs.append({"state": "failed"})
        values = [d.get("metrics", {}).get(metric) for d in docs]
        states = [d.get("state") for d in docs]
        if all(st == "done" for st in states) and all(is_number(v) for v in values):
            out.append(Finished(asked["params"], sum(values) / len(values), "done",
                                asked["system_attrs"]))
        elif "pruned" in states and all(st in ("done", "pruned") for st in states):
            first = c * spec["repeats"] + states.index("pruned")
            steps = read_history(wd.trial_metrics_file(ctx.name(first)), rule_metric)
            out.append(Finished(asked["params"], None, "pruned", asked["system_attrs"],
                                steps))
        else:
            out.append(Finished(asked["params"], None, "failed", asked["system_attrs"]))
    return out


# -- aggregate ---------------------------------------------------------------------
def run_aggregate(ctx: SweepContext, task) -> None:
    """Write trials.csv and summary.json."""
    from .results import SweepResults

    res = SweepResults.from_context(ctx)
    write_text(ctx.workdir.path(Workdir.FINAL_TRIALS), res.trials.to_csv(index=False))
    write_json(ctx.workdir.path(Workdir.FINAL_SUMMARY), res.summary_dict())
