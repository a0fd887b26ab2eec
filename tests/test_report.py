"""mempamal report: one self-contained HTML page per workdir (issue 15, part 2).

Small real workdirs are run once per module (nested CV on iris, a sweep with
learning curves, a failed run, a run still going); the page's figures are
read back as plotly JSON and compared with ``load_results``. A real browser
(Debian's chromium, headless) draws the pages: no JavaScript error, figures
drawn, a screenshot that is not blank.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import IN_CI, has_module, import_or_fail, requires_or_fail
from helpers import FailingClassifier, iris
from sklearn.svm import SVC

from mempamal import Experiment, Sweep, TaskFailedError, WorkdirError, load_results
from mempamal.errors import ValidationError
from mempamal.recipes.sweep.dag import trial_name
from mempamal.report import MAX_BYTES, MissingExtraError, render_report, write_report
from mempamal.report.run import assign_lanes
from mempamal.report.sweep import MAX_TRIAL_POINTS, best_so_far, shown_trials
from mempamal.runner import run_task
from mempamal.workdir import read_meta

import_or_fail("plotly")

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

SWEEP_FUNCS = '''
import time

from mempamal import TrialStopped


def train(lr, layers, kind, trial):
    """A loss that decays at a rate set by lr; one candidate fails, one is stopped early."""
    if lr == 0.9 and layers == 2:
        raise ValueError(f"lr={lr} diverged with {layers} layers")
    loss = 1.0
    for step in range(6):
        loss = loss * (1 - lr / 2) + 0.02 * layers + (0.01 if kind == "b" else 0.0)
        trial.report(step, loss=loss, acc=1 - loss / 2)
        if lr == 0.01 and layers == 1 and kind == "a" and step == 2:
            raise TrialStopped()
    return {"loss": loss, "acc": 1 - loss / 2}


def waits(x, trial, release):
    """Report a step, then wait for the file ``release`` (a trial still running)."""
    trial.report(0, loss=float(x))
    deadline = time.monotonic() + 60
    while not __import__("os").path.exists(release):
        if time.monotonic() > deadline:
            raise TimeoutError("never released")
        time.sleep(0.02)
    trial.report(1, loss=float(x) / 2)
    return float(x) / 2
'''


# -- workdirs, run once per module ------------------------------------------------------
@pytest.fixture(scope="module")
def funcs_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("funcs") / "report_funcs.py"
    path.write_text(textwrap.dedent(SWEEP_FUNCS))
    return path


@pytest.fixture(scope="module")
def nested(tmp_path_factory):
    """Nested CV on iris: 2 outer splits, 2 inner, 4 candidates over two parameters."""
    X, y = iris()
    exp = Experiment(SVC(), param_grid={"C": [0.1, 10.0], "kernel": ["linear", "rbf"]},
                     cv=2, inner_cv=2)
    root = tmp_path_factory.mktemp("nested") / "w"
    exp.compile(root, X, y, chunk_size=4).run("local", n_jobs=2, progress=False)
    return root, _page(root)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, funcs_file):
    """12 trials reporting 6 steps each; one fails, one is stopped early (pruned)."""
    sw = Sweep(f"{funcs_file}:train",
               param_grid={"lr": [0.01, 0.3, 0.9], "layers": [1, 2], "kind": ["a", "b"]},
               metric="loss", mode="min")
    root = tmp_path_factory.mktemp("sweep") / "w"
    sw.compile(root, trials_per_task=6).run("local", n_jobs=2, progress=False)
    return root, _page(root)


@pytest.fixture(scope="module")
def failed(tmp_path_factory):
    """Nested CV whose candidate fail=True raises in every fit: those tasks fail."""
    X, y = iris()
    exp = Experiment(FailingClassifier(), param_grid={"fail": [False, True]}, cv=2,
                     inner_cv=2, error_score="raise")
    root = tmp_path_factory.mktemp("failed") / "w"
    with pytest.raises(TaskFailedError):
        exp.compile(root, X, y, chunk_size=1).run("local", n_jobs=2, progress=False)
    return root, _page(root)


@pytest.fixture(scope="module")
def running(tmp_path_factory, funcs_file):
    """A sweep caught mid-run: trial 0 done, trial 1 running, trial 2 not started."""
    base = tmp_path_factory.mktemp("running")
    release = base / "release"
    sw = Sweep(f"{funcs_file}:waits",
               candidates=[{"x": x, "release": str(release)} for x in (1.0, 2.0, 3.0)],
               metric="loss", mode="min")
    root = base / "w"
    wf = sw.compile(root, trials_per_task=1)
    trials = [t for t in wf.tasks.values() if t.kind == "trial"]
    release.touch()
    assert run_task(root, trials[0].id).ok
    release.unlink()
    proc = subprocess.Popen([sys.executable, "-m", "mempamal", "run-task", str(root),
                             trials[1].id], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        metrics = wf.workdir.trial_metrics_file(trial_name(1, wf.meta["trial_name_width"]))
        while not metrics.exists() or not metrics.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, "trial 1 never ran"
            time.sleep(0.05)
        page = _page(root)
    finally:
        release.touch()
        proc.wait(timeout=60)
    return root, page, trials


# -- reading a page back ----------------------------------------------------------------
class Page:
    """A written report: its text, its figures (plotly JSON by id), its tables."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.text = path.read_text(encoding="utf-8")
        self.figures = {m[1]: json.loads(m[2]) for m in re.finditer(
            r'<script type="application/json" class="mempamal-figure" '
            r'data-target="([^"]+)">(.*?)</script>', self.text, re.S)}

    def figure(self, section: str, k: int = 0) -> dict:
        return self.figures[f"{section}-fig{k}"]

    def section(self, section: str) -> str:
        m = re.search(rf'<section id="{section}">(.*?)</section>', self.text, re.S)
        assert m, f"no section {section!r}"
        return m[1]

    def tables(self, section: str) -> list[list[list[str]]]:
        """Each table of a section as rows of cell texts (the header row first)."""
        out = []
        for t in re.findall(r"<table>(.*?)</table>", self.section(section), re.S):
            rows = re.findall(r"<tr>(.*?)</tr>", t, re.S)
            out.append([[html.unescape(c) for c in re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>",
                                                              r, re.S)] for r in rows])
        return out


