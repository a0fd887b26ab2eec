"""Small helpers the report's sections share: number text, parameter axes, figures."""

from __future__ import annotations

import math
import numbers

#: colours of task states, everywhere in the report
STATE_COLORS = {"done": "#4c78a8", "failed": "#d62728", "running": "#f2a516",
                "pruned": "#9467bd", "pending": "#b0b7bf"}
#: a figure's default height in pixels
HEIGHT = 360


def fmt(v) -> str:
    """A value as table text: numbers with 6 significant digits, NaN/None as ''."""
    if v is None:
        return ""
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, numbers.Integral):
        return str(int(v))
    if isinstance(v, numbers.Real):
        v = float(v)
        return "" if math.isnan(v) else f"{v:.6g}"
    if isinstance(v, dict):
        return ", ".join(f"{k}={fmt_param(x)}" for k, x in v.items())
    return str(v)


def fmt_param(v) -> str:
    """A parameter value as text (numbers short, anything else its repr)."""
    if isinstance(v, numbers.Real) and not isinstance(v, bool):
        return fmt(v)
    return v if isinstance(v, str) else repr(v)


def is_number(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def axis_values(values) -> tuple[list, bool]:
    """``values`` ready for an axis: numbers as floats, else categories as text.

    Returns the values and whether the axis is numeric.
    """
    values = list(values)
    if values and all(is_number(v) and not math.isnan(float(v)) for v in values):
        return [float(v) for v in values], True
    return [fmt_param(v) for v in values], False


def wants_log(values) -> bool:
    """A positive numeric parameter spanning two decades or more reads best on a log axis."""
    vals = [float(v) for v in values if is_number(v)]
    return bool(vals) and min(vals) > 0 and max(vals) / min(vals) >= 100


def param_names(candidates) -> list[str]:
    """Every parameter name of a candidate list, sorted (cv_results' order)."""
    return sorted({k for c in candidates for k in c})


def varying(candidates) -> list[str]:
    """The parameters that take more than one value (the others say nothing)."""
    out = []
    for name in param_names(candidates):
        seen = {fmt_param(c.get(name)) for c in candidates}
        if len(seen) > 1:
            out.append(name)
    return out


def base_layout(fig, title: str | None = None, height: int = HEIGHT, **more) -> None:
    """The layout every figure shares: compact margins, title, height."""
    # the top margin leaves room for the mode bar above subplot titles
    fig.update_layout(height=height, margin={"l": 60, "r": 20, "t": 60 if title else 45,
                                             "b": 50},
                      title={"text": title} if title else None,
                      legend={"orientation": "h", "y": -0.2}, **more)


def finite(values) -> list:
    """Floats, NaN/None as None (plotly leaves a gap; JSON has no NaN)."""
    out = []
    for v in values:
        try:
            f = float(v)
        except (TypeError, ValueError):
            out.append(None)
            continue
        out.append(None if math.isnan(f) or math.isinf(f) else f)
    return out
