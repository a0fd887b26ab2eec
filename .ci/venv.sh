# Source me: create (once) the project's virtual environment in .venv and
# install mempamal into it. Used by both README commands: the example asks
# for no extra (MEMPAMAL_EXTRAS="", quick on a fresh machine), the tests for
# every extra (the default, "all": soma, dask, mlflow...).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${MEMPAMAL_VENV:-$ROOT/.venv}
PY=${PYTHON:-python3}
if [ ! -x "$VENV/bin/python" ]; then
    echo "[mempamal] creating $VENV" >&2
    "$PY" -m venv "$VENV"
fi
EXTRAS=${MEMPAMAL_EXTRAS-all}
target="$ROOT${EXTRAS:+[$EXTRAS]}"
# re-install when the project's metadata changed (cheap when nothing did)
stamp="$VENV/.mempamal-installed${EXTRAS:+-$EXTRAS}"
if [ ! -f "$stamp" ] || [ "$ROOT/pyproject.toml" -nt "$stamp" ] || [ "$ROOT/setup.py" -nt "$stamp" ]; then
    echo "[mempamal] installing mempamal${EXTRAS:+[$EXTRAS]} into $VENV" >&2
    "$VENV/bin/python" -m pip install -q --upgrade pip
    "$VENV/bin/python" -m pip install -q -e "$target"
    touch "$stamp"
fi
export PATH="$VENV/bin:$PATH"
