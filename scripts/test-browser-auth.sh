#!/usr/bin/env bash
# The loopback auth rules in a real browser (tests/browser-auth): headless Chromium,
# driven by playwright-core, against `r1 serve --detach`. Builds the r1 binary,
# installs the one npm dependency from the lock file, runs the test. Its last line is
# `browser auth tests: N passed, M failed`; the exit status is non-zero on failure.
#
# Needs: node >= 18 and npm, Chromium (CHROMIUM, default /usr/bin/chromium; Debian's
# `chromium` package). R1_BIN overrides the binary (default: the debug build).
set -euo pipefail
cd "$(dirname "$0")/.."

chromium="${CHROMIUM:-/usr/bin/chromium}"
if [ ! -x "$chromium" ]; then
  echo "browser auth tests: no Chromium at $chromium (apt-get install chromium, or set CHROMIUM)" >&2
  exit 1
fi
command -v npm >/dev/null || { echo "browser auth tests: npm not found" >&2; exit 1; }

if [ -z "${R1_BIN:-}" ]; then
  cargo build -q -p r1-bin
  R1_BIN="${CARGO_TARGET_DIR:-$PWD/target}/debug/r1"
  export R1_BIN
fi

cd tests/browser-auth
# The lock file pins playwright-core; it needs no browser download (the test uses
# the system Chromium).
PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error
CHROMIUM="$chromium" node test.mjs
