#!/usr/bin/env bash
# Browser tests of the web console: builds the r1 binary, installs the test
# project's one npm dependency (playwright-core, pinned by package-lock.json),
# and drives Debian's headless Chromium against real daemons
# (tests/browser/run.mjs). Exits non-zero on any failure; the last line is
# `browser tests: N passed, M failed`. Screenshots go to
# ${CARGO_TARGET_DIR:-target}/browser-artifacts/.
#
# Needs: cargo, node >= 20 with npm, and chromium (apt-get install chromium;
# set CHROMIUM=/path to use another build). .ci/run installs them.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never

fail() {
  echo "test-browser: $*" >&2
  echo "browser tests: 0 passed, 1 failed"
  exit 1
}

command -v node >/dev/null || fail "node is not installed (Node.js 20 or newer)"
command -v npm >/dev/null || fail "npm is not installed"
chromium="${CHROMIUM:-/usr/bin/chromium}"
[ -x "$chromium" ] || fail "no Chromium at $chromium: apt-get install chromium (or set CHROMIUM)"

echo "== build r1"
cargo build -p r1-bin

echo "== npm ci (tests/browser)"
(
  cd tests/browser
  if [ -f package-lock.json ]; then
    npm ci --no-audit --no-fund --loglevel=error
  else
    npm install --no-audit --no-fund --loglevel=error
  fi
) || fail "cannot install tests/browser's dependencies"

echo "== browser tests"
export CHROMIUM="$chromium"
exec node tests/browser/run.mjs
