"""The Python quick start of README.rst, runnable: python examples/quickstart.py."""

from sklearn.datasets import load_iris
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from mempamal import Experiment, load_results

X, y = load_iris(return_X_y=True)
exp = Experiment(
    make_pipeline(StandardScaler(), SVC()),
    param_grid={"svc__C": [0.1, 1, 10], "svc__gamma": [1e-3, 1e-2]},
    cv=StratifiedKFold(5, shuffle=True, random_state=0),  # outer: evaluation
    inner_cv=StratifiedKFold(3),  # inner: model selection
    scoring="accuracy",
)
wf = exp.compile("work/quickstart", X, y)  # writes the workdir, runs nothing
wf.run(backend="local", n_jobs=2)  # executes the DAG; a second call resumes
res = load_results("work/quickstart")
print(res.best_params)  # list, one dict per outer split
print(res.outer_scores)  # one row per outer split
print(res.summary)  # mean / std of each outer test score
