"""Sections of a nested cross-validation: outer scores, best params, inner scores, times."""

from __future__ import annotations

import numpy as np

from .common import (
    axis_values,
    base_layout,
    finite,
    fmt_param,
    is_number,
    param_names,
    wants_log,
)
from .page import Section, Table

#: (outer split, candidate) markers drawn on the inner-score panels; beyond
#: it only the best mean score at each value is drawn (page size)
MAX_INNER_MARKERS = 5000
#: parameter panels drawn (one per parameter)
MAX_PARAM_PANELS = 12


def sections(run) -> list[Section]:
    """The nested-CV sections of ``run`` (a note when no outer split is finished)."""
    res = run.results
    if res is None:
        s = Section("outer-scores", "Outer scores")
        s.notes.append("No outer split is finished yet: scores appear when the first "
                       "select task is done." if run.context is not None else
                       f"The results cannot be read here: {run.results_note}.")
        return [s]
    out = [outer_scores_section(res, run), best_params_section(res, run)]
    if not res.cv_results.empty:
        out.append(inner_scores_section(res, run))
    out.append(times_section(res))
    return out


def _metrics(res) -> list[str]:
    return [c for c in res.outer_scores.columns if c.startswith(("test_", "train_"))]


def outer_scores_section(res, run) -> Section:
    """One marker per outer split and metric; the mean and ± std band of each."""
    import plotly.graph_objects as go

    s = Section("outer-scores", "Outer scores")
    o = res.outer_scores
    n_outer = run.workflow.meta.get("n_outer")
    if len(o) < (n_outer or 0):
        s.notes.append(f"{len(o)} of {n_outer} outer splits finished; mean and std are "
                       "over those.")
    fig = go.Figure()
    splits = [int(v) for v in o["outer_split"]]
    metrics = _metrics(res)
    for k, m in enumerate(metrics):
        values = o[m].to_numpy(dtype=float)
        mean, std = float(np.nanmean(values)), float(np.nanstd(values))
        color = _color(k)
        # metrics side by side around their split: close scores stay visible
        dodge = 0.08 * (k - (len(metrics) - 1) / 2)
        fig.add_trace(go.Scatter(
            x=[x + dodge for x in splits], y=finite(values), mode="markers+lines", name=f"{m}: "
            f"{mean:.4g} ± {std:.4g}", legendgroup=m, marker={"size": 10, "color": color},
            line={"width": 1, "color": color},
            customdata=splits,
            hovertemplate="outer split %{customdata}<br>" + m + " %{y:.4f}<extra></extra>"))
        # the mean over splits and its ± std band, spanning the splits
        lo, hi = min(splits) - 0.3, max(splits) + 0.3
        fig.add_trace(go.Scatter(
            x=[lo, hi, hi, lo, lo], y=[mean - std, mean - std, mean + std, mean + std,
                                       mean - std],
            mode="lines", fill="toself", fillcolor=color, opacity=0.15, line={"width": 0},
            legendgroup=m, showlegend=False, hoverinfo="skip", name=f"{m} ± std"))
        fig.add_trace(go.Scatter(x=[lo, hi], y=[mean, mean], mode="lines",
                                 line={"dash": "dash", "color": color}, legendgroup=m,
                                 showlegend=False, name=f"{m} mean",
                                 hovertemplate=f"mean {mean:.4f} ± {std:.4f}<extra></extra>"))
    base_layout(fig)
    fig.update_xaxes(title="outer split", tickmode="array", tickvals=splits)
    fig.update_yaxes(title="score")
    s.add_figure(fig, "Each marker is the score of the model refitted on an outer "
                      "training set, on its test set; dashed: the mean, band: ± one std.")
    summary = res.summary
    s.tables.append(Table(["metric", "mean", "std", "splits"],
                          [(m, float(r["mean"]), float(r["std"]), len(o))
                           for m, r in summary.iterrows()], caption="Summary"))
    cols = ["outer_split", *_metrics(res), "fit_time", "score_time", "best_index"]
    s.tables.append(Table(cols, [[row[c] for c in cols] for _, row in o.iterrows()],
                          caption="Per outer split"))
    errors = [(int(r["outer_split"]), str(r["fit_error"])) for _, r in o.iterrows()
              if isinstance(r["fit_error"], str) and r["fit_error"]]
    for split, err in errors:
        s.blocks.append((f"outer split {split}: the refit failed", err))
    return s


