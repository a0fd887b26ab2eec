"""``mempamal ls [ROOT]``: the workdirs under ROOT as one table.

Fast on hundreds of workdirs: each row reads small files only — the head of
``workflow.json`` (its meta, not its tasks), ``run.json`` (the record the
last run wrote when it ended: backend, duration, state counts),
``out/final/summary.json`` (the best score) — and lists ``logs/`` once to
know whether anything happened since that record. Only a workdir that
changed since (a run going on, one that was killed) has its task states
counted from its files, as ``status`` does, without asking any scheduler.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from .errors import ValidationError
from .runinfo import best_score, format_duration, format_time, read_run_record
from .watch import lock_held
from .workdir import Workdir, read_json

#: how deep ``ls`` looks for workdirs under ROOT
MAX_DEPTH = 4
#: what the table can be sorted by
SORT_KEYS = ("created", "path", "recipe", "state", "tasks", "best", "backend", "duration")
_TASKS_LINE = '\n "tasks": [\n'


def find_workdirs(root, max_depth: int = MAX_DEPTH) -> list[Path]:
    """Directories under ``root`` (``root`` itself included) holding a ``workflow.json``.

    A workdir's own sub-folders are not searched, nor hidden folders, nor
    symbolic links to folders (which could loop).
    """
    root = Path(root)
    if not root.is_dir():
        raise ValidationError(f"ls: {str(root)!r} is not a directory")
    found, stack = [], [(root, 0)]
    while stack:
        d, depth = stack.pop()
        if (d / "workflow.json").is_file():
            found.append(d)
            continue
        if depth >= max_depth:
            continue
        try:
            with os.scandir(d) as it:
                subs = [Path(e.path) for e in it
                        if e.is_dir(follow_symlinks=False) and not e.name.startswith(".")]
        except OSError:
            continue  # unreadable: skipped, like find(1) would say
        stack.extend((s, depth + 1) for s in sorted(subs, reverse=True))
    return sorted(found)


def read_head(wd: Workdir) -> tuple[dict, int | None]:
    """``(meta, number of tasks)`` of ``workflow.json`` without building its tasks.

    ``Workflow.save`` writes the meta first and then one task per line, so
    the meta is the text before the ``"tasks"`` line and the tasks are the
    lines after it.
    """
    with open(wd.workflow_file, "rb") as fh:
        data = fh.read()
    text_end = data.find(_TASKS_LINE.encode())
    if text_end < 0:  # not written by Workflow.save: parse it all
        doc = json.loads(data)
        return {k: v for k, v in doc.items() if k != "tasks"}, len(doc.get("tasks", []))
    meta = json.loads(data[:text_end].decode("utf-8").rstrip().rstrip(",") + "\n}")
    # one line per task, then the closing "]}"
    n_tasks = data.count(b"\n", text_end + len(_TASKS_LINE)) - 1
    return meta, n_tasks


def workdir_row(path) -> dict:
    """One row of the table: what ``ls`` knows of the workdir at ``path``."""
    wd = Workdir(path)
    row = {"path": str(wd.root), "recipe": None, "created": _created(wd), "state": "?",
           "counts": {}, "tasks": None, "best": None, "best_value": None, "backend": None,
           "duration": None, "error": None}
    try:
        meta, n_tasks = read_head(wd)
    except (OSError, ValueError) as exc:
        row["error"] = f"unreadable workflow.json: {exc}"
        return row
    row["recipe"], row["tasks"] = meta.get("recipe", "nested_cv"), n_tasks
    try:
        row["backend"] = read_json(wd.last_backend_file).get("backend")
    except (OSError, ValueError, AttributeError):
        row["backend"] = None
    record = read_run_record(wd)
    if record is not None and not _changed_since(wd, record):
        row["counts"] = dict(record.get("counts") or {})
        row["duration"] = record.get("seconds")
        row["backend"] = record.get("backend") or row["backend"]
    else:
        row["counts"] = _counts(wd, n_tasks)
    best = best_score(wd)
    if best:
        row["best"], row["best_value"] = best["text"], best["value"]
    row["state"] = _state(wd, row["counts"], n_tasks)
    return row


def list_workdirs(root, sort: str = "created", reverse: bool = False) -> list[dict]:
    """Rows of every workdir under ``root``, sorted by ``sort`` (see SORT_KEYS)."""
    if sort not in SORT_KEYS:
        raise ValidationError(f"ls: cannot sort by {sort!r}; expected one of {list(SORT_KEYS)}")
    rows = [workdir_row(p) for p in find_workdirs(root)]
    key = {"tasks": lambda r: r["tasks"] or 0, "best": lambda r: r["best_value"],
           "duration": lambda r: r["duration"]}.get(sort, lambda r: r[sort])
    # rows without a value go last whatever the order
    with_value = [r for r in rows if key(r) is not None]
    without = [r for r in rows if key(r) is None]
    return sorted(with_value, key=key, reverse=reverse) + without


def _created(wd: Workdir) -> float | None:
    """When the workdir was compiled: experiment.pkl is written once, workflow.json may be again."""
    for f in (wd.experiment_file, wd.workflow_file):
        try:
            return os.stat(f).st_mtime
        except OSError:
            continue
    return None


def _changed_since(wd: Workdir, record: dict) -> bool:
    """Whether a task started or ended after the record was written.

    Every meta record is written by renaming it into logs/, which updates
    the folder's mtime: one stat answers for every task.
    """
    try:
        logs = os.stat(wd.logs_dir).st_mtime
    except OSError:
        return False
    return logs > float(record.get("end") or 0) + 1.0 or lock_held(wd)


def _counts(wd: Workdir, n_tasks: int | None) -> dict:
    """Task states from the files (no scheduler asked): the slow path, for changed workdirs."""
    try:
        started = any(n.endswith(".meta.json") for n in os.listdir(wd.logs_dir))
    except OSError:
        started = False
    if not started and n_tasks is not None:
        return {"pending": n_tasks}  # compiled, never run: nothing else to read
    from .backends.base import file_status
    from .runinfo import state_counts
    from .workflow import Workflow

    try:
        return state_counts(file_status(Workflow.load(wd)))
    except Exception:  # noqa: BLE001 - one broken workdir must not hide the others
        return {}


def _state(wd: Workdir, counts: dict, n_tasks: int | None) -> str:
    if counts.get("running") or lock_held(wd):
        return "running"
    if n_tasks is not None and counts.get("done", 0) == n_tasks:
        return "done"
    if counts.get("failed"):
        return "failed"
    if counts.get("done"):
        return "partial"
    return "new"


_STATE_STYLE = {"done": "green", "failed": "red", "running": "cyan", "partial": "yellow"}


def print_rows(rows: list[dict], root) -> None:
    """The table, for people."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table(title=f"mempamal workdirs under {root}", title_justify="left")
    for col, just in (("workdir", "left"), ("recipe", "left"), ("created", "left"),
                      ("state", "left"), ("tasks", "left"), ("best", "left"),
                      ("backend", "left"), ("duration", "right")):
        table.add_column(col, justify=just, overflow="fold")
    base = Path(root).absolute()
    for r in rows:
        try:
            name = str(Path(r["path"]).relative_to(base)) or "."
        except ValueError:
            name = r["path"]
        counts = ", ".join(f"{n} {s}" for s, n in sorted(r["counts"].items()))
        # Text, not markup: a folder may be named "[red]"
        table.add_row(Text(name), r["recipe"] or "-", format_time(r["created"]),
                      Text(r["state"], style=_STATE_STYLE.get(r["state"], "")),
                      f"{counts} of {r['tasks']}" if counts else str(r["tasks"] or "-"),
                      Text(r["best"] or r["error"] or "-"), r["backend"] or "-",
                      format_duration(r["duration"]))
    Console().print(table)
