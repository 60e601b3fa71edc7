#!/usr/bin/env bash
# Runs every fuzz target (or the ones named) for a bounded time each and summarizes.
#
#   fuzz/run.sh [seconds-per-target] [target...]
#
# Environment: FUZZ_JOBS targets at a time (default 1), FUZZ_RSS_MB memory cap per target
# (default 2048; an input that needs more is reported as a crash), FUZZ_SANITIZER (default
# `none`: the code under test is safe Rust, and without ASan twice the executions fit in the
# same time; `address` checks the unsafe code of the dependencies too).
#
# Corpora grow in fuzz/corpus/<target> (seeded from fuzz/seeds/<target>), crashes land in
# fuzz/artifacts/<target>/, logs in fuzz/logs/. Exit status 1 when any target left a crash.
# A crash becomes a regression test: copy the input to tests/fuzz-regressions/<target>/ (the
# normal test suite replays every file there) and fix the code.
set -euo pipefail
cd "$(dirname "$0")"

seconds=${1:-60}
shift || true
all=(host json_lines csv parquet config)
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=("${all[@]}")
jobs=${FUZZ_JOBS:-1}
rss=${FUZZ_RSS_MB:-2048}
sanitizer=${FUZZ_SANITIZER:-none}

export CARGO_TARGET_DIR="$PWD/target"
cargo +nightly fuzz build --fuzz-dir . -s "$sanitizer" "${targets[@]:0:1}" >/dev/null
for target in "${targets[@]:1}"; do cargo +nightly fuzz build --fuzz-dir . -s "$sanitizer" "$target" >/dev/null; done
bin="$CARGO_TARGET_DIR/x86_64-unknown-linux-gnu/release"

max_len() {
    case $1 in
        host | config) echo 16384 ;;
        *) echo 65536 ;;
    esac
}

run_one() {
    local target=$1
    mkdir -p "corpus/$target" "artifacts/$target" logs
    # -timeout: one input taking longer is a hang; -malloc_limit_mb: one allocation that large is
    # an out-of-memory bug even if the machine could serve it.
    "$bin/$target" "corpus/$target" "seeds/$target" \
        -max_total_time="$seconds" -rss_limit_mb="$rss" -malloc_limit_mb="$rss" -timeout=20 \
        -max_len="$(max_len "$target")" -artifact_prefix="artifacts/$target/" -print_final_stats=1 \
        >"logs/$target.log" 2>&1 || true
}

running=0
for target in "${targets[@]}"; do
    run_one "$target" &
    running=$((running + 1))
    if [ "$running" -ge "$jobs" ]; then
        wait -n
        running=$((running - 1))
    fi
done
wait

status=0
printf '%-12s %10s %14s %8s %8s\n' target seconds executions corpus crashes
for target in "${targets[@]}"; do
    log="logs/$target.log"
    # A target that stopped at a crash has no `Done` line; its figures come from the last stats.
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1 || true)
    time=$(grep -o 'Done [0-9]* runs in [0-9]* second' "$log" | grep -o 'in [0-9]*' | grep -o '[0-9]*' | tail -1 || true)
    corpus=$(find "corpus/$target" -type f | wc -l)
    crashes=$(find "artifacts/$target" -type f | wc -l)
    printf '%-12s %10s %14s %8s %8s\n' "$target" "${time:-?}" "${execs:-?}" "$corpus" "$crashes"
    [ "$crashes" -gt 0 ] && status=1
done
exit $status
