"""Sections of a sweep: trials, parallel coordinates, parameters, importance, curves."""

from __future__ import annotations

import numpy as np

from .common import (
    STATE_COLORS,
    axis_values,
    base_layout,
    finite,
    fmt_param,
    is_number,
    wants_log,
)
from .page import Section, Table

#: trials drawn on the per-trial figures; beyond it the best ones and an
#: even sample of the others (the page stays under 5 MB on 100,000 trials)
MAX_TRIAL_POINTS = 5000
#: learning curves drawn, and points per curve
MAX_CURVES = 300
MAX_CURVE_POINTS = 200
#: metrics with learning curves (one panel each)
MAX_CURVE_METRICS = 4
#: rows of the top trials table, and of the failed trials table
TOP = 20
#: parameter panels
MAX_PARAM_PANELS = 12


def sections(run) -> list[Section]:
    """The sweep sections of ``run`` (a note when no trial is finished yet)."""
    res = run.results
    if res is None:
        s = Section("trials", "Trials")
        s.notes.append("No trial is finished yet." if run.context is not None else
                       f"The trials cannot be read here: {run.results_note}.")
        return [s]
    t = res.trials
    names = [c[len("param_"):] for c in t.columns if c.startswith("param_")]
    varying = [n for n in names if t[f"param_{n}"].map(fmt_param).nunique() > 1]
    shown = shown_trials(t, res.metric, res.mode)
    out = [trials_section(res, shown), top_trials_section(res)]
    if varying:
        out += [parallel_section(res, shown, varying), params_section(res, shown, varying),
                importance_section(res, varying)]
    out.append(curves_section(res))
    return out


