#!/usr/bin/env bash
# Fuzzes pgveil's parsers: scripts/fuzz.sh SECONDS [TARGET...]
#
# Runs each cargo-fuzz target of fuzz/ (frame, startup, rewrite; all by
# default) for SECONDS, on a corpus seeded from the test suite by
# fuzz/seeds.py, and prints per target the seconds fuzzed, the inputs
# executed and the crashes found. A target stops at its first crash; the
# input is kept in fuzz/artifacts/<target>/ and must become a regression
# test with its fix. Exit code 1 if any crashed.
#
# cargo-fuzz needs nightly compiler flags; RUSTC_BOOTSTRAP=1 lets the stable
# toolchain accept them. The first build compiles every dependency with
# sanitizers (tens of minutes on 2 cores); later ones are incremental.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:?usage: scripts/fuzz.sh SECONDS [TARGET...]}
shift
targets=("$@")
[ "${#targets[@]}" -gt 0 ] || targets=(frame startup rewrite)

command -v cargo-fuzz >/dev/null 2>&1 || cargo install --locked cargo-fuzz
export RUSTC_BOOTSTRAP=1
python3 fuzz/seeds.py fuzz/corpus
(cd fuzz && cargo fuzz build -O)

logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
results=()
failed=0
for target in "${targets[@]}"; do
  log="$logs/$target.log"
  started=$(date +%s)
  crashes=0
  if ! (cd fuzz && cargo fuzz run -O "$target" -- \
      -max_total_time="$seconds" -timeout=10 -print_final_stats=1) >"$log" 2>&1; then
    crashes=1
    failed=1
    echo "--- $target crashed:" >&2
    grep -E "panicked|ERROR: libFuzzer|SUMMARY|Test unit written to" "$log" >&2 || tail -20 "$log" >&2
  fi
  elapsed=$(( $(date +%s) - started ))
  executions=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  corpus=$(find "fuzz/corpus/$target" -type f | wc -l)
  results+=("$(printf '%-8s %8s %12s %8s %8s' "$target" "$elapsed" "${executions:-0}" "$crashes" "$corpus")")
done

printf '%-8s %8s %12s %8s %8s\n' target seconds executions crashes corpus
printf '%s\n' "${results[@]}"
exit "$failed"
