"""The catalogue of bad inputs: each refused up front, named, nothing written."""

from __future__ import annotations

import os
import shutil
import threading
from collections import namedtuple

import numpy as np
import pytest
from helpers import iris
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GroupKFold, StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer
from sklearn.svm import SVC

from mempamal import Experiment, MempamalError, ValidationError, WorkdirError
from mempamal.errors import BackendError

Case = namedtuple("Case", "build exc match")


def _scorer_holding(thing):
    def scorer(estimator, X, y):
        return float(thing is not None)

    return scorer


def _exp(**kw):
    kw.setdefault("param_grid", {"C": [0.1, 1.0]})
    kw.setdefault("cv", 3)
    kw.setdefault("inner_cv", 3)
    return Experiment(kw.pop("estimator", SVC()), **kw)


def _compile(w, X=None, y=None, groups=None, exp=None, **kw):
    X0, y0 = iris()
    X = X0 if X is None else X
    y = y0 if y is None else y
    return (exp or _exp()).compile(w, X, y, groups, **kw)


def _with_nan(X):
    X = X.copy()
    X[3, 2] = np.nan
    return X


def _with_inf(X):
    X = X.copy()
    X[5, 1] = np.inf
    return X


def _make_foreign(w):
    w.mkdir()
    (w / "notes.txt").write_text("mine")


def _full_disk(w, monkeypatch):
    usage = shutil.disk_usage("/")
    monkeypatch.setattr("mempamal.compiler.shutil.disk_usage",
                        lambda p: usage._replace(free=1024))
    return _compile(w)


def _small_classes():
    X, y = iris()
    keep = np.concatenate([np.flatnonzero(y == k)[:3] for k in range(3)])
    return X[keep], y[keep]


def _run_after_compile(w, **options):
    return _compile(w, chunk_size=2).run("local", **options)


X0, Y0 = iris()

CATALOGUE = {
    # search space
    "misspelt-param": Case(lambda w: _exp(param_grid={"CC": [1]}), ValidationError, "CC"),
    "bad-value-type": Case(lambda w: _exp(param_grid={"C": ["big"]}), ValidationError, "big"),
    "bad-value-range": Case(lambda w: _exp(param_grid={"C": [-1.0]}), ValidationError, "-1.0"),
    "bad-kernel": Case(lambda w: _exp(param_grid={"kernel": ["rbff"]}), ValidationError, "rbff"),
    "pipeline-misspelt-step": Case(
        lambda w: _exp(estimator=make_pipeline(SVC()), param_grid={"svm__C": [1]}),
        ValidationError, "svm"),
    "grid-not-dict": Case(lambda w: _exp(param_grid=[1, 2]), ValidationError, "1"),
    "grid-empty-values": Case(lambda w: _exp(param_grid={"C": []}), ValidationError, "C"),
    "grid-scalar-values": Case(lambda w: _exp(param_grid={"C": 1.0}), ValidationError, "C"),
    "grid-and-distributions": Case(
        lambda w: _exp(param_distributions={"C": [1.0]}), ValidationError,
        "param_distributions"),
    "n-iter-zero": Case(
        lambda w: _exp(param_grid=None, param_distributions={"C": [1.0]}, n_iter=0),
        ValidationError, "n_iter"),
    "candidates-dict": Case(lambda w: _exp(param_grid=None, candidates={"C": 1}),
                            ValidationError, "dict"),
    "candidates-not-dicts": Case(lambda w: _exp(param_grid=None, candidates=[1]),
                                 ValidationError, "candidates[0]"),
    "candidates-empty": Case(lambda w: _exp(param_grid=None, candidates=[]),
                             ValidationError, "empty"),
    # estimator
    "estimator-none": Case(lambda w: _exp(estimator=None), ValidationError, "None"),
    "estimator-class": Case(lambda w: _exp(estimator=SVC), ValidationError, "SVC"),
    # a lambda is stored by value; a lock cannot be stored at all
    "estimator-unpicklable": Case(
        lambda w: _exp(estimator=make_pipeline(
            FunctionTransformer(lambda x, lock: x, kw_args={"lock": threading.Lock()}), SVC()),
            param_grid={"svc__C": [1.0]}),
        ValidationError, "cannot pickle '_thread.lock'"),
    "scoring-unstorable": Case(
        lambda w: _exp(scoring=_scorer_holding(threading.Lock())),
        ValidationError, "cannot be stored for the tasks, which run in other processes"),
    # scoring and refit
    "unknown-scorer": Case(lambda w: _exp(scoring="not_a_metric"), ValidationError,
                           "not_a_metric"),
    "multimetric-refit-true": Case(
        lambda w: _exp(scoring={"acc": "accuracy", "bal": "balanced_accuracy"}),
        ValidationError, "refit=True"),
    "refit-unknown-name": Case(
        lambda w: _exp(scoring={"acc": "accuracy"}, refit="auc"), ValidationError, "auc"),
    "refit-false": Case(lambda w: _exp(refit=False), ValidationError, "refit=False"),
    "error-score-word": Case(lambda w: _exp(error_score="ignore"), ValidationError, "ignore"),
    # cross-validation
    "cv-one": Case(lambda w: _exp(cv=1), ValidationError, "cv=1"),
    "cv-string": Case(lambda w: _exp(cv="five"), ValidationError, "five"),
    "inner-cv-none-many-candidates": Case(lambda w: _exp(inner_cv=None), ValidationError,
                                          "inner_cv=None"),
    "too-many-splits": Case(lambda w: _compile(w, exp=_exp(cv=200)), ValidationError,
                            "n_splits=200"),
    "too-many-splits-for-classes": Case(
        lambda w: _compile(w, *_small_classes(), exp=_exp(cv=StratifiedKFold(5))),
        ValidationError, "n_splits=5"),
    "group-splitter-without-groups": Case(
        lambda w: _compile(w, exp=_exp(cv=GroupKFold(3))), ValidationError, "GroupKFold"),
    # data
    "x-none": Case(lambda w: _exp().compile(w, None, Y0), ValidationError, "X is None"),
    "y-length": Case(lambda w: _compile(w, y=Y0[:-1]), ValidationError, "y has 149"),
    "groups-length": Case(lambda w: _compile(w, groups=np.arange(10)), ValidationError,
                          "groups has 10"),
    "x-object-dtype": Case(lambda w: _compile(w, X=X0.astype(object)), ValidationError,
                           "dtype object"),
    "x-inf": Case(lambda w: _compile(w, X=_with_inf(X0)), ValidationError, "row 5, column 1"),
    "x-nan-svc": Case(lambda w: _compile(w, X=_with_nan(X0)), ValidationError,
                      "row 3, column 2"),
    "y-nan": Case(lambda w: _compile(w, y=np.r_[np.nan, Y0[1:]]), ValidationError,
                  "y has 1 NaN"),
    "chunk-size-zero": Case(lambda w: _compile(w, chunk_size=0), ValidationError,
                            "chunk_size"),
    # workdir
    "workdir-is-file": Case(_compile, WorkdirError, "not a directory"),
    "workdir-foreign": Case(_compile, WorkdirError, "not a mempamal workdir"),
    "workdir-other-experiment": Case(
        lambda w: _compile(w, exp=_exp(param_grid={"C": [5.0]})), WorkdirError,
        "another experiment"),
    "workdir-uncreatable": Case(lambda w: _compile(w / "sub"), WorkdirError,
                                "cannot create workdir"),
    # backends
    "unknown-backend": Case(lambda w: _compile(w).run("nope"), ValidationError, "nope"),
    "unknown-backend-option": Case(lambda w: _run_after_compile(w, n_job=2),
                                   ValidationError, "n_job"),
    "bad-n-jobs": Case(lambda w: _run_after_compile(w, n_jobs=0), ValidationError, "n_jobs"),
}

