#!/usr/bin/env bash
# Soak test: a mixed load through `pgveil serve` for MINUTES (default 10),
# sampling the proxy's resident memory and open file descriptors at the
# start, every minute and at the end, and printing them as a table.
#
#   scripts/soak.sh [MINUTES]
#
# Starts `pgveil demo` for a throwaway PostgreSQL with the example CRM and
# policy, then a separate `pgveil serve` (the process measured) in front of
# it with the admin endpoint on. The load, for the whole run:
#   - pgbench, 8 clients, prepared statements: as the sales rep alice_north,
#     read a customer, count its opportunities, update it (rewritten reads
#     and writes through the privacy views);
#   - pgbench, 2 clients, a new connection per transaction (-C): as sam,
#     one aggregate query (connect/disconnect churn).
# Needs PostgreSQL server binaries, pgbench and curl. Removes everything
# it started when it ends, however it ends.
set -euo pipefail

minutes=${1:-10}
root=$(cd "$(dirname "$0")/.." && pwd)
bin="$root/target/release/pgveil"
customers=2000
pg_bin=$(dirname "$(command -v initdb 2>/dev/null || ls -d /usr/lib/postgresql/*/bin/initdb | sort -V | tail -1)")
pgbench=$(command -v pgbench || echo "$pg_bin/pgbench")
command -v curl >/dev/null || { echo "curl not found: apt-get install -y curl" >&2; exit 1; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

work=$(mktemp -d /tmp/pgveil-soak.XXXXXX)
cleanup() {
  [ -n "${load_pids:-}" ] && kill $load_pids 2>/dev/null || true
  [ -n "${serve_pid:-}" ] && kill "$serve_pid" 2>/dev/null || true
  # The demo's cluster is stopped and removed when the demo process ends.
  [ -n "${demo_pid:-}" ] && kill "$demo_pid" 2>/dev/null && wait "$demo_pid" 2>/dev/null || true
  [ -n "${demo_dir:-}" ] && rm -rf "$demo_dir"
  rm -rf "$work"
}
trap cleanup EXIT

echo "building pgveil (release)..." >&2
(cd "$root" && cargo build --release --quiet)

demo_port=$(free_port); veil_port=$(free_port); admin_port=$(free_port)
echo "starting the demo cluster with $customers customers..." >&2
"$bin" demo --listen "127.0.0.1:$demo_port" --customers "$customers" >"$work/demo.out" 2>"$work/demo.err" &
demo_pid=$!
for _ in $(seq 600); do
  grep -q '^Configuration: ' "$work/demo.out" && break
  kill -0 "$demo_pid" 2>/dev/null || { cat "$work/demo.err" >&2; exit 1; }
  sleep 0.2
done
demo_config=$(sed -n 's/^Configuration: \(.*\) (kept until Ctrl-C).*/\1/p' "$work/demo.out")
[ -n "$demo_config" ] || { echo "the demo did not start" >&2; cat "$work/demo.err" >&2; exit 1; }
demo_dir=$(dirname "$demo_config")

config="$demo_dir/soak.toml"
sed "s/^listen = .*/listen = \"127.0.0.1:$veil_port\"/" "$demo_config" >"$config"
printf '\n[admin]\nlisten = "127.0.0.1:%s"\n' "$admin_port" >>"$config"
"$bin" --log-json serve --config "$config" 2>"$work/serve.log" &
serve_pid=$!
for _ in $(seq 300); do
  curl -sf "http://127.0.0.1:$admin_port/health" >/dev/null && break
  kill -0 "$serve_pid" 2>/dev/null || { cat "$work/serve.log" >&2; exit 1; }
  sleep 0.2
done

cat >"$work/read_write.sql" <<'SQL'
\set id random(1, :customers)
select customer_id, first_name, email, region from customers where customer_id = :id;
select count(*) from opportunities where customer_id = :id;
update customers set last_active_at = now() where customer_id = :id;
SQL
cat >"$work/churn.sql" <<'SQL'
select region, count(*) from customers group by region order by region;
SQL

metric() { # sum of the samples of one metric family on /metrics
  curl -sf "http://127.0.0.1:$admin_port/metrics" |
    awk -v name="$1" '$1 == name || index($1, name "{") == 1 { s += $2 } END { printf "%d", s }'
}
sample() {
  local rss fds
  rss=$(awk '/^VmRSS:/ { print $2 }' "/proc/$serve_pid/status")
  fds=$(ls "/proc/$serve_pid/fd" | wc -l)
  printf '%-8s %10s %6s %9s %12s %10s\n' "$1" "$rss" "$fds" \
    "$(metric pgveil_connections)" "$(metric pgveil_statements_total)" "$(metric pgveil_sessions_refused_total)"
}

seconds=$((minutes * 60))
export PGPASSWORD=demo PGSSLMODE=disable
common=(-n -h 127.0.0.1 -p "$veil_port" -T "$seconds" -D "customers=$customers")
echo "soak: $minutes min through pgveil serve (pid $serve_pid) on 127.0.0.1:$veil_port" >&2
printf '%-8s %10s %6s %9s %12s %10s\n' minute rss_kib fds sessions statements refused
sample start
"$pgbench" "${common[@]}" -c 8 -j 2 -M prepared -f "$work/read_write.sql" -U alice_north crm >"$work/rw.out" 2>"$work/rw.err" &
rw_pid=$!
"$pgbench" "${common[@]}" -c 2 -j 1 -C -f "$work/churn.sql" -U sam crm >"$work/churn.out" 2>"$work/churn.err" &
churn_pid=$!
load_pids="$rw_pid $churn_pid"
for minute in $(seq "$minutes"); do
  sleep 60
  sample "$minute"
done
status=0
wait "$rw_pid" || status=$?
wait "$churn_pid" || status=$?
load_pids=
sleep 2
sample end
for run in rw churn; do
  echo "pgbench $run:"
  grep -E 'number of (transactions actually processed|failed transactions)|latency average|tps = ' "$work/$run.out" | sed 's/^/  /'
done
if [ "$status" != 0 ]; then
  echo "pgbench failed:" >&2
  cat "$work/rw.err" "$work/churn.err" >&2
  exit 1
fi
kill -TERM "$serve_pid"
wait "$serve_pid" && echo "pgveil serve: exited 0 on SIGTERM" || { echo "pgveil serve exited with $?" >&2; exit 1; }
serve_pid=
