#!/usr/bin/env bash
# The whole test suite from a clean checkout: installs what is missing,
# builds everything (warnings are errors), starts a private PostgreSQL and
# Redis on loopback in temporary directories, runs every test through ctest,
# and stops the servers whatever happened. Fails when no test ran.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
source scripts/deps.sh
hotswap_install_deps
build="${HOTSWAP_BUILD_DIR:-$root/build-test}"
cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
ninja -C "$build"
count=$(ctest --test-dir "$build" -N | sed -n 's/^Total Tests: //p')
if [ -z "$count" ] || [ "$count" -eq 0 ]; then
  echo "test: no tests were registered; that is a failure" >&2
  exit 1
fi
echo "test: running $count tests"
exec scripts/services.sh run -- ctest --test-dir "$build" --output-on-failure --timeout 600 "$@"
