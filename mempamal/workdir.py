"""The on-disk layout of a working directory, and atomic writes.

This module is the only place that knows file names. Everything else asks a
:class:`Workdir` for a path. Paths stored in ``workflow.json`` are relative to
the workdir, so a workdir can be copied to another machine and run there.

Layout::

    WORKDIR/
      workflow.json      tasks, deps, outputs, fingerprint, versions
      experiment.pkl     estimator, candidates, scorers (joblib)
      data/              X.npy, y.npy, groups.npy (memory-mapped by tasks)
      splits.npz         outer and inner indices
      out/fit/ out/select/ out/final/
      logs/              TASK.log (stdout/stderr) and TASK.meta.json
      slurm/ soma/ ...   what a backend wrote
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
from pathlib import Path

TMP_PREFIX = ".tmp-"
WORKFLOW_FILE = "workflow.json"
EXPERIMENT_FILE = "experiment.pkl"
SPLITS_FILE = "splits.npz"
LOCK_FILE = ".mempamal.lock"
#: folders of task outputs, by task kind
OUTPUT_DIRS = ("out/fit", "out/select", "out/final")
#: a sweep's trial results, their own folders, their reported metrics
TRIAL_DIRS = ("out/trials", "trials", "logs/trials")


class Workdir:
    """Names every file of a working directory.

    Parameters
    ----------
    root : str or path-like
        The working directory.
    """

    def __init__(self, root) -> None:
        self.root = Path(root).absolute()

    def __repr__(self) -> str:
        return f"Workdir({str(self.root)!r})"

    # -- fixed files ---------------------------------------------------------
    @property
    def workflow_file(self) -> Path:
        return self.root / WORKFLOW_FILE

    @property
    def experiment_file(self) -> Path:
        return self.root / EXPERIMENT_FILE

    @property
    def splits_file(self) -> Path:
        return self.root / SPLITS_FILE

    @property
    def lock_file(self) -> Path:
        return self.root / LOCK_FILE

    @property
    def last_backend_file(self) -> Path:
        """Which backend ran or was submitted to last (``status`` asks it)."""
        return self.root / "last_backend.json"

    @property
    def run_record_file(self) -> Path:
        """The last run's record: backend, start, end, state counts (``ls`` reads it)."""
        return self.root / "run.json"

    def notify_file(self, backend: str) -> Path:
        """The notification URLs a backend's jobs read (private: URLs may hold tokens)."""
        return self.backend_dir(backend) / "notify.json"

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def logs_dir(self) -> Path:
        return self.root / "logs"

    def data_file(self, name: str, suffix: str) -> Path:
        """``data/NAME.SUFFIX`` (``suffix`` is ``npy`` or ``pkl``)."""
        return self.data_dir / f"{name}.{suffix}"

    def backend_dir(self, backend: str) -> Path:
        """Where backend ``backend`` writes its artefacts."""
        return self.root / backend

    # -- task files ----------------------------------------------------------
    @staticmethod
    def fit_output(o, i: int | None, c: int) -> str:
        """Relative output path of a fit task (``o="final"``: the final model's search)."""
        inner = "" if i is None else f"-i{i}"
        split = "final" if o == "final" else f"o{o}"
        return f"out/fit/{split}{inner}-c{c}.json"

    @staticmethod
    def select_output(o) -> str:
        return "out/select/final.json" if o == "final" else f"out/select/o{o}.json"

    @staticmethod
    def estimator_output(o) -> str:
        split = "final" if o == "final" else f"o{o}"
        return f"out/select/{split}-estimator.pkl"

    #: the fit the compile timed, kept for its task (see nested_cv.compile.write_timed_fit)
    TIMED_FIT = "timed_fit.json"
    FINAL_SUMMARY = "out/final/summary.json"
    FINAL_CV_RESULTS = "out/final/cv_results.csv"
    FINAL_OUTER_SCORES = "out/final/outer_scores.csv"

    # -- a sweep's files -------------------------------------------------------
    FINAL_TRIALS = "out/final/trials.csv"
    #: written by the trial that found the sweep cannot go on; later tasks refuse to start
    SWEEP_STOP = "out/sweep_stop.json"

    @staticmethod
    def trial_output(name: str) -> str:
        """``out/trials/NAME.json``: a finished trial's result (``name``: zero-padded id)."""
        return f"out/trials/{name}.json"

    def trial_dir(self, name: str) -> Path:
        """``trials/NAME/``: the trial's own folder, kept across attempts."""
        return self.root / "trials" / name

    def trial_metrics_file(self, name: str) -> Path:
        """``logs/trials/NAME.jsonl``: what the trial reported, one JSON line per report."""
        return self.logs_dir / "trials" / f"{name}.jsonl"

    def trial_journal(self, task_id: str) -> Path:
        """``logs/TASK.trials.jsonl``: one line per trial a task started (attempts)."""
        return self.logs_dir / f"{task_id}.trials.jsonl"

    def path(self, relative: str) -> Path:
        """Absolute path of a path relative to the workdir."""
        return self.root / relative

    def log_file(self, task_id: str) -> Path:
        return self.logs_dir / f"{task_id}.log"

    def meta_file(self, task_id: str) -> Path:
        return self.root / self.meta_relative(task_id)

    @staticmethod
    def meta_relative(task_id: str) -> str:
        """``logs/TASK.meta.json``, relative to the workdir."""
        return f"logs/{task_id}.meta.json"

    # -- state ---------------------------------------------------------------
    def existing(self, relatives) -> set[str]:
        """Which of ``relatives`` exist, listing each directory only once.

        One ``scandir`` per directory instead of one ``stat`` per file keeps
        ``status`` fast on 100,000 tasks and on network file systems.
        """
        by_dir: dict[str, list[str]] = {}
        for rel in relatives:
            head, _, tail = rel.rpartition("/")
            by_dir.setdefault(head, []).append(tail)
        found = set()
        for head, names in by_dir.items():
            try:
                with os.scandir(self.root / head) as it:
                    present = {e.name for e in it}
            except FileNotFoundError:
                continue
            found.update(f"{head}/{n}" if head else n for n in names if n in present)
        return found

    def with_meta(self, task_ids) -> set[str]:
        """Which of ``task_ids`` have a meta record (ever started), from one listing of logs/."""
        try:
            names = set(os.listdir(self.logs_dir))
        except FileNotFoundError:
            return set()
        return {t for t in task_ids if f"{t}.meta.json" in names}

    def listing(self, heads) -> set[str]:
        """Relative paths of every entry of the directories ``heads`` (relative; missing: none)."""
        found: set[str] = set()
        for head in heads:
            try:
                names = os.listdir(self.root / head)
            except (FileNotFoundError, NotADirectoryError):
                continue
            if head:
                found.update(f"{head}/{n}" for n in names)
            else:
                found.update(names)
        return found

    def create(self) -> None:
        """Create the directory tree, without group/world write permission."""
        from .errors import WorkdirError

        old = os.umask(0o022)
        try:
            for d in (self.root, self.data_dir, self.logs_dir):
                d.mkdir(parents=True, exist_ok=True)
            for sub in OUTPUT_DIRS:
                (self.root / sub).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise WorkdirError(f"cannot create workdir {str(self.root)!r}: {exc}") from exc
        finally:
            os.umask(old)

    def remove_temporaries(self) -> int:
        """Delete temporary files a killed task left; return how many."""
        n = 0
        for d in (*(self.root / sub for sub in OUTPUT_DIRS + TRIAL_DIRS), self.data_dir,
                  self.logs_dir, self.root):
            if not d.is_dir():
                continue
            for entry in os.scandir(d):
                if entry.name.startswith(TMP_PREFIX):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(entry.path)
                        n += 1
        return n


