#!/usr/bin/env bash
# Runs every test of the project: Rust (unit + integration), the examples, C,
# Python and browser. It is the README's test command and what .ci/run calls.
# System packages are .ci/run's job; everything else (venvs, npm packages) is
# installed here, under the repo.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never

step() { printf '\n== %s\n' "$*"; }

step "format"
cargo fmt --all --check

step "build (debug, one shared target dir)"
cargo build --workspace --all-targets

step "clippy"
cargo clippy --workspace --all-targets -- -D warnings

step "rust tests"
cargo test --workspace

step "rust example: embedding the daemon"
cargo run -q -p r1-example-embed

step "python: the r1 package (own venv)"
bash scripts/test-python.sh

step "C: libr1, examples, native-messaging host (gcc, valgrind, chromium)"
bash scripts/test-c.sh

step "browser: the web console in headless chromium"
bash scripts/test-browser.sh

step "browser: loopback auth rules in headless chromium (same origin vs foreign origin)"
bash scripts/test-browser-auth.sh

step "fuzz: a short libFuzzer run of every target (cargo-fuzz, AddressSanitizer)"
FUZZ_SECONDS="${FUZZ_SECONDS:-10}" bash scripts/fuzz-smoke.sh
