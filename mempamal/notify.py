"""Notifications: one message when a run ends, one at its first failure.

Where a message goes is an apprise URL (``mailto://``, ``ntfys://``,
``slack://``, ``json://``...): one string per destination, no per-service
options. apprise is an optional extra (``pip install 'mempamal[notify]'``).

Who sends:

- local, Dask and Soma-Workflow runs: the process that runs the workflow,
  around the backend's ``run`` (:func:`notifying`, used by
  :meth:`~mempamal.workflow.Workflow.run`); the first failure is sent the
  moment the backend books it (:data:`~mempamal.backends.base.failure_listener`);
- SLURM, where nothing of mempamal stays alive: two jobs the submission adds,
  which run ``mempamal notify WORKDIR --event end|failure`` on a compute node.

A message that cannot be delivered is logged and never fails the run.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import time

from .errors import ValidationError
from .workdir import Workdir, read_json

log = logging.getLogger("mempamal.notify")

#: failed tasks listed one by one in a message (the rest are counted)
MAX_LISTED = 10
#: seconds the end of a run waits for its first-failure message to go out
FAILURE_SEND_WAIT = 60.0
EVENTS = ("end", "failure")


def _apprise():
    try:
        import apprise
    except ImportError:
        raise ValidationError(
            "notify needs apprise, which is not installed; install it with "
            "`pip install 'mempamal[notify]'`") from None
    return apprise


def _known_schemes(apprise) -> set[str]:
    schemes = set()
    for plugin in apprise.Apprise().details().get("schemas", []):
        schemes.update(p.lower() for p in plugin.get("protocols") or [])
        schemes.update(p.lower() for p in plugin.get("secure_protocols") or [])
    return schemes


def redact(url: str) -> str:
    """``scheme://…``: what a message or error may show of a URL (the rest may be a token)."""
    scheme, sep, _ = url.partition("://")
    return f"{scheme}://…" if sep else "…"


def check_urls(urls) -> list[str]:
    """Validate notification URLs before anything is written.

    Parameters
    ----------
    urls : str, list of str or None
        apprise URLs.

    Returns
    -------
    list of str

    Raises
    ------
    ValidationError
        Naming the unknown scheme, or the URL apprise refuses (shown as
        ``scheme://…``: the rest of a URL often is a secret).
    """
    if urls is None:
        return []
    if isinstance(urls, str):
        urls = [urls]
    if not isinstance(urls, list | tuple) or not all(isinstance(u, str) for u in urls):
        raise ValidationError(f"notify must be an apprise URL or a list of them (mailto://..., "
                              f"ntfys://..., json://...), got {urls!r}")
    if not urls:
        return []
    apprise = _apprise()
    known = _known_schemes(apprise)
    for url in urls:
        scheme, sep, _ = url.partition("://")
        if not sep or not scheme:
            raise ValidationError(f"notify URL {url!r} has no scheme; expected an apprise URL "
                                  "such as mailto://..., ntfys://..., slack://..., json://...")
        if scheme.lower() not in known:
            raise ValidationError(
                f"notify URL scheme {scheme!r} is unknown to apprise (URL {redact(url)!r}); "
                "expected one such as mailto, ntfys, slack, json (see apprise's list of "
                "services)")
        if not apprise.Apprise().add(url):
            raise ValidationError(
                f"notify URL {redact(url)!r}: apprise knows {scheme!r} but refuses this URL "
                "(a missing field, or the plugin needs a package that is not installed)")
    return list(urls)


def send(urls, title: str, body: str, failure: bool = False) -> bool:
    """Send one message to every URL; never raises.

    Returns
    -------
    bool
        Whether every destination took it. A failure is logged (and said on
        standard error): a notification never fails the run.
    """
    if not urls:
        return True
    try:
        apprise = _apprise()
        ap = apprise.Apprise()
        for url in urls:
            ap.add(url)
        kind = apprise.NotifyType.FAILURE if failure else apprise.NotifyType.SUCCESS
        ok = bool(ap.notify(title=title, body=body, notify_type=kind))
        why = "a destination did not take it"
    except Exception as exc:  # noqa: BLE001 - never fail the run for a message
        ok, why = False, f"{type(exc).__name__}: {exc}"
    if not ok:
        where = ", ".join(redact(u) for u in urls)
        log.warning("notification %r could not be delivered to %s (%s)", title, where, why)
        print(f"mempamal: notification {title!r} could not be delivered to {where} ({why})",
              file=sys.stderr)
    return ok


