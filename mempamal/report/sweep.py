"""Sections of a sweep: trials, parallel coordinates, parameters, importance, curves."""

from __future__ import annotations


def sections(run) -> list:
    return []
