"""jinja2 rendering of backend scripts, overridable by the user.

Templates only lay text out: decisions (flag spelling, quoting, units) are
made in Python and passed in as ready strings. Lookup order: the user's
``template_dir`` (a whole template, or a child template that ``{% extends %}``
ours and overrides one block), then the templates installed with mempamal,
then the source checkout's top-level ``templates/``.
"""

from __future__ import annotations

import shlex
from pathlib import Path

import jinja2


def _builtin_dirs() -> list[str]:
    """Installed copy (``mempamal/templates``), else the checkout's ``templates/``."""
    package = Path(__file__).resolve().parent
    return [str(d) for d in (package / "templates", package.parent / "templates")
            if d.is_dir()]


def environment(template_dir=None) -> jinja2.Environment:
    """A jinja2 environment: StrictUndefined, deterministic, ``quote`` filter.

    A user template can extend a built-in one by the name ``builtin/NAME``.
    """
    user = [str(Path(template_dir))] if template_dir else []
    builtin = jinja2.FileSystemLoader(_builtin_dirs())
    loader = jinja2.ChoiceLoader([
        jinja2.PrefixLoader({"builtin": builtin}),
        jinja2.FileSystemLoader(user),
        builtin,
    ])
    env = jinja2.Environment(loader=loader, undefined=jinja2.StrictUndefined,
                             keep_trailing_newline=True, trim_blocks=True,
                             lstrip_blocks=True, autoescape=False)
    env.filters["quote"] = lambda v: shlex.quote(str(v))
    return env


def render(name: str, template_dir=None, **context) -> str:
    """Render template ``name`` (e.g. ``slurm/array.sbatch.j2``)."""
    return environment(template_dir).get_template(name).render(**context)