#: what must exist before the failing call (not part of what is checked)
SETUP = {
    "workdir-is-file": lambda w: w.write_text("x"),
    "workdir-uncreatable": lambda w: w.write_text("a file, not a directory"),
    "workdir-foreign": _make_foreign,
    "workdir-other-experiment": lambda w: _compile(w, chunk_size=2),
    "unknown-backend": lambda w: _compile(w, chunk_size=2),
    "unknown-backend-option": lambda w: _compile(w, chunk_size=2),
    "bad-n-jobs": lambda w: _compile(w, chunk_size=2),
}


def _snapshot(root):
    if not os.path.exists(root):
        return None
    if os.path.isfile(root):
        return ("file", os.path.getsize(root))
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in sorted(dirnames + filenames):
            p = os.path.join(dirpath, name)
            st = os.stat(p)
            out.append((os.path.relpath(p, root), st.st_size, st.st_mtime_ns))
    return sorted(out)


def test_catalogue_is_large_enough():
    assert len(CATALOGUE) >= 30


@pytest.mark.parametrize("name", sorted(CATALOGUE))
def test_bad_input_is_refused_up_front(name, tmp_path, monkeypatch):
    case = CATALOGUE[name]
    w = tmp_path / "w"
    if name in SETUP:
        SETUP[name](w)
    before = _snapshot(w)
    with pytest.raises(case.exc) as info:
        case.build(w)
    assert isinstance(info.value, MempamalError)
    assert case.match in str(info.value), str(info.value)
    assert _snapshot(w) == before, "the workdir changed"


def test_full_disk_is_refused_with_numbers(tmp_path, monkeypatch):
    w = tmp_path / "w"
    with pytest.raises(WorkdirError, match=r"needs about [\d.]+ MiB .* has 0.0 MiB free"):
        _full_disk(w, monkeypatch)
    assert not w.exists()


def test_missing_extra_names_what_to_install(monkeypatch):
    from mempamal.backends import base

    monkeypatch.setitem(base._REGISTRY, "dask", "mempamal_no_such_module:X")
    with pytest.raises(BackendError, match=r"pip install mempamal\[dask\]"):
        base.get_backend("dask")


def test_nan_is_accepted_by_an_estimator_that_takes_it(tmp_path):
    from sklearn.ensemble import HistGradientBoostingClassifier

    X, y = iris()
    exp = Experiment(HistGradientBoostingClassifier(max_iter=5), cv=2, inner_cv=None)
    exp.compile(tmp_path / "w", _with_nan(X), y)  # no error
    assert (tmp_path / "w" / "workflow.json").exists()


def test_generator_of_splits_is_not_consumed_twice(tmp_path):
    X, y = iris()
    gen = StratifiedKFold(3).split(X, y)
    exp = Experiment(LogisticRegression(max_iter=200), cv=gen, inner_cv=None)
    wf = exp.compile(tmp_path / "w", X, y)
    assert wf.meta["n_outer"] == 3
