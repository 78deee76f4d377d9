#!/usr/bin/env bash
# Whole-system benchmark: pgbench -S against direct PostgreSQL, PgBouncer
# (session mode) and pgveil, side by side in one run, with ratios.
#
#   scripts/bench.sh [SECONDS_PER_RUN] [CLIENT_COUNTS]
#   e.g. scripts/bench.sh 10 "1 10 32"
#
# Starts its own throwaway PostgreSQL, PgBouncer and pgveil on free ports and
# removes them afterwards. Needs PostgreSQL server binaries, pgbench and
# pgbouncer (apt-get install -y postgresql pgbouncer). Runs as root or not.
set -euo pipefail

secs=${1:-10}
clients=${2:-"1 10 32"}
modes=${MODES:-"simple prepared"}
scale=${SCALE:-10}
root=$(cd "$(dirname "$0")/.." && pwd)

pg_bin=$(dirname "$(command -v initdb 2>/dev/null || ls -d /usr/lib/postgresql/*/bin/initdb | sort -V | tail -1)")
pgbench=$(command -v pgbench || echo "$pg_bin/pgbench")
pgbouncer=$(command -v pgbouncer || echo /usr/sbin/pgbouncer)
[ -x "$pg_bin/initdb" ] || { echo "PostgreSQL server binaries not found: apt-get install -y postgresql" >&2; exit 1; }
[ -x "$pgbouncer" ] || { echo "pgbouncer not found: apt-get install -y pgbouncer" >&2; exit 1; }

run_as=()
if [ "$(id -u)" = 0 ]; then
  id postgres >/dev/null 2>&1 || useradd --system --no-create-home postgres
  run_as=(runuser -u postgres --)
fi

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

work=$(mktemp -d /tmp/pgveil-bench.XXXXXX)
chmod 755 "$work"
[ "${#run_as[@]}" = 0 ] || chown postgres "$work"
pg_port=$(free_port); bouncer_port=$(free_port); veil_port=$(free_port)
password=bench-secret

cleanup() {
  [ -n "${veil_pid:-}" ] && kill "$veil_pid" 2>/dev/null || true
  [ -n "${bouncer_pid:-}" ] && kill "$bouncer_pid" 2>/dev/null || true
  "${run_as[@]}" "$pg_bin/pg_ctl" -D "$work/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

echo "building pgveil (release)..." >&2
(cd "$root" && cargo build --release --quiet)

echo "$password" > "$work/pwfile"
"${run_as[@]}" "$pg_bin/initdb" -D "$work/data" -U postgres --pwfile="$work/pwfile" \
  --auth-host=scram-sha-256 --auth-local=trust -E UTF8 >/dev/null
"${run_as[@]}" "$pg_bin/pg_ctl" -D "$work/data" -l "$work/pg.log" -w \
  -o "-p $pg_port -k $work -c listen_addresses=127.0.0.1 -c max_connections=200 -c fsync=off -c synchronous_commit=off" start >/dev/null
export PGPASSWORD=$password
psql -qX -h 127.0.0.1 -p "$pg_port" -U postgres -c "create database bench" postgres
"$pgbench" -q -i -s "$scale" -h 127.0.0.1 -p "$pg_port" -U postgres bench >/dev/null 2>&1

cat > "$work/pgbouncer.ini" <<INI
[databases]
bench = host=127.0.0.1 port=$pg_port dbname=bench
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $bouncer_port
unix_socket_dir =
auth_type = scram-sha-256
auth_file = $work/userlist.txt
pool_mode = session
default_pool_size = 40
max_client_conn = 200
logfile = $work/pgbouncer.log
pidfile = $work/pgbouncer.pid
INI
echo "\"postgres\" \"$password\"" > "$work/userlist.txt"
[ "${#run_as[@]}" = 0 ] || chown postgres "$work"/pgbouncer.ini "$work"/userlist.txt
"${run_as[@]}" "$pgbouncer" "$work/pgbouncer.ini" >/dev/null 2>&1 &
bouncer_pid=$!

verifier=$(echo "$password" | "$root/target/release/pgveil" passwd postgres)
cat > "$work/pgveil.toml" <<TOML
listen = "127.0.0.1:$veil_port"
[backend]
port = $pg_port
database = "bench"
user = "postgres"
password_env = "PGVEIL_BACKEND_PASSWORD"
tls = "disable"
[pool]
max_size = 40
$verifier
TOML
PGVEIL_BACKEND_PASSWORD=$password PGVEIL_LOG=warn "$root/target/release/pgveil" serve -c "$work/pgveil.toml" &
veil_pid=$!

for port in "$bouncer_port" "$veil_port"; do
  for _ in $(seq 50); do psql -qXtA -h 127.0.0.1 -p "$port" -U postgres -c "select 1" bench >/dev/null 2>&1 && break; sleep 0.2; done
done

tps() { # port mode clients
  local jobs=$(( $3 < 2 ? 1 : 2 ))
  "$pgbench" -n -S -M "$2" -c "$3" -j "$jobs" -T "$secs" -h 127.0.0.1 -p "$1" -U postgres bench 2>/dev/null \
    | awk '/^tps/ {printf "%.0f", $3}'
}

printf "pgbench -S, scale %s, %ss per run, %s cores\n" "$scale" "$secs" "$(nproc)"
printf "%-9s %7s %10s %10s %10s %12s %12s\n" mode clients direct pgbouncer pgveil veil/bouncer veil/direct
for mode in $modes; do
  for c in $clients; do
    d=$(tps "$pg_port" "$mode" "$c"); b=$(tps "$bouncer_port" "$mode" "$c"); v=$(tps "$veil_port" "$mode" "$c")
    awk -v m="$mode" -v c="$c" -v d="$d" -v b="$b" -v v="$v" \
      'BEGIN { printf "%-9s %7s %10s %10s %10s %12.2f %12.2f\n", m, c, d, b, v, (b>0?v/b:0), (d>0?v/d:0) }'
  done
done
