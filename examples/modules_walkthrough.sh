#!/usr/bin/env bash
# A tour of module delivery with hotswapctl: make a signing key with the
# openssl CLI, sign two versions of the echo module (once with openssl alone,
# once with hotswapctl), upload both, load 1.0.0 into the Development worker,
# shift traffic to 2.0.0 in two steps, retire 1.0.0, read the cluster view.
#
# Usage: examples/modules_walkthrough.sh [URL|own] [BUILD_DIR]
#   URL        "own" (the default) starts a node of its own for the tour, on a
#              free port in a temporary directory, trusting the key the tour
#              generates; it is stopped when the script exits. Or the URL of
#              a running development node (e.g. http://127.0.0.1:8080 from
#              scripts/dev.sh): a node only accepts signatures of the keys in
#              its [auth] trusted_module_keys, so that node must trust
#              $KEY_DIR/module.pub.pem - the script says how when it does not.
#   BUILD_DIR  the build directory (default ./build), with hotswapd, hotswapctl
#              and the example modules:
#              cmake --build build --target hotswapd hotswapctl example_modules
# Environment: KEY_DIR holds the key pair, made there when missing (default: the
# temporary directory with an own node, else ~/.local/state/hotswap-walkthrough,
# so that the key survives for the node's trusted_module_keys);
# HOTSWAP_USER / HOTSWAP_PASSWORD (default admin / Admin123!, the dev-mode admin);
# KEEP=1 keeps the temporary directory (node log, keys, signatures).
set -euo pipefail
target="${1:-own}"
build="$(cd "${2:-./build}" && pwd)"
user="${HOTSWAP_USER:-admin}"
password="${HOTSWAP_PASSWORD:-Admin123!}"
ctl="$build/tools/hotswapctl"
hotswapd="$build/tools/hotswapd"
modules="$build/examples/modules"
for f in "$ctl" "$modules/echo-1.0.0.so" "$modules/echo-2.0.0.so"; do
  if [[ ! -e "$f" ]]; then
    echo "missing $f - build it first: cmake --build $build --target hotswapd hotswapctl example_modules" >&2
    exit 1
  fi
done

work="$(mktemp -d "${TMPDIR:-/tmp}/hotswap-modules.XXXXXX")"
node_pid=""
cleanup() {
  local status=$?
  if [[ -n "$node_pid" ]]; then
    kill -TERM "$node_pid" 2>/dev/null || true
    wait "$node_pid" 2>/dev/null || true
  fi
  if [[ $status -ne 0 && -f "$work/node.log" ]]; then
    echo "--- the tour failed; the last lines of the node's log ($work/node.log):" >&2
    tail -n 15 "$work/node.log" >&2
  fi
  if [[ "${KEEP:-0}" == 1 || ($status -ne 0 && -f "$work/node.log") ]]; then
    echo "(kept $work)" >&2
  else
    rm -rf "$work"
  fi
}
trap cleanup EXIT

# Prints a command as it is typed, then runs it. `hotswapctl` below is the
# build's binary; the bearer token travels in HOTSWAP_TOKEN, not on the line.
hotswapctl() { "$ctl" "$@"; }
show() {
  local arg line='$'
  for arg in "$@"; do
    arg="${arg//"$work"\//}"
    if [[ "$arg" =~ ^[A-Za-z0-9_./=:,@%+-]+$ ]]; then
      line+=" $arg"
    else
      line+=" '${arg//\'/\'\\\'\'}'"
    fi
  done
  echo "$line"
}
run() {
  show "$@"
  "$@"
}
# run_into FILTER COMMAND...: shows and runs COMMAND, its output through FILTER.
run_into() {
  local filter=$1
  shift
  show "$@"
  "$@" | "$filter"
}
section() { printf '\n# %s\n' "$*"; }
pretty() { python3 -m json.tool; }
cd "$work"

section "1. a signing key pair, with the openssl CLI only (RSA-2048; ECDSA P-256 works too)"
if [[ "$target" == own ]]; then
  key_dir="${KEY_DIR:-$work}"
else
  key_dir="${KEY_DIR:-${XDG_STATE_HOME:-$HOME/.local/state}/hotswap-walkthrough}"
fi
mkdir -p "$key_dir"
key="$key_dir/module.key.pem"
pub="$key_dir/module.pub.pem"
if [[ -f "$key" && -f "$pub" ]]; then
  echo "(using the key pair in $key_dir)"
