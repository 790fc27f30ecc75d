#!/usr/bin/env bash
# Installs everything the test suite needs on a fresh Debian machine: the
# package with its test extra (Playwright included), the demo application,
# and Debian's Chromium with a font for the browser tests (Playwright's own
# browser downloads are never used). The MongoDB-compatible server is
# provided by the suite itself (see tests/servers.py).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -e '.[test]' -e demo
missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
dpkg -s fonts-dejavu-core >/dev/null 2>&1 || missing+=(fonts-dejavu-core)
if [ "${#missing[@]}" -gt 0 ]; then
    if [ "$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
