"""Compilers from an experiment description to a list of tasks."""
