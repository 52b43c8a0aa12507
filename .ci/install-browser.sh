#!/usr/bin/env bash
# Installs what tests/test_app_browser.py needs besides the [dev] extra (which brings the playwright
# Python package): Debian's Chromium at /usr/bin/chromium. Playwright cannot download its own browser
# without internet access, so the test drives the system one.
#
# Idempotent: does nothing when Chromium is already there. Where it cannot be installed (not root
# and no password-less sudo, no apt-get, no package), it says why and exits 0: the browser test is
# then skipped with that reason, and the rest of CI goes on.
set -euo pipefail

CHROMIUM="${RESTORER_CHROMIUM:-/usr/bin/chromium}"

if [ -x "$CHROMIUM" ]; then
    echo "install-browser: $CHROMIUM is already installed"
    exit 0
fi

skip() {
    echo "install-browser: cannot install Chromium ($1); tests/test_app_browser.py will be skipped" >&2
    exit 0
}

if ! command -v apt-get >/dev/null 2>&1; then
    skip "no apt-get on this system"
fi
if [ "$(id -u)" -eq 0 ]; then
    as_root=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    as_root=(sudo -n)
else
    skip "not root and no password-less sudo"
fi

export DEBIAN_FRONTEND=noninteractive
echo "install-browser: apt-get install chromium"
"${as_root[@]}" apt-get update -qq || skip "apt-get update failed"
"${as_root[@]}" apt-get install -y -qq --no-install-recommends chromium >/dev/null \
    || skip "apt-get install chromium failed"

if [ ! -x "$CHROMIUM" ]; then
    # e.g. Ubuntu, where the chromium package is a wrapper around a snap that does not run in containers
    skip "the chromium package did not provide $CHROMIUM"
fi
echo "install-browser: installed $("$CHROMIUM" --version 2>/dev/null || echo "$CHROMIUM")"
