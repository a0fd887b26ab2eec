"""A training session as a sweep: epochs, live metrics, checkpoints, resume.

Written the way a deep-learning loop is written, with scikit-learn's
MLPClassifier trained one epoch at a time (``partial_fit``) on digits, so that
it needs nothing more than scikit-learn. Run it from Python::

    python examples/sweep_mlp.py [WORKDIR]

or from the command line (this file defines ``sweep``)::

    mempamal run examples/sweep_mlp.py -w work/sweep_mlp -j 2

Kill it (Ctrl-C, ``kill -9``, a SLURM time limit) and run the same command
again: finished trials are not run again, and a trial that was cut short
starts its attempt 2 from the last epoch it saved in ``trial.dir``.
"""

import pickle
import sys

import numpy as np
from sklearn.datasets import load_digits
from sklearn.metrics import log_loss
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier
from sklearn.preprocessing import StandardScaler

from mempamal import Sweep, load_results

N_EPOCHS = 30


def load_data(seed):
    X, y = load_digits(return_X_y=True)
    X_train, X_val, y_train, y_val = train_test_split(X, y, test_size=0.25,
                                                      random_state=seed, stratify=y)
    scaler = StandardScaler().fit(X_train)
    return scaler.transform(X_train), scaler.transform(X_val), y_train, y_val


def train(hidden, lr, alpha, trial):
    """One training session: the trial context gives its seed, folder and reports."""
    X_train, X_val, y_train, y_val = load_data(trial.seed)
    classes = np.unique(y_train)
    checkpoint = trial.dir / "checkpoint.pkl"
    if checkpoint.exists():  # attempt 2 after a kill: continue where it stopped
        with open(checkpoint, "rb") as fh:
            model, first_epoch = pickle.load(fh)
        print(f"attempt {trial.attempt}: resuming at epoch {first_epoch}")
    else:
        model = MLPClassifier(hidden_layer_sizes=(hidden,), learning_rate_init=lr,
                              alpha=alpha, random_state=trial.seed)
        first_epoch = 0
    rng = np.random.default_rng(trial.seed)
    for epoch in range(first_epoch, N_EPOCHS):
        for batch in np.array_split(rng.permutation(len(y_train)), 10):
            model.partial_fit(X_train[batch], y_train[batch], classes=classes)
        train_loss = log_loss(y_train, model.predict_proba(X_train), labels=classes)
        val_loss = log_loss(y_val, model.predict_proba(X_val), labels=classes)
        trial.report(epoch, train_loss=train_loss, val_loss=val_loss)  # readable at once
        tmp = checkpoint.with_suffix(".tmp")
        with open(tmp, "wb") as fh:  # written then renamed: a kill never leaves half
            pickle.dump((model, epoch + 1), fh)
        tmp.replace(checkpoint)
        if trial.should_stop():  # a stopping rule (adaptive searches) may end it early
            break
    return {"val_loss": val_loss, "train_loss": train_loss,
            "val_accuracy": model.score(X_val, y_val)}


sweep = Sweep(
    train,
    param_grid={"hidden": [32, 128], "lr": [1e-3, 1e-2], "alpha": [1e-4, 1e-2]},
    repeats=2,  # each candidate with trial.seed 0 and 1
    metric="val_loss", mode="min",
)
compile_options = {"resources": {"cpus": 1, "mem_mb": 1000, "time_min": 10}}

if __name__ == "__main__":
    workdir = sys.argv[1] if len(sys.argv) > 1 else "work/sweep_mlp"
    wf = sweep.compile(workdir, **compile_options)
    wf.run(backend="local", n_jobs=2)  # "slurm", "soma", "dask" as well
    res = load_results(workdir)
    print(res.to_text())
    print(res.history.tail())  # trial, step, train_loss, val_loss
