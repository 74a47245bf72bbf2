#!/usr/bin/env bash
# Soak (not part of CI): one `r1 serve` under churn — sessions created and deleted,
# clients connecting and dropping (some mid-request), subscribers lagging behind a
# noisy session — sampling the daemon's open fds and RSS every second. Prints
# start/end/max of both and fails if they do not come back. See docs/hardening.md.
#
#   scripts/soak.sh              # 10 minutes
#   scripts/soak.sh 30           # a 30 s smoke
#   R1_SOAK_MIX=sessions scripts/soak.sh 120   # one kind of churn (sessions, noisy,
#                                              # connections, lagging; comma-separated)
#
# The per-second samples go to $R1_SOAK_SAMPLES (CSV; default target/soak-samples.csv).
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-${R1_SOAK_SECS:-600}}"
export R1_SOAK_SECS="$secs"
export R1_SOAK_SAMPLES="${R1_SOAK_SAMPLES:-$PWD/target/soak-samples.csv}"
export CARGO_TERM_COLOR=never
cargo build -p r1-bin --tests --quiet
set +e
cargo test -p r1-bin --test survive --quiet -- --exact soak::soak --ignored --nocapture
status=$?
set -e
echo "soak.sh: ${secs} s, exit ${status}; samples in ${R1_SOAK_SAMPLES}"
exit "$status"
