"""What a sweep's task reads: the spec (digest checked) and the function."""

from __future__ import annotations

from dataclasses import dataclass

from ...context import load_compiled_pickle
from ...errors import WorkdirError
from ...workdir import Workdir
from ...workflow import Workflow
from .dag import trial_name


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

    @property
    def n_trials(self) -> int:
        return len(self.spec["candidates"]) * self.spec["repeats"]

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
