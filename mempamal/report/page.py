"""The HTML page: sections laid out by a jinja2 template, plotly.js embedded.

The page must open offline and weigh at most 5 MB, yet plotly.js alone is
about 4.8 MB. It is embedded gzip-compressed and base64-encoded (about
2 MB) and decompressed by the browser's own ``DecompressionStream``
(Chromium 80, Firefox 113, Safari 16.4): no CDN, no hand-written inflate.
"""

from __future__ import annotations

import base64
import gzip
import json
from dataclasses import dataclass, field
from functools import lru_cache

#: the plotly template every figure uses, sent once per page rather than per figure
PLOTLY_TEMPLATE = "plotly_white"
TEMPLATE_NAME = "report/report.html.j2"


@dataclass
class Table:
    """A table the template lays out: column names and rows of cells.

    Cells are shown as text (:func:`~mempamal.report.common.fmt`); a column
    whose cells are all numbers is right-aligned (``align``).
    """

    columns: list
    rows: list
    caption: str = ""
    align: list = field(default_factory=list)

    def __post_init__(self) -> None:
        from .common import fmt, is_number

        self.align = ["num" if self.rows and all(is_number(r[k]) or r[k] is None
                                                 for r in self.rows) else "text"
                      for k in range(len(self.columns))]
        self.rows = [[fmt(v) for v in r] for r in self.rows]


@dataclass
class Figure:
    """A plotly figure of a section, as the JSON ``Plotly.newPlot`` takes."""

    id: str
    json: str
    caption: str = ""


@dataclass
class Section:
    """One section of the report: a title, text, figures, tables, text blocks.

    Attributes
    ----------
    id : str
        Its HTML anchor (``outer-scores``...).
    title : str
        Its heading.
    notes : list of str
        Paragraphs shown before the figures (plain text, escaped).
    figures : list of Figure
    tables : list of Table
    blocks : list of (str, str)
        Preformatted text (an error excerpt...) with a heading.
    """

    id: str
    title: str
    notes: list = field(default_factory=list)
    figures: list = field(default_factory=list)
    tables: list = field(default_factory=list)
    blocks: list = field(default_factory=list)

    def add_figure(self, fig, caption: str = "") -> None:
        """Add a plotly ``go.Figure`` (its layout template is sent once per page)."""
        fig.layout.template = None
        text = fig.to_json()
        # a JSON string inside <script> must not close it ("</script>" in an
        # error message); "<\/" is the same string to a JSON parser
        text = text.replace("</", "<\\/")
        self.figures.append(Figure(f"{self.id}-fig{len(self.figures)}", text, caption))


@lru_cache(maxsize=1)
def plotly_js_gzip_base64() -> str:
    """plotly.js as installed with plotly, gzip-compressed then base64 (deterministic)."""
    from plotly.offline import get_plotlyjs

    data = gzip.compress(get_plotlyjs().encode("utf-8"), compresslevel=9, mtime=0)
    return base64.b64encode(data).decode("ascii")


@lru_cache(maxsize=1)
def plotly_template_json() -> str:
    import plotly.io as pio

    return json.dumps(pio.templates[PLOTLY_TEMPLATE].to_plotly_json()).replace("</", "<\\/")


def render_page(context: dict, template_dir=None) -> str:
    """The whole HTML page of a report.

    Parameters
    ----------
    context : dict
        ``title``, ``subtitle``, ``banner`` (None or text), ``sections``
        (list of :class:`Section`), ``generated``.
    template_dir : str or path-like, optional
        A folder whose ``report/report.html.j2`` replaces (or extends, as
        ``builtin/report/report.html.j2``) the built-in template.
    """
    import plotly

    from ..templating import environment

    env = environment(template_dir)
    # the shared environment lays out shell scripts (no escaping); a page
    # shows error messages and paths, which must be escaped
    env.autoescape = True
    return env.get_template(TEMPLATE_NAME).render(
        plotly_js_gz=plotly_js_gzip_base64(), plotly_template=plotly_template_json(),
        plotly_version=plotly.__version__, **context)
