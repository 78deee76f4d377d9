#!/usr/bin/env bash
# Renders the privacy report for the demo CRM after a scripted session.
#
# Starts `pgveil demo` (a throwaway PostgreSQL with the example CRM and
# policy, pgveil in front with a privacy log), runs a short session through
# the proxy with psql as several demo users (including refused statements
# and a failed login), files a few data-subject requests, then runs
# `pgveil report` and stops the demo (which removes the cluster).
#
# Usage: scripts/report-demo.sh [OUT_DIR]   (default: ./pgveil-report)
# Needs what scripts/demo.sh needs (PostgreSQL server binaries, psql).
set -euo pipefail
cd "$(dirname "$0")/.."
out="$(realpath -m "${1:-pgveil-report}")"

cargo build --release --quiet
bin="$PWD/target/release/pgveil"
port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
demo_out="$(mktemp)"

"$bin" demo --listen "127.0.0.1:$port" --customers 2000 >"$demo_out" 2>&1 &
demo_pid=$!
stop_demo() {
  kill -INT "$demo_pid" 2>/dev/null || true
  wait "$demo_pid" 2>/dev/null || true
  rm -f "$demo_out"
}
trap stop_demo EXIT

for _ in $(seq 1 300); do
  grep -q '^Configuration: ' "$demo_out" && break
  if ! kill -0 "$demo_pid" 2>/dev/null; then
    cat "$demo_out" >&2
    echo "report-demo: the demo did not start" >&2
    exit 1
  fi
  sleep 1
done
config="$(sed -n 's/^Configuration: \(.*\) (kept until Ctrl-C).*/\1/p' "$demo_out")"
[ -n "$config" ] || { cat "$demo_out" >&2; echo "report-demo: no configuration path" >&2; exit 1; }

# psql as a demo user through pgveil; extra arguments go to psql.
as() {
  local user="$1"
  shift
  PGPASSWORD=demo psql "host=127.0.0.1 port=$port dbname=crm user=$user sslmode=disable" \
    -X -q -v ON_ERROR_STOP=1 "$@" >/dev/null
}
# The same, for a statement pgveil must refuse.
refused_as() {
  if as "$@" 2>/dev/null; then
    echo "report-demo: expected a refusal for $1: ${*:2}" >&2
    exit 1
  fi
}

echo "scripted session through pgveil on port $port..." >&2
as olivia -c "select customer_id, first_name, health_notes from customers order by customer_id limit 5"
as olivia -c "select email, date_of_birth from customers where customer_id = 42"
for _ in 1 2 3; do
  as sam -c "select customer_id, first_name, email, date_of_birth, annual_income, region from customers order by customer_id limit 5"
done
as sam -c "select count(*) from orders where status = 'returned'"
refused_as sam -c "set role postgres"
refused_as sam -c "select * from pg_stats"
refused_as sam -c "select query_to_xml('select 1', true, true, '')"
as alice_north -c "select count(*) from customers"
as alice_north -c "update opportunities set stage = stage where opportunity_id = (select min(opportunity_id) from opportunities)"
as ana -c "select country, count(*) from customers group by country"
as ana -c "select region, avg(annual_income) from customers group by region"
refused_as ana -c "select email from customers limit 5"
as mark -c "select count(*) from customers"
as pat -c "select count(*) from orders"
if PGPASSWORD=wrong psql "host=127.0.0.1 port=$port dbname=crm user=sam sslmode=disable" -X -c "select 1" >/dev/null 2>&1; then
  echo "report-demo: a wrong password was accepted" >&2
  exit 1
fi

echo "data-subject requests..." >&2
customer="$(PGPASSWORD=demo psql "host=127.0.0.1 port=$port dbname=crm user=root sslmode=disable" -X -At -c \
  "select min(customer_id) from customers c where not exists (select 1 from consents k
     where k.customer_id = c.customer_id and k.purpose = 'direct_marketing' and not k.granted)")"
"$bin" subject opt-out --config "$config" --actor olivia --customer "$customer" --purpose direct_marketing >/dev/null
"$bin" subject export --config "$config" --actor olivia --customer "$customer" >/dev/null
"$bin" retention run --dry-run --config "$config" --actor cron >/dev/null

"$bin" report --config "$config" --out "$out"