else
  (umask 077 && run openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$key" 2>/dev/null)
  run openssl pkey -in "$key" -pubout -out "$pub"
fi

if [[ "$target" == own ]]; then
  section "2. a node that trusts the public key (its own config, port and data, in $work)"
  mkdir -p "$work/data"
  cat > "$work/node.toml" <<EOF
[node]
id = "walkthrough"
data_dir = "$work/data"
dev_mode = true

[http]
listen = "127.0.0.1:0"

[store]
url = "sqlite://$work/data/hotswap.db"

[cluster]
listen = "127.0.0.1:0"

[auth]
trusted_module_keys = ["$pub"]
EOF
  cat "$work/node.toml"
  if [[ ! -x "$hotswapd" ]]; then
    echo "missing $hotswapd - cmake --build $build --target hotswapd" >&2
    exit 1
  fi
  echo "\$ hotswapd --config node.toml"
  "$hotswapd" --config "$work/node.toml" > "$work/node.log" 2>&1 &
  node_pid=$!
  url=""
  for _ in $(seq 1 150); do
    url="$(sed -n 's|^hotswapd: node .* listening on \(http://[^ ]*\)$|\1|p' "$work/node.log")"
    [[ -n "$url" ]] && break
    if ! kill -0 "$node_pid" 2>/dev/null; then
      echo "hotswapd exited at start" >&2
      node_pid=""
      exit 1
    fi
    sleep 0.2
  done
  [[ -n "$url" ]] || { echo "hotswapd did not start within 30 s" >&2; exit 1; }
  echo "node listening on $url"
else
  url="$target"
  section "2. the node at $url must trust $pub"
  echo "(its config needs: [auth] trusted_module_keys = [\"$pub\"], then a restart)"
fi

section "3. log in once; every later call reuses the token (logins are rate-limited)"
echo "\$ export HOTSWAP_TOKEN=\$(hotswapctl login --url $url --user $user --password '...')"
HOTSWAP_TOKEN="$("$ctl" login --url "$url" --user "$user" --password "$password")"
export HOTSWAP_TOKEN

section "4. sign echo 1.0.0 with openssl alone, and check the signature with hotswapctl"
cp "$modules/echo-1.0.0.so" "$modules/echo-2.0.0.so" "$work/"
run hotswapctl module inspect "$work/echo-1.0.0.so"
run openssl dgst -sha256 -sign "$key" -out "$work/echo-1.0.0.so.sig" "$work/echo-1.0.0.so"
run hotswapctl module verify --pubkey "$pub" "$work/echo-1.0.0.so"

section "5. sign echo 2.0.0 with hotswapctl (the same bytes openssl would write)"
run hotswapctl module sign --key "$key" "$work/echo-2.0.0.so"
run openssl dgst -sha256 -verify "$pub" -signature "$work/echo-2.0.0.so.sig" "$work/echo-2.0.0.so"

section "6. upload both (the signature travels base64-encoded in X-Module-Signature)"
echo "# with curl the first upload would be:"
echo "#   curl -XPOST $url/api/v1/modules -H \"Authorization: Bearer \$HOTSWAP_TOKEN\" \\"
echo "#     -H 'Content-Type: application/octet-stream' -H 'X-Module-Name: echo' -H 'X-Module-Version: 1.0.0' \\"
echo "#     -H \"X-Module-Signature: \$(base64 -w0 echo-1.0.0.so.sig)\" --data-binary @echo-1.0.0.so"
push() {
  local out
  if ! out="$(run hotswapctl module push --url "$url" "$@" 2>&1)"; then
    echo "$out"
    if [[ "$out" == *"trusted key"* ]]; then
      echo "The node does not trust $pub. Add it to the node's config," >&2
      echo "  [auth] trusted_module_keys = [\"$pub\"]" >&2
      echo "restart the node and run the tour again (or run it with 'own')." >&2
    fi
    return 1
  fi
  echo "$out"
}
push --signature "$work/echo-1.0.0.so.sig" "$work/echo-1.0.0.so"
push --signature "$work/echo-2.0.0.so.sig" --description "echo, second edition" "$work/echo-2.0.0.so"
versions() {
  python3 -c '
import sys, json
for v in json.load(sys.stdin):
    print("  %s %s  signed=%s  key %s  %s..." % (v["name"], v["version"], v["signed"],
                                                 v["signerKeyId"], v["digest"][:19]))'
}
run_into versions hotswapctl module list --url "$url" echo

if [[ "$target" != own ]]; then
  section "(a previous tour may have left echo 2.0.0 loaded: retire it first)"
  run hotswapctl worker retire --url "$url" --environment Development echo 2.0.0 >/dev/null
fi

section "7. load echo 1.0.0 into the Development worker (Admin) and call it"
run_into pretty hotswapctl worker stage --url "$url" --environment Development echo 1.0.0
run hotswapctl module invoke --url "$url" --environment Development echo "hello"

section "8. load echo 2.0.0 next to it, at weight 0: it takes no traffic yet"
staged() {
  python3 -c 'import sys,json; v=json.load(sys.stdin); print("  %s: weight %s, %s" % (v["version"], v["weight"], v["state"]))'
}
run_into staged hotswapctl worker stage --url "$url" --environment Development --weight 0 echo 2.0.0
run hotswapctl module invoke --url "$url" --environment Development echo "still one"

split() {
  python3 -c 'import sys,json; print("  " + ", ".join("%s=%s" % (v["version"], v["weight"]) for v in json.load(sys.stdin)["versions"]))'
}
weights() {
  run_into split hotswapctl worker weights --url "$url" --environment Development --weights "$1" echo
}
calls() {
  for i in $(seq 1 "$1"); do
    "$ctl" module invoke --url "$url" --environment Development echo "call $i" | paste -sd' ' -
  done
}
section "9. shift half of the traffic to 2.0.0, then all of it"
weights 1.0.0=50,2.0.0=50
echo "\$ hotswapctl module invoke --url $url --environment Development echo 'call N'   # 4 times"
calls 4
weights 1.0.0=0,2.0.0=100
echo "\$ hotswapctl module invoke --url $url --environment Development echo 'call N'   # 3 times"
calls 3

section "10. retire 1.0.0: it drains its in-flight calls and unloads"
run hotswapctl worker retire --url "$url" --environment Development echo 1.0.0

section "11. the Development cluster as the API reports it"
echo "\$ curl -s $url/api/v1/clusters/Development -H \"Authorization: Bearer \$HOTSWAP_TOKEN\""
curl -sf "$url/api/v1/clusters/Development" -H "Authorization: Bearer $HOTSWAP_TOKEN" | pretty

if [[ -n "$node_pid" ]]; then
  section "12. stop the node"
  kill -TERM "$node_pid"
  wait "$node_pid" || true
  node_pid=""
  tail -n 1 "$work/node.log"
fi
