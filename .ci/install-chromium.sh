#!/usr/bin/env bash
# install-chromium.sh -- Debian's chromium, for the report tests that draw the
# HTML report in a real headless browser (tests/test_report.py). Under CI=true
# those tests fail when chromium is missing, so CI runs this first.
#
# Debian/Ubuntu, run as root (or with sudo on PATH). Idempotent and quiet: a
# machine that already has chromium is left alone.
#   bash .ci/install-chromium.sh
set -euo pipefail

if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO=sudo
fi
export DEBIAN_FRONTEND=noninteractive
echo "[ci] installing chromium (headless browser of the report tests)" >&2
# the lock timeout: another installer (the SLURM script) may hold dpkg's lock
$SUDO apt-get -o DPkg::Lock::Timeout=300 update -qq >/dev/null
$SUDO apt-get -o DPkg::Lock::Timeout=300 install -y -qq chromium >/dev/null
chromium --version >&2
