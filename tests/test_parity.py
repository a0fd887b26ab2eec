"""Parity with scikit-learn on what real users write.

Each case is an everyday nested-CV set-up. The oracle is
``cross_validate(<search>, ..., return_estimator=True)`` on freshly built,
identical splitters; compared for every outer split: the best params, every
outer ``test_*`` / ``train_*`` score, and the inner ``split*_test_*``,
``mean_test_*``, ``std_test_*`` and ``rank_test_*`` columns.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import sklearn
from scipy import sparse
from scipy.stats import loguniform, randint
from sklearn.compose import ColumnTransformer, TransformedTargetRegressor
from sklearn.datasets import load_diabetes, load_digits, load_iris, make_classification
from sklearn.decomposition import PCA
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import fbeta_score, make_scorer
from sklearn.metrics.pairwise import rbf_kernel
from sklearn.model_selection import (
    GridSearchCV,
    GroupKFold,
    KFold,
    LeaveOneGroupOut,
    RandomizedSearchCV,
    RepeatedStratifiedKFold,
    ShuffleSplit,
    StratifiedKFold,
    TimeSeriesSplit,
    cross_validate,
)
from sklearn.neighbors import KNeighborsRegressor
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from sklearn.svm import SVC, LinearSVC

from mempamal import Experiment, ValidationError, load_results


# -- data ----------------------------------------------------------------------
def iris():
    return load_iris(return_X_y=True)


def digits(n=300):
    X, y = load_digits(return_X_y=True)
    return X[:n], y[:n]


def binary(n=200, seed=0):
    return make_classification(n, 8, n_informative=4, random_state=seed)


def diabetes(n=200):
    X, y = load_diabetes(return_X_y=True)
    return X[:n], y[:n]


def with_nan(X, every=7):
    X = np.array(X, dtype=float)
    X[::every, 1] = np.nan
    return X


def frame():
    rng = np.random.RandomState(0)
    n = 160
    df = pd.DataFrame({"age": rng.normal(40, 10, n), "income": rng.lognormal(3, 1, n),
                       "city": rng.choice(["paris", "lyon", "nice"], n)})
    y = np.where(df["age"] + 10 * (df["city"] == "lyon") + rng.normal(0, 5, n) > 45,
                 "yes", "no")
    return df, y


def frame_with_nan():
    df, y = frame()
    df.loc[df.index[::9], "income"] = np.nan
    return df, y


def precomputed():
    X, y = iris()
    return rbf_kernel(X, gamma=0.5), y


def weights(n, seed=1):
    return np.random.RandomState(seed).uniform(0.2, 3.0, n)


# -- scorers and refit callables -----------------------------------------------
def f2_scorer():
    return make_scorer(fbeta_score, beta=2)


def neg_abs_error(estimator, X, y):
    return -float(np.mean(np.abs(estimator.predict(X) - y)))


def refit_fewest_components(cv_results):
    """scikit-learn's example "Balance model complexity and cross-validated score"."""
    std = cv_results["std_test_score"]
    best = np.argmax(cv_results["mean_test_score"])
    threshold = cv_results["mean_test_score"][best] - std[best]
    ok = np.flatnonzero(cv_results["mean_test_score"] >= threshold)
    n_comp = cv_results["param_pca__n_components"]
    return int(ok[np.argmin(np.asarray(n_comp)[ok])])


def column_transformer_pipeline():
    pre = ColumnTransformer([("num", StandardScaler(), ["age", "income"]),
                             ("cat", OneHotEncoder(handle_unknown="ignore"), ["city"])])
    return Pipeline([("pre", pre), ("clf", LogisticRegression(max_iter=500))])


def column_transformer_imputer():
    num = make_pipeline(SimpleImputer(), StandardScaler())
    pre = ColumnTransformer([("num", num, ["age", "income"]),
                             ("cat", OneHotEncoder(handle_unknown="ignore"), ["city"])])
    return Pipeline([("pre", pre), ("clf", LogisticRegression(max_iter=500))])


# -- the cases -----------------------------------------------------------------
def case(data, est, space, outer, inner, scoring=None, refit=True, **kw):
    return dict(data=data, est=est, space=space, outer=outer, inner=inner,
                scoring=scoring, refit=refit, **kw)


def grid(**g):
    return {"param_grid": g}


