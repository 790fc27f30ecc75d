#!/usr/bin/env bash
# Installs everything the test suite needs on a fresh Debian machine: the
# package with its test, docs (Sphinx) and browser (Playwright) extras and
# the demo application; Debian's Chromium with a font for the browser tests
# (Playwright's own browser downloads are never used); a JDK and Maven, with
# which the suite fetches, compiles and runs mongo-java-server; Debian's
# redis-server, which the import tests start for pyramid_session_redis. The
# MongoDB-compatible servers are provided by the suite itself (see
# tests/servers.py).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -e '.[test,docs,browser]' -e demo
missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
dpkg -s fonts-dejavu-core >/dev/null 2>&1 || missing+=(fonts-dejavu-core)
command -v javac >/dev/null 2>&1 || missing+=(default-jdk-headless)
command -v mvn >/dev/null 2>&1 || missing+=(maven)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
if [ "${#missing[@]}" -gt 0 ]; then
    if [ "$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
