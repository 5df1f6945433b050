#!/usr/bin/env bash
# install-packages.sh: install the Debian packages the tests use beside the
# servers. Idempotent: an installed package is left alone.
#
#   chromium    /usr/bin/chromium, the real browser e2e/statuspage_test.go
#               drives (through github.com/chromedp/chromedp, which needs no
#               chromium-driver) to test trackerd's status page
#   prometheus  for promtool: cmd/trackerd's TestAlertRules runs `promtool
#               check rules` and `promtool test rules` on deploy/prometheus.
#               The Prometheus server it also installs is not started where
#               a policy-rc.d forbids it (as on this project's machines).
#
#   scripts/install-packages.sh           install what is missing (root)
#   scripts/install-packages.sh --check   only list it, as any user: exit 0
#                                         when everything is installed, 3
#                                         when something is missing
#                                         (scripts/test.sh asks for sudo
#                                         only then), 1 on errors
set -euo pipefail

PACKAGES=(chromium prometheus)

log() { printf 'install-packages: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

CHECK=0
case ${1:-} in
  --check) CHECK=1 ;;
  "") ;;
  *) die "usage: install-packages.sh [--check]" ;;
esac

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q '^install ok installed$'; }

missing=()
for p in "${PACKAGES[@]}"; do
  installed "$p" || missing+=("$p")
done

if [ ${#missing[@]} = 0 ]; then
  log "nothing to install: ${PACKAGES[*]} installed"
  exit 0
fi
if [ $CHECK = 1 ]; then
  for p in "${missing[@]}"; do log "would: apt-get install $p"; done
  exit 3
fi
[ "$(id -u)" = 0 ] || die "run as root: it installs Debian packages (--check lists them, as any user)"
log "apt-get install ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null ||
  { apt-get update -qq && apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null; } ||
  die "apt-get install ${missing[*]} failed"
for p in "${missing[@]}"; do installed "$p" || die "$p is still not installed"; done
log "installed ${missing[*]}"
