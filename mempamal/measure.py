"""What one task used: wall time, CPU time, its own peak memory, GPU memory.

A persistent worker (local executor, Dask) runs many tasks in one process,
whose ``ru_maxrss`` only grows: a small task after a big one would report the
big one's memory. On Linux the peak (``VmHWM``) is reset at the start of each
task by writing ``5`` to ``/proc/self/clear_refs``, so the peak read at its
end is the task's own. Where that is not allowed, the process peak is
recorded and said to be one (``peak_rss_scope: "process"``).
"""

from __future__ import annotations

import os
import resource
import time
from dataclasses import dataclass


def _cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _peak_rss_mb() -> float | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


#: set once NVML proved absent (no nvidia-ml-py, or no driver) in this process
_NVML_MISSING = False


def gpu_memory_mb(pid: int | None = None) -> float | None:
    """GPU memory used by process ``pid`` (this one by default), through NVML; None if unknown."""
    global _NVML_MISSING
    if _NVML_MISSING:
        return None
    try:
        import pynvml
    except ImportError:
        _NVML_MISSING = True
        return None
    pid = os.getpid() if pid is None else pid
    try:
        pynvml.nvmlInit()
    except Exception:  # noqa: BLE001 - no driver, no device: nothing to say
        # asked again for every trial of a sweep: a machine with no driver
        # will not grow one, so the answer is kept (and costs nothing after)
        _NVML_MISSING = True
        return None
    try:
        total = 0
        for k in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(k)
            for proc in pynvml.nvmlDeviceGetComputeRunningProcesses(handle):
                if proc.pid == pid and proc.usedGpuMemory:
                    total += proc.usedGpuMemory
        return total / 2**20
    except Exception:  # noqa: BLE001 - a device gone or busy: nothing to say this time
        return None


#: measurements under way in this process, outermost first
_ACTIVE: list[TaskUsage] = []


@dataclass(eq=False)  # compared by identity in _ACTIVE
class TaskUsage:
    """Counters taken when a task starts; :meth:`stop` gives what it used.

    Measurements nest (a sweep's task measures each of its trials): the
    peak a nested start resets is carried by the measurements around it.
    """

    wall: float
    cpu: float
    own_peak: bool
    carried_peak: float = 0.0

    @classmethod
    def start(cls) -> TaskUsage:
        before = _peak_rss_mb() if _ACTIVE else None
        for outer in _ACTIVE:
            outer.carried_peak = max(outer.carried_peak, before or 0.0)
        usage = cls(time.perf_counter(), _cpu_seconds(), _reset_peak())
        _ACTIVE.append(usage)
        # one never stopped (a task that found its inputs missing) must not pile
        # up in a persistent worker: nesting is two deep (task, trial)
        del _ACTIVE[:-4]
        return usage

    def stop(self) -> dict:
        """``seconds``, ``cpu_seconds``, ``peak_rss_mb``, ``peak_rss_scope``, ``gpu_mem_mb``."""
        if self in _ACTIVE:
            _ACTIVE.remove(self)
        peak = _peak_rss_mb() if self.own_peak else None
        if peak is not None:
            peak = max(peak, self.carried_peak)
        scope = "task"
        if peak is None:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            scope = "process"
        return {"seconds": time.perf_counter() - self.wall,
                "cpu_seconds": _cpu_seconds() - self.cpu,
                "peak_rss_mb": peak, "peak_rss_scope": scope,
                "gpu_mem_mb": gpu_memory_mb()}
