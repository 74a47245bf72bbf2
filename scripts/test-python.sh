#!/usr/bin/env bash
# Builds and tests the `r1` Python package (r1-py) in a private virtualenv:
#   1. a venv (default target/py-venv) with pytest and mypy from PyPI;
#   2. `pip install ./r1-py`, exactly as a user would: pip runs maturin as the
#      PEP 517 build backend in an isolated build env, so nothing but pip and PyPI
#      is needed (the venv's own packages are not used for the build);
#   3. pytest against real daemons in temporary homes (R1_BIN = the r1 binary
#      built here, for the auto-spawn tests);
#   4. mypy --strict on the example and the typed tests, and mypy.stubtest on the
#      installed package (stubs must match the compiled module).
# Any failure fails the script. Installs nothing outside the venv and target/.
#
# Environment: PYTHON (interpreter for the venv, default python3), R1_PY_VENV (venv
# path), R1_PY_PROFILE (cargo profile for the extension: dev, the default, reuses
# the debug build cache; release for an optimised build), CARGO_TARGET_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
export CARGO_TERM_COLOR=never
VENV="${R1_PY_VENV:-$CARGO_TARGET_DIR/py-venv}"
PYTHON="${PYTHON:-python3}"
PROFILE="${R1_PY_PROFILE:-dev}"

step() { printf '\n== %s\n' "$*"; }

step "python venv ($VENV)"
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"
"$PY" -m pip install --quiet --disable-pip-version-check --upgrade pip
"$PY" -m pip install --quiet --disable-pip-version-check \
  "pytest>=7,<10" "mypy>=1.10,<3" "typing_extensions>=4.6"
"$PY" --version

step "r1 binary (auto-spawn tests)"
cargo build --quiet -p r1-bin
export R1_BIN="$CARGO_TARGET_DIR/debug/r1"

step "pip install ./r1-py (maturin build backend, profile $PROFILE)"
# Drop an old install first so a failed build can never leave the previous one
# to be tested.
"$PY" -m pip uninstall --quiet --yes r1 >/dev/null 2>&1 || true
MATURIN_PEP517_ARGS="--profile $PROFILE" \
  "$PY" -m pip install --quiet --disable-pip-version-check --no-cache-dir ./r1-py
# Import from outside the source tree: the installed package, not python/r1.
(cd / && "$PY" -c 'import r1, sys; print("r1", r1.__version__, "from", r1.__file__)')

step "pytest"
(
  cd r1-py/tests
  "$PY" -m pytest -p no:cacheprovider -q --durations=5 .
)

step "mypy --strict (example, typed usage, tests)"
export MYPY_CACHE_DIR="$CARGO_TARGET_DIR/mypy-cache"
(
  cd r1-py/tests
  "$PY" -m mypy --strict "$ROOT/examples/python/stream_session.py" .
)

step "stubtest (r1._r1.pyi against the compiled module)"
(cd / && "$PY" -m mypy.stubtest r1)

step "python: all passed"
