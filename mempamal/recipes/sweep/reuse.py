"""Reuse the finished trials of earlier sweeps: more trials or repeats, no recomputation.

A trial's result is keyed by its content -- a hash of the function (its code
when stored by value, the file's sha256 for ``file.py:func``, the module and
name for ``module:func``), the candidate's parameters and the trial's seed --
never by its place in the earlier sweep. ``Sweep.compile(W2, reuse=W1)``
copies, at compile time, the result, the reported metrics and the trial
folder (checkpoints, artefacts) of every *done* trial of W1 whose key a trial
of W2 has; W2's trial tasks then skip those trials (a trial whose result file
exists is finished), and only new ones run. Failed and pruned trials are run
again: a failure may have been the machine's, and a pruned trial's fate
depended on the other trials of its sweep.

Model-based searches (``search="tpe"``...) ask their candidates from the
results of their own rounds: there is nothing fixed to match, so ``reuse=``
is refused for them.
"""

from __future__ import annotations

import json
import os
import shutil

from ...compiler import reuse_workdirs
from ...errors import ValidationError
from ...pickling import fingerprint
from ...workdir import Workdir, atomic_path, read_json
from ...workflow import Workflow
from .dag import trial_name


def function_key(spec: dict) -> str:
    """A hash naming the swept function (what its results depend on, but parameters)."""
    if spec["source"]["kind"] == "object":
        return fingerprint(("object", spec["func"]))
    return fingerprint(spec["source"])


def trial_key(func_key: str, params: dict, seed: int) -> str:
    """The content key of one trial."""
    return fingerprint((func_key, sorted(params.items()), int(seed)))


class TrialIndex:
    """The done trials of earlier sweep workdirs, by content key.

    Parameters
    ----------
    earlier : list of Workdir
        Sweep workdirs (see :func:`mempamal.compiler.reuse_workdirs`).
    func_key : str
        :func:`function_key` of the new sweep: every earlier workdir must
        have swept the same function.
    describe : str
        The new sweep's function, as the messages name it.
    """

    def __init__(self, earlier: list[Workdir], func_key: str, describe: str) -> None:
        from .context import load_context

        self.sources = [str(wd.root) for wd in earlier]
        self._found: dict[str, tuple[Workdir, str]] = {}
        for wd in earlier:
            wf = Workflow.load(wd.root)
            theirs = wf.meta.get("function_key")
            if theirs != func_key:
                raise ValidationError(
                    f"reuse={str(wd.root)!r} swept {wf.meta.get('function')!r}, not "
                    f"{describe!r} as it is now (a changed file or function is another "
                    "function): its trials cannot be reused"
                    + ("" if theirs else "; it was compiled by an earlier mempamal"))
            ctx = load_context(wd, wf)
            if ctx.adaptive is not None:
                raise ValidationError(f"reuse={str(wd.root)!r} is a {wf.meta['search']!r} "
                                      "search; only grid, random and explicit candidates "
                                      "can be reused")
            for entry in os.scandir(wd.path("out/trials")):
                if not entry.name.endswith(".json"):
                    continue
                try:
                    doc = read_json(entry.path)
                except (OSError, ValueError):
                    continue  # half a file a power loss left: not a finished trial
                if doc.get("state") != "done":
                    continue
                key = trial_key(func_key, ctx.params_of(doc["candidate"]), doc["seed"])
                self._found.setdefault(key, (wd, entry.name[:-len(".json")]))

    def __len__(self) -> int:
        return len(self._found)

    def write_reused(self, wd: Workdir, func_key: str, candidates: list[dict], repeats: int,
                     width: int) -> int:
        """Copy every matching trial into the new workdir ``wd``; how many were.

        Each copy says where it came from (``reused_from``) and takes the new
        sweep's trial and candidate numbers.
        """
        n = 0
        for c, params in enumerate(candidates):
            for seed in range(repeats):
                hit = self._found.get(trial_key(func_key, params, seed))
                if hit is None:
                    continue
                t = c * repeats + seed
                _copy_trial(hit[0], hit[1], wd, trial_name(t, width), t, c)
                n += 1
        return n


def as_sweep_workdirs(reuse) -> list[Workdir]:
    """``reuse=`` as a list of sweep workdirs."""
    return reuse_workdirs(reuse, "sweep", "a sweep")


def _copy_trial(src: Workdir, src_name: str, dst: Workdir, name: str, t: int, c: int) -> None:
    """The result (renumbered), the metrics file and the trial folder of one trial."""
    doc = read_json(src.path(Workdir.trial_output(src_name)))
    doc.update(trial=t, candidate=c, reused_from=str(src.root))
    metrics = src.trial_metrics_file(src_name)
    if metrics.exists():
        dst.trial_metrics_file(name).parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        shutil.copyfile(metrics, dst.trial_metrics_file(name))
    folder = src.trial_dir(src_name)
    if folder.is_dir():
        shutil.copytree(folder, dst.trial_dir(name), dirs_exist_ok=True)
    # last, and atomically: the result's existence says the trial is finished
    with atomic_path(dst.path(Workdir.trial_output(name))) as tmp:
        tmp.write_text(json.dumps(doc, allow_nan=True) + "\n", encoding="utf-8")