def strat(k, seed=None):
    return lambda: StratifiedKFold(k, shuffle=seed is not None, random_state=seed)


CASES = {
    "pipeline-svc-iris": case(iris, lambda: make_pipeline(StandardScaler(), SVC()),
                              grid(svc__C=[0.1, 1, 10], svc__gamma=[0.01, 0.1]),
                              strat(4, 0), strat(3), "accuracy"),
    "digits-multiclass": case(digits, lambda: make_pipeline(StandardScaler(), SVC()),
                              grid(svc__C=[1, 10], svc__gamma=[1e-3, 1e-2]),
                              strat(3, 1), strat(3), "f1_macro"),
    "multimetric-dict": case(binary, lambda: LogisticRegression(max_iter=500),
                             grid(C=[0.01, 0.1, 1, 10]), strat(3, 2), lambda: 3,
                             {"acc": "accuracy", "bal": "balanced_accuracy", "auc": "roc_auc"},
                             "bal"),
    "multimetric-list": case(iris, lambda: LogisticRegression(max_iter=500),
                             grid(C=[0.1, 1, 10]), strat(3, 3), strat(3),
                             ["accuracy", "f1_macro"], "f1_macro"),
    "make-scorer-fbeta": case(binary, lambda: SVC(), grid(C=[0.1, 1, 10]), strat(3, 4),
                              strat(3), f2_scorer()),
    "callable-scorer": case(diabetes, lambda: Ridge(), grid(alpha=[0.1, 1.0, 10.0]),
                            lambda: KFold(4, shuffle=True, random_state=0), lambda: 3,
                            neg_abs_error),
    "refit-callable-param-columns": case(
        digits, lambda: Pipeline([("pca", PCA(random_state=0)),
                                  ("clf", LogisticRegression(max_iter=300))]),
        grid(pca__n_components=[5, 10, 20]), strat(3, 5), strat(3), None,
        refit_fewest_components),
    "groups-groupkfold": case(lambda: (*iris(), np.repeat(np.arange(15), 10)),
                              lambda: SVC(), grid(C=[0.1, 1, 10]), lambda: GroupKFold(3),
                              lambda: GroupKFold(3), "accuracy"),
    "leave-one-group-out": case(lambda: (*binary(120), np.repeat(np.arange(4), 30)),
                                lambda: LogisticRegression(max_iter=500), grid(C=[0.1, 1]),
                                lambda: LeaveOneGroupOut(), lambda: GroupKFold(3)),
    "timeseries-ridge": case(diabetes, lambda: Ridge(), grid(alpha=[0.01, 1.0, 100.0]),
                             lambda: TimeSeriesSplit(4), lambda: TimeSeriesSplit(3), "r2"),
    "regression-multimetric": case(diabetes, lambda: Ridge(), grid(alpha=[0.1, 10.0]),
                                   lambda: KFold(3), lambda: KFold(3),
                                   {"r2": "r2", "mse": "neg_mean_squared_error"}, "mse"),
    "random-search-scipy": case(
        iris, lambda: SVC(),
        {"param_distributions": {"C": loguniform(1e-2, 1e2), "gamma": loguniform(1e-3, 1)},
         "n_iter": 6, "random_state": 0}, strat(3, 6), strat(3), "accuracy"),
    "random-search-randint": case(
        binary, lambda: HistGradientBoostingClassifier(max_iter=10, random_state=0),
        {"param_distributions": {"max_depth": randint(2, 6), "learning_rate": [0.05, 0.2]},
         "n_iter": 4, "random_state": 3}, strat(3, 7), strat(2)),
    "explicit-candidates": case(iris, lambda: SVC(),
                                {"candidates": [{"C": 1.0}, {"C": 10.0, "kernel": "linear"},
                                                {"C": 0.5, "gamma": 0.1}]},
                                strat(3, 8), strat(3)),
    "estimator-valued-grid": case(
        iris, lambda: Pipeline([("scale", StandardScaler()), ("clf", SVC())]),
        grid(clf=[SVC(), LogisticRegression(max_iter=500)], scale=[StandardScaler(),
                                                                    "passthrough"]),
        strat(3, 9), strat(3)),
    "dataframe-columntransformer-strings": case(
        frame, column_transformer_pipeline, grid(clf__C=[0.1, 1.0, 10.0]), strat(4, 10),
        strat(3), "accuracy"),
    "sparse-x": case(lambda: (sparse.csr_matrix(digits()[0]), digits()[1]),
                     lambda: LinearSVC(dual=True, max_iter=5000), grid(C=[0.001, 0.01]),
                     strat(3, 11), strat(2)),
    "precomputed-kernel": case(precomputed, lambda: SVC(kernel="precomputed"),
                               grid(C=[0.1, 1, 10]), strat(3, 12), strat(3)),
    "nan-simpleimputer-numpy": case(lambda: (with_nan(iris()[0]), iris()[1]),
                                    lambda: make_pipeline(SimpleImputer(), SVC()),
                                    grid(svc__C=[0.1, 1, 10]), strat(3, 13), strat(3)),
    "nan-dataframe-imputer": case(frame_with_nan, column_transformer_imputer,
                                  grid(clf__C=[0.1, 1.0]), strat(3, 14), strat(3)),
    "nan-native-hgb": case(lambda: (with_nan(binary()[0], 5), binary()[1]),
                           lambda: HistGradientBoostingClassifier(max_iter=10, random_state=0),
                           grid(max_depth=[2, 3]), strat(3, 15), strat(2)),
    "randomstate-inner-splitter": case(
        iris, lambda: SVC(), grid(C=[0.1, 1, 10]), strat(3, 16),
        lambda: StratifiedKFold(3, shuffle=True, random_state=np.random.RandomState(0))),
    "randomstate-outer-splitter": case(
        iris, lambda: SVC(), grid(C=[0.1, 1, 10]),
        lambda: KFold(4, shuffle=True, random_state=np.random.RandomState(1)),
        lambda: ShuffleSplit(3, test_size=0.3, random_state=np.random.RandomState(2))),
    "repeated-stratified-inner": case(
        binary, lambda: LogisticRegression(max_iter=500), grid(C=[0.1, 1.0]), strat(3, 17),
        lambda: RepeatedStratifiedKFold(n_splits=2, n_repeats=2, random_state=0)),
    "sample-weight": case(iris, lambda: LogisticRegression(max_iter=500),
                          grid(C=[0.01, 0.1, 1.0]), strat(3, 18), strat(3), "accuracy",
                          params=lambda n: {"sample_weight": weights(n)}),
    "sample-weight-pipeline-step": case(
        iris, lambda: make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)),
        grid(logisticregression__C=[0.01, 1.0]), strat(3, 19), strat(3),
        params=lambda n: {"logisticregression__sample_weight": weights(n, 2)}),
    "return-train-score": case(iris, lambda: SVC(), grid(C=[0.1, 10]), strat(3, 20),
                               strat(3), ["accuracy", "f1_macro"], "accuracy",
                               return_train_score=True),
    "transformed-target": case(
        diabetes, lambda: TransformedTargetRegressor(KNeighborsRegressor(), func=np.log1p,
                                                     inverse_func=np.expm1),
        grid(regressor__n_neighbors=[3, 7, 15]), lambda: KFold(3, shuffle=True,
                                                               random_state=3),
        lambda: KFold(3), "neg_mean_absolute_error"),
    "binary-roc-auc-decision-function": case(binary, lambda: SVC(), grid(C=[0.1, 1, 10]),
                                             strat(4, 21), strat(3), "roc_auc"),
    "plain-cross-validate": case(iris, lambda: SVC(C=3.0), {}, strat(5, 22), lambda: None,
                                 ["accuracy", "f1_macro"], "accuracy"),
}


