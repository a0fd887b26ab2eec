"""Nested cross-validation of an RBF SVC on the digits data set.

An *experiment file*: a plain Python file that defines ``experiment`` (a
``mempamal.Experiment``) and the data (``X``, ``y``, optionally ``groups``,
or a ``load_data()`` function). Run it with::

    mempamal run examples/digits_svc.py --workdir work/digits -j 2

About 30 s of fitting in all (24 candidates x 5 inner x 5 outer splits):
some 15-20 s on 2 cores.
"""

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from mempamal import Experiment

X, y = load_digits(return_X_y=True)

experiment = Experiment(
    make_pipeline(StandardScaler(), SVC(kernel="rbf")),
    param_grid={"svc__C": np.logspace(-2, 3, 6), "svc__gamma": np.logspace(-4, -1, 4)},
    cv=StratifiedKFold(5, shuffle=True, random_state=0),  # outer: evaluation
    inner_cv=StratifiedKFold(5),  # inner: model selection
    scoring="accuracy",
)
