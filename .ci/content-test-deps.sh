#!/usr/bin/env bash
# Installs what the content-store tests (io/tests/content_*.rs) need on a fresh Debian machine:
# Debian's `ipfs_cid` (package ipfs-cid), the CIDv0 oracle for Kubo's default `ipfs add`.
# With CI or GADUS_REQUIRE_TOOLS set, those tests fail when the tool is missing.
set -euo pipefail

if command -v ipfs_cid >/dev/null 2>&1; then
    echo "ipfs_cid already installed: $(command -v ipfs_cid)"
    exit 0
fi

sudo_if_needed() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

export DEBIAN_FRONTEND=noninteractive
sudo_if_needed apt-get update
sudo_if_needed apt-get install -y --no-install-recommends ipfs-cid

# Smoke test: Kubo's CIDv0 of "hello world" (no trailing newline).
tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT
printf 'hello world' >"$tmp"
out=$(ipfs_cid "$tmp" 2>/dev/null)
case "$out" in
    *'"CIDv0":"Qmf412jQZiuVUtdgnB36FXFX7xg5V6KEbSJ4dpQuhkLyfD"'*) echo "ipfs_cid OK" ;;
    *) echo "ipfs_cid gave an unexpected answer: $out" >&2; exit 1 ;;
esac
