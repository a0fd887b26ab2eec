#!/usr/bin/env bash
# Run the scikit-learn-facing tests against the oldest scikit-learn that
# pyproject.toml allows, with numpy, scipy, pandas, joblib and threadpoolctl
# at their pyproject floors too, in a venv of their own (.venv-oldest: built
# on first use, re-installed when pyproject.toml changes, cheap otherwise).
# The newest scikit-learn is what README's `bash tests/run.sh` resolves in .venv.
#   bash .ci/test-oldest-sklearn.sh [pytest args...]
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${MEMPAMAL_OLDEST_VENV:-$ROOT/.venv-oldest}
PY=${PYTHON:-python3}
if [ ! -x "$VENV/bin/python" ]; then
    echo "[oldest] creating $VENV" >&2
    "$PY" -m venv "$VENV"
fi
stamp="$VENV/.mempamal-installed"
if [ ! -f "$stamp" ] || [ "$ROOT/pyproject.toml" -nt "$stamp" ] || [ "$0" -nt "$stamp" ]; then
    # pins read from pyproject.toml's floors, so they cannot drift from them:
    # "scikit-learn>=1.5" -> "scikit-learn==1.5" (which is 1.5.0)
    "$VENV/bin/python" - "$ROOT/pyproject.toml" >"$VENV/oldest-constraints.txt" <<'PY'
import re, sys, tomllib
deps = tomllib.load(open(sys.argv[1], "rb"))["project"]["dependencies"]
floors = {m[1].lower(): m[2] for d in deps if (m := re.fullmatch(r"\s*([\w.-]+)\s*>=\s*([\w.]+)\s*", d))}
for name in ("scikit-learn", "numpy", "scipy", "pandas", "joblib", "threadpoolctl"):
    if name not in floors:
        sys.exit(f"[oldest] pyproject.toml has no '{name}>=X' floor to test")
    print(f"{name}=={floors[name]}")
if "cloudpickle" in floors:  # pickling.py's, once pyproject declares it
    print(f"cloudpickle=={floors['cloudpickle']}")
PY
    echo "[oldest] installing mempamal[test] into $VENV with" $(cat "$VENV/oldest-constraints.txt") >&2
    "$VENV/bin/python" -m pip install -q --upgrade pip
    # wheels only for the compiled pins: a source build would outlast the tests
    "$VENV/bin/python" -m pip install -q -c "$VENV/oldest-constraints.txt" \
        --only-binary=scikit-learn,numpy,scipy,pandas -e "$ROOT[test]"
    touch "$stamp"
fi
cd "$ROOT"
"$VENV/bin/python" -c 'import joblib, numpy, pandas, scipy, sklearn
print(f"[oldest] scikit-learn {sklearn.__version__} (numpy {numpy.__version__}, "
      f"scipy {scipy.__version__}, pandas {pandas.__version__}, joblib {joblib.__version__})")'
# the tests that compare with scikit-learn or drive it; the backends, packaging
# and the slow kill-loop run only in .venv (README's test command)
tests=()
for t in oracle parity local validation robustness workflow final_model reuse shared_prefix \
         sklearn_compat; do
    [ -f "tests/test_$t.py" ] && tests+=("tests/test_$t.py")
done
exec "$VENV/bin/python" -m pytest -m "not slow" "${tests[@]}" "$@"
