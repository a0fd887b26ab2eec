"""What a run did, in a few small files: its record, its best score, its duration.

``run.json`` (the run record) is written when a run ends (local, Dask,
Soma-Workflow, SLURM's ``run`` and its notify job): backend, start, end and
the state counts then. ``ls``, ``watch`` and the notifications read it and
``out/final/summary.json`` instead of every task file.
"""

from __future__ import annotations

import math
import time

from .workdir import Workdir, read_json, write_json


def best_score(workdir) -> dict | None:
    """The run's headline score from ``out/final/summary.json`` (None before the aggregate).

    Returns
    -------
    dict or None
        ``metric``, ``value``, ``std`` (nested CV: the first test score's mean
        and standard deviation over outer splits; a sweep: the best trial's
        value and ``mode``), ``params`` (a sweep's best) and ``text``.
    """
    wd = workdir if isinstance(workdir, Workdir) else Workdir(workdir)
    try:
        summary = read_json(wd.path(Workdir.FINAL_SUMMARY))
    except (OSError, ValueError):
        return None
    if "best_value" in summary:  # a sweep
        metric, value = summary.get("metric"), summary.get("best_value")
        text = f"{summary.get('mode', '')} {metric} {_num(value)}".strip()
        return {"metric": metric, "value": value, "std": None, "mode": summary.get("mode"),
                "params": summary.get("best_params"),
                "text": f"{text} with {summary.get('best_params')}"}
    scores = summary.get("scores") or {}
    tests = [m for m in scores if m.startswith("test_")] or list(scores)
    if not tests:
        return None
    m = tests[0]
    mean, std = scores[m].get("mean"), scores[m].get("std")
    return {"metric": m, "value": mean, "std": std, "mode": None, "params": None,
            "text": f"{m} {_num(mean)} ± {_num(std)} over "
                    f"{summary.get('n_outer_splits', '?')} outer splits"}


def _num(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "nan"
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def write_run_record(workdir, backend: str, start: float, end: float, counts: dict,
                     outcome: str) -> None:
    """Write ``run.json``: what ``ls`` shows without reading task files.

    Parameters
    ----------
    workdir : Workdir
    backend : str
    start, end : float
        Epoch seconds.
    counts : dict
        ``{state: n}`` over every task when the run ended.
    outcome : str
        ``done``, ``failed`` or ``interrupted``.
    """
    write_json(workdir.run_record_file, {
        "backend": backend, "start": start, "end": end, "seconds": end - start,
        "counts": counts, "total": sum(counts.values()), "outcome": outcome})


def read_run_record(workdir) -> dict | None:
    """``run.json``, or None when no run ended here yet (or it is unreadable)."""
    try:
        rec = read_json(workdir.run_record_file)
    except (OSError, ValueError):
        return None
    return rec if isinstance(rec, dict) else None


def state_counts(states: dict) -> dict:
    """``{state: n}`` of ``{task_id: state}``."""
    out: dict = {}
    for s in states.values():
        out[s] = out.get(s, 0) + 1
    return out


def format_duration(seconds) -> str:
    """``3 h 02 min``, ``4 min 05 s``, ``12.3 s`` (``-`` when unknown)."""
    if seconds is None or seconds != seconds or seconds < 0:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f} s"
    m, s = divmod(int(round(seconds)), 60)
    if m < 60:
        return f"{m} min {s:02d} s"
    h, m = divmod(m, 60)
    if h < 48:
        return f"{h} h {m:02d} min"
    d, h = divmod(h, 24)
    return f"{d} d {h:02d} h"


def format_time(epoch) -> str:
    """Local ``YYYY-mm-dd HH:MM`` of an epoch time (``-`` when unknown)."""
    if epoch is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(epoch))
