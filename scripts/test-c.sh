#!/usr/bin/env bash
# Builds and runs everything C: libr1 (shared and static), the header drift check,
# the C tests against both libraries, the native-messaging host (unit tests and the
# framed-message harness), the C example, valgrind runs, and the browser extension
# end to end in headless Chromium.
#
# Needs: gcc, make, python3, valgrind, libjansson-dev, chromium, node + npm (the
# browser test installs playwright-core into tests/browser-extension/node_modules
# when it is missing). Exits non-zero on any failure; the last line is
# `C tests: N passed, M failed` (`, K skipped` when a check is pending).
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
LIBDIR=$TARGET/debug
OUT=$TARGET/c-tests
mkdir -p "$OUT"
export R1_BIN=$LIBDIR/r1
CFLAGS=(-std=c11 -Wall -Wextra -Werror -g -O1)
STATIC_LIBS=(-lpthread -ldl -lm -lrt -lutil)
# No suppressions: only definite leaks are errors. Rust's runtime keeps some memory
# "still reachable" (thread-locals, once-cell globals), and r1-core's journal
# flusher is a process-wide thread that is never joined, so its stack's TLS block
# shows as "possibly lost"; neither is a leak, neither is an error here.
# --read-inline-info=no: reading the inline info of libr1's debug build costs ~3 s
# per process; traces stay readable without it.
VALGRIND=(valgrind --quiet --read-inline-info=no --leak-check=full --errors-for-leak-kinds=definite
  --show-leak-kinds=definite,indirect --error-exitcode=1)

passed=0 failed=0 skipped=0
failures=()
step() { printf '\n== [%ss] %s\n' "$SECONDS" "$*"; }

# check NAME CMD...: one check; passes when CMD exits 0.
check() {
  local name=$1; shift
  if "$@"; then
    passed=$((passed + 1)); echo "ok   $name"
  else
    failed=$((failed + 1)); failures+=("$name"); echo "FAIL $name"
  fi
}

# tally NAME LOG RC: adds the counts of a test binary's closing line
# `<label>: N passed, M failed[, K skipped]` in LOG. A non-zero RC with no failure
# counted (a crash, a valgrind error) counts as one failure.
tally() {
  local name=$1 log=$2 rc=$3
  local line p=0 f=0 s=0
  line=$(grep -E '^[^ ]+.*: [0-9]+ passed, [0-9]+ failed' "$log" | tail -n 1)
  if [[ $line =~ ([0-9]+)\ passed,\ ([0-9]+)\ failed(,\ ([0-9]+)\ skipped)? ]]; then
    p=${BASH_REMATCH[1]} f=${BASH_REMATCH[2]} s=${BASH_REMATCH[4]:-0}
  fi
  if [[ $rc -ne 0 && $f -eq 0 ]]; then f=1; fi
  passed=$((passed + p)); failed=$((failed + f)); skipped=$((skipped + s))
  if [[ $f -ne 0 ]]; then failures+=("$name (exit $rc)"); fi
}

# counted NAME CMD...: runs a test binary in the foreground and tallies it.
counted() {
  local name=$1; shift
  local log=$OUT/$name.log
  "$@" 2>&1 | tee "$log"
  tally "$name" "$log" "${PIPESTATUS[0]}"
}

# Background jobs (the machine has 2 cores; valgrind and the linker use one each):
# bg NAME CMD... starts one with its output in $OUT/NAME.log; bg_wait NAME waits,
# prints the log and returns the job's exit status.
declare -A bg_pids
bg() {
  local name=$1; shift
  "$@" > "$OUT/$name.log" 2>&1 &
  bg_pids[$name]=$!
}
bg_wait() {
  local rc=0
  wait "${bg_pids[$1]}" || rc=$?
  cat "$OUT/$1.log"
  return $rc
}
# bg_check NAME: waits for a background job and records it as one check.
bg_check() { check "$1" bg_wait "$1"; }
# bg_counted NAME: waits for a background test binary and tallies it.
bg_counted() {
  local rc=0
  bg_wait "$1" || rc=$?
  tally "$1" "$OUT/$1.log" "$rc"
}

step "build libr1 and r1"
if ! cargo build -p r1-ffi -p r1-bin; then
  echo "C tests: 0 passed, 1 failed"
  exit 1
fi

step "header: include/r1.h matches what cbindgen generates"
header_clean() {
  git diff --exit-code --stat -- include/r1.h &&
    [[ -z $(git status --porcelain -- include/r1.h) ]] ||
    { echo "include/r1.h differs from the generated header: commit the regenerated file"; git diff -- include/r1.h | head -n 40; false; }
}
check "header_matches_generated" header_clean
# libr1.so exports exactly the functions the header declares (nothing else leaks).
exports_match_header() {
  diff <(nm -D --defined-only "$LIBDIR/libr1.so" | awk '$2 == "T" {print $3}' | sort) \
       <(grep -oE '\br1_[a-z_]+\(' include/r1.h | tr -d '(' | sort -u)
}
check "exports_match_header" exports_match_header

