#!/usr/bin/env bash
# Runs every test of the project: Rust (unit + integration), C, Python and browser.
# The README's test command and what .ci/run calls. Installs nothing system-wide;
# .ci/run does that first on a fresh machine.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never

step() { printf '\n== %s\n' "$*"; }

step "format"
cargo fmt --all --check

step "build (debug, shared target dir)"
cargo build --workspace --all-targets

step "clippy"
cargo clippy --workspace --all-targets -- -D warnings

step "rust tests"
cargo test --workspace
