"""Kept as the design card asks; metadata lives in pyproject.toml.

The jinja2 templates stay in the top-level ``templates/`` folder, where users
find and copy them, and are installed inside the package as
``mempamal.templates`` (the ``package_dir`` mapping below).
"""

from setuptools import find_packages, setup

setup(
    packages=find_packages(include=["mempamal", "mempamal.*"]) + ["mempamal.templates"],
    package_dir={"mempamal.templates": "templates"},
    package_data={"mempamal.templates": ["*.j2", "*/*.j2", "*/*.sh", "*/*.cfg"]},
    include_package_data=True,
)
