"""SLURM notifications: the notify jobs in the scripts, and messages from a real cluster.

The compute node of the test cluster is this machine, so the jobs reach the
test's HTTP server on 127.0.0.1.
"""

from __future__ import annotations

import os
import stat
import subprocess
import time

import pytest
from conftest import import_or_fail, requires_or_fail, slurm_answers
from helpers import half_failing_workflow, iris, small_grid_experiment
from test_notify import Inbox
from test_slurm_cluster import FAST

from mempamal import Experiment, TaskFailedError
from mempamal.backends.slurm import SlurmBackend
from mempamal.backends.slurm.commands import ACTIVE_STATES, read_records, squeue
from mempamal.errors import ValidationError
from mempamal.recipes.nested_cv import build_tasks
from mempamal.workflow import Workflow

import_or_fail("apprise")
URL = "json://127.0.0.1:9/"


def _workflow(root) -> Workflow:
    return Workflow(root, build_tasks([2], 2, 1, python="python3"),
                    {"fingerprint": "0123456789abcdef"})


def test_notify_adds_a_watchdog_and_an_end_job_to_the_scripts(tmp_path):
    wf = _workflow(tmp_path / "w")
    paths = wf.write("slurm", notify=[URL], max_array_size=10, partition="debug")
    names = {p.name for p in paths}
    assert {"notify-end.sbatch", "notify-failure.sbatch"} <= names
    end = (tmp_path / "w" / "slurm" / "notify-end.sbatch").read_text()
    assert "exec python3 -m mempamal notify . --event end --backend slurm" in end
    assert "#SBATCH --partition=debug" in end and "#SBATCH --job-name=mempamal-01234567-" in end
    assert URL not in end  # URLs may hold tokens: they stay in a private file
    saved = tmp_path / "w" / "slurm" / "notify.json"
    assert URL in saved.read_text() and stat.S_IMODE(saved.stat().st_mode) == 0o600
    submit = (tmp_path / "w" / "slurm" / "submit.sh").read_text()
    assert "notify notify-failure afternotok '?'\n" in submit
    assert "notify notify-end afterany ,\n" in submit
    for p in paths:
        if p.suffix in (".sbatch", ".sh"):
            assert subprocess.run(["bash", "-n", str(p)]).returncode == 0


def test_without_notify_no_notify_job(tmp_path):
    paths = _workflow(tmp_path / "w").write("slurm", max_array_size=10)
    assert not any("notify" in p.name for p in paths)
    assert "notify" not in (tmp_path / "w" / "slurm" / "submit.sh").read_text()


def test_mail_options_pass_through_to_every_job(tmp_path):
    _workflow(tmp_path / "w").write("slurm", mail_user="me@example.org", mail_type="fail,end",
                                    max_array_size=10)
    for p in (tmp_path / "w" / "slurm").glob("*.sbatch"):
        text = p.read_text()
        assert "#SBATCH --mail-user=me@example.org\n" in text
        assert "#SBATCH --mail-type=FAIL,END\n" in text


@pytest.mark.parametrize(("key", "value"), [("mail_type", "sometimes"),
                                            ("mail_user", "me @x"), ("notify", "zzz://x")])
def test_bad_mail_and_notify_options_are_refused(key, value):
    with pytest.raises(ValidationError, match=key if key != "notify" else "'zzz' is unknown"):
        SlurmBackend(**{key: value})


# -- a real cluster ---------------------------------------------------------------------
needs_cluster = requires_or_fail(slurm_answers(), "no SLURM cluster answers (sbatch/squeue)")


def _wait_notify_jobs(wf, timeout=120) -> None:
    ids = {r.job for r in read_records(wf.workdir.backend_dir("slurm") / "notify-jobs.tsv")}
    assert len(ids) == 2
    deadline = time.monotonic() + timeout
    while any(r["state"] in ACTIVE_STATES for r in squeue(ids)):
        assert time.monotonic() < deadline, "the notify jobs did not end"
        time.sleep(0.5)


@pytest.fixture
def inbox():
    box = Inbox()
    yield box
    box.close()


@pytest.mark.slurm
@needs_cluster
def test_slurm_done_run_sends_one_message_from_its_end_job(tmp_path, inbox):
    X, y = iris()
    wf = small_grid_experiment(cv=2, inner_cv=2).compile(tmp_path / "w", X, y)
    wf.run("slurm", notify=[inbox.url], tasks_per_job=4, **FAST)
    _wait_notify_jobs(wf)  # the watchdog is cancelled (every job succeeded)
    messages = inbox.wait(1)
    time.sleep(0.5)
    assert len(inbox.messages) == 1, messages
    msg = messages[0]
    assert msg["type"] == "success" and msg["title"] == "mempamal: w done"
    assert f"{len(wf)} tasks done" in msg["message"] and "best: test_score" in msg["message"]
    assert "duration: " in msg["message"] and "duration: -" not in msg["message"]
    rec = (wf.workdir.root / "run.json").read_text()
    assert '"backend": "slurm"' in rec and '"outcome": "done"' in rec


@pytest.mark.slurm
@needs_cluster
def test_slurm_failed_run_sends_the_watchdog_message_and_the_end_message(tmp_path, inbox):
    wf = half_failing_workflow(tmp_path / "w")
    with pytest.raises(TaskFailedError):
        wf.run("slurm", notify=[inbox.url], tasks_per_job=1, **FAST)
    _wait_notify_jobs(wf)
    messages = inbox.wait(2)
    time.sleep(0.5)
    assert len(inbox.messages) == 2, messages
    by_title = {m["title"]: m for m in messages}
    first = by_title["mempamal: w: a task failed"]
    end = by_title["mempamal: w FAILED"]
    assert first["type"] == "failure" and end["type"] == "failure"
    assert "RuntimeError: FailingClassifier asked to fail" in first["message"]
    failing = sorted(t for t in wf.tasks if t.endswith("-c1"))
    for tid in failing:
        assert f"- {tid}: RuntimeError: FailingClassifier asked to fail" in end["message"]
        assert f"log: {wf.workdir.log_file(tid)}" in end["message"]
    assert os.path.exists(wf.workdir.root / "run.json")


@pytest.mark.slurm
@pytest.mark.slow
@needs_cluster
def test_watch_shows_the_slurm_queue_with_one_squeue_call_a_refresh(tmp_path, monkeypatch):
    from helpers import SleepyClassifier

    from mempamal.backends.slurm import commands
    from mempamal.watch import Watcher, render

    X, y = iris()
    exp = Experiment(SleepyClassifier(delay=1.0), param_grid={"C": [1.0, 2.0]}, cv=2)
    wf = exp.compile(tmp_path / "w", X, y, chunk_size=1)
    wf.submit("slurm", tasks_per_job=1, **FAST)
    real, calls = commands.squeue, []

    def counted(ids):
        calls.append(ids)
        return real(ids)

    monkeypatch.setattr(commands, "squeue", counted)
    watcher = Watcher(tmp_path / "w")
    snap = watcher.snapshot()
    assert len(calls) == 1 and snap["backend"] == "slurm" and snap["active"]
    assert sum(snap["queue"]["states"].values()) >= 1
    deadline, refreshes = time.monotonic() + 120, 1
    while snap["active"]:
        assert time.monotonic() < deadline, "the run did not end"
        time.sleep(0.5)
        snap = watcher.snapshot()
        refreshes += 1
    assert len(calls) == refreshes  # one squeue call a refresh, whatever the tasks
    assert snap["finished"] and set(snap["queue"]["states"]) <= {"COMPLETED"}
    assert "tasks done (100.0 %), finished" in str(render(snap).renderables[1])
