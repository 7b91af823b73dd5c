#!/usr/bin/env bash
# The main job: install what is missing, build, and start a development node
# on the embedded default (SQLite under ./data, HTTP on 127.0.0.1:8080, demo
# users). Extra arguments go to hotswapd (e.g. --config config/dev.toml).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
source scripts/deps.sh
hotswap_install_deps
build="${HOTSWAP_BUILD_DIR:-$root/build}"
cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
# The node, the CLI and the example modules (docs/modules.md walks through them).
ninja -C "$build" hotswapd hotswapctl example_modules invoke_client
echo "dev: example modules in $build/examples/modules, CLI $build/tools/hotswapctl"
echo "dev: starting a development node (Ctrl-C stops it gracefully)"
exec "$build/tools/hotswapd" "$@"
