"""GPUs shared out by the local executor, tested through CUDA_VISIBLE_DEVICES (no GPU here)."""

from __future__ import annotations

import sys

import pytest
from helpers import DeviceRecordingClassifier, iris

from mempamal import Experiment, ValidationError
from mempamal.runner import read_meta


def _exp(log_dir):
    return Experiment(DeviceRecordingClassifier(log_dir=str(log_dir)),
                      param_grid={"C": [0.1, 1.0, 10.0, 100.0]}, cv=2, inner_cv=2)


def test_each_gpu_task_gets_a_device_of_its_own(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    logs = tmp_path / "fits"
    logs.mkdir()
    X, y = iris()
    # 8 fit tasks (2 outer x 2 inner x 2 chunks) + 2 selects + aggregate, all on 1 GPU
    wf = _exp(logs).compile(tmp_path / "w", X, y, chunk_size=2, resources={"gpus": 1})
    assert sum(t.kind == "fit" for t in wf.tasks.values()) == 8
    wf.run("local", n_jobs=4, progress=False)
    spans = []
    for tid in wf.tasks:
        meta = read_meta(wf.workdir, tid)
        assert meta["state"] == "done"
        assert meta["cuda_visible_devices"] in ("3", "5"), meta  # exactly one of the two
        spans.append((meta["cuda_visible_devices"], meta["start"], meta["end"], tid))
    for device in ("3", "5"):
        mine = sorted(s for s in spans if s[0] == device)
        for (_, _, end, a), (_, start, _, b) in zip(mine, mine[1:]):
            assert start >= end, f"{a} and {b} held GPU {device} at the same time"
    # the fits saw the devices too (in the estimator, as CUDA code would)
    seen = {p.read_text().split()[0] for p in logs.iterdir()}
    assert seen <= {"3", "5"} and seen


def test_cpu_tasks_fill_the_cores_beside_gpu_tasks(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    X, y = iris()
    logs = tmp_path / "fits"
    logs.mkdir()
    wf = _exp(logs).compile(tmp_path / "w", X, y, chunk_size=2)
    for task in wf.tasks.values():  # the outer split 0 on the GPU, the rest on CPUs
        if task.args.get("o") == 0:
            task.resources = {"cpus": 1, "gpus": 1}
    wf.run("local", n_jobs=2, progress=False)
    metas = {tid: read_meta(wf.workdir, tid) for tid in wf.tasks}
    assert all(m["state"] == "done" for m in metas.values())
    assert {m["cuda_visible_devices"] for t, m in metas.items()
            if wf.tasks[t].args.get("o") == 0} == {"0"}


def test_a_task_needing_more_gpus_than_exist_is_refused_before_the_run(tmp_path,
                                                                        monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    X, y = iris()
    wf = _exp(tmp_path).compile(tmp_path / "w", X, y, resources={"gpus": 3})
    with pytest.raises(ValidationError, match=r"needs 3 GPU\(s\) but this machine lends 2 "
                                              r"\(CUDA_VISIBLE_DEVICES='3,5'\)"):
        wf.run("local", n_jobs=2, progress=False)
    assert not any(read_meta(wf.workdir, t) for t in wf.tasks)


@pytest.mark.parametrize("resources, match", [
    ({"gpus": -1}, "expected a non-negative int"),
    ({"gpus": 1.5}, "expected a non-negative int"),
    ({"gpu": 1}, "not a resource hint"),
    ({"cpus": 0}, "expected a positive int"),
])
def test_bad_resource_hints_are_refused_at_compile(tmp_path, resources, match):
    X, y = iris()
    with pytest.raises(ValidationError, match=match):
        _exp(tmp_path).compile(tmp_path / "w", X, y, resources=resources)
    assert not (tmp_path / "w").exists()


def _fake_nvml(monkeypatch, count=None, error=None):
    """A stand-in ``pynvml``: ``count`` devices, or ``nvmlInit`` raising ``error``."""
    import types

    fake = types.ModuleType("pynvml")

    def init():
        if error is not None:
            raise error

    fake.nvmlInit = init
    fake.nvmlDeviceGetCount = lambda: count
    monkeypatch.setitem(sys.modules, "pynvml", fake)


def test_devices_come_from_cuda_visible_devices_then_nvml(monkeypatch):
    from mempamal.backends.local import machine_gpus

    _fake_nvml(monkeypatch, count=3)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    assert machine_gpus() == ["3", "5"]  # what SLURM handed this job wins
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert machine_gpus() == ["0", "1", "2"]


def test_nvml_present_but_failing_is_said_and_lends_no_gpu(monkeypatch):
    from mempamal.backends.local import machine_gpus

    _fake_nvml(monkeypatch, error=RuntimeError("NVML Shared Library Not Found"))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    with pytest.warns(UserWarning, match="NVML is installed but failed .*Not Found.*"
                                         "CUDA_VISIBLE_DEVICES is not set either"):
        assert machine_gpus() == []


def test_a_gpus_hint_reaches_each_backend_in_its_own_words(tmp_path):
    """SLURM --gres, the Dask GPU resource, Soma-Workflow's native specification."""
    from mempamal.backends.dask import DEFAULT_RESOURCES
    from mempamal.backends.dask.execution import task_resources
    from mempamal.backends.slurm import SlurmBackend, scripts
    from mempamal.backends.soma_jobs import native_spec

    X, y = iris()
    wf = Experiment(DeviceRecordingClassifier(log_dir=str(tmp_path)), param_grid={"C": [1.0]},
                    cv=2, inner_cv=2).compile(tmp_path / "w", X, y, chunk_size=1,
                                              resources={"gpus": 2})
    backend = SlurmBackend(tasks_per_job=1)
    fit_jobs = [j for j in backend.plan(wf) if all(t.startswith("fit-") for t in j.task_ids)]
    assert fit_jobs
    for job in fit_jobs:
        assert "--gres=gpu:2" in scripts.directives(job, wf, backend.opts, "r")
    fit = wf.tasks["fit-o0-i0-c0"]
    assert task_resources(fit, DEFAULT_RESOURCES) == {"CPU": 1, "GPU": 2}
    assert "--gres=gpu:2" in native_spec(fit.resources, "slurm")
    assert "ngpus=2" in native_spec(fit.resources, "pbspro")