# -- running both sides --------------------------------------------------------
# splitters hold state (a RandomState instance moves on): each side builds its
# own from the case's factories; scorers and refit callables are stateless
def _search(c, est):
    space = dict(c["space"])
    common = dict(scoring=c["scoring"], refit=c["refit"], cv=c["inner"](),
                  return_train_score=c.get("return_train_score", False))
    if "param_distributions" in space:
        return RandomizedSearchCV(est, **space, **common)
    if "candidates" in space:
        grid_ = [{k: [v] for k, v in cand.items()} for cand in space["candidates"]]
        return GridSearchCV(est, grid_, **common)
    return GridSearchCV(est, space["param_grid"], **common)


def run_case(name, tmp_path):
    c = CASES[name]
    data = c["data"]()
    X, y, groups = (*data, None)[:3]
    n = X.shape[0]
    params = c["params"](n) if "params" in c else None
    inner = c["inner"]()
    exp = Experiment(c["est"](), **c["space"], cv=c["outer"](), inner_cv=inner,
                     scoring=c["scoring"], refit=c["refit"],
                     return_train_score=c.get("return_train_score", False))
    wf = exp.compile(tmp_path / "w", X, y, groups, params=params, chunk_size=2)
    wf.run("local", n_jobs=2, progress=False)
    res = load_results(tmp_path / "w")
    all_params = dict(params or {})
    if groups is not None:
        all_params["groups"] = groups
    target = c["est"]() if inner is None else _search(c, c["est"]())
    oracle = cross_validate(target, X, y, groups=groups, cv=c["outer"](),
                            scoring=c["scoring"], return_estimator=True,
                            return_train_score=c.get("return_train_score", False),
                            params=all_params or None)
    return res, oracle, inner is not None


