#!/bin/sh
# Installs (or removes) the r1 native-messaging host manifest for the current user.
#
#   install.sh --host /abs/path/r1-native-host --chrome-id <32-letter id> [--browser chrome|chromium|all]
#   install.sh --host /abs/path/r1-native-host --firefox-id <addon id>
#   install.sh --host ... --chrome-id ID --dir <user-data-dir>/NativeMessagingHosts
#   install.sh --uninstall [--browser ...] [--dir DIR]
#
# The manifest is named dev.relayone.r1.json and goes to the per-user locations:
#   Linux:  ~/.config/google-chrome/NativeMessagingHosts/  ~/.config/chromium/NativeMessagingHosts/
#           ~/.mozilla/native-messaging-hosts/
#   macOS:  ~/Library/Application Support/Google/Chrome/NativeMessagingHosts/
#           ~/Library/Application Support/Chromium/NativeMessagingHosts/
#           ~/Library/Application Support/Mozilla/NativeMessagingHosts/
# --dir writes one manifest into DIR instead (a Chromium started with --user-data-dir
# reads <user-data-dir>/NativeMessagingHosts/). Only the given extension may start
# the host (allowed_origins / allowed_extensions).
set -eu

NAME=dev.relayone.r1
here=$(cd "$(dirname "$0")" && pwd)
host= chrome_id= firefox_id= browser= dir= uninstall=0

die() { echo "install.sh: $*" >&2; exit 2; }

while [ $# -gt 0 ]; do
  case "$1" in
    --host) host=${2:?}; shift 2 ;;
    --chrome-id) chrome_id=${2:?}; shift 2 ;;
    --firefox-id) firefox_id=${2:?}; shift 2 ;;
    --browser) browser=${2:?}; shift 2 ;;
    --dir) dir=${2:?}; shift 2 ;;
    --uninstall) uninstall=1; shift ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) die "unknown argument: $1 (see --help)" ;;
  esac
done

case "$(uname -s)" in
  Darwin)
    base="$HOME/Library/Application Support"
    chrome_dir="$base/Google/Chrome/NativeMessagingHosts"
    chromium_dir="$base/Chromium/NativeMessagingHosts"
    firefox_dir="$base/Mozilla/NativeMessagingHosts" ;;
  *)
    chrome_dir="$HOME/.config/google-chrome/NativeMessagingHosts"
    chromium_dir="$HOME/.config/chromium/NativeMessagingHosts"
    firefox_dir="$HOME/.mozilla/native-messaging-hosts" ;;
esac

# Which browsers: explicit, else those an id was given for (chrome id → Chrome and Chromium).
if [ -z "$browser" ]; then
  if [ "$uninstall" = 1 ]; then browser=all
  elif [ -n "$chrome_id" ] && [ -n "$firefox_id" ]; then browser=all
  elif [ -n "$firefox_id" ]; then browser=firefox
  else browser=chrome+chromium
  fi
fi
case "$browser" in
  chrome) targets="chrome" ;;
  chromium) targets="chromium" ;;
  chrome+chromium) targets="chrome chromium" ;;
  firefox) targets="firefox" ;;
  all) targets="chrome chromium firefox" ;;
  *) die "--browser must be chrome, chromium, firefox or all" ;;
esac

dest_dir() {
  if [ -n "$dir" ]; then echo "$dir"; return; fi
  case "$1" in
    chrome) echo "$chrome_dir" ;;
    chromium) echo "$chromium_dir" ;;
    firefox) echo "$firefox_dir" ;;
  esac
}

if [ "$uninstall" = 1 ]; then
  for t in $targets; do
    f="$(dest_dir "$t")/$NAME.json"
    if [ -e "$f" ]; then rm -f "$f" && echo "removed $f"; fi
  done
  exit 0
fi

[ -n "$host" ] || die "--host /absolute/path/to/r1-native-host is required"
case "$host" in /*) ;; *) die "--host must be an absolute path (browsers require it)" ;; esac
[ -x "$host" ] || die "$host is not an executable file"
# The path goes into JSON unescaped: refuse the characters that would need escaping.
case "$host" in *'"'*|*'\'*) die "the host path must not contain \" or \\" ;; esac

for t in $targets; do
  case "$t" in
    chrome|chromium)
      [ -n "$chrome_id" ] || die "--chrome-id is required for $t"
      printf '%s' "$chrome_id" | grep -Eq '^[a-p]{32}$' ||
        die "a Chrome extension id is 32 letters a-p (chrome://extensions shows it)"
      template="$here/manifests/chrome.json.in" id="$chrome_id" ;;
    firefox)
      [ -n "$firefox_id" ] || die "--firefox-id is required for firefox"
      printf '%s' "$firefox_id" | grep -Eq '^[A-Za-z0-9@._{}-]+$' ||
        die "a Firefox add-on id looks like name@example.org or {uuid}"
      template="$here/manifests/firefox.json.in" id="$firefox_id" ;;
  esac
  d=$(dest_dir "$t")
  mkdir -p "$d"
  sed -e "s|@HOST_PATH@|$host|" -e "s|@EXTENSION_ID@|$id|" "$template" > "$d/$NAME.json.tmp"
  chmod 644 "$d/$NAME.json.tmp"
  mv "$d/$NAME.json.tmp" "$d/$NAME.json"
  echo "installed $d/$NAME.json ($t)"
done