def best_params_section(res, run) -> Section:
    """The best candidate of each outer split, and whether it is stable."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    s = Section("best-params", "Best parameters per outer split")
    best = res.best_params
    names = param_names(run.spec["candidates"]) if run.spec else param_names(best)
    distinct = {repr(sorted(p.items(), key=lambda kv: kv[0])) for p in best}
    n_outer = len(best)
    if len(distinct) == 1:
        s.notes.append(f"Stable: every one of the {n_outer} outer splits chose the same "
                       "candidate.")
    else:
        s.notes.append(f"{len(distinct)} different candidates chosen over {n_outer} outer "
                       "splits: the choice depends on the data it saw.")
    rows = [[o, i, *[fmt_param(p.get(n)) for n in names]]
            for o, i, p in zip(res.outer_splits, res.best_index, best)]
    s.tables.append(Table(["outer_split", "best_index", *names], rows))
    shown = names[:MAX_PARAM_PANELS]
    if shown:
        fig = make_subplots(rows=1, cols=len(shown), subplot_titles=shown)
        for k, name in enumerate(shown, start=1):
            # every value of the grid on the axis, in order, as categories: the
            # question is which one was chosen, not how far apart they are
            values = [fmt_param(p.get(name)) for p in best]
            grid = [c.get(name) for c in run.spec["candidates"]] if run.spec else []
            grid = list(dict.fromkeys([*grid, *(p.get(name) for p in best)]))
            if all(is_number(v) for v in grid):
                grid = sorted(grid)
            fig.add_trace(go.Scatter(
                x=res.outer_splits, y=values, mode="markers", name=name, showlegend=False,
                marker={"size": 12, "color": _color(0)},
                hovertemplate="outer split %{x}<br>" + name + " = %{y}<extra></extra>"),
                row=1, col=k)
            fig.update_xaxes(title="outer split", tickvals=res.outer_splits, row=1, col=k)
            cats = list(dict.fromkeys(fmt_param(v) for v in grid))
            fig.update_yaxes(type="category", categoryorder="array", categoryarray=cats,
                             range=[-0.5, len(cats) - 0.5], row=1, col=k)
        base_layout(fig, height=300)
        s.add_figure(fig, "The value each outer split chose, per parameter: a flat row "
                          "of markers is a stable choice.")
    return s


def inner_scores_section(res, run) -> Section:
    """Inner mean score against each parameter, one colour per outer split."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    s = Section("inner-scores", "Inner scores against each parameter")
    metric = run.spec["refit_metric"] if run.spec else res.scorer_names[0]
    col = f"mean_test_{metric}"
    cv = res.cv_results
    names = [n for n in param_names(res.best_params + list(cv["params"]))
             if cv[f"param_{n}"].astype(str).nunique() > 1][:MAX_PARAM_PANELS]
    if not names:
        s.notes.append("A single candidate: nothing to compare.")
        return s
    markers = len(cv) <= MAX_INNER_MARKERS
    fig = make_subplots(rows=1, cols=len(names), subplot_titles=names, shared_yaxes=True)
    for k, name in enumerate(names, start=1):
        for j, o in enumerate(res.outer_splits):
            mine = cv[cv["outer_split"] == o]
            values, numeric = axis_values(mine[f"param_{name}"])
            scores = mine[col].to_numpy(dtype=float)
            color = _color(j)
            if markers:
                fig.add_trace(go.Scatter(
                    x=values, y=finite(scores), mode="markers", name=f"outer split {o}",
                    legendgroup=f"o{o}", showlegend=k == 1, marker={"color": color},
                    customdata=[[fmt_param(p)] for p in _param_text(mine["params"])],
                    hovertemplate="%{customdata[0]}<br>" + col + " %{y:.4f}<extra>"
                                  f"outer split {o}</extra>"), row=1, col=k)
            # the best mean score at each value: the profile along this parameter
            best = {}
            for v, sc in zip(values, scores):
                if not np.isnan(sc) and (v not in best or sc > best[v]):
                    best[v] = sc
            xs = sorted(best) if numeric else list(best)
            fig.add_trace(go.Scatter(
                x=xs, y=[best[v] for v in xs], mode="lines", legendgroup=f"o{o}",
                showlegend=not markers and k == 1, name=f"outer split {o}",
                line={"color": color, "width": 1.5}, hoverinfo="skip"), row=1, col=k)
            if numeric and wants_log(values):
                fig.update_xaxes(type="log", row=1, col=k)
        fig.update_xaxes(title=name, row=1, col=k)
    fig.update_yaxes(title=col, row=1, col=1)
    base_layout(fig)
    s.add_figure(fig, f"Mean inner test score ({metric}) of each candidate, per outer "
                      "split; the line joins the best candidate at each value of the "
                      "parameter." + ("" if markers else " (Too many candidates to draw "
                                                          "each: lines only.)"))
    return s


def times_section(res) -> Section:
    """Inner fit and score times per candidate; refit fit and score time per split."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    s = Section("times", "Fit and score times")
    o, cv = res.outer_scores, res.cv_results
    titles = ["refit on outer train, score on outer test (s)"]
    if not cv.empty:
        titles.append("inner fits: mean over inner splits, per candidate (s)")
    fig = make_subplots(rows=1, cols=len(titles), subplot_titles=titles)
    splits = [f"outer {int(v)}" for v in o["outer_split"]]
    fig.add_trace(go.Bar(x=splits, y=finite(o["fit_time"]), name="fit_time",
                         marker_color=_color(0), legendgroup="fit"), row=1, col=1)
    fig.add_trace(go.Bar(x=splits, y=finite(o["score_time"]), name="score_time",
                         marker_color=_color(1), legendgroup="score"), row=1, col=1)
    if not cv.empty:
        xs = [f"outer {int(v)}" for v in cv["outer_split"]]
        for what, k in (("fit", 0), ("score", 1)):
            fig.add_trace(go.Box(x=xs, y=finite(cv[f"mean_{what}_time"]),
                                 name=f"mean_{what}_time", marker_color=_color(k),
                                 legendgroup=what, boxpoints="all", jitter=0.3,
                                 pointpos=0), row=1, col=2)
        fig.update_layout(boxmode="group")
    base_layout(fig, barmode="group")
    s.add_figure(fig)
    return s


def _param_text(params) -> list[str]:
    return [", ".join(f"{k}={fmt_param(v)}" for k, v in p.items()) for p in params]


def _color(k: int) -> str:
    import plotly.colors

    palette = plotly.colors.qualitative.Plotly
    return palette[k % len(palette)]
