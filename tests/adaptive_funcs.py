"""Functions of the adaptive-search tests (importable: tasks in other processes import them)."""

from __future__ import annotations

import math
import time

from mempamal import TrialStopped

#: a candidate with this x raises (a failed trial, evaluated in a chosen round)
FAIL_X = 7.75


def branin(x, y, act="relu", delay=0.0):
    """Branin, shifted by the categorical; raises for ``x == FAIL_X``."""
    time.sleep(delay)
    if x == FAIL_X:
        raise ValueError(f"x={x} is not allowed")
    b, c, t = 5.1 / (4 * math.pi ** 2), 5 / math.pi, 1 / (8 * math.pi)
    value = (y - b * x ** 2 + c * x - 6) ** 2 + 10 * (1 - t) * math.cos(x) + 10
    return {"loss": value + (0.5 if act == "tanh" else 0.0)}


def always_fails(x, y, act="relu"):
    raise RuntimeError("broken function")


def curve(level, name, trial, n_steps=12, step_seconds=0.0, raise_on_stop=False):
    """A training curve: loss ``level + 1 / (step + 1)``; stops when told to."""
    loss = None
    for step in range(n_steps):
        time.sleep(step_seconds)
        loss = level + 1.0 / (step + 1)
        trial.report(step, loss=loss)
        if trial.should_stop():
            if raise_on_stop:
                raise TrialStopped()
            break
    return {"loss": loss}


def branin_slow(x, y, act="relu"):
    """:func:`branin` taking a moment (a run can be killed midway)."""
    return branin(x, y, act, delay=0.3)


def branin_curve(x, y, act, trial, n_steps=6):
    """Branin approached over steps (``+ 1 / (step + 1)``); stops when told to."""
    final = branin(x, y, act)["loss"]
    loss = None
    for step in range(n_steps):
        loss = final + 10.0 / (step + 1)
        trial.report(step, loss=loss)
        if trial.should_stop():
            break
    return {"loss": loss}


def neg_branin(x, y, act, trial):
    """A score to maximise; the repeat (``trial.seed``) reorders the candidates."""
    return {"score": -branin(x, y, act)["loss"] - trial.seed * 40 * math.cos(2 * x)}


#: a candidate with this x kills its own process (SIGKILL: no result, no
#: error message, as the OOM killer or a time limit would) while the file
#: KILL_FLAG exists in the workdir
KILL_X = 7.5
KILL_FLAG = "kill-me"


def branin_killed(x, y, act, trial):
    """:func:`branin`, except that ``x == KILL_X`` dies while the workdir has KILL_FLAG."""
    import os
    import signal
    from pathlib import Path

    workdir = Path(trial.dir).parents[1]  # WORKDIR/trials/NAME
    if x == KILL_X and (workdir / KILL_FLAG).exists():
        os.kill(os.getpid(), signal.SIGKILL)
    return branin(x, y, act)
