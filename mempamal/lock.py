"""One run per workdir at a time.

``filelock.FileLock`` uses ``flock``: the kernel releases it when the holder
dies, however it dies, and Linux NFS clients map it to POSIX locks, so it
also holds across nodes of a cluster. Who holds it is written next to it,
so that a refusal can name the live run.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time

from filelock import FileLock, Timeout

from .errors import WorkdirLockedError
from .workdir import Workdir, write_json


@contextlib.contextmanager
def run_lock(wd: Workdir, what: str):
    """Hold the workdir's run lock for the duration of the block.

    Raises
    ------
    WorkdirLockedError
        If another live process holds it; the message names that run.
    """
    holder_file = wd.root / (wd.lock_file.name + ".holder")
    lock = FileLock(str(wd.lock_file), timeout=0, mode=0o644)
    try:
        lock.acquire()
    except Timeout:
        raise WorkdirLockedError(
            f"workdir {str(wd.root)!r} is in use by another run "
            f"({_describe(holder_file)}); wait for it, or stop it first "
            "(`mempamal status` works alongside)"
        ) from None
    try:
        write_json(holder_file, {"host": socket.gethostname(), "pid": os.getpid(),
                                 "since": time.strftime("%Y-%m-%d %H:%M:%S"),
                                 "what": what})
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            holder_file.unlink()
        lock.release()


def _describe(holder_file) -> str:
    try:
        with open(holder_file, encoding="utf-8") as fh:
            h = json.load(fh)
        return f"{h['what']}, pid {h['pid']} on {h['host']} since {h['since']}"
    except (OSError, ValueError, KeyError):
        return "holder unknown"
