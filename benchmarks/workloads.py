"""The benchmark workloads, defined exactly (fixed seeds)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.datasets import load_digits, make_classification
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC


@dataclass
class Workload:
    """A nested cross-validation to time."""

    name: str
    description: str
    estimator: object
    param_grid: dict
    cv: object
    inner_cv: object
    scoring: str
    data: tuple


def w1() -> Workload:
    """W1: digits, StandardScaler+RBF SVC, 24 candidates, 5x5 nested CV."""
    X, y = load_digits(return_X_y=True)
    return Workload(
        "W1", "digits, scaler+SVC(rbf), 6 C x 4 gamma, inner SKF(5), outer SKF(5, shuffle)",
        make_pipeline(StandardScaler(), SVC(kernel="rbf")),
        {"svc__C": np.logspace(-2, 3, 6), "svc__gamma": np.logspace(-4, -1, 4)},
        StratifiedKFold(5, shuffle=True, random_state=0), StratifiedKFold(5), "accuracy",
        (X, y))


def w2() -> Workload:
    """W2: tiny tasks: LogisticRegression on 500x20, 100 values of C, 5x5."""
    X, y = make_classification(500, 20, random_state=0)
    return Workload(
        "W2", "make_classification(500, 20), LogisticRegression, 100 C, 5x5 nested",
        LogisticRegression(max_iter=200), {"C": np.logspace(-4, 4, 100)},
        StratifiedKFold(5, shuffle=True, random_state=0), StratifiedKFold(5), "accuracy",
        (X, y))


def w3() -> Workload:
    """W3: about a minute or two of work: random forests on 5000x100."""
    X, y = make_classification(5000, 100, n_informative=20, random_state=0)
    return Workload(
        "W3", "make_classification(5000, 100), RandomForest(50 trees), 2 depth x 2 "
              "max_features, 3x3 nested",
        RandomForestClassifier(n_estimators=50, random_state=0),
        {"max_depth": [8, None], "max_features": ["sqrt", 0.3]},
        StratifiedKFold(3, shuffle=True, random_state=0), StratifiedKFold(3), "accuracy",
        (X, y))


WORKLOADS = {"W1": w1, "W2": w2, "W3": w3}
