"""Notifications (apprise ``json://`` to a small HTTP server in the test), local backend."""

from __future__ import annotations

import http.server
import json
import subprocess
import sys
import threading
import time

import pytest
from conftest import import_or_fail
from helpers import FailingClassifier, half_failing_workflow, iris, small_grid_experiment

from mempamal import Experiment, TaskFailedError
from mempamal.backends import get_backend
from mempamal.errors import ValidationError
from mempamal.notify import check_urls, send
from mempamal.runinfo import read_run_record

import_or_fail("apprise")


class Inbox:
    """An HTTP server on 127.0.0.1 that keeps every JSON body POSTed to it."""

    def __init__(self) -> None:
        self.messages: list[dict] = []
        inbox = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                n = int(self.headers.get("Content-Length") or 0)
                inbox.messages.append(json.loads(self.rfile.read(n)))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"json://127.0.0.1:{self.server.server_address[1]}/"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def wait(self, n: int, timeout: float = 30.0) -> list[dict]:
        deadline = time.monotonic() + timeout
        while len(self.messages) < n and time.monotonic() < deadline:
            time.sleep(0.05)
        return list(self.messages)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def inbox():
    box = Inbox()
    yield box
    box.close()


def test_done_run_sends_one_message_with_counts_best_score_and_duration(tmp_path, inbox):
    X, y = iris()
    wf = small_grid_experiment(cv=2, inner_cv=2).compile(tmp_path / "w", X, y)
    wf.run("local", n_jobs=2, progress=False, notify=[inbox.url])
    messages = inbox.wait(1)
    time.sleep(0.3)  # nothing else may come
    assert len(inbox.messages) == 1
    msg = messages[0]
    assert msg["type"] == "success"
    assert msg["title"] == "mempamal: w done"
    body = msg["message"]
    n_fit = sum(1 for t in wf.tasks.values() if t.kind == "fit")
    assert f"{len(wf)} tasks done (fit {n_fit}, select 2, aggregate 1)" in body
    assert "best: test_score " in body and "over 2 outer splits" in body
    assert "duration: " in body and f"workdir: {wf.workdir.root}" in body
    record = read_run_record(wf.workdir)
    assert record["backend"] == "local" and record["outcome"] == "done"
    assert record["counts"] == {"done": len(wf)} and record["seconds"] > 0


def test_failed_run_sends_first_failure_then_end_with_reasons_and_logs(tmp_path, inbox):
    wf = half_failing_workflow(tmp_path / "w")
    with pytest.raises(TaskFailedError):
        wf.run("local", n_jobs=1, progress=False, notify=[inbox.url])
    messages = inbox.wait(2)
    time.sleep(0.3)
    assert len(inbox.messages) == 2
    first, end = messages
    assert first["type"] == "failure" and "a task failed" in first["title"]
    assert "FailingClassifier asked to fail" in first["message"]
    assert end["type"] == "failure" and end["title"] == "mempamal: w FAILED"
    failing = sorted(t for t in wf.tasks if t.endswith("-c1"))
    assert f"{len(failing)} of {len(wf)} tasks failed" in end["message"]
    for tid in failing:
        assert f"- {tid}: RuntimeError: FailingClassifier asked to fail" in end["message"]
        assert f"log: {wf.workdir.log_file(tid)}" in end["message"]
    assert read_run_record(wf.workdir)["outcome"] == "failed"


def test_undeliverable_message_is_logged_and_never_fails_the_run(tmp_path, capfd):
    X, y = iris()
    wf = small_grid_experiment(cv=2, inner_cv=2).compile(tmp_path / "w", X, y)
    # nothing listens on port 9 of this machine (discard): the connection is refused
    wf.run("local", n_jobs=2, progress=False, notify=["json://127.0.0.1:9/"])
    assert wf.status() == {tid: "done" for tid in wf.tasks}
    assert "could not be delivered to json://…" in capfd.readouterr().err
    assert send(["json://127.0.0.1:9/"], "t", "b") is False


@pytest.mark.parametrize("backend", ["local", "slurm", "soma", "dask"])
def test_unknown_scheme_is_refused_naming_it_by_every_backend(backend):
    try:
        with pytest.raises(ValidationError, match="scheme 'nosuchservice' is unknown"):
            get_backend(backend, notify=["nosuchservice://host/token"])
    except ImportError:  # an optional backend that is not installed
        pytest.skip(f"{backend} not installed")


