"""What ``mempamal status`` reports: counts per kind and state, failures triaged."""

from __future__ import annotations

from collections import Counter, defaultdict

from .workdir import read_meta, tail_text
from .workflow import Workflow


def status_report(workdir, backend: str | None = None) -> dict:
    """Task states of ``workdir`` as plain data.

    Returns
    -------
    dict
        ``counts`` (``{kind: {state: n}}``), ``total``, ``states`` per task id,
        ``failures`` (one entry per failed task: error, log path) and
        ``failure_groups`` (failures grouped by exception type).
    """
    wf = Workflow.load(workdir)
    states = wf.status(backend)
    counts: dict[str, Counter] = defaultdict(Counter)
    for tid, state in states.items():
        counts[wf.tasks[tid].kind][state] += 1
    failures = []
    for tid, state in states.items():
        if state != "failed":
            continue
        meta = read_meta(wf.workdir, tid) or {}
        failures.append({
            "task": tid, "error_type": meta.get("error_type") or "unknown",
            "error": meta.get("error"), "scheduler_state": meta.get("scheduler_state"),
            "log": str(wf.workdir.log_file(tid)),
        })
    groups = defaultdict(list)
    for f in failures:
        groups[(f["error_type"], f["scheduler_state"])].append(f)
    return {
        "workdir": str(wf.workdir.root), "total": len(states),
        "counts": {k: dict(v) for k, v in counts.items()},
        "states": states, "failures": failures,
        "failure_groups": [
            {"error_type": et, "scheduler_state": ss, "count": len(fs),
             "example": tail_text(fs[0]["log"], 8), "logs": [f["log"] for f in fs]}
            for (et, ss), fs in sorted(groups.items(), key=lambda kv: -len(kv[1]))
        ],
    }


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
    for g in report["failure_groups"]:
        where = f" [{g['scheduler_state']}]" if g["scheduler_state"] else ""
        console.print(f"[red]{g['count']} failed with {g['error_type']}{where}[/red]")
        console.print(g["example"], markup=False, highlight=False)
        for log in g["logs"][:10]:
            console.print(f"  log: {log}", markup=False, highlight=False)
        if len(g["logs"]) > 10:
            console.print(f"  ... and {len(g['logs']) - 10} more")
