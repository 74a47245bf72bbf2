#!/usr/bin/env bash
# A short libFuzzer run of every fuzz target (fuzz/, cargo-fuzz), starting from the
# checked-in seeds in fuzz/corpus/<target>/. Fails on any crash, panic, sanitizer
# report, timeout or out-of-memory; the input that did it is kept under
# fuzz/artifacts/<target>/ (gitignored) and the command that replays it is printed.
#
#   scripts/fuzz-smoke.sh                 # every target, FUZZ_SECONDS (20) each
#   scripts/fuzz-smoke.sh http_conn       # one target
#   FUZZ_SECONDS=600 scripts/fuzz-smoke.sh rpc_dispatch
#
# Uses cargo-fuzz from PATH, or installs it once under target/tools. cargo-fuzz
# passes nightly-only flags (-Zsanitizer=address, …); on a stable toolchain
# RUSTC_BOOTSTRAP=1 lets it (set here). FUZZ_SANITIZER=none builds without AddressSanitizer (faster; for
# toolchains whose sanitizer runtime is missing). New inputs the run finds go to a
# temporary corpus, so the checked-in seeds stay as they are; to grow them, run
# `cargo fuzz run <target> fuzz/corpus/<target>` and commit a few good ones.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

seconds="${FUZZ_SECONDS:-20}"
sanitizer="${FUZZ_SANITIZER:-address}"
# 16 codegen units build much faster than cargo-fuzz's default of 1 and fuzz a
# little slower: the right trade for short runs. `build` and `run` must get the
# same options, or `run` rebuilds.
opts=(--sanitizer "$sanitizer" --codegen-units "${FUZZ_CODEGEN_UNITS:-16}")
if [ "$#" -gt 0 ]; then
  targets=("$@")
else
  targets=(journal_line journal_open rpc_dispatch http_conn)
fi
export RUSTC_BOOTSTRAP=1
export CARGO_TERM_COLOR=never

# cargo-fuzz from PATH, else the copy this script installs under the repo
# (target/tools, like the test command's venv and npm packages), pinned and locked.
cargo_fuzz_version=0.13.2
if ! cargo fuzz --version >/dev/null 2>&1; then
  tools="$(cd .. && pwd)/target/tools"
  export PATH="$tools/bin:$PATH"
  if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz smoke: installing cargo-fuzz $cargo_fuzz_version into target/tools (once)"
    if ! cargo install --quiet --locked --root "$tools" cargo-fuzz --version "$cargo_fuzz_version"; then
      echo "fuzz smoke: cannot install cargo-fuzz (cargo install cargo-fuzz --locked)" >&2
      exit 1
    fi
  fi
fi

echo "fuzz smoke: building the targets (${opts[*]}; minutes the first time)"
build_start=$(date +%s)
if ! cargo fuzz build "${opts[@]}" >"${TMPDIR:-/tmp}/r1-fuzz-build.log" 2>&1; then
  tail -n 40 "${TMPDIR:-/tmp}/r1-fuzz-build.log" >&2
  echo "fuzz smoke: the build failed" >&2
  exit 1
fi
echo "fuzz smoke: built in $(( $(date +%s) - build_start ))s"

work="$(mktemp -d "${TMPDIR:-/tmp}/r1-fuzz-smoke.XXXXXX")"
# The targets' daemons and journals live here (tmpfs when there is one: they fsync).
if [ -d /dev/shm ]; then
  scratch="$(mktemp -d /dev/shm/r1-fuzz-smoke.XXXXXX)"
else
  scratch="$work/scratch"
  mkdir -p "$scratch"
fi
export R1_FUZZ_SCRATCH="$scratch"
trap 'rm -rf "$work" "$scratch"' EXIT
failed=()
for t in "${targets[@]}"; do
  mkdir -p "$work/$t/corpus" "$work/$t/artifacts"
  start=$(date +%s)
  set +e
  case "$t" in
    journal_*) dict=dicts/journal.dict ;;
    rpc_*) dict=dicts/jsonrpc.dict ;;
    http_*) dict=dicts/http.dict ;;
  esac
  cargo fuzz run "${opts[@]}" "$t" "$work/$t/corpus" "corpus/$t" -- \
    -dict="$dict" -max_total_time="$seconds" -timeout=30 -rss_limit_mb=4096 \
    -artifact_prefix="$work/$t/artifacts/" -print_final_stats=1 >"$work/$t/log" 2>&1
  rc=$?
  set -e
  took=$(( $(date +%s) - start ))
  stats=$(grep -E '^stat::(number_of_executed_units|peak_rss_mb|new_units_added)' "$work/$t/log" \
    | sed 's/^stat:://; s/: */=/' | tr '\n' ' ')
  if [ "$rc" -eq 0 ]; then
    echo "fuzz smoke: $t ok in ${took}s ($stats)"
  else
    echo "fuzz smoke: $t FAILED (exit $rc) after ${took}s; the end of its log:"
    tail -n 60 "$work/$t/log" | sed 's/^/    /'
    mkdir -p "artifacts/$t"
    for a in "$work/$t/artifacts/"*; do
      [ -e "$a" ] || continue
      cp "$a" "artifacts/$t/"
      echo "    kept fuzz/artifacts/$t/$(basename "$a"); replay: (cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run ${opts[*]} $t artifacts/$t/$(basename "$a"))"
    done
    failed+=("$t")
  fi
done
if [ "${#failed[@]}" -gt 0 ]; then
  echo "fuzz smoke: FAILED: ${failed[*]}"
  exit 1
fi
echo "fuzz smoke: ${#targets[@]} targets, no crash"
