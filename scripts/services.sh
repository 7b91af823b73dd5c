#!/usr/bin/env bash
# Private PostgreSQL 15 + Redis 7 for tests and benchmarks.
#
# Usage:
#   scripts/services.sh run -- <command...>
#       Starts a throw-away PostgreSQL cluster and Redis server on free
#       loopback ports, runs <command> with
#         HOTSWAP_TEST_PG_URL=postgresql://postgres@127.0.0.1:PORT/postgres
#         HOTSWAP_TEST_REDIS_URL=redis://127.0.0.1:PORT/0
#       exported, stops both services, removes their data and exits with the
#       command's exit code.
#
#   source scripts/services.sh && services_start
#       Starts the services in the current shell and exports the variables;
#       they are stopped by services_stop, which is also installed as an
#       EXIT/INT/TERM trap.
#
# Environment: HOTSWAP_SERVICES="pg redis" (default) selects what to start.
# Works as root (initdb runs as user postgres through runuser) and as an
# ordinary user. Never touches the system clusters.

_svc_log() { printf 'services: %s\n' "$*" >&2; }
_svc_die() { _svc_log "error: $*"; return 1; }

_svc_pg_bindir() {
  local d=""
  if command -v pg_config >/dev/null 2>&1; then
    d="$(pg_config --bindir 2>/dev/null)"
  fi
  if [ -z "$d" ] || [ ! -x "$d/initdb" ]; then
    for c in /usr/lib/postgresql/*/bin; do
      if [ -x "$c/initdb" ]; then d="$c"; fi
    done
  fi
  if [ -z "$d" ] || [ ! -x "$d/initdb" ] || [ ! -x "$d/pg_ctl" ]; then
    _svc_die "PostgreSQL server binaries (initdb, pg_ctl) not found; install them with: apt-get install -y postgresql (PostgreSQL 15 on Debian 12)"
    return 1
  fi
  printf '%s\n' "$d"
}

# Prints a free TCP port on 127.0.0.1.
_svc_free_port() {
  if command -v python3 >/dev/null 2>&1; then
    python3 - <<'EOF'
import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()
EOF
    return
  fi
  # Fallback: probe a random range with bash's /dev/tcp.
  local p
  for _ in $(seq 1 200); do
    p=$(( 20000 + RANDOM % 20000 ))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
      printf '%s\n' "$p"
      return 0
    fi
  done
  return 1
}

# Runs a command as the postgres user when we are root.
_svc_as_pg() {
  if [ "$(id -u)" = 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

services_stop() {
  local rc=$?
  trap - EXIT INT TERM
  if [ -n "${_SVC_PG_STARTED:-}" ] && [ -n "${_SVC_DIR:-}" ]; then
    _svc_as_pg "$_SVC_PG_BIN/pg_ctl" -D "$_SVC_DIR/pg" -m fast -w -t 30 stop >/dev/null 2>&1 \
      || _svc_log "warning: pg_ctl stop failed"
    _SVC_PG_STARTED=""
  fi
  if [ -n "${_SVC_REDIS_PORT:-}" ]; then
    redis-cli -h 127.0.0.1 -p "$_SVC_REDIS_PORT" shutdown nosave >/dev/null 2>&1 || true
    # Wait briefly for it to go away; kill by pid file as a last resort.
    for _ in 1 2 3 4 5 6 7 8 9 10; do
      [ -f "$_SVC_DIR/redis.pid" ] || break
      kill -0 "$(cat "$_SVC_DIR/redis.pid" 2>/dev/null)" 2>/dev/null || break
      sleep 0.1
    done
    if [ -f "$_SVC_DIR/redis.pid" ]; then
      kill "$(cat "$_SVC_DIR/redis.pid")" 2>/dev/null || true
    fi
    _SVC_REDIS_PORT=""
  fi
  if [ -n "${_SVC_DIR:-}" ] && [ -d "$_SVC_DIR" ]; then
    rm -rf "$_SVC_DIR"
  fi
  _SVC_DIR=""
  return $rc
}

services_start() {
  local want="${HOTSWAP_SERVICES:-pg redis}"
  local pg_bin=""
  case " $want " in
    *" pg "*)
      pg_bin="$(_svc_pg_bindir)" || return 1
      if [ "$(id -u)" = 0 ] && ! id postgres >/dev/null 2>&1; then
        _svc_die "running as root but there is no 'postgres' user; install it with: apt-get install -y postgresql"
        return 1
      fi
      ;;
  esac
  case " $want " in
    *" redis "*)
      if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1; then
        _svc_die "redis-server/redis-cli not found; install them with: apt-get install -y redis-server"
        return 1
      fi
      ;;
  esac

  _SVC_DIR="$(mktemp -d "${TMPDIR:-/tmp}/hotswap-services.XXXXXX")" || return 1
  chmod 755 "$_SVC_DIR"
  trap 'services_stop' EXIT
  trap 'services_stop; exit 130' INT
  trap 'services_stop; exit 143' TERM

  case " $want " in
    *" pg "*)
      _SVC_PG_BIN="$pg_bin"
      mkdir -p "$_SVC_DIR/pg" "$_SVC_DIR/pgsock"
      chmod 700 "$_SVC_DIR/pg"
      if [ "$(id -u)" = 0 ]; then
        chown postgres:postgres "$_SVC_DIR/pg" "$_SVC_DIR/pgsock"
      fi
      if ! _svc_as_pg "$pg_bin/initdb" -D "$_SVC_DIR/pg" -U postgres -A trust -E UTF8 \
          --no-locale >"$_SVC_DIR/initdb.log" 2>&1; then
        cat "$_SVC_DIR/initdb.log" >&2
        _svc_die "initdb failed"
        return 1
      fi
      local pg_port="" started=""
      for _ in 1 2 3 4 5; do
        pg_port="$(_svc_free_port)" || { _svc_die "no free port for PostgreSQL"; return 1; }
        if _svc_as_pg "$pg_bin/pg_ctl" -D "$_SVC_DIR/pg" -l "$_SVC_DIR/pg/server.log" -w -t 60 \
            -o "-p $pg_port -k $_SVC_DIR/pgsock -c listen_addresses=127.0.0.1" start \
            >/dev/null 2>&1; then
          started=1
          break
        fi
      done
      if [ -z "$started" ]; then
        tail -n 30 "$_SVC_DIR/pg/server.log" >&2 2>/dev/null
        _svc_die "PostgreSQL did not start"
        return 1
      fi
      _SVC_PG_STARTED=1
      export HOTSWAP_TEST_PG_URL="postgresql://postgres@127.0.0.1:${pg_port}/postgres"
      _svc_log "PostgreSQL ready: $HOTSWAP_TEST_PG_URL"
      ;;
  esac

  case " $want " in
    *" redis "*)
      local r_port="" ok=""
      for _ in 1 2 3 4 5; do
        r_port="$(_svc_free_port)" || { _svc_die "no free port for Redis"; return 1; }
        if redis-server --port "$r_port" --bind 127.0.0.1 --save '' --appendonly no \
            --daemonize yes --dir "$_SVC_DIR" --pidfile "$_SVC_DIR/redis.pid" \
            --logfile "$_SVC_DIR/redis.log" >/dev/null 2>&1; then
          _SVC_REDIS_PORT="$r_port"
          for _ in $(seq 1 50); do
            if redis-cli -h 127.0.0.1 -p "$r_port" ping 2>/dev/null | grep -q PONG; then
              ok=1
              break
            fi
            sleep 0.1
          done
          [ -n "$ok" ] && break
        fi
      done
      if [ -z "$ok" ]; then
        tail -n 30 "$_SVC_DIR/redis.log" >&2 2>/dev/null
        _svc_die "Redis did not start"
        return 1
      fi
      export HOTSWAP_TEST_REDIS_URL="redis://127.0.0.1:${r_port}/0"
      _svc_log "Redis ready: $HOTSWAP_TEST_REDIS_URL"
      ;;
  esac
  return 0
}

_svc_main() {
  case "${1:-}" in
    run)
      shift
      [ "${1:-}" = "--" ] && shift
      if [ $# -eq 0 ]; then
        _svc_die "usage: $0 run -- <command...>"
        exit 2
      fi
      services_start || exit 1
      local rc=0
      "$@" || rc=$?
      services_stop
      exit "$rc"
      ;;
    *)
      printf 'usage: %s run -- <command...>\n' "$0" >&2
      exit 2
      ;;
  esac
}

# Executed (not sourced): dispatch on the arguments.
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  set -u
  _svc_main "$@"
fi
