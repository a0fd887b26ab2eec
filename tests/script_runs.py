"""A user's files as a new user writes them, run in new processes, for every backend.

The README quick start as a plain script (no ``if __name__ == "__main__":``),
the same experiment as a CLI experiment file, and a helper module next to
them that both import. Shared by ``test_plain_script.py`` and
``test_network.py``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import ipaddress
import json
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import requires_or_fail, slurm_answers

#: the user's module next to the script, imported by it
HELPER = '''\
from sklearn.metrics import balanced_accuracy_score


def balanced(y_true, y_pred):
    return balanced_accuracy_score(y_true, y_pred)
'''

#: the experiment file (`mempamal run exp.py`); the script starts with it too
EXPERIMENT = '''\
import numpy as np
from sklearn.datasets import load_iris
from sklearn.metrics import make_scorer
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from mempamal import Experiment
from mymetrics import balanced


def best_balanced(cv_results):
    """A refit callable defined in the user's own file."""
    return int(np.argmax(cv_results["mean_test_bal"]))


X, y = load_iris(return_X_y=True)
experiment = Experiment(
    make_pipeline(StandardScaler(), SVC()),
    param_grid={"svc__C": [0.1, 10.0]},
    cv=StratifiedKFold(2, shuffle=True, random_state=0),
    inner_cv=StratifiedKFold(2),
    scoring={"acc": "accuracy", "bal": make_scorer(balanced)},
    refit=best_balanced,
)
compile_options = {"chunk_size": 2}
'''

#: the quick start's second half, at top level: no __main__ guard
SCRIPT = EXPERIMENT + '''
import json
import sys

from mempamal import load_results

backend, options, workdir, marker = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3], sys.argv[4]
with open(marker, "a") as fh:  # one line each time this file's top level runs
    fh.write("ran\\n")
wf = experiment.compile(workdir, X, y, **compile_options)
wf.run(backend=backend, **options)
res = load_results(workdir)
cols = [c for c in res.outer_scores.columns if c.startswith("test_")]
print("RESULT " + json.dumps({"scores": res.outer_scores[cols].to_dict("list"),
                              "best_params": res.best_params}))
