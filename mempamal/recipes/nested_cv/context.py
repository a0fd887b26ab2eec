"""What a nested-CV task reads: the experiment, the data, the splits."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ...context import check_digest, load_compiled_pickle
from ...splits import Splits
from ...workdir import Workdir
from ...workflow import Workflow


@dataclass
class NestedCVContext:
    """Everything a task of one nested-CV workdir needs."""

    workdir: Workdir
    workflow: Workflow
    spec: dict
    X: object
    y: object
    groups: object
    splits: Splits
    stored_params: dict = field(default_factory=dict)

    def fit_params(self, destination: str) -> dict:
        """Fit parameters routed to ``destination`` (``inner_fit``, ``outer_score``...)."""
        routed = self.spec.get("params", {}).get(destination)
        if not routed:
            return {}
        from .fit_params import resolve

        return resolve(routed, self.stored_params)


def load_context(wd: Workdir, wf: Workflow) -> NestedCVContext:
    """Load (digests checked) the experiment, memory-map the data, read the splits."""
    spec = load_compiled_pickle(wf, "experiment.pkl")
    check_digest(wf, "splits.npz")
    data = {}
    for name, fmt in wf.meta["data"].items():
        path = wd.data_file(name, fmt)
        # memory-mapped: every task of every worker shares the page cache
        data[name] = (np.load(path, mmap_mode="r") if fmt == "npy"
                      else load_compiled_pickle(wf, str(path.relative_to(wd.root))))
    with np.load(wd.splits_file) as npz:
        splits = Splits.from_arrays({k: npz[k] for k in npz.files})
    stored = {k[len("param-"):]: v for k, v in data.items() if k.startswith("param-")}
    return NestedCVContext(wd, wf, spec, data["X"], data.get("y"), data.get("groups"), splits,
                           stored)
