#!/usr/bin/env bash
# Installs everything the test suite needs on a fresh Debian machine: the
# package with its test extra, the demo application, and Debian's Chromium for
# the browser tests. The MongoDB-compatible server is provided by the suite
# itself (see tests/servers.py).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -e '.[test]' -e demo
if ! command -v chromium >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
fi
