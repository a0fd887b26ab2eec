"""Shared fixtures and the CI rule for real components.

Tests that need a real SLURM, soma-workflow or Dask may skip on a laptop
without them, but under ``CI=true`` a missing component is a failure.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import shutil
import subprocess
import sys

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

# tasks run in other processes (subprocesses, SLURM jobs, Dask workers) unpickle
# estimators defined in tests/helpers.py: let them import it
_TESTS = os.path.dirname(os.path.abspath(__file__))
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (_TESTS, os.environ.get("PYTHONPATH", "")) if p
)


@functools.cache
def slurm_answers() -> bool:
    """Whether a SLURM cluster answers here (sbatch on PATH, squeue works)."""
    if shutil.which("sbatch") is None or shutil.which("squeue") is None:
        return False
    try:
        return subprocess.run(["squeue", "--noheader"], capture_output=True,
                              timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def has_module(name: str) -> bool:
    """Whether ``name`` can be imported (an optional extra is installed)."""
    return importlib.util.find_spec(name) is not None


def import_or_fail(name: str):
    """``pytest.importorskip(name)``, except under CI=true, where a missing module fails."""
    if IN_CI:
        return importlib.import_module(name)
    return pytest.importorskip(name)


def requires_or_fail(available: bool, reason: str):
    """A mark: skip when ``available`` is false, except under CI=true where it fails.

    Use as ``pytestmark = [pytest.mark.slurm, requires_or_fail(ok, "no sbatch")]``.
    """
    if available or not IN_CI:
        return pytest.mark.skipif(not available, reason=reason)
    return pytest.mark.missing_component(reason)


def pytest_configure(config):
    config.addinivalue_line("markers", "missing_component(reason): fails the test in CI")
    # pytest-xdist registers it too; here for runs without xdist (--strict-markers)
    config.addinivalue_line("markers", "xdist_group(name): run on the same xdist worker")


def pytest_collection_modifyitems(config, items):
    """Tests sharing one real component run one after another on one xdist worker.

    ``tests/run.sh`` runs the suite on two pytest-xdist workers with
    ``--dist loadgroup``: the SLURM tests share the session's one-node
    cluster (one of them downs its node on purpose, which would kill the jobs
    of another test), and the Dask tests start clusters on the usual ports.
    """
    for item in items:
        if item.get_closest_marker("slurm") is not None:
            item.add_marker(pytest.mark.xdist_group("slurm"))
        elif item.get_closest_marker("dask") is not None:
            item.add_marker(pytest.mark.xdist_group("dask"))


def pytest_runtest_setup(item):
    mark = item.get_closest_marker("missing_component")
    if mark is not None:
        pytest.fail(f"CI=true but a required component is missing: {mark.args[0]}",
                    pytrace=False)


@pytest.fixture
def hostile_dir(tmp_path):
    """A directory whose name holds spaces, quotes, $, backticks, ; and non-ASCII."""
    d = tmp_path / "we ird 'q\" $(touch PWNED) `x` ; é"
    d.mkdir()
    return d


@pytest.fixture(autouse=True, scope="session")
def _own_machine_slots(tmp_path_factory):
    """Local runs share the machine's slots (mempamal.slots): the suite gets its own set,
    so that it does not wait for (or hold up) another user's runs on this machine."""
    os.environ["MEMPAMAL_SLOTS_DIR"] = str(tmp_path_factory.mktemp("slots"))
    yield


@pytest.fixture(autouse=True)
def _no_kept_dask_cluster():
    """No Dask cluster a test started is kept for the next test (mempamal.backends.dask.kept).

    Tests stay independent: each starts the clusters it uses, with its logs in
    its own workdir. Only a test that ran Dask has anything to close.
    """
    yield
    kept = sys.modules.get("mempamal.backends.dask.kept")
    if kept is not None:
        kept.forget_kept_cluster()
