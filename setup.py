"""Kept as the design card asks; metadata lives in pyproject.toml.

The jinja2 templates stay in the top-level ``templates/`` folder, where users
find and copy them, and are installed inside the package as
``mempamal.templates`` (the ``package_dir`` mapping below).
"""

from pathlib import Path

from setuptools import find_packages, setup

#: each folder of templates/ is a (data-only) package: setuptools warns about
#: folders it would see as packages but is not told about
TEMPLATE_DIRS = sorted(p.name for p in Path(__file__).parent.joinpath("templates").iterdir()
                       if p.is_dir())

setup(
    packages=find_packages(include=["mempamal", "mempamal.*"]) + ["mempamal.templates"]
    + [f"mempamal.templates.{d}" for d in TEMPLATE_DIRS],
    package_dir={"mempamal.templates": "templates"},
    package_data={"mempamal.templates": ["*.j2"],
                  **{f"mempamal.templates.{d}": ["*.j2", "*.sh", "*.cfg"]
                     for d in TEMPLATE_DIRS}},
    include_package_data=True,
)
