#!/usr/bin/env bash
# Starts the three-node example cluster on this machine and stops it again:
# a private PostgreSQL and Redis on free loopback ports (scripts/services.sh,
# data in a temporary directory), then node-1..node-3 from node-N.toml, all
# sharing them. Runs in the foreground; Ctrl-C (or SIGTERM) stops the nodes
# gracefully (SIGTERM: they hand their entities over) and then the servers.
#
#   examples/cluster/cluster.sh            # build dir: $HOTSWAP_BUILD_DIR or ./build
#
# Node logs go to data/cluster/node-N.log.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
build="${HOTSWAP_BUILD_DIR:-$root/build}"
hotswapd="$build/tools/hotswapd"
if [ ! -x "$hotswapd" ]; then
  echo "cluster: $hotswapd not found; build first (scripts/dev.sh builds it)" >&2
  exit 1
fi
cd "$root"
mkdir -p data/cluster
# shellcheck source=../../scripts/services.sh
source "$root/scripts/services.sh"
pids=()
stop_all() {
  trap - EXIT INT TERM
  if [ ${#pids[@]} -gt 0 ]; then
    echo "cluster: stopping the nodes (SIGTERM)"
    kill -TERM "${pids[@]}" 2>/dev/null || true
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  fi
  services_stop
}
services_start
trap stop_all EXIT
trap 'stop_all; exit 0' INT TERM
export HOTSWAP_STORE_URL="$HOTSWAP_TEST_PG_URL"
export HOTSWAP_CLUSTER_REGISTRY="$HOTSWAP_TEST_REDIS_URL"
for n in 1 2 3; do
  "$hotswapd" --config "$here/node-$n.toml" >"data/cluster/node-$n.log" 2>&1 &
  pids+=("$!")
done
for n in 1 2 3; do
  for _ in $(seq 1 100); do
    if curl -fsS "http://127.0.0.1:808$n/health" >/dev/null 2>&1; then break; fi
    if ! kill -0 "${pids[$((n - 1))]}" 2>/dev/null; then
      echo "cluster: node-$n exited; its log:" >&2
      tail -n 30 "data/cluster/node-$n.log" >&2
      exit 1
    fi
    sleep 0.1
  done
done
echo "cluster: node-1 http://127.0.0.1:8081  node-2 http://127.0.0.1:8082  node-3 http://127.0.0.1:8083"
echo "cluster: PostgreSQL $HOTSWAP_STORE_URL, Redis $HOTSWAP_CLUSTER_REGISTRY"
echo "cluster: log in on any node: POST /api/v1/authentication/login {\"username\":\"admin\",\"password\":\"Admin123!\"}"
echo "cluster: membership: GET /api/v1/clusters; Ctrl-C stops everything"
wait -n "${pids[@]}" || true
echo "cluster: a node exited; stopping the rest" >&2
