"""CPU and GPU slots shared by every local executor of a machine, with no daemon.

On a shared server without a scheduler, several experiments submitted with
``mempamal submit W --backend local`` would each start as if alone. Here each
CPU and each GPU of the machine is a lock file under a per-user directory;
a task in flight holds one ``flock`` per CPU it needs (and per GPU), which
the kernel releases when its executor dies, however it dies. Experiments
queue in submission order: each executor registers a ticket (a file it holds
locked while alive) and takes a free slot only when no older ticket is
waiting for one. ``mempamal queue`` lists the tickets.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from pathlib import Path

from .workdir import replace_text

#: seconds between two looks at the slots while waiting for one
POLL_SECONDS = 0.05
#: seconds a change of the slots held or the tasks done may wait to be shown
PUBLISH_SECONDS = 1.0


def slots_dir() -> Path:
    """``$MEMPAMAL_SLOTS_DIR``, or ``~/.cache/mempamal/slots/HOST`` (one per machine)."""
    env = os.environ.get("MEMPAMAL_SLOTS_DIR")
    if env:
        return Path(env)
    return Path.home() / ".cache" / "mempamal" / "slots" / socket.gethostname()


def n_cpu_slots() -> int:
    """The machine's CPUs (``$MEMPAMAL_CPU_SLOTS`` overrides, e.g. to keep some free)."""
    env = os.environ.get("MEMPAMAL_CPU_SLOTS")
    return max(1, int(env)) if env else (os.cpu_count() or 1)


def _try_lock(path: Path):
    """An open, ``flock``-ed descriptor of ``path``, or None if someone holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def _unlock(fd: int) -> None:
    with contextlib.suppress(OSError):
        fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)


class MachineSlots:
    """An executor's share of the machine: its ticket and the slots it holds.

    Parameters
    ----------
    workdir : str
        Shown by ``mempamal queue``.
    total : int
        Tasks this run has to do (shown with those done).
    """

    def __init__(self, workdir: str, total: int) -> None:
        self.dir = slots_dir()
        (self.dir / "queue").mkdir(parents=True, exist_ok=True, mode=0o700)
        self.n_cpus = n_cpu_slots()
        self.info = {"workdir": workdir, "pid": os.getpid(), "host": socket.gethostname(),
                     "submitted": time.time(), "total": total, "done": 0,
                     "waiting": False, "held": 0}
        name = f"{time.time_ns():020d}-{os.getpid()}"
        self.ticket = self.dir / "queue" / f"{name}.json"
        self.ticket_lock = _try_lock(self.dir / "queue" / f"{name}.lock")
        self.held: dict[str, int] = {}  # slot name -> fd
        self.changed = False  # since the ticket was last written
        self._publish()

    # -- the ticket ------------------------------------------------------------
    def _publish(self) -> None:
        self.info["held"] = len(self.held)
        # atomic but not fsync-ed: it is only advice to the other executors
        # (the locks are the truth), and shown by ``mempamal queue``
        replace_text(self.ticket, json.dumps(self.info) + "\n")
        self.changed, self.published_at = False, time.monotonic()

    def publish(self, waiting: bool) -> None:
        """Write the ticket when it must: at once if ``waiting`` changed, else when due.

        ``waiting``: whether this executor waits for a slot (younger ones
        then let it go first), so a change is written at once. The slots held
        and the tasks done are only shown (``mempamal queue``): a change is
        written at most every :data:`PUBLISH_SECONDS` (the executor looks
        again when it is due, see :meth:`due_in`). Written at every task,
        the ticket cost the parent about 0.5 ms of CPU per task, taken from
        the workers on a full machine.
        """
        if self.info["waiting"] != waiting:
            self.info["waiting"] = waiting
            self._publish()
        elif self.changed and self.due_in() == 0:
            self._publish()

    def due_in(self) -> float | None:
        """Seconds until a change not yet written is due; None if there is none."""
        if not self.changed:
            return None
        return max(0.0, self.published_at + PUBLISH_SECONDS - time.monotonic())

    def task_done(self) -> None:
        self.info["done"] += 1
        self.changed = True

    def close(self) -> None:
        """Release every slot and withdraw the ticket."""
        for fd in self.held.values():
            _unlock(fd)
        self.held.clear()
        for path in (self.ticket, self.ticket.with_suffix(".lock")):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        if self.ticket_lock is not None:
            _unlock(self.ticket_lock)

    # -- slots -----------------------------------------------------------------
    def try_acquire(self, cpus: int, gpus: list[str] = ()) -> list[str] | None:
        """Take ``cpus`` CPU slots and the slots of devices ``gpus``; their names, or None.

        Nothing is taken unless everything is free, and nothing is taken while
        an older live experiment waits for a slot (submission order).
        """
        if self._older_waiting():
            return None
        names = [f"gpu-{g}" for g in gpus]
        taken = []
        for name in names:
            fd = _try_lock(self.dir / f"{name}.lock")
            if fd is None:
                self._give_back(taken)
                return None
            taken.append((name, fd))
        for k in range(self.n_cpus):
            if sum(n.startswith("cpu-") for n, _ in taken) == cpus:
                break
            name = f"cpu-{k}"
            if name in self.held:
                continue
            fd = _try_lock(self.dir / f"{name}.lock")
            if fd is not None:
                taken.append((name, fd))
        if sum(n.startswith("cpu-") for n, _ in taken) < cpus:
            self._give_back(taken)
            return None
        self.held.update(taken)
        self.changed = True
        return [n for n, _ in taken]

    def release(self, names: list[str]) -> None:
        for name in names:
            fd = self.held.pop(name, None)
            if fd is not None:
                _unlock(fd)
        self.changed = True

    @staticmethod
    def _give_back(taken) -> None:
        for _, fd in taken:
            _unlock(fd)

    def _older_waiting(self) -> bool:
        for other in live_tickets(self.dir):
            if other["ticket"] >= self.ticket.name:
                break
            if other.get("waiting"):
                return True
        return False


def live_tickets(directory: Path | None = None) -> list[dict]:
    """The experiments of this machine's local executors, oldest first.

    A ticket whose executor died (its lock is free) is removed.
    """
    directory = directory or slots_dir()
    queue = directory / "queue"
    out = []
    for path in sorted(queue.glob("*.json")) if queue.is_dir() else []:
        lock = path.with_suffix(".lock")
        fd = _try_lock(lock) if lock.exists() else None
        if fd is not None or not lock.exists():  # nobody holds it: a dead executor
            if fd is not None:
                _unlock(fd)
            for p in (path, lock):
                with contextlib.suppress(FileNotFoundError):
                    p.unlink()
            continue
        try:
            info = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        info["ticket"] = path.name
        out.append(info)
    return out
