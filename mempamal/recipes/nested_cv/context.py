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

    _asked: dict = field(default_factory=dict)  # (o, round) -> what its suggest wrote

    @property
    def n_candidates(self) -> int:
        """Candidates of each outer split's search."""
        adaptive = self.spec.get("adaptive")
        return adaptive["n_iter"] if adaptive else len(self.spec["candidates"])

    def suggested(self, o: int, round_index: int) -> dict:
        """What ``suggest-o{o}-r{round_index}`` wrote (read once; final once written)."""
        key = (o, round_index)
        if key not in self._asked:
            import json

            from .dag import suggest_output

            with open(self.workdir.path(suggest_output(o, round_index)),
                      encoding="utf-8") as fh:
                self._asked[key] = json.load(fh)
        return self._asked[key]

    def candidate(self, o, c: int) -> dict:
        """Candidate ``c`` of outer split ``o``'s search."""
        adaptive = self.spec.get("adaptive")
        if not adaptive:
            return self.spec["candidates"][c]
        r, k = divmod(c, adaptive["batch_size"])
        return self.suggested(o, r)["trials"][k]["params"]

    def candidates_of(self, o) -> list[dict]:
        """Every candidate of outer split ``o``'s search (all asked by now)."""
        if not self.spec.get("adaptive"):
            return self.spec["candidates"]
        return [self.candidate(o, c) for c in range(self.n_candidates)]

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