def _page(root) -> Page:
    return Page(write_report(root, Path(str(root) + ".html")))


def _trace(fig: dict, name: str) -> dict:
    """The one trace called ``name`` (or ``name: ...``, a legend with numbers)."""
    (found,) = [t for t in fig["data"] if t.get("name") == name
                or t.get("name", "").startswith(name + ":")]
    return found


def _check_self_contained(page: Page) -> None:
    assert page.path.stat().st_size <= MAX_BYTES
    assert not re.search(r"<script[^>]*\bsrc=", page.text), "a script loaded from elsewhere"
    assert not re.search(r"<link[^>]*\bhref=\"?https?:", page.text), "a stylesheet from a CDN"
    assert 'id="plotly-js-gzip-base64"' in page.text


# -- nested CV ------------------------------------------------------------------------
def test_every_section_has_its_figures(nested, sweep):
    run_figs = {"timeline-fig0", "resources-fig0"}
    assert set(nested[1].figures) == run_figs | {
        "outer-scores-fig0", "best-params-fig0", "inner-scores-fig0", "times-fig0"}
    importance = {"importance-fig0"} if has_module("optuna") else set()
    assert set(sweep[1].figures) == run_figs | importance | {
        "trials-fig0", "parallel-fig0", "params-fig0", "curves-fig0"}