# -- messages ----------------------------------------------------------------------------
def _failure_lines(failures: list[dict], workdir: Workdir) -> list[str]:
    """One line per failed task (root causes first): reason and a log that exists."""
    ordered = sorted(failures, key=lambda f: not f.get("root_cause", True))
    lines = []
    for f in ordered[:MAX_LISTED]:
        reason = f.get("error_line") or f.get("error") or "failed"
        lines.append(f"- {f['task']}: {reason}")
        if f.get("log"):
            lines.append(f"  log: {f['log']}")
    if len(ordered) > MAX_LISTED:
        lines.append(f"... and {len(ordered) - MAX_LISTED} more "
                     f"(mempamal status {workdir.root})")
    return lines


def _totals(report: dict) -> dict:
    out: dict = {}
    for per_kind in report["counts"].values():
        for state, n in per_kind.items():
            out[state] = out.get(state, 0) + n
    return out


def end_message(workdir, backend: str | None = None, seconds: float | None = None,
                error: BaseException | None = None) -> tuple[str, str, bool]:
    """``(title, body, ok)`` of the message sent when a run ends.

    Done: counts, best score, duration, workdir. Otherwise: the failed tasks
    with their reason and log path, and what was not run.
    """
    from .runinfo import best_score, format_duration
    from .status import status_report

    wd = workdir if isinstance(workdir, Workdir) else Workdir(workdir)
    report = status_report(wd.root, backend, usage=False)
    totals = _totals(report)
    n, n_done = report["total"], totals.get("done", 0)
    ok = n_done == n and error is None
    kinds = ", ".join(f"{k} {sum(c.values())}" for k, c in report["counts"].items())
    lines = []
    if ok:
        title = f"mempamal: {wd.root.name} done"
        lines.append(f"{n} tasks done ({kinds})")
        best = best_score(wd)
        if best:
            lines.append(f"best: {best['text']}")
    else:
        n_failed = totals.get("failed", 0)
        title = (f"mempamal: {wd.root.name} FAILED" if n_failed or error
                 else f"mempamal: {wd.root.name} ended unfinished")
        others = ", ".join(f"{v} {s}" for s, v in sorted(totals.items())
                           if s not in ("done", "failed"))
        lines.append(f"{n_failed} of {n} tasks failed, {n_done} done"
                     + (f", {others}" if others else ""))
        if error is not None and not report["failures"]:
            lines.append(f"the run stopped: {type(error).__name__}: {error}")
        lines += _failure_lines(report["failures"], wd)
    lines.append(f"duration: {format_duration(seconds)}")
    lines.append(f"workdir: {wd.root}")
    return title, "\n".join(lines), ok


def failure_message(workdir, failures: list[dict]) -> tuple[str, str]:
    """``(title, body)`` of the message sent at a run's first failure."""
    wd = workdir if isinstance(workdir, Workdir) else Workdir(workdir)
    title = f"mempamal: {wd.root.name}: a task failed"
    lines = [f"{len(failures)} task(s) failed so far; the rest of the run goes on "
             "(tasks that need a failed one will not run)"]
    lines += _failure_lines(failures, wd)
    lines.append(f"workdir: {wd.root}")
    lines.append(f"watch it: mempamal watch {wd.root}")
    return title, "\n".join(lines)


def _one_failure(wd: Workdir, tid: str, reason) -> dict:
    """A failure as status reports it, from what a backend booked (no workflow load)."""
    from .status import first_error_line

    log_file = wd.log_file(tid)
    return {"task": tid, "error": reason, "root_cause": True,
            "error_line": first_error_line(str(reason or "")) or "failed",
            "log": str(log_file) if log_file.exists() else None}


# -- in-process runs ---------------------------------------------------------------------
class RunNotifier:
    """Sends a run's first-failure message (at once, in a thread) and its end message.

    Parameters
    ----------
    workflow : Workflow
    backend : str
        Name of the backend (``status`` asks it at the end).
    urls : list of str
    """

    def __init__(self, workflow, backend: str, urls: list[str]) -> None:
        self.workflow = workflow
        self.backend = backend
        self.urls = list(urls)
        self._sent_failure = False
        self._thread: threading.Thread | None = None

    def task_failed(self, tid: str, reason) -> None:
        """The failure listener: the first call sends a message, later ones nothing."""
        if self._sent_failure:
            return
        if str(reason or "").startswith("CorruptOutputError"):
            return  # a damaged input: the backend recomputes it and retries, not a failure
        self._sent_failure = True
        try:
            title, body = failure_message(self.workflow.workdir,
                                          [_one_failure(self.workflow.workdir, tid, reason)])
        except Exception as exc:  # noqa: BLE001 - a message never fails the run
            log.warning("could not build the failure notification: %s", exc)
            return
        # in a thread: a slow destination must not hold the run up
        self._thread = threading.Thread(target=send, args=(self.urls, title, body, True),
                                        name="mempamal-notify", daemon=True)
        self._thread.start()

    def run_ended(self, seconds: float, error: BaseException | None = None) -> None:
        """Send the end message (after the first-failure one, if any)."""
        if self._thread is not None:
            self._thread.join(FAILURE_SEND_WAIT)
        try:
            title, body, ok = end_message(self.workflow.workdir, self.backend, seconds, error)
        except Exception as exc:  # noqa: BLE001
            log.warning("could not build the end-of-run notification: %s", exc)
            return
        send(self.urls, title, body, failure=not ok)


