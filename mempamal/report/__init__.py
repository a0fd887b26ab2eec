"""``mempamal report``: one self-contained HTML page about a run.

Written from the workdir alone (during a run or after it, on any machine
that sees the files): the results of its recipe, a timeline of its tasks,
their duration and memory, failures with their logs, versions. Figures are
plotly (the optional ``report`` extra); the page embeds plotly.js, so it
opens offline, and stays under :data:`MAX_BYTES`.

Each section is built by one small function returning a
:class:`~mempamal.report.page.Section` (as Optuna's ``visualization``
functions each return one figure): easy to extend and to test one at a time.
"""

from __future__ import annotations

import os
import time
import warnings
from pathlib import Path

from ..errors import MempamalError, ValidationError

#: the report's size limit: a page to attach to a mail or a ticket
MAX_BYTES = 5 * 1000 * 1000
#: the file name when ``out`` is not given, inside the workdir
DEFAULT_NAME = "report.html"

__all__ = ["MAX_BYTES", "MissingExtraError", "build_sections", "render_report", "write_report"]


class MissingExtraError(MempamalError, ImportError):
    """An optional dependency the report needs is not installed."""


def write_report(workdir, out=None, template_dir=None) -> Path:
    """Write the HTML report of the run in ``workdir``.

    Parameters
    ----------
    workdir : str or path-like
        A compiled workdir, run or running (a running one gives a report
        marked partial: what exists so far).
    out : str or path-like, optional
        The HTML file to write. Default: ``WORKDIR/report.html``.
    template_dir : str or path-like, optional
        A folder whose ``report/report.html.j2`` overrides the built-in page
        template (or extends ``builtin/report/report.html.j2``).

    Returns
    -------
    Path
        The file written.

    Raises
    ------
    WorkdirError
        If ``workdir`` is not a mempamal workdir.
    ValidationError
        If ``out`` cannot be written.
    MissingExtraError
        If plotly is not installed (``pip install 'mempamal[report]'``).
    """
    from ..workdir import write_text
    from .collect import check_workdir

    wd = check_workdir(workdir)
    target = Path(out) if out is not None else wd.root / DEFAULT_NAME
    _check_writable(target)
    _require_plotly()
    html = render_report(workdir, template_dir=template_dir)
    size = len(html.encode("utf-8"))
    if size > MAX_BYTES:
        # the figures are capped so that this does not happen; a user template
        # or a parameter with very long values might still get there
        warnings.warn(f"the report of {str(wd.root)!r} weighs {size / 1e6:.1f} MB, more "
                      f"than the {MAX_BYTES / 1e6:.0f} MB it aims at", stacklevel=2)
    try:
        write_text(target, html)
    except OSError as exc:
        raise ValidationError(f"cannot write the report to {str(target)!r}: "
                              f"{exc.strerror or exc}") from None
    return target


def render_report(workdir, template_dir=None) -> str:
    """The report of ``workdir`` as one HTML string (see :func:`write_report`)."""
    from .._version import __version__
    from .collect import collect
    from .page import render_page

    _require_plotly()
    run = collect(workdir)
    wf = run.workflow

    banner = None if run.finished else _partial_text(run)
    what = "sweep" if run.recipe == "sweep" else "nested cross-validation"
    return render_page({
        "title": f"mempamal report: {wf.workdir.root.name} ({what})",
        "subtitle": str(wf.workdir.root),
        "banner": banner,
        "sections": build_sections(run),
        "generated": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(run.now)),
        "mempamal_version": __version__,
    }, template_dir=template_dir)


def build_sections(run) -> list:
    """Every section of a report of ``run`` (:class:`~.collect.RunData`), in page order."""
    from . import run as run_sections

    if run.recipe == "sweep":
        from .sweep import sections as recipe_sections
    else:
        from .nested_cv import sections as recipe_sections
    out = [_guarded(run_sections.overview_section, run, "overview", "Overview")]
    failures = _guarded(run_sections.failures_section, run, "failures", "Failures")
    if failures is not None and not run.finished:
        out.append(failures)  # a run in trouble: the cause comes first
        failures = None
    out += _guarded(recipe_sections, run, "results", "Results", many=True)
    out += [_guarded(run_sections.timeline_section, run, "timeline", "Timeline"),
            _guarded(run_sections.resources_section, run, "resources",
                     "Duration and peak memory per task kind")]
    if failures is not None:
        out.append(failures)
    out.append(_guarded(run_sections.versions_section, run, "versions", "Versions"))
    return out


def _guarded(build, run, anchor: str, title: str, many: bool = False):
    """``build(run)``, or a section saying why it could not be drawn.

    A report reads files a live run is writing, on any machine: one section
    that trips on something unexpected must not cost the others.
    """
    try:
        return build(run)
    except Exception as exc:
        import traceback

        from .page import Section

        section = Section(anchor, title)
        section.notes.append(f"This section could not be drawn: {type(exc).__name__}: {exc}")
        section.blocks.append(("traceback", traceback.format_exc()))
        return [section] if many else section


def _partial_text(run) -> str:
    c = run.counts
    parts = [f"{c.get(s, 0)} {s}" for s in ("done", "running", "failed", "pending")
             if c.get(s)]
    return (f"The run is not finished: {', '.join(parts)} of {len(run.states)} tasks. "
            "This page shows what existed when it was written; write it again for more.")


def _check_writable(target: Path) -> None:
    """Refuse an output path before any work is done, naming it."""
    if target.is_dir():
        raise ValidationError(f"cannot write the report to {str(target)!r}: it is a "
                              "directory (give a file name, e.g. report.html)")
    parent = target.parent if str(target.parent) else Path(".")
    if not parent.is_dir():
        raise ValidationError(f"cannot write the report to {str(target)!r}: no directory "
                              f"{str(parent)!r}")
    if not os.access(parent, os.W_OK) or (target.exists() and not os.access(target, os.W_OK)):
        raise ValidationError(f"cannot write the report to {str(target)!r}: permission "
                              "denied")


def _require_plotly() -> None:
    try:
        import plotly  # noqa: F401
    except ImportError:
        raise MissingExtraError(
            "mempamal report draws its figures with plotly, which is not installed: "
            "pip install 'mempamal[report]' (or plotly)") from None