def test_nested_cv_report_matches_results(nested):
    root, page = nested
    res = load_results(root)
    _check_self_contained(page)
    assert "Partial report" not in page.text
    # outer scores: one marker per split, the mean ± std in the legend
    fig = page.figure("outer-scores")
    scores = _trace(fig, "test_score")
    np.testing.assert_allclose(scores["y"], res.outer_scores["test_score"])
    mean, std = res.summary.loc["test_score", "mean"], res.summary.loc["test_score", "std"]
    assert f"{mean:.4g} ± {std:.4g}" in scores["name"]
    (summary, per_split) = page.tables("outer-scores")
    assert summary[1][:3] == ["test_score", f"{mean:.6g}", f"{std:.6g}"]
    assert [r[0] for r in per_split[1:]] == ["0", "1"]
    # best params: a table row per outer split, a panel per parameter
    (best,) = page.tables("best-params")
    assert best[0] == ["outer_split", "best_index", "C", "kernel"]
    for row, params in zip(best[1:], res.best_params):
        assert row[2:] == [f"{params['C']:.6g}", params["kernel"]]
    assert len(page.figure("best-params")["data"]) == 2
    # inner mean score against each parameter, one trace per outer split
    inner = page.figure("inner-scores")
    cv = res.cv_results
    for o in (0, 1):
        markers = [t for t in inner["data"] if t.get("mode") == "markers"
                   and t["name"] == f"outer split {o}"]
        assert len(markers) == 2  # one per parameter panel
        mine = cv[cv["outer_split"] == o]
        np.testing.assert_allclose(markers[0]["y"], mine["mean_test_score"])
        assert markers[0]["x"] == list(mine["param_C"].astype(float))
        assert markers[1]["x"] == list(mine["param_kernel"])
    # fit and score times of the refits
    times = page.figure("times")
    np.testing.assert_allclose(_trace(times, "fit_time")["y"], res.outer_scores["fit_time"])
    np.testing.assert_allclose(_trace(times, "score_time")["y"],
                               res.outer_scores["score_time"])


def test_timeline_and_resources_show_every_task(nested):
    root, page = nested
    from mempamal.workflow import Workflow

    wf = Workflow.load(root)
    fig = page.figure("timeline")
    bars = [t for t in fig["data"] if t["type"] == "bar"]
    ids = [c[0] for t in bars for c in t["customdata"]]
    assert sorted(ids) == sorted(wf.tasks)
    metas = {tid: read_meta(wf.workdir, tid) for tid in wf.tasks}
    t0 = min(m["start"] for m in metas.values())
    for t in bars:
        for (tid, host), base, width in zip(t["customdata"], t["base"], t["x"]):
            assert base == pytest.approx(metas[tid]["start"] - t0, abs=2e-3)
            assert width == pytest.approx(metas[tid]["end"] - metas[tid]["start"], abs=2e-3)
            assert host == metas[tid]["host"]
    # a lane never holds two tasks at once
    lanes = {}
    for t in bars:
        for y, base, width in zip(t["y"], t["base"], t["x"]):
            lanes.setdefault(y, []).append((base, base + width))
    for spans in lanes.values():
        spans.sort()
        assert all(a[1] <= b[0] + 2e-3 for a, b in zip(spans, spans[1:]))
    res_fig = page.figure("resources")
    kinds = {t["name"] for t in res_fig["data"]}
    assert kinds == {"fit", "select", "aggregate"}
    fit_secs = [t for t in res_fig["data"] if t["name"] == "fit" and t["xaxis"] == "x"]
    assert sorted(fit_secs[0]["y"]) == pytest.approx(
        sorted(m["seconds"] for tid, m in metas.items() if tid.startswith("fit")), abs=1e-3)
    versions = dict((r[0], r[1]) for r in page.tables("versions")[0][1:])
    assert versions["scikit-learn"] == wf.meta["versions"]["scikit-learn"]
    overview = dict((r[0], r[1]) for r in page.tables("overview")[0][1:])
    assert overview["estimator"] == "SVC()" and overview["recipe"] == "nested_cv"
    assert overview["candidates"] == "4 over C, kernel"


# -- sweep ----------------------------------------------------------------------------
def test_sweep_report_matches_results(sweep):
    root, page = sweep
    res = load_results(root)
    t = res.trials
    _check_self_contained(page)
    assert set(t["state"]) == {"done", "failed", "pruned"}
    # value per trial, and the best so far
    fig = page.figure("trials")
    done = _trace(fig, "done trial")
    mine = t[t["state"] == "done"]
    assert done["x"] == list(mine["trial"])
    np.testing.assert_allclose(done["y"], mine["loss"])
    best = _trace(fig, "best so far")
    running_min = np.fmin.accumulate(np.where(t["state"] == "done", t["loss"], np.nan))
    np.testing.assert_allclose(best["y"], running_min[best["x"]])
    assert best["y"][-1] == pytest.approx(t.loc[t["state"] == "done", "loss"].min())
    # parallel coordinates: a dimension per parameter and the metric
    (par,) = page.figure("parallel")["data"]
    labels = [d["label"] for d in par["dimensions"]]
    assert labels == ["kind", "layers", "lr", "loss"]
    ok = t[t["state"].isin(["done", "pruned"])]
    np.testing.assert_allclose(par["dimensions"][-1]["values"], ok["loss"])
    # one panel per parameter
    panels = page.figure("params")["data"]
    assert [p["name"] for p in panels] == ["kind", "layers", "lr"]
    np.testing.assert_allclose(panels[2]["x"], ok["param_lr"])
    # the top trials table, best first
    top = page.tables("top-trials")[0]
    assert int(top[1][0]) == int(res.ranked()["trial"].iloc[0])
    failed_rows = page.tables("top-trials")[1]
    assert "ValueError: lr=0.9 diverged with 2 layers" in failed_rows[1]
    # six trials per task: each trial's own time and memory beside its task's
    boxes = {t["name"]: t for t in page.figure("resources")["data"] if t["xaxis"] == "x"}
    each = t.loc[t["state"] != "failed", "seconds"]
    assert sorted(boxes["trial (each one)"]["y"]) == pytest.approx(sorted(each), abs=1e-4)


