"""What finished tasks used, per task kind: the measurements of their meta files.

Every task records in ``logs/TASK.meta.json`` its wall time, CPU time, its own
peak memory (see :mod:`mempamal.measure`), GPU memory where NVML answers, and
the host it ran on. This module sums them up per kind for ``status`` and the
report: how long a fit takes and how much memory it needs is what a user sizes
the next run's ``mem_mb`` and ``time_min`` from.
"""

from __future__ import annotations

import statistics
from collections import defaultdict

from .workdir import read_meta

#: measured fields summed up, in the order they are shown
FIELDS = ("seconds", "cpu_seconds", "peak_rss_mb", "gpu_mem_mb")

#: done tasks read per kind at most: beyond, an even sample (``status`` on a
#: finished 100,000-task workdir must not read 100,000 files to say a median)
MAX_READ_PER_KIND = 1000


def usage_by_kind(wf, states: dict[str, str],
                  max_per_kind: int = MAX_READ_PER_KIND) -> dict[str, dict]:
    """Measurements of the done tasks of ``wf``, per task kind.

    Parameters
    ----------
    wf : Workflow
        The workflow.
    states : dict
        Task id to state (as :meth:`Workflow.status` returns): only ``done``
        tasks are read, one meta file each.
    max_per_kind : int
        Done tasks read per kind at most, evenly spread over them.

    Returns
    -------
    dict
        ``{kind: {"n": tasks measured, "done": done tasks of the kind,
        "hosts": sorted host names,
        "<field>_median": ..., "<field>_max": ...}}`` for each field of
        :data:`FIELDS` that at least one task recorded.
    """
    done: dict[str, list[str]] = defaultdict(list)
    for tid, state in states.items():
        if state == "done":
            done[wf.tasks[tid].kind].append(tid)
    out = {}
    for kind, tids in done.items():
        step = max(1, -(-len(tids) // max_per_kind))
        metas = [m for m in (read_meta(wf.workdir, t) for t in tids[::step]) if m]
        if not metas:
            continue
        row = {"n": len(metas), "done": len(tids),
               "hosts": sorted({m["host"] for m in metas if m.get("host")})}
        for field in FIELDS:
            xs = [float(m[field]) for m in metas if isinstance(m.get(field), (int, float))]
            if xs:
                row[f"{field}_median"] = statistics.median(xs)
                row[f"{field}_max"] = max(xs)
        out[kind] = row
    return out


def usage_rows(usage: dict[str, dict]) -> list[list[str]]:
    """Rows for a table of people: kind, tasks, then "median / max" per field."""
    rows = []
    for kind, u in usage.items():
        measured = str(u["n"]) if u["n"] == u["done"] else f"{u['n']} of {u['done']}"
        cells = [kind, measured]
        for field in FIELDS:
            if f"{field}_max" not in u:
                cells.append("-")
                continue
            fmt = "{:.1f}" if field.endswith("seconds") else "{:.0f}"
            cells.append(f"{fmt.format(u[field + '_median'])} / {fmt.format(u[field + '_max'])}")
        cells.append(", ".join(u["hosts"][:3]) + (" ..." if len(u["hosts"]) > 3 else ""))
        rows.append(cells)
    return rows
