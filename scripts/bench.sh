#!/usr/bin/env bash
# The benchmark command: builds r1 and r1-bench in release mode and runs every
# measurement at full size on this machine (a few minutes). Prints the table and
# writes bench-results.json at the repo root. docs/benchmarks.md explains it.
#
#   scripts/bench.sh                 # everything
#   scripts/bench.sh --only 1,7      # some measurements
#   scripts/bench.sh --quick         # small sizes, seconds
#
# Measurement 3 compares against watchman and tmux (Debian packages `watchman`,
# `tmux`); without them those rows say "not measured".
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never
cargo build --release -p r1-bin -p r1-bench
target_dir="${CARGO_TARGET_DIR:-target}"
exec "$target_dir/release/r1-bench" --r1 "$target_dir/release/r1" --out bench-results.json "$@"