# -- atomic writes -----------------------------------------------------------
@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path next to ``path``; rename it into place on success.

    The temporary file lives in the same directory, so ``os.replace`` is atomic
    (also on NFS and Lustre): readers see either no file or the whole file,
    and a killed writer leaves only a ``.tmp-*`` name nobody counts as done.
    """
    path = Path(path)
    path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX + path.name + ".", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def replace_text(path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary name, then rename (no fsync).

    The cheap form of :func:`atomic_path` for the many small files one
    process writes in a folder that exists (a sweep's trial results): the
    temporary name is this process's own, so no ``mkstemp`` or ``chmod`` is
    needed, and a killed writer leaves only a ``.tmp-*`` name.
    """
    path = os.fspath(path)
    head, name = os.path.split(path)
    tmp = os.path.join(head, f"{TMP_PREFIX}{name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def open_log(path):
    """Open a log for appending, created without group/world write permission."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    return os.fdopen(fd, "a", encoding="utf-8")


def write_bytes(path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (fsynced before the rename)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def write_text(path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    write_bytes(path, text.encode("utf-8"))


def write_json(path, obj, indent: int | None = 1) -> None:
    """Write ``obj`` as JSON atomically (floats round-trip exactly)."""
    write_text(path, json.dumps(obj, indent=indent, allow_nan=True) + "\n")


def read_json(path):
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def dump_pickle(path, obj) -> None:
    """``joblib.dump`` ``obj`` to ``path`` atomically."""
    import joblib  # here, not at the top: `mempamal status` never pickles

    buf = io.BytesIO()
    joblib.dump(obj, buf)
    write_bytes(path, buf.getvalue())


def save_npy(path, array) -> None:
    """``numpy.save`` atomically."""
    import numpy as np

    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.save(fh, array, allow_pickle=False)
        fh.flush()
        os.fsync(fh.fileno())


def save_npz(path, arrays: dict) -> None:
    """``numpy.savez`` atomically."""
    import numpy as np

    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **arrays)
        fh.flush()
        os.fsync(fh.fileno())


def write_meta(wd: Workdir, task_id: str, meta: dict) -> None:
    """Write a task's meta record: atomically, but not fsynced.

    Twice per task (started, ended), an fsync cost several milliseconds on a
    busy disk -- the whole overhead of a 0.2 s task. The record only
    describes; whether a task is done is said by its outputs, which are
    fsynced. A power cut may leave a record empty: :func:`read_meta` then
    says the task never started, and its outputs decide.
    """
    path, text = wd.meta_file(task_id), json.dumps(meta, indent=1, allow_nan=True) + "\n"
    try:
        replace_text(path, text)
    except FileNotFoundError:  # a workdir whose logs/ was removed by hand
        path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        replace_text(path, text)


def read_meta(wd: Workdir, task_id: str) -> dict | None:
    """The meta record of a task, or None if it never started."""
    try:
        return read_json(wd.meta_file(task_id))
    except (FileNotFoundError, ValueError):
        return None


def tail_text(path, lines: int = 10) -> str:
    """The last ``lines`` lines of a text file ("" if it cannot be read)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return "".join(fh.readlines()[-lines:])
    except OSError:
        return ""
