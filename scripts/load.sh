#!/usr/bin/env bash
# Load: SESSIONS concurrent sessions (default 1000) through a fresh
# `pgveil serve`, ACTIVE of them (default 100) running queries whose results
# are checked while the others stay idle; once with session pooling (a
# backend per session) and once with transaction pooling (20 backends).
# Prints the sessions held, the proxy's resident memory before and after,
# the memory per idle session and its open file descriptors.
#
#   scripts/load.sh [SESSIONS] [ACTIVE]
#
# Runs the harness of tests/load.rs (a throwaway PostgreSQL with
# max_connections = SESSIONS + 20, the real binary, tokio-postgres clients).
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(mktemp)
trap 'rm -f "$out"' EXIT
if PGVEIL_LOAD_SESSIONS=${1:-1000} PGVEIL_LOAD_ACTIVE=${2:-100} \
  cargo test --release --quiet --test load -- --nocapture --test-threads=1 >"$out" 2>&1; then
  sed -n 's/^load: //p' "$out"
else
  cat "$out" >&2
  exit 1
fi
