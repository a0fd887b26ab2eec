"""What a sweep's task reads: the spec (digest checked) and the function."""

from __future__ import annotations

import json
from dataclasses import dataclass

from ...context import load_compiled_pickle
from ...errors import WorkdirError
from ...workdir import Workdir
from ...workflow import Workflow
from .dag import rounds, suggest_output, trial_name


@dataclass
class SweepContext:
    """Everything a task of one sweep workdir needs."""

    workdir: Workdir
    workflow: Workflow
    spec: dict
    _func: object = None

    @property
    def func(self):
        """The function, imported on first use (results readers never need it)."""
        if self._func is None:
            self._func = _load_function(self.workflow, self.spec)
        return self._func

    _rounds: dict = None  # round -> what its suggest task wrote (read once)

    @property
    def adaptive(self) -> dict | None:
        """The model-based search's settings, or None when candidates are static."""
        return self.spec.get("adaptive")

    @property
    def n_candidates(self) -> int:
        if self.adaptive is not None:
            return self.adaptive["n_iter"]
        return len(self.spec["candidates"])

    @property
    def n_trials(self) -> int:
        return self.n_candidates * self.spec["repeats"]

    def round_of(self, candidate: int) -> int | None:
        """The round that asked ``candidate`` (None for a static search)."""
        if self.adaptive is None:
            return None
        return candidate // self.adaptive["batch_size"]

    def suggested(self, round_index: int) -> dict:
        """What ``suggest-r{round_index}`` wrote (FileNotFoundError before it ran)."""
        if self._rounds is None:
            self._rounds = {}
        if round_index not in self._rounds:
            with open(self.workdir.path(suggest_output(round_index)), encoding="utf-8") as fh:
                self._rounds[round_index] = json.load(fh)
        return self._rounds[round_index]

    def params_of(self, candidate: int) -> dict:
        """The parameters of ``candidate`` (a model-based one: from its round's file)."""
        if self.adaptive is None:
            return self.spec["candidates"][candidate]
        r = self.round_of(candidate)
        return self.suggested(r)["trials"][candidate - r * self.adaptive["batch_size"]][
            "params"]

    def known_candidates(self) -> list[dict]:
        """Every candidate asked so far, in order (all of them for a static search)."""
        if self.adaptive is None:
            return list(self.spec["candidates"])
        out = []
        for r in range(len(rounds(self.n_candidates, self.adaptive["batch_size"]))):
            try:
                out += [t["params"] for t in self.suggested(r)["trials"]]
            except (OSError, ValueError):
                break  # not asked yet
        return out

    def name(self, trial: int) -> str:
        """The zero-padded name of ``trial``'s files."""
        return trial_name(trial, self.workflow.meta["trial_name_width"])

    def candidate_of(self, trial: int) -> tuple[int, int]:
        """``(candidate index, seed)`` of ``trial`` (candidate-major order)."""
        return divmod(trial, self.spec["repeats"])


def load_context(wd: Workdir, wf: Workflow) -> SweepContext:
    """Load (digest checked) the sweep's spec; the function is imported when needed."""
    spec = load_compiled_pickle(wf, "experiment.pkl")
    return SweepContext(wd, wf, spec, spec["func"])


def _load_function(wf: Workflow, spec: dict):
    from ...sweep import _sha256, load_function

    src = spec["source"]
    if src["kind"] == "file":
        try:
            actual = _sha256(src["path"])
        except OSError as exc:
            raise WorkdirError(f"the sweep's function file {src['path']!r} cannot be read "
                               f"here: {exc}") from None
        if actual != src["sha256"]:
            raise WorkdirError(
                f"{src['path']!r} changed since the sweep in {str(wf.workdir.root)!r} was "
                f"compiled (sha256 {actual[:12]}..., compiled {src['sha256'][:12]}...); "
                "its trials would mix two versions: compile it into a new workdir")
    return load_function(src)
