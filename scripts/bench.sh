#!/usr/bin/env bash
# Whole-system benchmark, every figure side by side in one run (these
# machines are shared: only ratios from one run mean anything).
#
#   scripts/bench.sh [SECONDS_PER_RUN] [CLIENT_COUNTS]
#   e.g. scripts/bench.sh 10 "1 10 32"
#
# 1. pgbench -S (simple and prepared protocol) against PostgreSQL directly,
#    PgBouncer and pgveil, in each pool mode with the same pool size. pgveil
#    serves `sam` (support, standard view set: every statement is rewritten
#    onto the privacy views; pgbench's tables are protected by a bench-only
#    policy file) and `root` (the administrator, passed through).
#    PgBouncer 1.18 cannot run protocol-level prepared statements in
#    transaction mode: that cell is n/a.
# 2. The CRM workload (point lookup by id, list by region, search by email
#    prefix, aggregate by country, an update) through pgveil as clerk (a
#    standard view set that may update customers; bench-only policy), as
#    alice_north (sales rep: standard view set with a row filter) and as root
#    on the base tables, in each pool mode: TPS and per-statement latency.
# 3. EXPLAIN of the workload's statements as clerk's and alice_north's
#    backend roles, through the views.
#
# Environment: SECTIONS="1 2 3", MODES="simple prepared",
# POOL_MODES="session transaction",
# SESSION_POOL=40, TRANSACTION_POOL=8, SCALE=10, CUSTOMERS=100000,
# CRM_CLIENTS=8. Starts its own throwaway PostgreSQL, PgBouncer and pgveil on
# free ports and removes them afterwards. Needs the PostgreSQL server,
# pgbench and pgbouncer (installed with apt-get when missing and run as root).
set -euo pipefail

secs=${1:-10}
clients=${2:-"1 10 32"}
modes=${MODES:-"simple prepared"}
pool_modes=${POOL_MODES:-"session transaction"}
session_pool=${SESSION_POOL:-40}
transaction_pool=${TRANSACTION_POOL:-8}
scale=${SCALE:-10}
customers=${CUSTOMERS:-100000}
crm_clients=${CRM_CLIENTS:-8}
sections=${SECTIONS:-"1 2 3"}
root=$(cd "$(dirname "$0")/.." && pwd)
veil="$root/target/release/pgveil"

