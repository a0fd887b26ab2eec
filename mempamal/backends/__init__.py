"""Backends run a workflow: local, slurm, soma, dask.

A backend only translates a :class:`~mempamal.workflow.Workflow`; it never
builds one and never knows what a fold or a hyper-parameter is.
"""

from .base import Backend, RunReport, available_backends, get_backend, register_backend

__all__ = ["Backend", "RunReport", "available_backends", "get_backend", "register_backend"]
