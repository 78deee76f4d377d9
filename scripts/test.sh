#!/usr/bin/env bash
# Runs pgveil's whole test suite on a fresh machine: installs what the tests
# need when it is missing (PostgreSQL server, pgJDBC, Java, Node.js,
# Chromium, psycopg, node-postgres), then runs cargo test twice: with
# session pooling, then with every proxy under transaction pooling
# (PGVEIL_TEST_POOL_MODE=transaction). The tests start their own throwaway
# PostgreSQL clusters; nothing needs to be running.
set -euo pipefail
cd "$(dirname "$0")/.."

apt_packages=()
have_pg_server() { command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; }
have_pg_server || apt_packages+=(postgresql postgresql-contrib)
command -v psql >/dev/null 2>&1 || apt_packages+=(postgresql-client)
command -v pgbench >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/pgbench >/dev/null 2>&1 || apt_packages+=(postgresql)
[ -f /usr/share/java/postgresql.jar ] || apt_packages+=(libpostgresql-jdbc-java)
command -v java >/dev/null 2>&1 || apt_packages+=(default-jdk-headless)
command -v node >/dev/null 2>&1 || apt_packages+=(nodejs npm)
command -v chromium >/dev/null 2>&1 || apt_packages+=(chromium)  # tests/report.rs renders the report
if [ "${#apt_packages[@]}" -gt 0 ]; then
  echo "installing: ${apt_packages[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${apt_packages[@]}" >/dev/null
fi

python3 -c 'import psycopg' 2>/dev/null || python3 -m pip install --quiet 'psycopg[binary]>=3.1'
if [ ! -d tests/clients/node/node_modules/pg ]; then
  (cd tests/clients/node && npm ci --no-audit --no-fund --silent)
fi

echo "== test suite, session pooling" >&2
cargo test --release "$@"
echo "== test suite, transaction pooling" >&2
PGVEIL_TEST_POOL_MODE=transaction cargo test --release "$@"
