"""Functions the sweep benchmarks sweep (a module: tasks import it or get it by value)."""

from __future__ import annotations

import time


def instant(x):
    """Returns at once: what remains is mempamal's own cost per trial."""
    return float(x) * 0.5


def sleepy(x, seconds=0.2):
    """Sleeps a fixed time: the makespan shows how well trials fill the cores."""
    time.sleep(seconds)
    return float(x)
