#!/usr/bin/env bash
# End to end: a Manifest V3 extension in headless Chromium talks to r1-native-host.
#
#   run.sh /path/to/r1-native-host      (R1_BIN must name the r1 binary to auto-spawn)
#
# Uses a fresh R1_HOME and Chromium profile under /tmp. The host manifest goes to
# <profile>/NativeMessagingHosts/ (where Chromium looks when started with
# --user-data-dir) via the example's install.sh; its path is a small wrapper that
# sets R1_HOME/R1_BIN for the host, since Chromium passes its own environment on.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
host=$(realpath "${1:?usage: run.sh HOST_BINARY}")
: "${R1_BIN:?set R1_BIN to the r1 binary}"
export CHROMIUM=${CHROMIUM:-/usr/bin/chromium}

fail() { echo "$*" >&2; echo "browser extension: 0 passed, 1 failed"; exit 1; }
[[ -x $CHROMIUM ]] || fail "no Chromium at $CHROMIUM (Debian: apt-get install chromium)"
if [[ ! -d $here/node_modules/playwright-core ]]; then
  (cd "$here" && npm install --no-audit --no-fund --loglevel=error) ||
    fail "npm install of playwright-core failed"
fi

tmp=$(mktemp -d /tmp/r1-browser-XXXXXX)
trap 'R1_HOME=$tmp/home "$R1_BIN" ctl shutdown >/dev/null 2>&1; rm -rf "$tmp"' EXIT
mkdir -m 700 "$tmp/home"
mkdir "$tmp/work" "$tmp/profile"
cp -r "$here/extension" "$tmp/extension"

cat > "$tmp/r1-native-host.sh" <<WRAP
#!/bin/sh
export R1_HOME='$tmp/home' R1_BIN='$R1_BIN' R1_NMH_LOG='$tmp/host.log'
exec '$host' "\$@"
WRAP
chmod 700 "$tmp/r1-native-host.sh"

# The extension id is derived from the manifest's "key" (sha256 of the public key,
# first 32 hex digits mapped 0-f → a-p): fixed, so allowed_origins can name it.
ext_id=$(python3 - "$tmp/extension/manifest.json" <<'PY'
import base64, hashlib, json, sys
der = base64.b64decode(json.load(open(sys.argv[1]))["key"])
print("".join(chr(ord("a") + int(c, 16)) for c in hashlib.sha256(der).hexdigest()[:32]))
PY
)
bash "$root/examples/native-messaging-host/install.sh" --host "$tmp/r1-native-host.sh" \
  --chrome-id "$ext_id" --browser chromium --dir "$tmp/profile/NativeMessagingHosts" >/dev/null ||
  fail "install.sh failed"

node "$here/test.mjs" --user-data-dir "$tmp/profile" --extension "$tmp/extension" \
  --workdir "$tmp/work" --home "$tmp/home"
rc=$?
if [[ $rc -ne 0 && -f $tmp/host.log ]]; then echo "--- host log"; tail -n 30 "$tmp/host.log"; fi
exit $rc