def _comparable(params: dict) -> dict:
    """Estimator-valued params compare by their repr (equality is identity)."""
    return {k: repr(v) if hasattr(v, "get_params") else v for k, v in params.items()}


def check_parity(res, oracle, nested):
    if nested:
        assert [_comparable(p) for p in res.best_params] == \
            [_comparable(est.best_params_) for est in oracle["estimator"]]
    keys = [k for k in oracle if k.startswith(("test_", "train_"))]
    assert keys
    for key in keys:
        np.testing.assert_allclose(res.outer_scores[key].to_numpy(dtype=float), oracle[key],
                                   rtol=0, atol=1e-12, err_msg=key)
    if not nested:
        return
    for o, est in enumerate(oracle["estimator"]):
        ours = res.cv_results[res.cv_results.outer_split == o]
        compared = [k for k in est.cv_results_ if k.startswith(
            ("mean_test_", "std_test_", "rank_test_", "split")) and "time" not in k]
        assert compared
        for key in compared:
            np.testing.assert_allclose(ours[key].to_numpy(dtype=float),
                                       np.asarray(est.cv_results_[key], dtype=float),
                                       rtol=0, atol=1e-12, err_msg=f"outer {o} {key}")


def test_the_parity_suite_is_large():
    assert len(CASES) >= 25


@pytest.mark.parametrize("name", sorted(CASES))
def test_parity_with_scikit_learn(name, tmp_path):
    check_parity(*run_case(name, tmp_path))


# -- the points of issue 11, each failing before its fix -------------------------
def test_refit_callable_gets_param_columns_and_params(tmp_path):
    seen = {}

    def refit(cv_results):
        seen.update(cv_results)
        return int(np.argmax(cv_results["mean_test_score"]))

    X, y = iris()
    exp = Experiment(SVC(), param_grid={"C": [0.1, 1.0]}, cv=2, inner_cv=2, refit=refit)
    oracle = GridSearchCV(SVC(), {"C": [0.1, 1.0]}, cv=2).fit(X[75:], y[75:])
    # the callable runs inside the select task's process; run it here instead
    from mempamal.recipes.nested_cv.tasks import sklearn_cv_results

    full = sklearn_cv_results(exp.candidates, {k: oracle.cv_results_[k] for k in
                                               oracle.cv_results_ if not
                                               k.startswith("param")})
    assert list(full) == list(oracle.cv_results_)
    assert isinstance(full["param_C"], np.ma.MaskedArray)
    np.testing.assert_array_equal(full["param_C"], oracle.cv_results_["param_C"])
    assert full["params"] == oracle.cv_results_["params"]
    wf = exp.compile(tmp_path / "w", X, y)
    wf.run("local", n_jobs=1, progress=False)
    assert load_results(tmp_path / "w").best_index


def test_nan_is_refused_only_when_the_estimator_fails_on_it(tmp_path):
    X, y = iris()
    Xn = with_nan(X)
    with pytest.raises(ValidationError, match=r"X holds 22 NaN value\(s\) \(first at row 0, "
                                              r"column 1\).*Input X contains NaN"):
        Experiment(SVC(), param_grid={"C": [1.0]}).compile(tmp_path / "a", Xn, y)
    assert not (tmp_path / "a").exists()
    Experiment(make_pipeline(SimpleImputer(), SVC()), param_grid={"svc__C": [1.0]},
               cv=2, inner_cv=2).compile(tmp_path / "b", Xn, y)  # accepted, as sklearn does
    df = pd.DataFrame(Xn, columns=list("abcd"))
    with pytest.raises(ValidationError, match="NaN"):  # a DataFrame is checked too
        Experiment(SVC(), param_grid={"C": [1.0]}).compile(tmp_path / "c", df, y)


