#!/usr/bin/env bash
# Run the example nested cross-validation on the local executor.
# Sets itself up: creates .venv with mempamal (no optional extra) on first use.
#   bash examples/run.sh [WORKDIR]      (default: work/digits; rerun to resume)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
MEMPAMAL_EXTRAS="" source "$ROOT/.ci/venv.sh"
cd "$ROOT"
mempamal run examples/digits_svc.py --workdir "${1:-work/digits}" -j "$(nproc)"
