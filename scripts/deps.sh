#!/usr/bin/env bash
# Installs what hotswap needs from Debian 12's packages, and only what is
# missing. Sourced by dev.sh and test.sh; can also run on its own.
set -euo pipefail

HOTSWAP_PACKAGES=(
  build-essential g++ cmake ninja-build pkg-config git
  libcaf-dev
  libboost1.81-dev libboost-json1.81-dev libboost-system1.81-dev
  libpq-dev libsqlite3-dev libhiredis-dev libssl-dev openssl
  libspdlog-dev prometheus-cpp-dev libtomlplusplus-dev
  postgresql redis-server
  python3 curl ca-certificates
)

hotswap_install_deps() {
  local missing=()
  local p
  for p in "${HOTSWAP_PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
      missing+=("$p")
    fi
  done
  if [ ${#missing[@]} -eq 0 ]; then
    echo "deps: all ${#HOTSWAP_PACKAGES[@]} Debian packages present"
    return 0
  fi
  echo "deps: installing ${missing[*]}"
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    sudo="sudo"
  fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  hotswap_install_deps
fi