def test_randomstate_splitter_is_not_consumed_by_compile(tmp_path):
    X, y = iris()
    rs = np.random.RandomState(0)
    exp = Experiment(SVC(), param_grid={"C": [1.0, 2.0]}, cv=3,
                     inner_cv=StratifiedKFold(3, shuffle=True, random_state=rs))
    before = rs.get_state()[1].copy()
    wf1 = exp.compile(tmp_path / "w", X, y)
    wf2 = exp.compile(tmp_path / "w", X, y)  # same splits: the same experiment resumes
    assert wf1.meta["fingerprint"] == wf2.meta["fingerprint"]
    np.testing.assert_array_equal(rs.get_state()[1], before)


def test_fit_params_with_metadata_routing(tmp_path):
    X, y = iris()
    w = weights(len(y), 3)
    with sklearn.config_context(enable_metadata_routing=True):
        est = LogisticRegression(max_iter=500).set_fit_request(sample_weight=True)
        scorer = make_scorer(fbeta_score, beta=1, average="macro").set_score_request(
            sample_weight=True)
        exp = Experiment(est, param_grid={"C": [0.01, 0.1, 1.0]}, cv=strat(3, 4)(),
                         inner_cv=strat(3)(), scoring=scorer)
        exp.compile(tmp_path / "w", X, y, params={"sample_weight": w}).run(
            "local", n_jobs=2, progress=False)
        search = GridSearchCV(LogisticRegression(max_iter=500).set_fit_request(
            sample_weight=True), {"C": [0.01, 0.1, 1.0]}, cv=strat(3)(), scoring=scorer)
        oracle = cross_validate(search, X, y, cv=strat(3, 4)(), scoring=scorer,
                                params={"sample_weight": w}, return_estimator=True)
    res = load_results(tmp_path / "w")
    check_parity(res, oracle, True)
    # the weights are data: memory-mapped from the workdir, not in experiment.pkl
    assert (tmp_path / "w" / "data" / "param-sample_weight.npy").exists()


def test_fit_params_change_the_result(tmp_path):
    """The weights reach the fits: without them the scores differ (the test can fail)."""
    res, oracle, nested = run_case("sample-weight", tmp_path)
    check_parity(res, oracle, nested)
    unweighted = cross_validate(_search(CASES["sample-weight"],
                                        LogisticRegression(max_iter=500)),
                                *iris(), cv=strat(3, 18)(), scoring="accuracy",
                                return_estimator=True)
    ours = res.cv_results[res.cv_results.outer_split == 0]["mean_test_score"].to_numpy()
    assert not np.allclose(ours, unweighted["estimator"][0].cv_results_["mean_test_score"])


@pytest.mark.parametrize("params, match", [
    ({"sample_weight": np.ones(10)}, "params['sample_weight'] has 10 values but X has 150"),
    ({"sample_weights": np.ones(150)}, "does not accept 'sample_weights'"),
    ({"groups": np.ones(150)}, "give groups to compile"),
    ([1, 2], "params must be a dict"),
])
def test_bad_fit_params_are_refused(tmp_path, params, match):
    X, y = iris()
    with pytest.raises(ValidationError, match=match.replace("[", r"\[").replace("]", r"\]")):
        Experiment(LogisticRegression(), param_grid={"C": [1.0]}).compile(
            tmp_path / "w", X, y, params=params)
    assert not (tmp_path / "w").exists()


def test_bad_pipeline_fit_params_are_refused(tmp_path):
    X, y = iris()
    pipe = make_pipeline(StandardScaler(), LogisticRegression())
    for params, match in (({"sample_weight": np.ones(150)}, "STEP__sample_weight"),
                          ({"svc__sample_weight": np.ones(150)}, "no step 'svc'")):
        with pytest.raises(ValidationError, match=match):
            Experiment(pipe, param_grid={"logisticregression__C": [1.0]}).compile(
                tmp_path / "w", X, y, params=params)