step "compile the C tests (gcc ${CFLAGS[*]}) against libr1.so and libr1.a, the host, the example"
bg compile_tests_shared gcc "${CFLAGS[@]}" -Iinclude -Itests/c -o "$OUT/r1_tests_shared" \
  tests/c/test_r1.c -L"$LIBDIR" -Wl,-rpath,"$LIBDIR" -lr1 -ljansson -lpthread
bg compile_tests_static gcc "${CFLAGS[@]}" -Iinclude -Itests/c -o "$OUT/r1_tests_static" \
  tests/c/test_r1.c "$LIBDIR/libr1.a" "${STATIC_LIBS[@]}" -ljansson
bg compile_nm_unit gcc "${CFLAGS[@]}" -Iexamples/native-messaging-host/src -Itests/c \
  -o "$OUT/nm_unit" tests/c/test_nm_unit.c examples/native-messaging-host/src/frame.c \
  examples/native-messaging-host/src/pager.c -ljansson -lpthread
bg build_native_host_shared make -s -C examples/native-messaging-host \
  R1_LIBDIR="$LIBDIR" OUT="$OUT/r1-native-host" CFLAGS="${CFLAGS[*]}"
bg build_native_host_static make -s -C examples/native-messaging-host LINK=static \
  R1_LIBDIR="$LIBDIR" OUT="$OUT/r1-native-host-static" CFLAGS="${CFLAGS[*]}"
bg build_example_client make -s -C examples/c R1_LIBDIR="$LIBDIR" OUT="$OUT/r1-run" \
  CFLAGS="${CFLAGS[*]}"
for job in compile_tests_shared compile_tests_static compile_nm_unit build_native_host_shared \
  build_native_host_static build_example_client; do
  bg_check "$job"
done

step "C tests (shared library)"
counted "r1_tests_shared" "$OUT/r1_tests_shared"
step "C tests (static library)"
counted "r1_tests_static" "$OUT/r1_tests_static"
step "native host unit tests"
counted "nm_unit" "$OUT/nm_unit"

step "native host driven with framed messages"
counted "native_host" python3 tests/c/test_native_host.py "$OUT/r1-native-host"

step "example: r1-run starts a session and streams a command's output"
example_client() {
  local home work out
  home=$(mktemp -d /tmp/r1c-example-home-XXXXXX) work=$(mktemp -d /tmp/r1c-example-work-XXXXXX)
  out=$(R1_HOME=$home "$OUT/r1-run" "$work" "echo example-ok; pwd")
  local rc=$?
  echo "$out"
  R1_HOME=$home "$R1_BIN" ctl shutdown >/dev/null 2>&1
  rm -rf "$home" "$work"
  [[ $rc -eq 0 && $out == *"example-ok"* && $out == *"tool.end"* && $out == *"$work"* ]]
}
check "example_r1_run" example_client

step "install.sh writes valid manifests to the per-user locations"
install_script() {
  local home id=abcdefghijklmnopabcdefghijklmnop
  home=$(mktemp -d /tmp/r1c-install-XXXXXX)
  HOME=$home bash examples/native-messaging-host/install.sh --host "$OUT/r1-native-host" \
    --chrome-id "$id" --firefox-id r1-test@example.org &&
    python3 - "$home" "$OUT/r1-native-host" "$id" <<'PY'
import json, sys
home, host, cid = sys.argv[1:]
for rel, key, want in [
    (".config/google-chrome/NativeMessagingHosts", "allowed_origins", f"chrome-extension://{cid}/"),
    (".config/chromium/NativeMessagingHosts", "allowed_origins", f"chrome-extension://{cid}/"),
    (".mozilla/native-messaging-hosts", "allowed_extensions", "r1-test@example.org"),
]:
    m = json.load(open(f"{home}/{rel}/dev.relayone.r1.json"))
    assert m["name"] == "dev.relayone.r1" and m["path"] == host and m["type"] == "stdio", m
    assert m[key] == [want], m
PY
  local rc=$?
  HOME=$home bash examples/native-messaging-host/install.sh --uninstall >/dev/null
  [[ $rc -eq 0 && -z $(find "$home" -name '*.json') ]] || rc=1
  rm -rf "$home"
  return $rc
}
check "install_script" install_script

step "valgrind (definite leaks and invalid accesses fail)"
# The libr1 tests and the host unit tests run in the background while the host
# harness runs its own valgrind processes in the foreground.
bg r1_tests_valgrind "${VALGRIND[@]}" "$OUT/r1_tests_shared"
bg nm_unit_valgrind "${VALGRIND[@]}" "$OUT/nm_unit"
counted "native_host_valgrind" python3 tests/c/test_native_host.py "$OUT/r1-native-host" --valgrind
bg_counted r1_tests_valgrind
bg_counted nm_unit_valgrind

step "browser extension in headless Chromium"
counted "browser_extension" bash tests/browser-extension/run.sh "$OUT/r1-native-host-static"

printf '\n'
for f in "${failures[@]}"; do echo "failed: $f"; done
tail=""
if [[ $skipped -ne 0 ]]; then tail=", $skipped skipped"; fi
echo "C tests: $passed passed, $failed failed$tail"
[[ $failed -eq 0 ]]
