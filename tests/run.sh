#!/usr/bin/env bash
# Run the test suite. Sets itself up: creates .venv with mempamal and its
# test extras on first use. Tests needing SLURM skip when no cluster answers
# (start one with `sudo bash .ci/slurm/start-local-slurm.sh`); under CI=true
# a missing SLURM, soma-workflow or Dask fails them instead.
# Two pytest-xdist workers share the tests (the SLURM tests, which share one
# cluster, run one after another on one of them: see tests/conftest.py);
# MEMPAMAL_TEST_WORKERS=0 runs everything in this process.
#   bash tests/run.sh [pytest args...]
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
source "$ROOT/.ci/venv.sh"
cd "$ROOT"
ruff check mempamal tests examples benchmarks
exec python -m pytest -n "${MEMPAMAL_TEST_WORKERS:-2}" --dist loadgroup --durations=25 "$@"
