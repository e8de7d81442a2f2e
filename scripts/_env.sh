# Sourced by scripts/demo and scripts/test: make (or reuse) the virtual
# environment and install streammix into it. Needs only python3 (3.11+) and pip.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${STREAMMIX_VENV:-$ROOT/.venv}"
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
PY="$VENV/bin/python"
"$PY" -m pip install --quiet --disable-pip-version-check --upgrade pip
"$PY" -m pip install --quiet --disable-pip-version-check -e "$ROOT${STREAMMIX_EXTRAS:-}"
export PATH="$VENV/bin:$PATH"
cd "$ROOT"
