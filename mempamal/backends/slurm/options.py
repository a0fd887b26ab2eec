"""The SLURM backend's options: defaults and validation (before anything is written)."""

from __future__ import annotations

import re

from ...errors import ValidationError
from ..packing import check_tasks_per_job

#: option -> default; an unknown option is refused, listing these
DEFAULTS = {
    "partition": None, "time": None, "mem": None, "cpus_per_task": None, "gres": None,
    "account": None, "qos": None, "max_parallel": None, "max_array_size": None,
    "tasks_per_job": "auto", "setup": [], "extra_directives": [], "python": None,
    "job_name": "mempamal", "template_dir": None, "poll_interval": 5.0, "progress": None,
    "mail_user": None, "mail_type": None,
}

#: what ``--mail-type`` accepts (sbatch(1)), comma-separated
MAIL_TYPES = {"NONE", "BEGIN", "END", "FAIL", "REQUEUE", "ALL", "INVALID_DEPEND", "STAGE_OUT",
              "TIME_LIMIT", "TIME_LIMIT_90", "TIME_LIMIT_80", "TIME_LIMIT_50", "ARRAY_TASKS"}

# #SBATCH lines are parsed by sbatch, not by a shell: values cannot be quoted,
# so they are restricted to characters that need no quoting
_WORD = re.compile(r"^[A-Za-z0-9_.:,+=/@-]+$")
_TIME = re.compile(r"^(\d+-)?\d+(:\d{1,2}){0,2}$|^\d+-\d+$")
_MEM = re.compile(r"^\d+[KMGT]?$")


def validate(opts: dict) -> None:
    """Check every option; raise ValidationError naming the bad value."""
    for key in ("partition", "account", "qos", "gres", "mail_user"):
        _check_word(opts, key)
    mt = opts["mail_type"]
    if mt is not None and not (isinstance(mt, str) and mt and
                               set(mt.upper().split(",")) <= MAIL_TYPES):
        raise ValidationError(f"mail_type must be one or more of {sorted(MAIL_TYPES)} joined "
                              f"by commas (sbatch --mail-type), got {mt!r}")
    _check_word(opts, "job_name")
    if opts["job_name"] is None:
        raise ValidationError("job_name must be a string, got None")
    t = opts["time"]
    if t is not None and t != "auto" and not (_is_int(t) and t > 0) and not (
            isinstance(t, str) and _TIME.match(t)):
        raise ValidationError(
            f"time must be minutes (a positive int), a SLURM time such as '90', "
            f"'1:30:00' or '2-00:00:00', or 'auto', got {t!r}")
    m = opts["mem"]
    if m is not None and m != "auto" and not (_is_int(m) and m > 0) and not (
            isinstance(m, str) and _MEM.match(m)):
        raise ValidationError(
            f"mem must be megabytes (a positive int), a string such as '4G' or '500M', "
            f"or 'auto', got {m!r}")
    for key in ("cpus_per_task", "max_parallel", "max_array_size"):
        _check_positive(opts, key, allow_none=True)
    check_tasks_per_job(opts["tasks_per_job"])
    opts["setup"] = _lines(opts, "setup")
    opts["extra_directives"] = _lines(opts, "extra_directives")
    for d in opts["extra_directives"]:
        if not d.startswith("--") or not _WORD.match(d.lstrip("-")):
            raise ValidationError(
                f"extra_directives entry {d!r}: expected one sbatch option such as "
                "'--constraint=skylake' (no spaces or quotes)")
    p = opts["poll_interval"]
    if not isinstance(p, int | float) or isinstance(p, bool) or p <= 0:
        raise ValidationError(f"poll_interval must be a positive number of seconds, got {p!r}")
    if opts["python"] is not None and not isinstance(opts["python"], str):
        raise ValidationError(f"python must be a path or command name, got {opts['python']!r}")


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check_word(opts, key) -> None:
    v = opts[key]
    if v is not None and not (isinstance(v, str) and _WORD.match(v)):
        raise ValidationError(
            f"{key} must be a word of letters, digits and _.:,+=/@- (it goes on an #SBATCH "
            f"line, which cannot be quoted), got {v!r}")


def _check_positive(opts, key, allow_none) -> None:
    v = opts[key]
    if (v is None and allow_none) or (_is_int(v) and v >= 1):
        return
    raise ValidationError(f"{key} must be a positive int{' or None' if allow_none else ''}, "
                          f"got {v!r}")


def _lines(opts, key) -> list[str]:
    v = opts[key]
    if isinstance(v, str):
        v = [v]
    if not isinstance(v, list | tuple) or not all(isinstance(s, str) for s in v):
        raise ValidationError(f"{key} must be a list of strings, got {v!r}")
    for s in v:
        if "\n" in s or "\r" in s:
            raise ValidationError(f"{key} entry {s!r} holds a line break; give one line each")
    return list(v)
