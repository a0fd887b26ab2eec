"""``mempamal watch W``: a live view of a run, read from its workdir.

:class:`Watcher` takes snapshots — plain dicts, testable without a
terminal — and :func:`render` lays one out with rich. A watcher keeps what
does not change between two refreshes (the workflow, finished trials, the
failures already triaged), so that a refresh costs a few directory listings
and the meta records of the tasks that are not done: about 0.3 s on 100,000
tasks (``benchmarks/bench_watch.py``). On SLURM each refresh asks squeue once
for the whole run, never per task. Watching never changes the run, and
Ctrl-C stops only the watch.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections import Counter, defaultdict

from .workdir import Workdir, read_json, read_meta

#: running tasks listed one by one (the rest are counted)
MAX_RUNNING = 12
#: failure groups shown
MAX_GROUPS = 5
#: finished trial files read per refresh: a 100,000-trial sweep is caught up
#: over a few refreshes instead of making the first one last seconds
TRIALS_PER_REFRESH = 5000
#: seconds of history the ETA's rate is measured over
RATE_WINDOW = 120.0
STATE_ORDER = ["done", "running", "queued", "pending", "failed", "cancelled"]
_UNREAD = object()


class Watcher:
    """Snapshots of one workdir, each refresh reading only what may have changed.

    Parameters
    ----------
    workdir : str or path-like
    backend : str, optional
        Backend to ask for the states (default: the last one used).
    """

    def __init__(self, workdir, backend: str | None = None) -> None:
        from .workflow import Workflow

        self.wf = Workflow.load(workdir)  # raises WorkdirError for a non-workdir
        self._kind_of = {tid: t.kind for tid, t in self.wf.tasks.items()}
        self.backend = backend or self.wf.last_backend()
        self._mtime = _mtime(self.wf.workdir.workflow_file)
        self._history: list[tuple[float, int]] = []
        self._failures: dict = {"key": None, "groups": []}
        self._trials: dict[int, dict] = {}  # finished trial docs (never change again)
        self._instance = None
        #: said under the picture (e.g. squeue cannot be run from here)
        self.note: str | None = None
        self._cands = _UNREAD

    def snapshot(self) -> dict:
        """The run now, as plain data (see :func:`watch_snapshot`)."""
        wd = self.wf.workdir
        self._reload_if_changed()
        now = time.time()
        states, rows = self._states()
        counts: dict[str, dict] = defaultdict(dict)
        # counted in C (zip, map, Counter): a Python loop over 100,000 tasks costs 0.1 s
        for (kind, state), n in Counter(zip(map(self._kind_of.__getitem__, states),
                                            states.values())).items():
            counts[kind][state] = n
        totals = Counter(states.values())
        running = self._running(states, now)
        n_done = totals.get("done", 0)
        live = self._live(rows, totals)
        snap = {
            "workdir": str(wd.root), "recipe": self.wf.recipe, "backend": self.backend,
            "time": now, "total": len(states),
            "counts": dict(counts), "totals": dict(totals),
            "running": running, "eta_seconds": self._eta(now, n_done, len(states), live),
            "failures": self._failure_groups(states),
            "queue": _queue_summary(rows) if self.backend == "slurm" else None,
            "sweep": self._sweep(states) if self.wf.recipe == "sweep" else None,
            "active": live, "finished": n_done == len(states), "note": self.note,
        }
        from .runinfo import best_score

        best = best_score(wd) if snap["finished"] else None
        snap["best"] = best["text"] if best else None
        return snap

    # -- states ------------------------------------------------------------------------
    def _reload_if_changed(self) -> None:
        """A recompile into the same workdir (reuse, a resumed grid) rewrote workflow.json."""
        from .workflow import Workflow

        mtime = _mtime(self.wf.workdir.workflow_file)
        if mtime != self._mtime:
            self.wf = Workflow.load(self.wf.workdir.root)
            self._kind_of = {tid: t.kind for tid, t in self.wf.tasks.items()}
            self._mtime = mtime
            self._failures = {"key": None, "groups": []}

    def _states(self) -> tuple[dict, list]:
        """``({task: state}, squeue rows)``: one squeue call on SLURM, none elsewhere.

        When the backend cannot be asked from here (squeue not on PATH, an
        optional backend not installed), the files say what is done, failed
        and running, and :attr:`note` says so.
        """
        from .backends.base import file_status
        from .errors import BackendError

        if self.note is None:
            try:
                if self._instance is None:
                    from .backends import get_backend

                    self._instance = get_backend(self.backend)
                if self.backend == "slurm":
                    return self._instance.status_and_queue(self.wf)
                return self._instance.status(self.wf), []
            except BackendError as exc:
                self.note = f"states from the files only: {exc}"
        return file_status(self.wf), []

    def _running(self, states: dict, now: float) -> list[dict]:
        out = []
        for tid, state in states.items():
            if state != "running":
                continue
            meta = read_meta(self.wf.workdir, tid) or {}
            start = meta.get("start")
            out.append({"task": tid, "kind": self.wf.tasks[tid].kind, "host": meta.get("host"),
                        "elapsed": now - start if start else None,
                        "attempt": meta.get("attempt")})
        out.sort(key=lambda r: -(r["elapsed"] or 0))
        return out

    def _live(self, rows: list, totals: Counter) -> bool:
        """Whether the run may still change: tasks running or queued, or a run holds the lock."""
        from .backends.slurm.commands import ACTIVE_STATES

        if totals.get("running") or totals.get("queued"):
            return True
        if any(r["state"] in ACTIVE_STATES for r in rows):
            return True
        return lock_held(self.wf.workdir)

    def _eta(self, now: float, n_done: int, total: int, live: bool) -> float | None:
        """Seconds left at the rate tasks got done over the last RATE_WINDOW seconds.

        Before the watch has seen progress, the rate since the run started
        (``last_backend.json`` is written when a run or submission starts).
        """
        self._history.append((now, n_done))
        self._history = [(t, n) for t, n in self._history if now - t <= RATE_WINDOW] or \
            self._history[-1:]
        left = total - n_done
        if left == 0 or not live:
            return 0.0 if left == 0 else None
        t0, n0 = self._history[0]
        if n_done > n0 and now > t0:
            return left / ((n_done - n0) / (now - t0))
        started = _mtime(self.wf.workdir.last_backend_file)
        record = _run_record_end(self.wf.workdir)
        if started and n_done and now > started and (record is None or record < started):
            return left / (n_done / (now - started))
        return None

    def _failure_groups(self, states: dict) -> list[dict]:
        """Failures grouped by cause, root causes first, as ``status`` triages them.

        Triaged again only when the set of failed tasks changed.
        """
        from . import status

        failed = sorted(t for t, s in states.items() if s == "failed")
        key = tuple(failed)
        if key == self._failures["key"]:
            return self._failures["groups"]
        failures = [status._failure(self.wf, tid) for tid in failed]
        bad = set(failed)
        groups = defaultdict(list)
        for f in failures:
            f["root_cause"] = not (status._upstream(self.wf, f["task"]) & bad)
            groups[status._group_key(f)].append(f)
        ordered = sorted(groups.values(), key=lambda fs: (not any(f["root_cause"] for f in fs),
                                                          -len(fs)))
        out = [{"error_type": fs[0]["error_type"], "error_line": fs[0]["error_line"],
                "scheduler_state": fs[0]["scheduler_state"], "count": len(fs),
                "root_cause": any(f["root_cause"] for f in fs),
                "tasks": [f["task"] for f in fs],
                "log": next((f["log"] for f in fs if f["log"]), None)} for fs in ordered]
        self._failures = {"key": key, "groups": out}
        return out

    # -- sweeps ------------------------------------------------------------------------
    def _sweep(self, states: dict) -> dict:
        """Best trial so far, and what the running trials last reported."""
        from .recipes.sweep.dag import trial_name

        meta = self.wf.meta
        width = meta.get("trial_name_width", 1)
        metric, mode = meta.get("metric"), meta.get("mode", "min")
        wd = self.wf.workdir
        self._read_trials(width)
        done = [d for d in self._trials.values() if d.get("state") == "done"]
        values = [(d["metrics"].get(metric), d) for d in done
                  if isinstance(d.get("metrics", {}).get(metric), int | float)
                  and d["metrics"][metric] == d["metrics"][metric]]
        best = None
        if values:
            value, doc = (max if mode == "max" else min)(values, key=lambda v: v[0])
            best = {"trial": doc["trial"], "value": value,
                    "params": _params(self._candidates(), doc)}
        running = []
        for tid, state in states.items():
            if state != "running" or self.wf.tasks[tid].kind != "trial":
                continue
            t = _current_trial(wd.trial_journal(tid))
            if t is None:
                continue
            last = _last_json_line(wd.trial_metrics_file(trial_name(t, width)))
            running.append({"trial": t, "task": tid,
                            "step": last.get("step") if last else None,
                            "metrics": {k: v for k, v in (last or {}).items()
                                        if k not in ("step", "attempt", "time")}})
        return {"metric": metric, "mode": mode, "n_trials": meta.get("n_trials"),
                "n_read": len(self._trials), "n_done": len(done),
                "n_failed": sum(d.get("state") == "failed" for d in self._trials.values()),
                "best": best, "running": sorted(running, key=lambda r: r["trial"])}

    def _candidates(self) -> list | None:
        """The sweep's candidates, unpickled once (digest checked); None if they cannot be.

        An adaptive search's are in its suggest files, not here: its trials
        are then named by candidate number.
        """
        if self._cands is _UNREAD:
            from .context import load_compiled_pickle

            try:
                cands = load_compiled_pickle(self.wf, "experiment.pkl").get("candidates")
            except Exception:  # noqa: BLE001 - a module missing here: numbers will do
                cands = None
            self._cands = cands if isinstance(cands, list) else None
        return self._cands

    def _read_trials(self, width: int) -> None:
        """Read finished trials not read yet (at most TRIALS_PER_REFRESH per refresh)."""
        folder = self.wf.workdir.path("out/trials")
        try:
            names = os.listdir(folder)
        except FileNotFoundError:
            return
        budget = TRIALS_PER_REFRESH
        for name in names:
            stem, _, ext = name.rpartition(".")
            if ext != "json" or not stem.isdigit() or int(stem) in self._trials:
                continue
            if budget == 0:
                break
            budget -= 1
            try:
                self._trials[int(stem)] = read_json(folder / name)
            except (OSError, ValueError):
                continue


def watch_snapshot(workdir, backend: str | None = None) -> dict:
    """One snapshot of ``workdir``'s run (what ``watch`` shows), as plain data.

    Returns
    -------
    dict
        ``counts`` (``{kind: {state: n}}``), ``totals``, ``total``;
        ``running`` (task, kind, host, elapsed seconds, attempt; longest first);
        ``eta_seconds`` (None when unknown); ``failures`` (groups: error type,
        first error line, count, root cause, tasks, a log that exists);
        ``queue`` (SLURM: jobs per state, pending reasons); ``sweep`` (best
        trial so far, latest reported metrics of running trials); ``active``
        (the run may still change), ``finished`` (every task done), ``best``.
    """
    return Watcher(workdir, backend).snapshot()


# -- helpers -------------------------------------------------------------------------------
def _mtime(path) -> float | None:
    try:
        return os.stat(path).st_mtime
    except OSError:
        return None


def _run_record_end(wd: Workdir) -> float | None:
    try:
        return float(read_json(wd.run_record_file)["end"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def lock_held(wd: Workdir) -> bool:
    """A run (local, Dask, Soma, a SLURM submission) holds the workdir's lock.

    Read from the holder file the lock writes, never by taking the lock: a
    watch must not make a run that starts now fail to get it.
    """
    try:
        holder = read_json(wd.root / (wd.lock_file.name + ".holder"))
    except (OSError, ValueError):
        return False
    if holder.get("host") != socket.gethostname():
        return True
    try:
        os.kill(int(holder["pid"]), 0)
    except (ProcessLookupError, KeyError, ValueError, TypeError):
        return False
    except PermissionError:
        return True
    return True


def _queue_summary(rows: list[dict]) -> dict:
    """SLURM jobs (array elements) per state, and why the pending ones wait."""
    states = Counter(r["state"] for r in rows)
    reasons = Counter(r["reason"] or "-" for r in rows if r["state"] == "PENDING")
    return {"states": dict(states), "pending_reasons": dict(reasons)}


def _params(candidates, doc: dict) -> dict | None:
    """A trial's parameters: in its file when there, else its candidate's."""
    if "params" in doc:
        return doc["params"]
    c = doc.get("candidate")
    if candidates is not None and isinstance(c, int) and 0 <= c < len(candidates):
        return dict(candidates[c])
    return {"candidate": c}


def _current_trial(journal) -> int | None:
    """The trial a running trial task started last (its journal's last line)."""
    last = _last_json_line(journal)
    return last.get("trial") if last else None


def _last_json_line(path, block: int = 4096) -> dict | None:
    """The last complete JSON line of a file that grows (None if none)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - block))
            tail = fh.read().decode("utf-8", errors="replace")
    except OSError:
        return None
    for line in reversed(tail.splitlines()):
        try:
            doc = json.loads(line)
        except ValueError:
            continue  # the line being written, or cut by the block
        if isinstance(doc, dict):
            return doc
    return None


# -- rendering -------------------------------------------------------------------------------
def render(snap: dict):
    """A rich renderable of a snapshot (what the terminal shows)."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    from .runinfo import format_duration

    parts = []
    done, total = snap["totals"].get("done", 0), snap["total"]
    pct = 100.0 * done / total if total else 100.0
    head = Text()
    head.append("mempamal watch ", style="bold")
    head.append(snap["workdir"])
    head.append(f"  ({snap['recipe']} on {snap['backend']}, "
                f"{time.strftime('%H:%M:%S', time.localtime(snap['time']))})")
    parts.append(head)
    state = ("finished" if snap["finished"] else "running" if snap["active"]
             else "stopped (nothing running)")
    eta = snap["eta_seconds"]
    parts.append(Text(f"{done}/{total} tasks done ({pct:.1f} %), {state}"
                      + (f", ETA {format_duration(eta)}" if eta else "")))
    present = [s for s in STATE_ORDER if snap["totals"].get(s)]
    present += sorted(set(snap["totals"]) - set(present))
    table = Table(show_edge=False, pad_edge=False)
    table.add_column("kind")
    for s in present:
        table.add_column(s, justify="right", style=_STYLE.get(s))
    for kind, c in snap["counts"].items():
        table.add_row(kind, *[str(c.get(s, 0)) for s in present])
    parts.append(table)
    if snap["queue"] and snap["queue"]["states"]:
        q = snap["queue"]
        line = "SLURM: " + ", ".join(f"{n} {s}" for s, n in sorted(q["states"].items()))
        if q["pending_reasons"]:
            line += " (pending: " + ", ".join(
                f"{n} {r}" for r, n in sorted(q["pending_reasons"].items())) + ")"
        parts.append(Text(line))
    if snap["running"]:
        rt = Table(title="running", title_justify="left", show_edge=False, pad_edge=False)
        for col in ("task", "host", "elapsed", "attempt"):
            rt.add_column(col)
        for r in snap["running"][:MAX_RUNNING]:
            rt.add_row(r["task"], str(r["host"] or "-"), format_duration(r["elapsed"]),
                       str(r["attempt"] or "-"))
        parts.append(rt)
        if len(snap["running"]) > MAX_RUNNING:
            parts.append(Text(f"... and {len(snap['running']) - MAX_RUNNING} more running"))
    if snap["sweep"]:
        parts.extend(_render_sweep(snap["sweep"]))
    if snap.get("best"):
        parts.append(Text(f"best: {snap['best']}", style="bold green"))
    for g in snap["failures"][:MAX_GROUPS]:
        where = f" [{g['scheduler_state']}]" if g["scheduler_state"] else ""
        cause = "" if g["root_cause"] else " (downstream of another failure)"
        parts.append(Text(f"{g['count']} failed with {g['error_type']}{where}{cause}",
                          style="red"))
        if g["error_line"]:
            parts.append(Text(f"  {g['error_line']}"))
        if g["log"]:
            parts.append(Text(f"  log: {g['log']}"))
    if snap.get("note"):
        parts.append(Text(snap["note"], style="yellow"))
    if len(snap["failures"]) > MAX_GROUPS:
        parts.append(Text(f"... and {len(snap['failures']) - MAX_GROUPS} more kinds of failure "
                          f"(mempamal status {snap['workdir']})"))
    return Group(*parts)


_STYLE = {"done": "green", "running": "cyan", "failed": "red", "cancelled": "yellow"}


def _render_sweep(sw: dict) -> list:
    from rich.table import Table
    from rich.text import Text

    out = []
    best = sw["best"]
    if best:
        out.append(Text(f"best so far: {sw['mode']} {sw['metric']} = {best['value']:.6g} "
                        f"(trial {best['trial']}, {best['params']})", style="bold green"))
    out.append(Text(f"trials: {sw['n_done']} done, {sw['n_failed']} failed of "
                    f"{sw['n_trials']}" + ("" if sw["n_read"] >= (sw["n_done"] + sw["n_failed"])
                                           else " (still reading)")))
    if sw["running"]:
        t = Table(title="running trials", title_justify="left", show_edge=False,
                  pad_edge=False)
        names = sorted({k for r in sw["running"] for k in r["metrics"]})
        for col in ("trial", "step", *names):
            t.add_column(col, justify="right")
        for r in sw["running"][:MAX_RUNNING]:
            t.add_row(str(r["trial"]), "-" if r["step"] is None else str(r["step"]),
                      *[_fmt(r["metrics"].get(n)) for n in names])
        out.append(t)
    return out


def _fmt(v) -> str:
    if v is None:
        return "-"
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def watch(workdir, backend: str | None = None, interval: float = 1.0, console=None) -> dict:
    """Show the run live until it ends or Ctrl-C (which never stops the run).

    Returns the last snapshot.
    """
    from rich.console import Console
    from rich.live import Live

    watcher = Watcher(workdir, backend)
    console = console or Console()
    snap = watcher.snapshot()
    if not snap["active"]:  # nothing runs: one picture, like status
        console.print(render(snap))
        return snap
    try:
        with Live(render(snap), console=console, refresh_per_second=4,
                  transient=False) as live:
            while snap["active"]:
                time.sleep(interval)
                snap = watcher.snapshot()
                live.update(render(snap))
    except KeyboardInterrupt:
        console.print("mempamal: watch stopped; the run goes on")
    return snap