def test_sweep_learning_curves_mark_pruned_trials(sweep):
    root, page = sweep
    res = load_results(root)
    h, t = res.history, res.trials
    fig = page.figure("curves")
    loss = [tr for tr in fig["data"] if tr["xaxis"] == "x" and tr["mode"] == "lines"]
    # every reported loss is drawn once (curves joined in a trace, gaps between)
    drawn = sorted((int(i), int(x), y) for tr in loss
                   for i, x, y in zip(tr["customdata"], tr["x"], tr["y"]) if x is not None)
    expected = sorted((int(r.trial), int(r.step), r.loss) for r in h.itertuples())
    assert [d[:2] for d in drawn] == [e[:2] for e in expected]
    np.testing.assert_allclose([d[2] for d in drawn], [e[2] for e in expected])
    (pruned,) = t.loc[t["state"] == "pruned", "trial"]
    marks = [tr for tr in fig["data"] if tr["name"] == "pruned here"]
    assert len(marks) == 2  # on the loss and on the acc panels
    assert all(m["customdata"] == [pruned] and m["x"] == [2] for m in marks)
    best = [tr for tr in fig["data"] if tr["name"] == "best trial"]
    assert {i for tr in best for i in tr["customdata"]} == {int(res.best["trial"]), None}


def test_sweep_parameter_importance(sweep):
    import_or_fail("optuna")
    root, page = sweep
    (bars,) = page.figure("importance")["data"]
    assert sorted(bars["y"]) == ["kind", "layers", "lr"]
    assert sum(bars["x"]) == pytest.approx(1.0)
    # the learning rate sets the loss, the kind barely
    imp = dict(zip(bars["y"], bars["x"]))
    assert imp["lr"] > imp["kind"]


def test_importance_without_optuna_says_so(sweep, monkeypatch):
    from mempamal.report.importance import param_importances

    monkeypatch.setitem(sys.modules, "optuna", None)
    res = load_results(sweep[0])
    found, note = param_importances(res.trials, ["lr"], "loss", "min")
    assert found == {} and "pip install 'mempamal[optuna]'" in note


# -- failures, partial runs -------------------------------------------------------------
def test_failed_run_shows_the_error_and_an_existing_log(failed):
    root, page = failed
    _check_self_contained(page)
    assert "Partial report" in page.text  # select and aggregate never ran
    text = page.section("failures")
    assert "RuntimeError: FailingClassifier asked to fail" in html.unescape(text)
    logs = re.findall(r"^(/\S+?\.log)(?:</pre>)?$", html.unescape(text), re.M)
    assert len(logs) == 4 and all(os.path.exists(p) for p in logs)
    # failed tasks are red bars on the timeline
    failed_bars = _trace(page.figure("timeline"), "failed")
    assert sorted(c[0] for c in failed_bars["customdata"]) == sorted(
        f"fit-o{o}-i{i}-c1" for o in (0, 1) for i in (0, 1))
    # no outer split finished: said, not raised
    assert "No outer split is finished yet" in page.section("outer-scores")


def test_running_sweep_is_reported_as_partial(running):
    root, page, trials = running
    _check_self_contained(page)
    banner = re.search(r'<div class="banner" id="partial-banner">(.*?)</div>', page.text, re.S)
    assert banner and "1 done, 1 running, 2 pending of 4 tasks" in banner[1]
    (bar,) = _trace(page.figure("timeline"), "running")["customdata"]
    assert bar[0] == trials[1].id
    assert _trace(page.figure("curves"), "running trials")["customdata"][0] == 1
    # what is finished is shown: trial 0's value
    assert _trace(page.figure("trials"), "done trial")["y"] == [0.5]


