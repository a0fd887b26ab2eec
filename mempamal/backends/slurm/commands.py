"""The SLURM commands mempamal calls (sbatch, squeue, scancel, scontrol) and their parsers.

Parsers are pure functions of text, tested on recorded outputs.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from dataclasses import dataclass

from ...errors import BackendError, ExternalCommandError
from ...workdir import write_text

#: array size when ``scontrol show config`` cannot tell (SLURM's own default)
DEFAULT_MAX_ARRAY_SIZE = 1001

#: squeue columns: job id, array master id, array index, name, state, reason
_SQUEUE_FORMAT = "%A|%F|%K|%j|%T|%r"

#: states in which a job may still start or is running
ACTIVE_STATES = {"PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "SUSPENDED", "REQUEUED",
                 "REQUEUE_HOLD", "REQUEUE_FED", "RESIZING", "SIGNALING", "STAGE_OUT",
                 "STOPPED", "RESV_DEL_HOLD", "SPECIAL_EXIT"}


def _run(argv: list[str], check: bool = True) -> subprocess.CompletedProcess:
    if shutil.which(argv[0]) is None:
        raise BackendError(
            f"{argv[0]!r} is not on PATH: the SLURM backend submits with sbatch and asks "
            "squeue; run on a SLURM login node (or only write the scripts with "
            "`mempamal compile ... --backend slurm`)")
    proc = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                          check=False)
    if check and proc.returncode != 0:
        raise ExternalCommandError(argv, proc.returncode, proc.stderr)
    return proc


def sbatch(argv_tail: list[str]) -> str:
    """Run ``sbatch --parsable ARGV_TAIL``; return the job id."""
    out = _run(["sbatch", "--parsable", *argv_tail]).stdout.strip()
    job_id = out.partition(";")[0]  # "id;cluster" on federated/multi-cluster setups
    if not job_id.isdigit():
        raise BackendError(f"sbatch printed {out!r}, expected a job id")
    return job_id


def scancel(job_ids) -> None:
    ids = sorted(set(job_ids), key=int)
    if ids:
        _run(["scancel", *ids], check=False)


def squeue(job_ids) -> list[dict]:
    """One squeue call for ``job_ids`` (finished jobs too, while SLURM remembers them)."""
    ids = sorted(set(job_ids), key=int)
    if not ids:
        return []
    proc = _run(["squeue", "--noheader", "--array", "--states=all", f"--jobs={','.join(ids)}",
                 f"--format={_SQUEUE_FORMAT}"], check=False)
    if proc.returncode != 0:
        # every id forgotten by SLURM: "slurm_load_jobs error: Invalid job id specified"
        if "Invalid job id" in proc.stderr:
            return []
        raise ExternalCommandError(proc.args, proc.returncode, proc.stderr)
    return parse_squeue(proc.stdout)


def parse_squeue(text: str) -> list[dict]:
    """Rows of ``squeue --format=%A|%F|%K|%j|%T|%r``.

    Each row: ``job`` (the element's own id), ``array_job``, ``index`` (None for
    a plain job), ``name``, ``state`` and ``reason`` (None for ``None``).
    """
    rows = []
    for line in text.splitlines():
        parts = line.strip().split("|")
        if len(parts) != 6:
            continue
        job, array_job, index, name, state, reason = parts
        rows.append({"job": job, "array_job": array_job,
                     "index": int(index) if index.isdigit() else None, "name": name,
                     "state": state.split()[0] if state else state,
                     "reason": None if reason in ("None", "(null)", "") else reason})
    return rows


def cluster_max_array_size() -> int:
    """MaxArraySize of the cluster (``scontrol show config``), else 1001."""
    if shutil.which("scontrol") is None:
        return DEFAULT_MAX_ARRAY_SIZE
    try:
        proc = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True,
                              stdin=subprocess.DEVNULL, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return DEFAULT_MAX_ARRAY_SIZE
    return parse_max_array_size(proc.stdout) if proc.returncode == 0 else \
        DEFAULT_MAX_ARRAY_SIZE


def parse_max_array_size(text: str) -> int:
    """``MaxArraySize = N`` of ``scontrol show config``; indices go 0..N-1."""
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() == "MaxArraySize" and value.strip().isdigit():
            return max(1, int(value.strip()))
    return DEFAULT_MAX_ARRAY_SIZE


def _sinfo(fmt: str, partition: str | None) -> str | None:
    """``sinfo --noheader --format=FMT`` output, or None when sinfo is missing or fails."""
    if shutil.which("sinfo") is None:
        return None
    argv = ["sinfo", "--noheader", f"--format={fmt}"]
    if partition:
        argv.append(f"--partition={partition}")
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                              timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout if proc.returncode == 0 else None


def partition_limits(partition: str | None) -> dict:
    """``{"max_minutes", "max_mem_mb"}`` of ``partition`` from sinfo ({} if unknown)."""
    from .sizing import parse_partition_limits

    text = _sinfo("%P %l %m", partition)
    return {} if text is None else parse_partition_limits(text, partition)


def cluster_cpus(partition: str | None) -> int | None:
    """CPUs of ``partition`` (default: the default partition) that can run jobs.

    Allocated plus idle CPUs from ``sinfo``, so drained and down nodes do not
    count; None when sinfo is missing or does not say.
    """
    if shutil.which("sinfo") is None:
        return None
    argv = ["sinfo", "--noheader", "--format=%P %C"]
    if partition:
        argv.append(f"--partition={partition}")
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                              timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return parse_cluster_cpus(proc.stdout, partition) if proc.returncode == 0 else None


def parse_cluster_cpus(text: str, partition: str | None) -> int | None:
    """Allocated + idle CPUs of ``sinfo --format="%P %C"`` lines of ``partition``.

    Without a partition, the default one (its name ends with ``*``).
    """
    total, seen = 0, False
    for line in text.splitlines():
        parts = line.split()
        if len(parts) != 2 or parts[1].count("/") != 3:
            continue
        name, counts = parts
        if (partition and name.rstrip("*") != partition) or \
                (not partition and not name.endswith("*")):
            continue
        allocated, idle = counts.split("/")[:2]
        if allocated.isdigit() and idle.isdigit():
            total += int(allocated) + int(idle)
            seen = True
    return total if seen and total > 0 else None


# -- the record of submitted jobs ----------------------------------------------
@dataclass
class Record:
    """One submitted job: its id, script stem and array spec (``-``: not an array)."""

    job: str
    stem: str
    array: str


def read_records(path) -> list[Record]:
    """Job records in submission order (``# ...`` lines are comments)."""
    try:
        with open(path, encoding="utf-8") as fh:
            lines = fh.read().splitlines()
    except FileNotFoundError:
        return []
    out = []
    for line in lines:
        parts = line.split("\t")
        if line.startswith("#") or len(parts) != 3:
            continue
        out.append(Record(*parts))
    return out


def append_records(path, records: list[Record], who: str) -> None:
    """Append a submission to the record (atomically rewritten: readers never see half)."""
    try:
        with open(path, encoding="utf-8") as fh:
            old = fh.read()
    except FileNotFoundError:
        old = ""
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    new = f"# submitted by {who} at {stamp}\n" + "".join(
        f"{r.job}\t{r.stem}\t{r.array}\n" for r in records)
    write_text(path, old + new)