@pytest.mark.parametrize(("urls", "match"), [
    ("not a url", "has no scheme"), (["json://ok/", 3], "list of them"),
    ("mailto://", "refuses this URL"),
])
def test_bad_urls_are_refused(urls, match):
    with pytest.raises(ValidationError, match=match):
        check_urls(urls)


def test_cli_refuses_unknown_scheme_before_writing_anything(tmp_path):
    exp_file = tmp_path / "exp.py"
    exp_file.write_text(
        "from sklearn.svm import SVC\nfrom sklearn.datasets import load_iris\n"
        "from mempamal import Experiment\n"
        "experiment = Experiment(SVC(), param_grid={'C': [1.0]}, cv=2)\n"
        "X, y = load_iris(return_X_y=True)\n")
    proc = subprocess.run([sys.executable, "-m", "mempamal", "run", str(exp_file), "-w",
                           str(tmp_path / "w"), "--notify", "bogus://x/y"],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "scheme 'bogus' is unknown" in proc.stderr and "x/y" not in proc.stderr
    assert not (tmp_path / "w").exists()


@pytest.mark.dask
@pytest.mark.slow
def test_dask_run_sends_its_first_failure_and_its_end(tmp_path, inbox):
    import_or_fail("distributed")
    wf = half_failing_workflow(tmp_path / "w")
    with pytest.raises(TaskFailedError):
        wf.run("dask", n_jobs=1, progress=False, notify=[inbox.url])
    messages = inbox.wait(2)
    time.sleep(0.3)
    assert [m["title"] for m in messages] == ["mempamal: w: a task failed",
                                              "mempamal: w FAILED"]
    assert "FailingClassifier asked to fail" in messages[0]["message"]
    assert read_run_record(wf.workdir)["backend"] == "dask"


@pytest.mark.soma
@pytest.mark.slow
def test_soma_run_sends_its_first_failure_and_its_end(tmp_path, inbox, monkeypatch):
    import_or_fail("soma_workflow")
    home = tmp_path / "home"  # soma-workflow must not write in the real HOME
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("SOMA_WORKFLOW_CONFIG", raising=False)
    X, y = iris()
    exp = Experiment(FailingClassifier(), param_grid={"fail": [False, True]}, cv=2,
                     error_score="raise")
    wf = exp.compile(tmp_path / "w", X, y, chunk_size=1)
    with pytest.raises(TaskFailedError):
        wf.run("soma", n_jobs=1, progress=False, notify=[inbox.url])
    messages = inbox.wait(2)
    time.sleep(0.3)
    assert [m["title"] for m in messages] == ["mempamal: w: a task failed",
                                              "mempamal: w FAILED"]
    assert read_run_record(wf.workdir)["backend"] == "soma"


@pytest.mark.parametrize("command", [["resume"], ["submit", "--backend", "slurm"],
                                     ["submit", "--backend", "local"]])
def test_resume_and_submit_refuse_unknown_scheme_before_running(tmp_path, command):
    X, y = iris()
    wf = small_grid_experiment(cv=2).compile(tmp_path / "w", X, y)
    proc = subprocess.run([sys.executable, "-m", "mempamal", *command, str(wf.workdir.root),
                           "--notify", "bogus://x/y"], capture_output=True, text=True)
    assert proc.returncode == 2 and "scheme 'bogus' is unknown" in proc.stderr
    assert not wf.workdir.last_backend_file.exists() and not list(wf.workdir.logs_dir.iterdir())


@pytest.mark.slow
def test_background_run_of_submit_sends_and_keeps_urls_off_its_command_line(tmp_path, inbox):
    X, y = iris()
    wf = small_grid_experiment(cv=2, inner_cv=2).compile(tmp_path / "w", X, y)
    proc = wf.submit("local", n_jobs=2, notify=[inbox.url])
    assert proc.wait(timeout=300) == 0
    assert inbox.url not in " ".join(proc.args)
    (msg,) = inbox.wait(1)
    assert msg["title"] == "mempamal: w done"
