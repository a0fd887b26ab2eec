"""What ``mempamal status`` reports: counts per kind and state, failures triaged."""

from __future__ import annotations

import os
import re
from collections import Counter, defaultdict

from .usage import usage_by_kind, usage_rows
from .workdir import read_meta, tail_text
from .workflow import Workflow


def status_report(workdir, backend: str | None = None, *, workflow: Workflow | None = None,
                  usage: bool = True) -> dict:
    """Task states of ``workdir`` as plain data.

    Parameters
    ----------
    workdir : str or path-like
        The workdir.
    backend : str, optional
        Also ask this backend's scheduler.
    workflow : Workflow, optional
        The workdir's workflow, when the caller has it loaded already
        (loading a 100,000-task one costs seconds).
    usage : bool, default=True
        Sum up what done tasks measured (reads up to 1,000 meta files per
        task kind); callers that do not show it pass False.

    Returns
    -------
    dict
        ``counts`` (``{kind: {state: n}}``), ``total``, ``states`` per task id,
        ``failures`` (one entry per failed task: error, log path),
        ``failure_groups`` (failures grouped by their first error line, root
        causes first) and ``usage`` (what done tasks measured, per kind: see
        :func:`mempamal.usage.usage_by_kind`).
    """
    wf = workflow if workflow is not None else Workflow.load(workdir)
    states = wf.status(backend)
    counts: dict[str, Counter] = defaultdict(Counter)
    for tid, state in states.items():
        counts[wf.tasks[tid].kind][state] += 1
    failures = [_failure(wf, tid) for tid, state in states.items() if state == "failed"]
    failed = {f["task"] for f in failures}
    for f in failures:
        # a root cause has no failed task upstream of it
        f["root_cause"] = not (_upstream(wf, f["task"]) & failed)
    groups = defaultdict(list)
    for f in failures:
        groups[_group_key(f)].append(f)
    ordered = sorted(groups.items(), key=lambda kv: (not any(f["root_cause"] for f in kv[1]),
                                                     -len(kv[1])))
    return {
        "workdir": str(wf.workdir.root), "total": len(states),
        "counts": {k: dict(v) for k, v in counts.items()},
        "states": states, "failures": failures,
        "usage": usage_by_kind(wf, states) if usage else {},
        "failure_groups": [
            {"error_type": fs[0]["error_type"], "error_line": fs[0]["error_line"],
             "scheduler_state": fs[0]["scheduler_state"], "count": len(fs),
             "root_cause": any(f["root_cause"] for f in fs),
             "example": _example(fs), "logs": [f["log"] for f in fs if f["log"]]}
            for _, fs in ordered
        ],
    }


def _group_key(failure: dict) -> tuple:
    """Failures with the same cause share a key.

    The numbers of an error line are left out of it: a scheduler's message
    names its job id and time ("*** JOB 12 ... CANCELLED AT 10:02:07 DUE TO
    TIME LIMIT ***"), which differ for every task that failed the same way.
    """
    line = re.sub(r"\d+", "#", failure["error_line"] or "")
    state = re.sub(r"\d+", "#", failure["scheduler_state"] or "")
    return failure["error_type"], line, state


def _failure(wf: Workflow, tid: str) -> dict:
    """One failed task: its error, the first line that says why, a log that exists."""
    meta = read_meta(wf.workdir, tid) or {}
    log = wf.workdir.log_file(tid)
    # the task's own log, or the scheduler's output when the task never got
    # as far as writing one (it failed while loading its workdir)
    candidates = [str(log), meta.get("scheduler_log")]
    log_path = next((p for p in candidates if p and os.path.exists(
        p if os.path.isabs(p) else wf.workdir.path(p))), None)
    if log_path and not os.path.isabs(log_path):
        log_path = str(wf.workdir.path(log_path))
    error = meta.get("error")
    line = first_error_line(error or "") or first_error_line(tail_text(log_path, 40)
                                                             if log_path else "")
    return {"task": tid, "error_type": meta.get("error_type") or "unknown", "error": error,
            "error_line": line, "scheduler_state": meta.get("scheduler_state"),
            "log": log_path}


def first_error_line(text: str) -> str | None:
    """The line of ``text`` that names the error (``XxxError: ...``), else its last line."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for ln in reversed(lines):
        if ln.startswith("mempamal: task ") and " failed: " in ln:
            return ln.split(" failed: ", 1)[1]
    for ln in reversed(lines):
        head = ln.split(":", 1)[0]
        if ":" in ln and (head.endswith(("Error", "Exception", "Interrupt", "Exit"))
                          or head == "Killed"):
            return ln
    return lines[-1] if lines else None


def _upstream(wf: Workflow, tid: str) -> set[str]:
    seen, stack = set(), list(wf.tasks[tid].deps)
    while stack:
        d = stack.pop()
        if d not in seen:
            seen.add(d)
            stack.extend(wf.tasks[d].deps)
    return seen


def _example(fs: list[dict]) -> str:
    with_log = next((f for f in fs if f["log"]), None)
    return tail_text(with_log["log"], 8) if with_log else (fs[0]["error"] or "")


def print_status(report: dict) -> None:
    """Print a status report for people."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    states = ["done", "running", "queued", "pending", "failed", "cancelled"]
    present = [s for s in states if any(s in c for c in report["counts"].values())]
    present += sorted({s for c in report["counts"].values() for s in c} - set(present))
    table = Table(title=f"mempamal status of {report['workdir']}")
    table.add_column("kind")
    for s in present:
        table.add_column(s, justify="right")
    for kind, c in report["counts"].items():
        table.add_row(kind, *[str(c.get(s, 0)) for s in present])
    console.print(table)
    if report.get("usage"):
        used = Table(title="measured per task (median / max)")
        for col in ("kind", "tasks", "wall s", "CPU s", "peak MB", "GPU MB", "hosts"):
            used.add_column(col, justify="left" if col in ("kind", "hosts") else "right")
        for row in usage_rows(report["usage"]):
            used.add_row(*row)
        console.print(used)
    for g in report["failure_groups"]:
        where = f" [{g['scheduler_state']}]" if g["scheduler_state"] else ""
        cause = "" if g["root_cause"] else " (downstream of another failure)"
        console.print(f"[red]{g['count']} failed with {g['error_type']}{where}{cause}[/red]")
        if g["error_line"]:
            console.print(f"  {g['error_line']}", markup=False, highlight=False)
        console.print(g["example"], markup=False, highlight=False)
        for log in g["logs"][:10]:
            console.print(f"  log: {log}", markup=False, highlight=False)
        if len(g["logs"]) > 10:
            console.print(f"  ... and {len(g['logs']) - 10} more")
