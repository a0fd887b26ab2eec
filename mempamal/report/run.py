"""Sections every workflow gets: overview, timeline, resources, failures, versions."""

from __future__ import annotations

import heapq
import platform
import time

import numpy as np

from .common import STATE_COLORS, base_layout
from .page import Section, Table

#: beyond this many started tasks the timeline shows tasks running over time
#: (one bar each would make the page heavier than 5 MB and unreadable)
MAX_TIMELINE_BARS = 4000
#: beyond this many tasks of one kind, box plots get precomputed quartiles
MAX_BOX_POINTS = 500
#: time points of the running-tasks curve
N_CURVE_POINTS = 600
#: failure groups and log paths listed
MAX_FAILURE_GROUPS = 20
MAX_LOGS = 10


def overview_section(run) -> Section:
    """What was run: the description, the task counts, the headline result."""
    wf = run.workflow
    s = Section("overview", "Overview")
    rows = [("workdir", str(wf.workdir.root)), ("recipe", wf.recipe)]
    rows += describe(run)
    rows.append(("tasks", ", ".join(f"{n} {state}" for state, n in sorted(run.counts.items()))
                 + f" (of {len(wf)})"))
    starts = [m["start"] for m in run.metas.values() if m.get("start")]
    ends = [m.get("end") or run.now for m in run.metas.values() if m.get("start")]
    if starts:
        rows.append(("first task started", _when(min(starts))))
        rows.append(("last task ended" if run.finished else "report read at",
                     _when(max(ends) if run.finished else run.now)))
        rows.append(("wall time", _duration(max(ends) - min(starts))))
        cpu = sum(m.get("cpu_seconds") or 0 for m in run.metas.values())
        if cpu:
            rows.append(("CPU time of tasks", _duration(cpu)))
    if run.results_note:
        s.notes.append(run.results_note)
    s.tables.append(Table(["what", "value"], rows))
    return s


def describe(run) -> list[tuple[str, str]]:
    """The experiment's description, as (what, value) rows."""
    meta, spec = run.workflow.meta, run.spec
    rows = []
    if run.recipe == "sweep":
        rows.append(("function", str(meta.get("function", "?"))))
        rows.append(("metric", f"{meta.get('mode', '?')} {meta.get('metric', '?')}"))
        rows.append(("candidates", f"{meta.get('n_candidates')} x {meta.get('repeats')} "
                                   f"repeat(s) = {meta.get('n_trials')} trials, "
                                   f"{meta.get('trials_per_task')} per task"))
        if spec is not None and spec.get("search"):
            rows.append(("search", str(spec["search"])))
        return rows
    if spec is not None:
        rows.append(("estimator", repr(spec["estimator"])))
        names = sorted({k for c in spec["candidates"] for k in c})
        rows.append(("candidates", f"{len(spec['candidates'])} over "
                                   f"{', '.join(names) or '(none)'}"))
        rows.append(("scoring", ", ".join(spec["scorer_names"])
                     + (f" (refit on {spec['refit_metric']})"
                        if len(spec["scorer_names"]) > 1 else "")))
    n_inner = meta.get("n_inner") or []
    rows.append(("splits", f"{meta.get('n_outer')} outer"
                 + (f", {min(n_inner)}-{max(n_inner)} inner" if n_inner
                    and min(n_inner) != max(n_inner) else
                    f", {n_inner[0]} inner each" if n_inner and n_inner[0] else "")))
    ctx = run.context
    if ctx is not None and getattr(ctx, "X", None) is not None:
        rows.append(("data", f"X {tuple(ctx.X.shape)}"
                     + (f", y {tuple(ctx.y.shape)}" if ctx.y is not None else "")))
    return rows


def versions_section(run) -> Section:
    """The releases that computed the results, and those that wrote this page."""
    import plotly

    from .._version import __version__

    s = Section("versions", "Versions")
    compiled = run.workflow.meta.get("versions") or {}
    rows = [(name, str(v), "compile") for name, v in sorted(compiled.items())]
    rows += [("mempamal", __version__, "report"), ("plotly", plotly.__version__, "report"),
             ("python", platform.python_version(), "report")]
    s.tables.append(Table(["package", "version", "recorded at"], rows))
    return s


# -- timeline ------------------------------------------------------------------------
def _intervals(run) -> list[tuple]:
    """(task, kind, host, start, end, state) of every task that started, by start time."""
    out = []
    for tid, meta in run.metas.items():
        start = meta.get("start")
        if not start:
            continue
        state = run.states.get(tid, meta.get("state"))
        end = meta.get("end")
        if end is None:
            # started and not ended: still running (or killed without a word)
            end = run.now if state in ("running", "pending") else start
            state = "running" if state == "pending" else state
        out.append((tid, run.workflow.tasks[tid].kind, str(meta.get("host") or "?"),
                    float(start), float(max(end, start)), state))
    out.sort(key=lambda r: (r[3], r[0]))
    return out