def test_nested_cv_half_done_shows_the_finished_outer_split(nested, tmp_path):
    from mempamal.workflow import Workflow

    root = tmp_path / "copy"
    shutil.copytree(nested[0], root)
    wf = Workflow.load(root)
    for tid in ("select-o1", "aggregate"):  # as if they had not run yet
        for out in wf.tasks[tid].outputs:
            wf.workdir.path(out).unlink()
        wf.workdir.meta_file(tid).unlink()
    page = Page(write_report(root, tmp_path / "r.html"))
    assert "2 pending of" in page.text and "Partial report" in page.text
    assert "1 of 2 outer splits finished" in page.section("outer-scores")
    res = load_results(root, partial=True)
    scores = _trace(page.figure("outer-scores"), "test_score")
    assert scores["customdata"] == [0]
    np.testing.assert_allclose(scores["y"], res.outer_scores["test_score"])


# -- bad input --------------------------------------------------------------------------
def test_not_a_workdir_is_a_clear_error(tmp_path):
    with pytest.raises(WorkdirError, match=re.escape(repr(str(tmp_path)))):
        write_report(tmp_path)
    missing = tmp_path / "nowhere"
    with pytest.raises(WorkdirError, match="no such directory"):
        write_report(missing)
    proc = subprocess.run([sys.executable, "-m", "mempamal", "report", str(tmp_path)],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert f"{str(tmp_path)!r}: it is not a mempamal workdir" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("where", ["parent is a file", "no such parent", "a directory"])
def test_unwritable_output_is_a_clear_error(nested, tmp_path, where):
    root, _ = nested
    (tmp_path / "file").write_text("x")
    out = {"parent is a file": tmp_path / "file" / "r.html",
           "no such parent": tmp_path / "missing" / "r.html",
           "a directory": tmp_path}[where]
    with pytest.raises(ValidationError, match=re.escape(repr(str(out)))):
        write_report(root, out)
    proc = subprocess.run([sys.executable, "-m", "mempamal", "report", str(root), "-o",
                           str(out)], capture_output=True, text=True)
    # click refuses a directory itself, naming it too
    assert proc.returncode == 2 and str(out) in proc.stderr, proc.stderr


def test_cli_writes_into_the_workdir_by_default(nested):
    root, _ = nested
    proc = subprocess.run([sys.executable, "-m", "mempamal", "report", str(root)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert (root / "report.html").stat().st_size > 1_000_000


def test_missing_plotly_names_the_extra(nested, monkeypatch):
    monkeypatch.setitem(sys.modules, "plotly", None)
    with pytest.raises(MissingExtraError, match=re.escape("mempamal[report]")):
        render_report(nested[0])


def test_a_page_over_the_size_limit_is_said(nested, tmp_path, monkeypatch):
    import mempamal.report

    monkeypatch.setattr(mempamal.report, "MAX_BYTES", 1000)
    with pytest.warns(UserWarning, match=r"weighs \d\.\d MB, more than"):
        write_report(nested[0], tmp_path / "r.html")


def test_an_experiment_that_does_not_load_here_still_gets_a_report(nested, tmp_path):
    """On a machine without the experiment's modules, the run itself is still shown."""
    root = tmp_path / "copy"
    shutil.copytree(nested[0], root)
    with open(root / "experiment.pkl", "ab") as fh:
        fh.write(b"not the compiled experiment")
    page = Page(write_report(root, tmp_path / "r.html"))
    assert "cannot be loaded here" in page.section("overview")
    assert {"timeline-fig0", "resources-fig0"} <= set(page.figures)
    assert "No outer split is finished yet" not in page.text  # not claimed: unknown
    assert "The results cannot be read here" in page.section("outer-scores")


def test_a_broken_section_does_not_cost_the_others(nested, monkeypatch):
    import mempamal.report.run as run_sections

    monkeypatch.setattr(run_sections, "timeline_section", lambda run: 1 / 0)
    text = render_report(nested[0])
    assert "This section could not be drawn: ZeroDivisionError" in text
    assert 'data-target="outer-scores-fig0"' in text and 'data-target="timeline-fig0"' not in text


def test_a_user_template_can_extend_the_page(nested, tmp_path):
    (tmp_path / "report").mkdir()
    (tmp_path / "report" / "report.html.j2").write_text(
        '{% extends "builtin/report/report.html.j2" %}'
        '{% block style %}{{ super() }}<style>h1 { color: #123456; }</style>{% endblock %}')
    text = render_report(nested[0], template_dir=tmp_path)
    assert "h1 { color: #123456; }" in text and 'data-target="outer-scores-fig0"' in text


# -- bounded size on big runs -------------------------------------------------------------
def test_big_sweeps_are_sampled_keeping_the_best():
    import pandas as pd

    rng = np.random.default_rng(0)
    n = 3 * MAX_TRIAL_POINTS
    t = pd.DataFrame({"trial": np.arange(n), "loss": rng.random(n),
                      "state": ["done"] * n})
    shown = shown_trials(t, "loss", "min")
    assert len(shown) == MAX_TRIAL_POINTS
    assert t["loss"].idxmin() in set(shown["trial"])
    assert shown["trial"].is_monotonic_increasing
    assert list(best_so_far([3.0, np.nan, 1.0, 2.0], "min")[[0, 2, 3]]) == [3.0, 1.0, 1.0]
    assert list(best_so_far([1.0, 3.0, 2.0], "max")) == [1.0, 3.0, 3.0]


def test_timeline_of_many_tasks_counts_running_tasks_instead(tmp_path):
    from types import SimpleNamespace

    from mempamal.report.page import Section
    from mempamal.report.run import MAX_TIMELINE_BARS, timeline_section

    n = MAX_TIMELINE_BARS + 1000
    start = 1.0e9 + np.arange(n) * 0.5  # 4 tasks of 2 s at once, then the aggregate
    metas = {f"t{k}": {"start": s, "end": s + 2.0, "host": "h", "state": "done"}
             for k, s in enumerate(start)}
    tasks = {tid: SimpleNamespace(kind="trial") for tid in metas}
    run = SimpleNamespace(metas=metas, states=dict.fromkeys(metas, "done"),
                          workflow=SimpleNamespace(tasks=tasks), now=2.0e9, finished=True)
    section = timeline_section(run)
    assert isinstance(section, Section) and "ran at once" in section.notes[-1]
    fig = json.loads(section.figures[0].json)
    (curve,) = fig["data"]
    assert curve["type"] == "scatter" and len(curve["x"]) < 1000
    assert max(curve["y"]) == 4 and len(section.figures[0].json) < 50_000


def test_lanes_are_as_many_as_tasks_at_once():
    rows = [("a", "fit", "h1", 0.0, 2.0, "done"), ("b", "fit", "h1", 1.0, 3.0, "done"),
            ("c", "fit", "h1", 2.0, 4.0, "done"), ("d", "fit", "h2", 0.0, 9.0, "done")]
    assert assign_lanes(rows) == ["h1 #0", "h1 #1", "h1 #0", "h2 #0"]


# -- in a real browser ------------------------------------------------------------------
def _chromium(*args, timeout=120):
    return subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
                           "--enable-unsafe-swiftshader", "--hide-scrollbars",
                           "--virtual-time-budget=20000", *args],
                          capture_output=True, text=True, timeout=timeout)


#: chromium's own notices about software WebGL (parallel coordinates draw with
#: WebGL), logged as console lines though no script of the page wrote them
_GPU_NOTICE = re.compile(r'"\[\.WebGL-0x[0-9a-f]+\]GL Driver Message \(OpenGL, Performance'
                         r"|Automatic fallback to software WebGL has been deprecated")


def _console_messages(stderr: str) -> list[str]:
    """The page's console lines in chromium's log, but for its own GPU notices."""
    return [ln for ln in stderr.splitlines() if ":CONSOLE" in ln and not _GPU_NOTICE.search(ln)]


def test_console_filter_keeps_errors_and_drops_gpu_notices():
    log = "\n".join([
        '[1:1:1130/071736.821:INFO:CONSOLE:0] "[.WebGL-0x2044]GL Driver Message (OpenGL, '
        'Performance, GL_CLOSE_PATH_NV, High): GPU stall due to ReadPixels", source: f.html',
        '[1:1:1130/071736.822:INFO:CONSOLE:7] "Uncaught TypeError: x is undefined", source: f',
        '[1:1:1130/071736.823:INFO:CONSOLE:9] "WebGL: CONTEXT_LOST_WEBGL", source: f.html (9)',
        "[1:1:1130/071736.824:ERROR:dbus/bus.cc:405] Failed to connect to the bus"])
    kept = _console_messages(log)
    assert len(kept) == 2 and "Uncaught TypeError" in kept[0] and "CONTEXT_LOST" in kept[1]


@pytest.mark.slow
@requires_or_fail(CHROMIUM is not None, "chromium is not installed "
                                        "(bash .ci/install-chromium.sh)")
@pytest.mark.parametrize("which", ["nested", "sweep"])
def test_chromium_draws_the_report_without_errors(which, request, tmp_path):
    root, page = request.getfixturevalue(which)[:2]
    url = page.path.as_uri()
    proc = _chromium("--enable-logging=stderr", "--v=0", "--dump-dom", url)
    console = _console_messages(proc.stderr)
    assert not console, "JavaScript console messages:\n" + "\n".join(console)
    dom = proc.stdout
    assert f'data-figures-drawn="{len(page.figures)}"' in dom, "not every figure was drawn"
    assert dom.count('class="main-svg"') >= len(page.figures)
    assert 'id="report-error" hidden' in dom
    if which == "sweep":  # the page with every kind of figure, parallel coordinates too
        shot = tmp_path / "report.png"
        _chromium(f"--screenshot={shot}", "--window-size=1280,2400", url)
        _check_not_blank(shot)


@pytest.mark.slow
@requires_or_fail(CHROMIUM is not None, "chromium is not installed "
                                        "(bash .ci/install-chromium.sh)")
def test_chromium_check_catches_a_broken_page(nested, tmp_path):
    """The browser test can fail: a figure whose data does not parse is seen."""
    page = nested[1]
    broken = tmp_path / "broken.html"
    target = 'data-target="times-fig0">{'
    assert target in page.text
    broken.write_text(page.text.replace(target, target + ","), encoding="utf-8")
    proc = _chromium("--enable-logging=stderr", "--v=0", "--dump-dom", broken.as_uri())
    assert any("Uncaught" in ln for ln in _console_messages(proc.stderr))
    assert 'id="report-error" hidden' not in proc.stdout
    assert "The figures could not be drawn" in proc.stdout
    assert f'data-figures-drawn="{len(page.figures)}"' not in proc.stdout


def _pil_image():
    try:
        from PIL import Image
    except ImportError:
        if IN_CI:
            pytest.fail("CI=true but Pillow (to read the screenshot) is not installed")
        pytest.skip("Pillow is not installed")
    return Image


def _check_not_blank(png: Path, min_shape=(2000, 1200)) -> None:
    """Most of a drawn page is background, but figures and tables colour a good part."""
    Image = _pil_image()
    img = np.asarray(Image.open(png).convert("RGB")).astype(int)
    assert img.shape[0] >= min_shape[0] and img.shape[1] >= min_shape[1]
    packed = (img[..., 0] << 16) | (img[..., 1] << 8) | img[..., 2]
    colours, counts = np.unique(packed, return_counts=True)
    assert counts.max() / counts.sum() < 0.9, "the page is mostly one colour"
    assert len(colours) > 200, "too few colours for figures and text"
    # text and tables are grey; markers, bars and lines are coloured
    coloured = (img.max(axis=2) - img.min(axis=2) > 60).sum()
    assert coloured > 5000, "no figure on the screenshot"


def test_blank_screenshots_are_caught(tmp_path):
    Image = _pil_image()
    white = tmp_path / "white.png"
    Image.new("RGB", (320, 240), "white").save(white)
    with pytest.raises(AssertionError, match="mostly one colour"):
        _check_not_blank(white, min_shape=(0, 0))
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 255, (240, 320, 1)).repeat(3, axis=2).astype(np.uint8)
    noise = tmp_path / "grey.png"
    Image.fromarray(grey).save(noise)  # many colours, all grey: text without figures
    with pytest.raises(AssertionError, match="no figure"):
        _check_not_blank(noise, min_shape=(0, 0))