def shown_trials(t, metric: str, mode: str):
    """The trials drawn: all of them, or the best ones and an even sample of the rest."""
    if len(t) <= MAX_TRIAL_POINTS:
        return t
    values = t[metric].where(t["state"] != "failed").to_numpy(dtype=float)
    order = np.argsort(np.where(np.isnan(values), np.inf, -values if mode == "max"
                                else values), kind="stable")
    best = order[:MAX_TRIAL_POINTS // 10]
    rest = np.setdiff1d(np.arange(len(t)), best)
    keep = rest[np.linspace(0, len(rest) - 1, MAX_TRIAL_POINTS - len(best)).astype(int)]
    return t.iloc[np.sort(np.concatenate([best, keep]))]


def _sampled_note(res, shown) -> str:
    n = len(res.trials)
    return "" if len(shown) == n else (f" ({len(shown)} of {n} trials drawn: the best "
                                       "tenth and an even sample of the others.)")


def best_so_far(values, mode: str) -> np.ndarray:
    """Running best of ``values`` in trial order (NaN, failed, never counts)."""
    v = np.asarray(values, dtype=float)
    fill = -np.inf if mode == "max" else np.inf
    acc = (np.maximum if mode == "max" else np.minimum).accumulate(np.where(np.isnan(v),
                                                                             fill, v))
    return np.where(np.isinf(acc), np.nan, acc)


def trials_section(res, shown) -> Section:
    """The value of each trial in trial order, and the best so far."""
    import plotly.graph_objects as go

    s = Section("trials", "Trials")
    t, metric, mode = res.trials, res.metric, res.mode
    counts = t["state"].value_counts().to_dict()
    s.notes.append(f"{len(t)} trials: " + ", ".join(f"{n} {k}" for k, n in
                                                   sorted(counts.items()))
                   + f". Best ({mode} {metric}): {res.best[metric]:.6g} with "
                   + ", ".join(f"{k}={fmt_param(v)}" for k, v in res.best_params.items())
                   + ".")
    fig = go.Figure()
    for state in ("done", "pruned"):
        mine = shown[shown["state"] == state]
        if len(mine):
            fig.add_trace(go.Scatter(
                x=mine["trial"].tolist(), y=finite(mine[metric]), mode="markers",
                name=f"{state} trial", marker={"color": STATE_COLORS[state], "size": 7,
                                               "symbol": "circle" if state == "done"
                                               else "x"},
                customdata=[[_params_text(r)] for _, r in mine.iterrows()],
                hovertemplate="trial %{x}: %{y:.6g}<br>%{customdata[0]}<extra>" + state
                              + "</extra>"))
    ordered = t.sort_values("trial", kind="stable")
    done = ordered[metric].where(ordered["state"] == "done")
    running = best_so_far(done, mode)
    # the best-so-far line needs only the trials where it changed, and the last
    keep = np.r_[True, running[1:] != running[:-1]]
    keep[-1] = True
    keep &= ~np.isnan(running)
    fig.add_trace(go.Scatter(x=ordered["trial"].to_numpy()[keep].tolist(),
                             y=finite(running[keep]), mode="lines", line_shape="hv",
                             name="best so far", line={"color": "#e45756", "width": 2}))
    failed = t[t["state"] == "failed"]
    if len(failed):
        s.notes.append(f"{len(failed)} failed trial(s) have no value (see the table below).")
    base_layout(fig)
    fig.update_xaxes(title="trial")
    fig.update_yaxes(title=metric)
    s.add_figure(fig, f"{metric} of each trial ({'lower' if mode == 'min' else 'higher'} is "
                      "better) and the best so far, in trial order."
                 + _sampled_note(res, shown))
    return s


def top_trials_section(res) -> Section:
    """The best trials as a table; the failed ones with their errors."""
    s = Section("top-trials", "Top trials")
    ranked = res.ranked()
    params = [c for c in ranked.columns if c.startswith("param_")]
    cols = ["trial", *params, "seed", *res.metric_names, "state", "seconds",
            "peak_rss_mb", "host"]
    top = ranked[ranked["state"] != "failed"].head(TOP)
    s.tables.append(Table(cols, [[_cell(r[c]) for c in cols] for _, r in top.iterrows()],
                          caption=f"Best {len(top)} by {res.mode} {res.metric}"))
    failed = res.trials[res.trials["state"] == "failed"]
    if len(failed):
        fcols = ["trial", *params, "seed", "error", "host"]
        s.tables.append(Table(fcols, [[_cell(r[c]) for c in fcols]
                                      for _, r in failed.head(TOP).iterrows()],
                              caption=f"Failed trials ({len(failed)}"
                              + (f", first {TOP} shown)" if len(failed) > TOP else ")")))
    if res.trials["seed"].nunique() > 1:  # repeats: candidates ranked on their mean
        summ = res.summary.sort_values(f"rank_{res.metric}", kind="stable").head(TOP)
        scols = ["candidate", *params, "n_done", f"mean_{res.metric}",
                 f"std_{res.metric}", f"rank_{res.metric}"]
        s.tables.append(Table(scols, [[_cell(r[c]) for c in scols]
                                      for _, r in summ.iterrows()],
                              caption="Best candidates on the mean over their repeats"))
    return s


def parallel_section(res, shown, names) -> Section:
    """Parallel coordinates: one line per finished trial through its parameters."""
    import plotly.graph_objects as go

    s = Section("parallel", "Parallel coordinates")
    metric = res.metric
    ok = shown[shown["state"].isin(["done", "pruned"])
               & shown[metric].notna()]
    if not len(ok):
        s.notes.append("No finished trial with a value yet.")
        return s
    dims = []
    for name in names[:MAX_PARAM_PANELS]:
        dims.append(_dimension(name, ok[f"param_{name}"].tolist()))
    values = finite(ok[metric])
    dims.append({"label": metric, "values": values})
    colorscale = "Viridis" if res.mode == "max" else "Viridis_r"
    fig = go.Figure(go.Parcoords(dimensions=dims, line={
        "color": values, "colorscale": colorscale, "showscale": True,
        "colorbar": {"title": {"text": metric}}}))
    base_layout(fig, height=420)
    fig.update_layout(margin={"l": 70, "r": 70, "t": 60, "b": 30})
    s.add_figure(fig, "One line per finished trial; brighter is better. Drag along an "
                      "axis to select a range." + _sampled_note(res, shown))
    return s


def _dimension(name: str, raw) -> dict:
    values, numeric = axis_values(raw)
    if numeric:
        if wants_log(values):
            # parcoords has no log axis: log10 values, labelled so
            return {"label": f"log10({name})", "values": np.log10(values).tolist()}
        return {"label": name, "values": values}
    cats = sorted(set(values))
    code = {c: k for k, c in enumerate(cats)}
    return {"label": name, "values": [code[v] for v in values],
            "tickvals": list(range(len(cats))), "ticktext": cats}


def params_section(res, shown, names) -> Section:
    """One panel per parameter: the value of each trial against that parameter."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    s = Section("params", "Parameters")
    metric = res.metric
    ok = shown[shown["state"].isin(["done", "pruned"]) & shown[metric].notna()]
    names = names[:MAX_PARAM_PANELS]
    ncols = min(3, len(names))
    nrows = -(-len(names) // ncols)
    fig = make_subplots(rows=nrows, cols=ncols, subplot_titles=names, shared_yaxes=True,
                        vertical_spacing=0.18 if nrows > 1 else 0.1)
    for k, name in enumerate(names):
        row, col = divmod(k, ncols)
        values, numeric = axis_values(ok[f"param_{name}"])
        fig.add_trace(go.Scatter(
            x=values, y=finite(ok[metric]), mode="markers", showlegend=False, name=name,
            marker={"color": ok["trial"].tolist(), "colorscale": "Blues", "size": 7,
                    "line": {"width": 0.5, "color": "#333"},
                    "showscale": k == 0,
                    "colorbar": {"title": {"text": "trial"}, "len": 0.8}},
            customdata=ok["trial"].tolist(),
            hovertemplate="trial %{customdata}<br>" + name + " %{x}<br>" + metric
                          + " %{y:.6g}<extra></extra>"), row=row + 1, col=col + 1)
        if numeric and wants_log(values):
            fig.update_xaxes(type="log", row=row + 1, col=col + 1)
        elif not numeric:
            fig.update_xaxes(type="category", categoryorder="category ascending",
                             row=row + 1, col=col + 1)
        fig.update_xaxes(title=name, row=row + 1, col=col + 1)
    fig.update_yaxes(title=metric, col=1)
    base_layout(fig, height=320 * nrows)
    s.add_figure(fig, f"{metric} of each finished trial against each parameter; darker "
                      "is a later trial." + _sampled_note(res, shown))
    return s


def importance_section(res, names) -> Section:
    """Optuna's parameter importances (fANOVA), when optuna is installed."""
    import plotly.graph_objects as go

    from .importance import param_importances

    s = Section("importance", "Parameter importance")
    importances, note = param_importances(res.trials, names, res.metric, res.mode)
    if note:
        s.notes.append(note)
    if importances:
        items = sorted(importances.items(), key=lambda kv: kv[1])
        fig = go.Figure(go.Bar(x=[v for _, v in items], y=[k for k, _ in items],
                               orientation="h", marker_color="#4c78a8",
                               hovertemplate="%{y}: %{x:.3f}<extra></extra>"))
        base_layout(fig, height=max(220, 40 * len(items) + 100))
        fig.update_xaxes(title=f"importance for {res.metric} (sums to 1)")
        s.add_figure(fig, "How much of the variation of the metric each parameter "
                          "explains (Optuna's fANOVA evaluator, seed 0).")
    return s


def curves_section(res) -> Section:
    """What the trials reported at each step; pruned trials marked where they stopped."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    s = Section("curves", "Learning curves")
    h = res.history
    metrics = [c for c in h.columns if c not in ("trial", "step")]
    if h.empty or not metrics:
        s.notes.append("No trial reported intermediate values (trial.report(step, ...)).")
        return s
    metrics = sorted(metrics, key=lambda m: m != res.metric)[:MAX_CURVE_METRICS]
    state = dict(zip(res.trials["trial"], res.trials["state"]))
    trials = _curve_trials(res, h)
    ncols = min(2, len(metrics))
    nrows = -(-len(metrics) // ncols)
    fig = make_subplots(rows=nrows, cols=ncols, subplot_titles=metrics,
                        vertical_spacing=0.18 if nrows > 1 else 0.1)
    best = int(res.best["trial"])
    if best in set(h["trial"]):
        trials = sorted(set(trials) | {best})
    groups = {"done": [], "pruned": [], "failed": [], "running": []}
    for tr in trials:
        if tr != best:  # drawn on its own, on top
            groups[state.get(tr, "running")].append(tr)
    by_trial = {tr: g for tr, g in h[h["trial"].isin(trials)].groupby("trial")}
    for k, m in enumerate(metrics):
        row, col = divmod(k, ncols)
        for key, members in [*groups.items(), ("best", [best])]:
            members = [tr for tr in members if tr in by_trial]
            if not members:
                continue
            xs, ys, ids = _joined(by_trial, members, m)
            style = _curve_style(key)
            fig.add_trace(go.Scatter(
                x=xs, y=ys, customdata=ids, mode="lines", name=style["name"],
                legendgroup=key, showlegend=k == 0, line=style["line"],
                opacity=style["opacity"], connectgaps=False,
                hovertemplate="trial %{customdata}, step %{x}: %{y:.4g}<extra>" + key
                              + "</extra>"), row=row + 1, col=col + 1)
            if key == "pruned":
                last = [by_trial[tr].dropna(subset=[m]).tail(1) for tr in members]
                last = [g for g in last if len(g)]
                fig.add_trace(go.Scatter(
                    x=[int(g["step"].iloc[0]) for g in last],
                    y=finite([g[m].iloc[0] for g in last]),
                    customdata=[int(g["trial"].iloc[0]) for g in last], mode="markers",
                    name="pruned here", legendgroup="pruned-at", showlegend=k == 0,
                    marker={"symbol": "x", "size": 10, "color": STATE_COLORS["pruned"]},
                    hovertemplate="trial %{customdata} pruned at step %{x}<extra></extra>"),
                    row=row + 1, col=col + 1)
        fig.update_xaxes(title="step", row=row + 1, col=col + 1)
    base_layout(fig, height=340 * nrows)
    n_with = h["trial"].nunique()
    legend = {"pruned": "pruned trials dashed, marked where they stopped",
              "failed": "failed trials dotted", "running": "trials still running in orange"}
    shown = [text for key, text in legend.items() if groups[key]]
    s.add_figure(fig, f"What {n_with} trial(s) reported with trial.report(step, ...); "
                      f"the best trial ({best}) in red"
                 + "".join(f"; {text}" for text in shown) + "."
                 + ("" if len(trials) == n_with else
                    f" ({len(trials)} of {n_with} curves drawn: the best and an even "
                    "sample of the others.)"))
    return s


def _curve_trials(res, h) -> list[int]:
    """The trials whose curves are drawn: all, or the best ones and an even sample."""
    reported = sorted(int(v) for v in h["trial"].unique())
    if len(reported) <= MAX_CURVES:
        return reported
    ranked = [int(v) for v in res.ranked()["trial"] if int(v) in set(reported)]
    best = ranked[:MAX_CURVES // 5]
    rest = [tr for tr in reported if tr not in set(best)]
    pick = np.linspace(0, len(rest) - 1, MAX_CURVES - len(best)).astype(int)
    return sorted(set(best) | {rest[i] for i in pick})


def _joined(by_trial, members, metric):
    """Curves of ``members`` in one trace, separated by gaps (small pages, fast drawing)."""
    xs, ys, ids = [], [], []
    for tr in members:
        g = by_trial[tr].dropna(subset=[metric])
        if len(g) > MAX_CURVE_POINTS:
            idx = np.unique(np.r_[np.linspace(0, len(g) - 1, MAX_CURVE_POINTS).astype(int)])
            g = g.iloc[idx]
        xs += [int(v) for v in g["step"]] + [None]
        ys += finite(g[metric]) + [None]
        ids += [tr] * len(g) + [None]
    return xs, ys, ids


def _curve_style(key: str) -> dict:
    styles = {
        "done": {"name": "finished trials", "opacity": 0.45,
                 "line": {"color": STATE_COLORS["done"], "width": 1}},
        "pruned": {"name": "pruned trials", "opacity": 0.8,
                   "line": {"color": STATE_COLORS["pruned"], "width": 1, "dash": "dash"}},
        "failed": {"name": "failed trials", "opacity": 0.8,
                   "line": {"color": STATE_COLORS["failed"], "width": 1, "dash": "dot"}},
        "running": {"name": "running trials", "opacity": 0.9,
                    "line": {"color": STATE_COLORS["running"], "width": 1.5}},
        "best": {"name": "best trial", "opacity": 1.0,
                 "line": {"color": "#e45756", "width": 3}},
    }
    return styles[key]


def _params_text(row) -> str:
    return ", ".join(f"{c[len('param_'):]}={fmt_param(row[c])}" for c in row.index
                     if c.startswith("param_"))


def _cell(v):
    """A table cell: numbers stay numbers (right-aligned), anything else text."""
    if v is None or is_number(v):
        return v
    if isinstance(v, float) and np.isnan(v):
        return None
    return fmt_param(v)