'''




#: the line mempamal prints about the Dask dashboard
DASHBOARD = re.compile(r"mempamal: Dask dashboard at http://(\S+):(\d+)/status")

HAVE_DISTRIBUTED = importlib.util.find_spec("distributed") is not None
HAVE_SOMA = importlib.util.find_spec("soma_workflow") is not None
SLURM_UP = slurm_answers()

#: backend name -> (backend, options of the run, marks)
BACKENDS = {
    "local": ("local", {"n_jobs": 2, "progress": False}, []),
    "local-subprocess": ("local", {"n_jobs": 2, "subprocess": True, "progress": False}, []),
    "dask": ("dask", {"n_jobs": 2, "progress": False},
             [pytest.mark.dask, requires_or_fail(HAVE_DISTRIBUTED, "distributed not installed")]),
    "soma": ("soma", {"n_jobs": 2, "progress": False},
             [pytest.mark.soma, requires_or_fail(HAVE_SOMA, "soma-workflow not installed")]),
    "slurm": ("slurm", {"poll_interval": 0.5, "progress": False},
              [pytest.mark.slurm, requires_or_fail(SLURM_UP, "no SLURM cluster answers")]),
}


def backend_params(names=None):
    """``pytest.param`` for each backend, with its marks."""
    return [pytest.param(name, marks=BACKENDS[name][2], id=name)
            for name in (names or BACKENDS)]


def write_user_files(folder: Path) -> Path:
    """The script, the experiment file and the helper module in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "mymetrics.py").write_text(HELPER)
    (folder / "exp.py").write_text(EXPERIMENT)
    (folder / "script.py").write_text(SCRIPT)
    return folder


def run_script(folder: Path, name: str, timeout: float = 300):
    """``python script.py`` through backend ``name``, its sockets watched.

    Returns its results, how many times the script's top level ran, its
    standard error and the :class:`ListenWatch` of the run.
    """
    backend, options, _ = BACKENDS[name]
    workdir, marker = folder / f"work-{name}", folder / f"ran-{name}.txt"
    argv = [sys.executable, "script.py", backend, json.dumps(options), str(workdir),
            str(marker)]
    proc, watch = run_watched(argv, str(workdir), folder, timeout)
    assert proc.returncode == 0, f"python script.py ({name}) failed:\n{proc.stderr[-4000:]}"
    line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
    assert len(line) == 1, proc.stdout
    runs = len(marker.read_text().splitlines())
    return json.loads(line[0][len("RESULT "):]), runs, proc.stderr, watch


def cli_argv(folder: Path, name: str, workdir: Path, *extra: str) -> list[str]:
    """``mempamal run exp.py -w W -b BACKEND -o ...`` for backend ``name``."""
    backend, options, _ = BACKENDS[name]
    argv = [sys.executable, "-m", "mempamal", "run", str(folder / "exp.py"), "-w", str(workdir),
            "-b", backend]
    for key, value in options.items():
        argv += ["-o", f"{key}={json.dumps(value)}"]
    return argv + list(extra)


def results_of(workdir: Path) -> dict:
    """What ``run_script`` prints, read from a finished workdir."""
    from mempamal import load_results

    res = load_results(workdir)
    cols = [c for c in res.outer_scores.columns if c.startswith("test_")]
    return {"scores": res.outer_scores[cols].to_dict("list"), "best_params": res.best_params}


def sklearn_result(folder: Path) -> dict:
    """The oracle: ``cross_validate(GridSearchCV(...))`` on the user's experiment file."""
    import runpy

    from sklearn.model_selection import GridSearchCV, StratifiedKFold, cross_validate

    sys.path.insert(0, str(folder))  # its `import mymetrics`
    try:
        ns = runpy.run_path(str(folder / "exp.py"))
    finally:
        sys.path.remove(str(folder))
    scoring = ns["experiment"].scoring  # {"acc": "accuracy", "bal": the helper's scorer}
    search = GridSearchCV(ns["experiment"].estimator, {"svc__C": [0.1, 10.0]},
                          cv=StratifiedKFold(2), scoring=scoring, refit=ns["best_balanced"])
    cv = cross_validate(search, ns["X"], ns["y"], scoring=scoring, return_estimator=True,
                        cv=StratifiedKFold(2, shuffle=True, random_state=0))
    return {"scores": {"test_acc": list(cv["test_acc"]), "test_bal": list(cv["test_bal"])},
            "best_params": [e.best_params_ for e in cv["estimator"]]}


def assert_same(got: dict, expected: dict) -> None:
    """Same best parameters; same outer scores (numbers compared as numbers)."""
    import numpy as np

    assert got["best_params"] == expected["best_params"]
    assert sorted(got["scores"]) == sorted(expected["scores"])
    for col, values in expected["scores"].items():
        np.testing.assert_allclose(got["scores"][col], values, rtol=1e-12, atol=0)


# -- who listens -----------------------------------------------------------------
def _listening(proc) -> set[tuple[int, str, int]]:
    import psutil

    try:
        conns = getattr(proc, "net_connections", None) or proc.connections
        return {(proc.pid, c.laddr.ip, c.laddr.port) for c in conns(kind="inet")
                if c.status == psutil.CONN_LISTEN}
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return set()


class ListenWatch:
    """Poll, while a run goes on, every socket its processes listen on.

    The run's processes: ``root`` and its descendants, plus every process
    whose command line names ``marker`` (a workdir: SLURM jobs and detached
    engines are no children of the command that submitted them) and their
    descendants.
    """

    def __init__(self, root_pid: int, marker: str, interval: float = 0.1) -> None:
        self.root_pid, self.marker, self.interval = root_pid, marker, interval
        self.seen: set[tuple[int, str, int]] = set()
        self.pids: set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> ListenWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _tree(self) -> list:
        import psutil

        roots = []
        with contextlib.suppress(psutil.NoSuchProcess):
            roots.append(psutil.Process(self.root_pid))
        for p in psutil.process_iter(["cmdline"]):
            if self.marker in " ".join(p.info["cmdline"] or ()):
                roots.append(p)
        procs = {}
        for root in roots:
            procs[root.pid] = root
            try:
                procs.update((c.pid, c) for c in root.children(recursive=True))
            except psutil.NoSuchProcess:
                pass
        return list(procs.values())

    def _loop(self) -> None:
        while not self._stop.is_set():
            for proc in self._tree():
                self.pids.add(proc.pid)
                self.seen |= _listening(proc)
            time.sleep(self.interval)

    def not_loopback(self) -> list[tuple[int, str, int]]:
        """What listened on an address other than loopback."""
        return sorted(s for s in self.seen if not ipaddress.ip_address(s[1]).is_loopback)

    def ports(self) -> set[tuple[str, int]]:
        return {(ip, port) for _, ip, port in self.seen}


def run_watched(argv: list[str], marker: str, cwd: Path,
                timeout: float = 300) -> tuple[subprocess.CompletedProcess, ListenWatch]:
    """Run ``argv`` while a :class:`ListenWatch` looks at its processes."""
    proc = subprocess.Popen(argv, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    with ListenWatch(proc.pid, marker) as watch:
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            raise AssertionError(f"{argv} did not end within {timeout}s:\n{err[-4000:]}") from None
    return subprocess.CompletedProcess(argv, proc.returncode, out, err), watch
