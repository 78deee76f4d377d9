#!/usr/bin/env bash
# Runs `pgveil demo` on a fresh machine: installs the PostgreSQL server when
# it is missing, builds pgveil and starts a throwaway PostgreSQL with the
# example CRM and policy, pgveil in front on 127.0.0.1:6432. Ctrl-C removes it.
# Extra arguments go to `pgveil demo` (e.g. --customers 100000 --listen 127.0.0.1:7432).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v initdb >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  echo "installing the PostgreSQL server (apt-get install -y postgresql)..." >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq --no-install-recommends postgresql postgresql-client >/dev/null
fi
exec cargo run --release --quiet -- demo "$@"
