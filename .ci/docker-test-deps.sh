#!/usr/bin/env bash
# Installs what the Docker executor tests (io/tests/docker_executor.rs) need on a fresh Debian
# machine. They build their images locally from a static busybox, so no registry is used.
# The Docker engine itself must already run (DOCKER_HOST or /var/run/docker.sock); with CI set,
# the tests fail loudly when it does not answer.
set -euo pipefail

sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi

# Debian's `busybox` package is dynamically linked; only `busybox-static` runs in a scratch image.
if ! dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q "ok installed"; then
    $sudo apt-get update
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y --no-install-recommends busybox-static
fi
test -x /bin/busybox || { echo "busybox-static installed but /bin/busybox is missing" >&2; exit 1; }

sock="${DOCKER_HOST:-unix:///var/run/docker.sock}"
if [ "${sock#unix://}" != "$sock" ] && [ ! -S "${sock#unix://}" ]; then
    echo "warning: no Docker socket at ${sock#unix://}; the Docker executor tests will fail under CI" >&2
fi
