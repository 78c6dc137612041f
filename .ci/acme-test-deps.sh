#!/usr/bin/env bash
# Installs what the ACME test (tests/tests/acme.rs) needs on a fresh Debian machine: Debian's
# `pebble`, Let's Encrypt's ACME test server, with `pebble-challtestsrv` as its DNS.
# With CI or GADUS_REQUIRE_TOOLS set, that test fails when they are missing.
set -euo pipefail

if command -v pebble >/dev/null 2>&1 && command -v pebble-challtestsrv >/dev/null 2>&1; then
    echo "pebble already installed: $(command -v pebble)"
    exit 0
fi

sudo_if_needed() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

export DEBIAN_FRONTEND=noninteractive
sudo_if_needed apt-get update
sudo_if_needed apt-get install -y --no-install-recommends pebble
pebble -h 2>&1 | grep -q -- '-dnsserver' || { echo "pebble does not run" >&2; exit 1; }
echo "pebble OK"