def assign_lanes(rows) -> list[str]:
    """One lane per task: tasks of a host that ran at once sit on different lanes.

    Interval partitioning (earliest free lane first) uses as few lanes per
    host as tasks ran there at once: a gap on a lane is a worker sitting idle.
    """
    free: dict[str, list] = {}  # host -> heap of (end, lane)
    count: dict[str, int] = {}
    lanes = []
    for _, _, host, start, end, _ in rows:
        heap = free.setdefault(host, [])
        if heap and heap[0][0] <= start:
            _, lane = heapq.heappop(heap)
        else:
            lane = count.get(host, 0)
            count[host] = lane + 1
        heapq.heappush(heap, (end, lane))
        lanes.append(f"{host} #{lane}")
    return lanes


def timeline_section(run) -> Section:
    """One bar per task on its host's lanes; tasks running over time on big runs."""
    import plotly.graph_objects as go

    s = Section("timeline", "Timeline")
    rows = _intervals(run)
    if not rows:
        s.notes.append("No task has started yet.")
        return s
    t0 = rows[0][3]
    running = any(r[5] == "running" for r in rows)
    s.notes.append(f"Seconds since the first task started ({_when(t0)})."
                   + (" Bars of running tasks end now." if running else ""))
    fig = go.Figure()
    if len(rows) <= MAX_TIMELINE_BARS:
        lanes = assign_lanes(rows)
        groups: dict[str, list] = {}
        for row, lane in zip(rows, lanes):
            key = row[1] if row[5] == "done" else row[5]
            groups.setdefault(key, []).append((*row, lane))
        palette = ["#4c78a8", "#72b7b2", "#54a24b", "#b279a2", "#9d755d", "#bab0ac"]
        for k, (key, items) in enumerate(sorted(groups.items())):
            color = STATE_COLORS.get(key) if key in ("failed", "running") else \
                palette[k % len(palette)]
            fig.add_trace(go.Bar(
                name=key, orientation="h", y=[r[6] for r in items],
                base=[round(r[3] - t0, 3) for r in items],
                x=[max(round(r[4] - r[3], 3), 0.001) for r in items],
                customdata=[[r[0], r[2]] for r in items], marker_color=color,
                hovertemplate="%{customdata[0]} on %{customdata[1]}<br>"
                              "start %{base:.2f} s, %{x:.2f} s<extra>" + key + "</extra>"))
        n_lanes = len(set(lanes))
        base_layout(fig, height=min(1400, max(260, 22 * n_lanes + 120)), barmode="overlay",
                    bargap=0.25)
        fig.update_yaxes(categoryorder="category descending", title="host #lane")
        s.notes.append(f"{len(rows)} tasks on {n_lanes} lanes of "
                       f"{len({r[2] for r in rows})} host(s): a gap on a lane is a worker "
                       "sitting idle.")
    else:
        _running_curve(fig, rows, t0)
        base_layout(fig)
        fig.update_yaxes(title="tasks running")
        s.notes.append(f"{len(rows)} tasks: too many for one bar each, so this is how many "
                       "ran at once, by kind.")
    fig.update_xaxes(title="seconds since the first task started")
    s.add_figure(fig)
    return s


def _running_curve(fig, rows, t0) -> None:
    import plotly.graph_objects as go

    t1 = max(r[4] for r in rows)
    grid = np.linspace(t0, max(t1, t0 + 1e-3), N_CURVE_POINTS)
    for kind in sorted({r[1] for r in rows}):
        starts = np.sort([r[3] for r in rows if r[1] == kind])
        ends = np.sort([r[4] for r in rows if r[1] == kind])
        running = np.searchsorted(starts, grid, "right") - np.searchsorted(ends, grid, "right")
        fig.add_trace(go.Scatter(x=np.round(grid - t0, 3).tolist(), y=running.tolist(),
                                 name=kind, mode="lines", line_shape="hv", stackgroup="k"))


