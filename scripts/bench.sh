#!/usr/bin/env bash
# Runs the benchmarks of docs/performance.md in one go, each against its raw
# baseline measured in the same run:
#   1. GET /api/tenants/{id} on a real hotswapd vs a raw Beast server (http_bench)
#   2. snapshot writes through the store actor vs a raw libpq upsert (snapshot_bench)
#   3. module invocations through module_host vs direct requests to the
#      module's actors, and client pauses during hot swaps (module_bench)
#   4. Direct deployments through the deployment host vs the raw worker
#      commands they send, on SQLite and on PostgreSQL (deploy_bench)
#   5. cluster failover: kill -9 / SIGTERM of a deployment's owner to its next
#      persisted transition on a survivor, and commands to remote-owned vs
#      local entities (bench/failover_bench.py, three nodes on PostgreSQL + Redis)
#   6. messages publish / consume+ack vs GET /health, and event fan-out latency
#      to 100 WebSocket subscribers vs one (bench/events_bench.py, one node on SQLite)
# Starts a private PostgreSQL (scripts/services.sh) and a node on a free port,
# stops both at the end. Usage: scripts/bench.sh [build dir]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${1:-${HOTSWAP_BUILD_DIR:-$root/build}}"
cd "$root"
source scripts/deps.sh
hotswap_install_deps >/dev/null
cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
ninja -C "$build" hotswapd http_bench snapshot_bench module_bench deploy_bench example_modules >/dev/null

if [ -z "${HOTSWAP_TEST_PG_URL:-}" ]; then
  exec scripts/services.sh run -- "$0" "$build"
fi

work="$(mktemp -d)"
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
cat > "$work/node.toml" <<TOML
[node]
id = "bench"
data_dir = "$work/data"
[http]
listen = "127.0.0.1:$port"
[store]
url = "sqlite://$work/data/hotswap.db"
[rate_limits]
global = 100000000   # the limiter runs on every request but never refuses
[logging]
level = "warn"
TOML
"$build/tools/hotswapd" --config "$work/node.toml" >"$work/out.log" 2>"$work/err.log" &
node=$!
cleanup() { kill -TERM "$node" 2>/dev/null || true; wait "$node" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
base="http://127.0.0.1:$port"
for _ in $(seq 1 100); do
  curl -sf "$base/health" >/dev/null 2>&1 && break
  sleep 0.1
done
token="$(curl -sf -XPOST "$base/api/v1/authentication/login" -H 'content-type: application/json' \
  -d '{"username":"admin","password":"Admin123!"}' | python3 -c 'import sys,json; print(json.load(sys.stdin)["token"])')"
id="$(curl -sf -XPOST "$base/api/tenants" -H "Authorization: Bearer $token" \
  -d '{"name":"Bench","subdomain":"bench","tier":"Starter","contactEmail":"ops@bench.io"}' \
  | python3 -c 'import sys,json; print(json.load(sys.stdin)["tenantId"])')"
echo "== HTTP: GET /api/tenants/{id} vs raw Beast"
"$build/bench/http_bench" --url "$base/api/tenants/$id" --header "Authorization: Bearer $token" \
  --connections 32 --seconds 3 --rounds 3
echo "== snapshot writes: store actor put (+ audit) vs raw libpq upsert"
"$build/bench/snapshot_bench" "$HOTSWAP_TEST_PG_URL" 3000 1 4
echo "== module invocations: module_host vs direct to the module's actors; hot swap pauses"
"$build/bench/module_bench" "$build/examples/modules" --requests 20000 --rounds 3 --swaps 20
echo "== deployments: Direct through the deployment host vs raw worker commands"
"$build/bench/deploy_bench" "$build/examples/modules" --deployments 50
"$build/bench/deploy_bench" "$build/examples/modules" --deployments 50 --store "$HOTSWAP_TEST_PG_URL"
echo "== cluster failover: kill -9 / SIGTERM of the owner; remote vs local commands"
HOTSWAPD="$build/tools/hotswapd" HOTSWAP_MODULES_DIR="$build/examples/modules" \
  python3 bench/failover_bench.py --kills 20 --terms 5 --commands 400
echo "== events and messages: publish / consume+ack vs GET /health; fan-out to 100 subscribers vs 1"
HOTSWAPD="$build/tools/hotswapd" python3 bench/events_bench.py -n 5000 -c 4 -s 100 -e 200