@contextlib.contextmanager
def notifying(workflow, backend):
    """Around a backend's ``run``: record the run in ``run.json``, send its messages.

    Nothing is recorded or sent when the run did not start (the workdir was
    locked by another run, an option was refused) or was interrupted with
    Ctrl-C (the person who stopped it knows). Backends whose jobs send their
    own messages (SLURM) are only recorded.
    """
    from .backends.base import failure_listener
    from .errors import TaskFailedError, WorkdirLockedError

    urls = [] if backend.sends_notifications else list(backend.opts.get("notify") or [])
    notifier = RunNotifier(workflow, backend.name, urls) if urls else None
    token = failure_listener.set(notifier.task_failed) if notifier else None
    start, ran, error = time.time(), False, None
    try:
        yield
        ran = True
    except TaskFailedError:
        ran = True
        raise
    except (WorkdirLockedError, ValidationError, KeyboardInterrupt):
        raise
    except Exception as exc:
        ran, error = True, exc
        raise
    finally:
        if token is not None:
            failure_listener.reset(token)
        if ran:
            _after_run(workflow, backend.name, start, time.time(), notifier, error)


def _after_run(workflow, backend: str, start: float, end: float, notifier, error) -> None:
    from .runinfo import state_counts, write_run_record

    try:
        states = workflow.status(backend)
        counts = state_counts(states)
        outcome = "done" if counts.get("done", 0) == len(states) and error is None \
            else "failed"
        write_run_record(workflow.workdir, backend, start, end, counts, outcome)
    except Exception as exc:  # noqa: BLE001 - a record never fails the run
        log.warning("could not write the run record: %s", exc)
    if notifier is not None:
        notifier.run_ended(end - start, error)


# -- SLURM's notify jobs ------------------------------------------------------------------
def notify_main(workdir, event: str, backend: str | None = None, urls=None) -> int:
    """What ``mempamal notify WORKDIR --event EVENT`` does (SLURM's notify jobs).

    ``end``: record the run in ``run.json`` and send the end message;
    ``failure``: send the failures so far. Without ``urls``, those the
    backend's submission saved (``WORKDIR/BACKEND/notify.json``) are used.
    Exit status 0 even when a message could not be delivered (it is logged).
    """
    from .runinfo import state_counts, write_run_record
    from .status import status_report
    from .workflow import Workflow

    if event not in EVENTS:
        raise ValidationError(f"event must be one of {list(EVENTS)}, got {event!r}")
    wf = Workflow.load(workdir)
    backend = backend or wf.last_backend()
    saved = _saved(wf.workdir, backend)
    urls = check_urls(list(urls or []) or saved.get("urls") or [])
    if not urls:
        print(f"mempamal: no notification URL given nor saved in "
              f"{wf.workdir.notify_file(backend)}; nothing sent", file=sys.stderr)
    if event == "failure":
        report = status_report(wf.workdir.root, backend, workflow=wf, usage=False)
        failures = report["failures"]
        if not failures:
            # a job ended without success but no task says why (cancelled...)
            totals = _totals(report)
            failures = [{"task": f"{v} task(s) {s}", "error_line": "see mempamal status",
                         "root_cause": True, "log": None}
                        for s, v in sorted(totals.items()) if s not in ("done", "pending")]
        title, body = failure_message(wf.workdir, failures)
        send(urls, title, body, failure=True)
        return 0
    end = time.time()
    start = saved.get("submitted")
    title, body, ok = end_message(wf.workdir, backend, end - start if start else None)
    try:
        counts = state_counts(wf.status(backend))
        write_run_record(wf.workdir, backend, start or end, end, counts,
                         "done" if ok else "failed")
    except Exception as exc:  # noqa: BLE001
        log.warning("could not write the run record: %s", exc)
    send(urls, title, body, failure=not ok)
    return 0


def _saved(wd: Workdir, backend: str) -> dict:
    try:
        doc = read_json(wd.notify_file(backend))
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def save_urls(wd: Workdir, backend: str, urls: list[str]) -> None:
    """Write ``WORKDIR/BACKEND/notify.json`` readable by its owner only (URLs may hold tokens).

    Also holds the submission time, from which the end message tells the duration.
    """
    import json

    path = wd.notify_file(backend)
    path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-notify-{os.getpid()}.json")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump({"urls": urls, "submitted": time.time()}, fh)
    os.replace(tmp, path)