# -- resources -----------------------------------------------------------------------
def resources_section(run) -> Section:
    """Duration and peak memory of the tasks of each kind."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    s = Section("resources", "Duration and peak memory per task kind")
    by_kind: dict[str, dict[str, list]] = {}
    for tid, meta in run.metas.items():
        if meta.get("state") not in ("done", "failed") or meta.get("seconds") is None:
            continue
        d = by_kind.setdefault(run.workflow.tasks[tid].kind, {"seconds": [], "mem": []})
        d["seconds"].append(float(meta["seconds"]))
        if meta.get("peak_rss_mb") is not None:
            d["mem"].append(float(meta["peak_rss_mb"]))
    trials = _one_trial(run)
    if trials is not None:
        by_kind["trial (each one)"] = trials
        s.notes.append("A trial task runs several trials one after the other; "
                       "\"trial (each one)\" is what each trial took on its own.")
    if not by_kind:
        s.notes.append("No task has ended yet.")
        return s
    fig = make_subplots(rows=1, cols=2, subplot_titles=("duration (s)", "peak memory (MB)"))
    rows = []
    for k, (kind, d) in enumerate(sorted(by_kind.items())):
        for col, key in ((1, "seconds"), (2, "mem")):
            if d[key]:
                fig.add_trace(_box(go, kind, d[key], k), row=1, col=col)
        secs, mem = np.asarray(d["seconds"]), np.asarray(d["mem"])
        rows.append((kind, len(secs), np.median(secs), secs.max(), secs.sum(),
                     np.median(mem) if len(mem) else None, mem.max() if len(mem) else None))
    base_layout(fig, showlegend=False)
    s.add_figure(fig)
    s.tables.append(Table(["kind", "tasks", "median s", "max s", "total s", "median MB",
                           "max MB"], rows))
    scopes = {m.get("peak_rss_scope") for m in run.metas.values()} - {None}
    if "process" in scopes:
        s.notes.append("Some peak memory values are those of the whole worker process "
                       "(a persistent worker ran several tasks), not of the task alone.")
    return s


def _one_trial(run) -> dict | None:
    """Seconds and own peak memory of each finished trial of a sweep packing trials."""
    res = run.results
    if run.recipe != "sweep" or res is None:
        return None
    if int(run.workflow.meta.get("trials_per_task") or 1) <= 1:
        return None  # one trial per task: the task's numbers already are the trial's
    t = res.trials
    t = t[t["state"] != "failed"]
    return {"seconds": [float(v) for v in t["seconds"].dropna()],
            "mem": [float(v) for v in t["peak_rss_mb"].dropna()]}


def _box(go, kind: str, values: list, k: int):
    """A box of ``values``: every point when few, precomputed quartiles when many."""
    colors = ["#4c78a8", "#72b7b2", "#54a24b", "#b279a2", "#9d755d", "#bab0ac"]
    color = colors[k % len(colors)]
    if len(values) <= MAX_BOX_POINTS:
        return go.Box(y=[round(v, 4) for v in values], name=kind, boxpoints="all",
                      jitter=0.4, pointpos=0, marker_color=color)
    q = np.percentile(values, [0, 25, 50, 75, 100])
    return go.Box(x=[kind], q1=[q[1]], median=[q[2]], q3=[q[3]], lowerfence=[q[0]],
                  upperfence=[q[4]], mean=[float(np.mean(values))], name=kind,
                  marker_color=color)


# -- failures ------------------------------------------------------------------------
def failures_section(run) -> Section | None:
    """Failures grouped by cause, root causes first, with an excerpt and logs."""
    groups = run.status.get("failure_groups") or []
    if not groups:
        return None
    s = Section("failures", "Failures")
    n = sum(g["count"] for g in groups)
    s.notes.append(f"{n} task(s) failed, in {len(groups)} group(s) of the same cause; "
                   "root causes first.")
    rows = []
    for g in groups[:MAX_FAILURE_GROUPS]:
        rows.append((g["error_type"], g["count"], g["error_line"] or "",
                     "yes" if g["root_cause"] else "downstream",
                     g["scheduler_state"] or ""))
    s.tables.append(Table(["error", "tasks", "first error line", "root cause",
                           "scheduler state"], rows))
    for g in groups[:MAX_FAILURE_GROUPS]:
        logs = g["logs"][:MAX_LOGS]
        more = len(g["logs"]) - len(logs)
        text = (g["example"] or "").rstrip() + "\n\nlogs:\n" + "\n".join(logs or ["(none)"])
        if more > 0:
            text += f"\n... and {more} more"
        s.blocks.append((f"{g['count']} task(s): {g['error_line'] or g['error_type']}", text))
    if len(groups) > MAX_FAILURE_GROUPS:
        s.notes.append(f"{len(groups) - MAX_FAILURE_GROUPS} more groups not shown; "
                       "see `mempamal status`.")
    return s


def _when(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t))


def _duration(seconds: float) -> str:
    seconds = float(seconds)
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"