find_pg_bin() { dirname "$(command -v initdb 2>/dev/null || ls -d /usr/lib/postgresql/*/bin/initdb 2>/dev/null | sort -V | tail -1)"; }
pg_bin=$(find_pg_bin)
if [ ! -x "$pg_bin/initdb" ] || ! command -v pgbouncer >/dev/null 2>&1 && [ ! -x /usr/sbin/pgbouncer ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "installing postgresql and pgbouncer..." >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql pgbouncer >/dev/null
    pg_bin=$(find_pg_bin)
  fi
fi
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
pg_port=$(free_port)
password=bench-secret
pids=()

cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
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
  -o "-p $pg_port -k $work -c listen_addresses=127.0.0.1 -c max_connections=300 -c fsync=off -c synchronous_commit=off -c shared_buffers=256MB" start >/dev/null
export PGPASSWORD=$password
psql -qX -h 127.0.0.1 -p "$pg_port" -U postgres -c "create database crm" postgres

# ------------------------------------------------------------ pgveil setup
mkdir -p "$work/policies"
cp "$root/policies/crm.toml" "$work/policies/"
cat > "$work/policies/bench.toml" <<'TOML'
# Benchmark only: pgbench's tables, protected like the CRM's, so that
# pgbench -S through pgveil reads the privacy views; and a clerk who reads
# the standard views and may update customers.
[view_sets.clerk]
description = "Benchmark: standard masking, no row filter, may update customers"
kind = "standard"

[view_sets.clerk.write]
customers = ["non_personal"]

[roles.clerk]
view_sets = ["clerk"]

[users.clerk]
role = "clerk"

[tables.pgbench_accounts.columns]
aid = { class = "non_personal", kind = "id" }
bid = { class = "non_personal", kind = "id" }
abalance = { class = "personal", kind = "money" }
filler = "non_personal"

[tables.pgbench_branches.columns]
bid = { class = "non_personal", kind = "id" }
bbalance = "non_personal"
filler = "non_personal"

[tables.pgbench_tellers.columns]
tid = { class = "non_personal", kind = "id" }
bid = { class = "non_personal", kind = "id" }
tbalance = "non_personal"
filler = "non_personal"

[tables.pgbench_history.columns]
tid = { class = "non_personal", kind = "id" }
bid = { class = "non_personal", kind = "id" }
aid = { class = "non_personal", kind = "id" }
delta = "non_personal"
mtime = { class = "non_personal", kind = "date" }
filler = "non_personal"
TOML
echo "$password" > "$work/backend.pw"
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$work/role.secret"
users=""
for user in sam root alice_north clerk; do
  users+=$(echo "$password" | "$veil" passwd "$user")$'\n'
done

veil_config() { # file port pool_mode pool_size
  cat > "$1" <<TOML
listen = "127.0.0.1:$2"
policy = "$work/policies"
max_sessions = 1000
[backend]
port = $pg_port
database = "crm"
user = "postgres"
password_file = "$work/backend.pw"
role_secret_file = "$work/role.secret"
tls = "disable"
[pool]
mode = "$3"
max_size = $4
$users
TOML
}
veil_config "$work/setup.toml" "$(free_port)" session 4
echo "loading the CRM ($customers customers) and pgbench (scale $scale)..." >&2
"$veil" load-crm --config "$work/setup.toml" --customers "$customers" >/dev/null
"$pgbench" -q -i -s "$scale" -h 127.0.0.1 -p "$pg_port" -U postgres crm >/dev/null 2>&1
"$veil" apply --config "$work/setup.toml" >/dev/null
psql -qX -h 127.0.0.1 -p "$pg_port" -U postgres -c "vacuum analyze" crm

declare -A veil_port bouncer_port
for pm in $pool_modes; do
  size=$session_pool; [ "$pm" = transaction ] && size=$transaction_pool
  veil_port[$pm]=$(free_port)
  veil_config "$work/veil-$pm.toml" "${veil_port[$pm]}" "$pm" "$size"
  PGVEIL_LOG=warn "$veil" serve -c "$work/veil-$pm.toml" 2>>"$work/veil-$pm.log" &
  pids+=($!)
  bouncer_port[$pm]=$(free_port)
  cat > "$work/bouncer-$pm.ini" <<INI
[databases]
crm = host=127.0.0.1 port=$pg_port dbname=crm
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = ${bouncer_port[$pm]}
unix_socket_dir =
auth_type = scram-sha-256
auth_file = $work/userlist.txt
pool_mode = $pm
default_pool_size = $size
max_client_conn = 1000
logfile = $work/bouncer-$pm.log
pidfile = $work/bouncer-$pm.pid
INI
done
echo "\"postgres\" \"$password\"" > "$work/userlist.txt"
[ "${#run_as[@]}" = 0 ] || chown postgres "$work"/*.ini "$work"/userlist.txt
for pm in $pool_modes; do
  "${run_as[@]}" "$pgbouncer" "$work/bouncer-$pm.ini" >/dev/null 2>&1 &
  pids+=($!)
done
for pm in $pool_modes; do
  for port_user in "${bouncer_port[$pm]} postgres" "${veil_port[$pm]} sam"; do
    set -- $port_user
    for _ in $(seq 100); do psql -qXtA -h 127.0.0.1 -p "$1" -U "$2" -c "select 1" crm >/dev/null 2>&1 && break; sleep 0.2; done
  done
done

tps() { # port user mode clients [pgbench args...]
  local port=$1 user=$2 mode=$3 c=$4; shift 4
  local jobs=$(( c < 2 ? 1 : 2 ))
  "$pgbench" -n -M "$mode" -c "$c" -j "$jobs" -T "$secs" -h 127.0.0.1 -p "$port" -U "$user" "$@" crm 2>/dev/null \
    | awk '/^tps/ {printf "%.0f", $3}'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "" || b == 0) print "-"; else printf "%.2f", a / b }'; }

section() { [[ " $sections " == *" $1 "* ]]; }

if section 1; then
printf "\n1. pgbench -S, scale %s, %ss per run, %s cores; pools: session %s, transaction %s\n" \
  "$scale" "$secs" "$(nproc)" "$session_pool" "$transaction_pool"
printf "   pgveil as sam rewrites every statement onto the standard views; as root it passes them through\n"
printf "%-12s %-9s %7s %9s %9s %9s %10s %12s %11s %12s\n" pool mode clients direct pgbouncer pgveil veil_root veil/bouncer veil/direct root/bouncer
for mode in $modes; do
  for c in $clients; do
    d=$(tps "$pg_port" postgres "$mode" "$c" -S)
    for pm in $pool_modes; do
      if [ "$mode" = prepared ] && [ "$pm" = transaction ]; then
        b=""
      else
        b=$(tps "${bouncer_port[$pm]}" postgres "$mode" "$c" -S)
      fi
      v=$(tps "${veil_port[$pm]}" sam "$mode" "$c" -S)
      r=$(tps "${veil_port[$pm]}" root "$mode" "$c" -S)
      printf "%-12s %-9s %7s %9s %9s %9s %10s %12s %11s %12s\n" "$pm" "$mode" "$c" "$d" "${b:-n/a}" "$v" "$r" \
        "$(ratio "$v" "$b")" "$(ratio "$v" "$d")" "$(ratio "$r" "$b")"
    done
  done
done
fi

# ------------------------------------------------------------ CRM workload
mkdir -p "$work/crm"
cat > "$work/crm/point.sql" <<SQL
\set id random(1, $customers)
SELECT customer_id, first_name, last_name, email, city FROM customers WHERE customer_id = :id;
SQL
cat > "$work/crm/region.sql" <<'SQL'
\set r random(1, 4)
SELECT customer_id, last_name, email, city FROM customers WHERE region = (ARRAY['north', 'south', 'east', 'west'])[:r] ORDER BY customer_id LIMIT 50;
SQL
cat > "$work/crm/email.sql" <<'SQL'
\set n random(0, 25)
SELECT customer_id, email FROM customers WHERE email LIKE chr(97 + :n) || 'a%' ORDER BY email LIMIT 20;
SQL
cat > "$work/crm/country.sql" <<'SQL'
SELECT country, count(*) FROM customers GROUP BY country ORDER BY country;
SQL
cat > "$work/crm/update.sql" <<SQL
\set id random(1, $customers)
UPDATE customers SET last_active_at = now() WHERE customer_id = :id;
SQL
weights="-f $work/crm/point.sql@40 -f $work/crm/region.sql@20 -f $work/crm/email.sql@20 -f $work/crm/country.sql@5 -f $work/crm/update.sql@15"

if section 2; then
printf "\n2. CRM workload (%s customers): point 40%%, region 20%%, email prefix 20%%, country 5%%, update 15%%; %s clients, %ss, extended protocol\n" \
  "$customers" "$crm_clients" "$secs"
printf "   clerk: standard view set, may update customers; alice_north: standard view set with a row filter (her region); root: base tables\n"
printf "%-12s %10s %10s %10s %11s %11s\n" pool clerk_tps alice_tps root_tps clerk/root alice/root
crm_users="clerk alice_north root"
for pm in $pool_modes; do
  for user in $crm_users; do
    # shellcheck disable=SC2086
    "$pgbench" -n -M extended -r -c "$crm_clients" -j 2 -T "$secs" -h 127.0.0.1 -p "${veil_port[$pm]}" -U "$user" \
      $weights crm > "$work/crm-$pm-$user.out" 2>"$work/crm-$pm-$user.err" || true
  done
  c=$(awk '/^tps/ {printf "%.0f", $3}' "$work/crm-$pm-clerk.out")
  a=$(awk '/^tps/ {printf "%.0f", $3}' "$work/crm-$pm-alice_north.out")
  r=$(awk '/^tps/ {printf "%.0f", $3}' "$work/crm-$pm-root.out")
  printf "%-12s %10s %10s %10s %11s %11s\n" "$pm" "$c" "$a" "$r" "$(ratio "$c" "$r")" "$(ratio "$a" "$r")"
done
latencies() { # file: statement latency in ms per script, in script order
  awk '/^SQL script/ {name=$4} /^ +[0-9.]+ +[0-9]+ +(SELECT|UPDATE)/ {printf "%s %s\n", name, $1}' "$1"
}
for pm in $pool_modes; do
  printf "\n   per-statement latency (ms), %s pooling:\n" "$pm"
  paste <(latencies "$work/crm-$pm-clerk.out") <(latencies "$work/crm-$pm-alice_north.out") <(latencies "$work/crm-$pm-root.out") \
    | awk '{ n=$1; sub(".*/", "", n); printf "   %-12s clerk %7s  alice %7s  root %7s  clerk/root %5.2f  alice/root %5.2f\n", n, $2, $4, $6, ($6 > 0 ? $2 / $6 : 0), ($6 > 0 ? $4 / $6 : 0) }'
done
fi

# ------------------------------------------------------------ plans
if section 3; then
printf "\n3. Plans through the views (as the user's backend role, after pgveil's rewrite)\n"
for user in clerk alice_north; do
for sql in \
  "SELECT customer_id, first_name, last_name, email, city FROM customers WHERE customer_id = 4242" \
  "SELECT customer_id, last_name, email, city FROM customers WHERE region = 'north' ORDER BY customer_id LIMIT 50" \
  "SELECT customer_id, email FROM customers WHERE email LIKE 'ba%' ORDER BY email LIMIT 20" \
  "SELECT country, count(*) FROM customers GROUP BY country ORDER BY country" \
  "UPDATE customers SET last_active_at = now() WHERE customer_id = 4242"; do
  explained=$("$veil" explain -c "$work/veil-${pool_modes%% *}.toml" --user "$user" "$sql")
  role=$(awk '/^login role:/ {print $3}' <<<"$explained")
  rewritten=$(sed -n 's/^SQL: *//p' <<<"$explained")
  printf "\n   %s: %s\n" "$user" "$rewritten"
  psql -qX -h 127.0.0.1 -p "$pg_port" -U postgres crm <<SQL | sed 's/^/   /'
BEGIN;
SET LOCAL ROLE "$role";
EXPLAIN (COSTS OFF) $rewritten;
ROLLBACK;
SQL
done
done
fi
