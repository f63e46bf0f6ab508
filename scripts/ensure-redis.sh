#!/usr/bin/env bash
# Installs Debian's redis-server when it is not on the machine. The tests start
# their own instances on free loopback ports; this script starts none.
set -euo pipefail
if command -v redis-server >/dev/null 2>&1; then exit 0; fi
echo '{"msg":"installing redis-server from Debian packages"}'
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends redis-server >/dev/null
# The package may start a system instance on 6379; the tests do not use it, so stop it.
if command -v service >/dev/null 2>&1; then $SUDO service redis-server stop >/dev/null 2>&1 || true; fi
command -v redis-server >/dev/null
