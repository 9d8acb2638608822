#!/usr/bin/env bash
# Make sure the headless browser the browser tests drive is installed: Debian's `chromium`
# package, driven by Playwright's Python package (tests/browser.py) with executable_path set, so
# Playwright never downloads a browser of its own. Installs it with apt-get when missing (root
# only); otherwise it is an error (exit 1), never a silent skip. With it, a small Chinese font
# (fonts-wqy-microhei) so the Chinese screenshots are readable (the tests do not depend on it).
#
# Usage: scripts/ensure-browser.sh
#   CONTACTGATE_TEST_CHROMIUM=/path/to/chromium   use that binary instead of /usr/bin/chromium
set -euo pipefail

CHROMIUM=${CONTACTGATE_TEST_CHROMIUM:-/usr/bin/chromium}

info() { printf 'ensure-browser: %s\n' "$*" >&2; }
die()  { printf 'ensure-browser: ERROR: %s\n' "$*" >&2; exit 1; }

if [[ ! -x $CHROMIUM ]]; then
    [[ -z ${CONTACTGATE_TEST_CHROMIUM:-} ]] || die "CONTACTGATE_TEST_CHROMIUM=$CHROMIUM is not an executable"
    [[ $(id -u) -eq 0 ]] || die "chromium is not installed and this script is not running as root, so it cannot install it: run 'sudo apt-get install chromium' (or set CONTACTGATE_TEST_CHROMIUM)"
    command -v apt-get >/dev/null 2>&1 || die "chromium is not installed and there is no apt-get to install it with (set CONTACTGATE_TEST_CHROMIUM)"
    info "installing chromium with apt-get"
    apt-get update -q </dev/null >&2 || die "apt-get update failed"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium </dev/null >&2 \
        || die "apt-get install chromium failed"
    [[ -x $CHROMIUM ]] || die "chromium was installed but $CHROMIUM is not there"
fi
# Readable Chinese in the screenshots; only when we can install it, and never a failure.
if [[ -z ${CONTACTGATE_TEST_CHROMIUM:-} && $(id -u) -eq 0 && ! -e /usr/share/fonts/truetype/wqy/wqy-microhei.ttc ]] \
        && command -v apt-get >/dev/null 2>&1; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends fonts-wqy-microhei </dev/null >&2 \
        || info "fonts-wqy-microhei could not be installed: Chinese screenshots will show boxes"
fi
printf 'Browser: %s\n' "$("$CHROMIUM" --version 2>/dev/null | sed -n 1p || echo "$CHROMIUM")"
