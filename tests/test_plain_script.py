"""The README quick start as a plain script runs on every backend (issue #12).

A new user's script has no ``if __name__ == "__main__":``, defines a refit
callable and imports a scorer from a module next to it. Run as
``python script.py`` through each backend, it gives the local backend's
results, and its top level runs once: no worker re-imports it (Dask's
``LocalCluster`` workers did, and died with "Nanny failed to start").
Every socket the run's processes listen on is on loopback (none at all
but Dask's).
"""

from __future__ import annotations

import pytest
from script_runs import (
    DASHBOARD,
    assert_same,
    backend_params,
    run_script,
    sklearn_result,
    write_user_files,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_user_files(tmp_path_factory.mktemp("user") / "my project")


@pytest.fixture(scope="module")
def local_result(folder):
    result, runs, _, watch = run_script(folder, "local")
    assert runs == 1
    assert len(watch.pids) >= 2 and watch.seen == set()  # the loky workers, no port
    return result


@pytest.mark.parametrize("name", backend_params(["local-subprocess", "dask", "soma", "slurm"]))
def test_plain_script_equals_local(folder, local_result, name):
    result, runs, stderr, watch = run_script(folder, name)
    assert_same(result, local_result)
    assert runs == 1, f"the script's top level ran {runs} times with {name}"
    assert len(watch.pids) >= 2, watch.pids  # the watch saw the run's processes
    assert watch.not_loopback() == [], f"{name}: listening beyond loopback (pid, ip, port)"
    if name != "dask":
        assert watch.seen == set()  # local, SLURM and Soma light mode open no port
        return
    # scheduler, 2 nannies, 2 workers (+ their HTTP servers), dashboard: all on loopback
    assert len(watch.seen) >= 5, watch.seen
    printed = DASHBOARD.findall(stderr)
    assert len(printed) == 1, stderr
    assert printed[0][0] == "127.0.0.1"
    assert (printed[0][0], int(printed[0][1])) in watch.ports()


def test_local_result_is_scikit_learns(folder, local_result):
    """The oracle itself equals cross_validate(GridSearchCV(...)) on the same files."""
    assert_same(local_result, sklearn_result(folder))
