#!/usr/bin/env bash
# Long crash trials (not part of CI): SIGKILL `r1 serve` at random moments under load
# and check after every restart that no acknowledged send was lost, every journal
# verifies, and unfinished sessions come back paused-reattachable.
# See docs/hardening.md.
#
#   scripts/crash-trials.sh            # 500 trials
#   scripts/crash-trials.sh 2000       # more
#   R1_CRASH_SEED=<seed> scripts/crash-trials.sh 500   # replay a failing run
#
# The same test runs 20 trials in `cargo test` (the smoke size).
set -euo pipefail
cd "$(dirname "$0")/.."
trials="${1:-${R1_CRASH_TRIALS:-500}}"
export R1_CRASH_TRIALS="$trials"
export CARGO_TERM_COLOR=never
cargo build -p r1-bin --tests --quiet
start=$(date +%s)
set +e
cargo test -p r1-bin --test survive --quiet -- --exact crash::crash_trials_lose_no_acknowledged_send --nocapture
status=$?
set -e
end=$(date +%s)
echo "crash-trials.sh: ${trials} trials, exit ${status}, $((end - start)) s wall"
exit "$status"
