#!/usr/bin/env bash
# Install headless Chromium + chromedriver (Debian packages) for the site browser test.
# Idempotent and quiet: does nothing when both binaries are already present.
# Usage: bash site/install_browser.sh      (needs root or sudo; apt repositories only)
set -euo pipefail

have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/bin/$1" ]; }

if { [ -n "${PHYSEG_CHROMIUM:-}" ] && [ -n "${PHYSEG_CHROMEDRIVER:-}" ]; } || { have chromium && have chromedriver; }; then
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "install_browser.sh: no apt-get here; install Chromium and a matching chromedriver yourself" >&2
    echo "  (or point PHYSEG_CHROMIUM / PHYSEG_CHROMEDRIVER at them)" >&2
    exit 1
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO="sudo -n"
    else
        echo "install_browser.sh: chromium/chromedriver missing and not root (no sudo); install 'chromium chromium-driver' manually" >&2
        exit 1
    fi
fi

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get -o DPkg::Lock::Timeout=300 update -qq >/dev/null
$SUDO apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends chromium chromium-driver fonts-dejavu-core >/dev/null

if ! (have chromium && have chromedriver); then
    echo "install_browser.sh: installation finished but chromium/chromedriver still not found" >&2
    exit 1
fi
