#!/usr/bin/env bash
# Benchmark telemetry-hunt against DuckDB on the same Parquet files (see bench/README.md).
#
#   bench/run.sh              from the repository root or from anywhere
#   RUNS=5 THREADS=2 bench/run.sh
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

ROWS="${ROWS:-5000000}"
RUNS="${RUNS:-3}"
THREADS="${THREADS:-2}"
DAYS=30
DEVICES=20000
BENCH="$ROOT/bench"
VENV="$BENCH/.venv"
DATA="$BENCH/data"
PEER_GEN="${PEER_GEN:-$ROOT/../shared/bench/gen_events.py}"
BIN="$ROOT/target/release/telemetry-hunt"

log() { printf '[bench] %s\n' "$*" >&2; }

# 1. the release binary
log "building the release binary"
if [[ -f Cargo.lock ]]; then
    cargo build --release --locked
else
    cargo build --release
fi
[[ -x "$BIN" ]] || { log "no binary at $BIN"; exit 1; }

# 2. the Python environment (duckdb, pyarrow; numpy for gen_events.py)
if [[ ! -x "$VENV/bin/python" ]]; then
    log "creating $VENV"
    python3 -m venv "$VENV"
fi
if ! "$VENV/bin/python" -c 'import duckdb, pyarrow, numpy' 2>/dev/null; then
    log "installing duckdb, pyarrow, numpy into $VENV"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check duckdb pyarrow numpy
fi
PY="$VENV/bin/python"
"$PY" -c 'import duckdb, pyarrow, sys; print(f"[bench] python {sys.version.split()[0]}, duckdb {duckdb.__version__}, pyarrow {pyarrow.__version__}", file=sys.stderr)'

rows_of() { "$PY" "$BENCH/bench.py" rows "$1"; }

# 3. the data, generated once
datasets=()
mkdir -p "$DATA"
if [[ -f "$PEER_GEN" ]]; then
    PEER="$DATA/peer/events.parquet"
    if [[ "$(rows_of "$PEER")" != "$ROWS" ]]; then
        log "generating $PEER with $PEER_GEN ($ROWS rows)"
        rm -rf "$DATA/peer" && mkdir -p "$DATA/peer"
        # an interrupted write leaves an unreadable file, which counts as 0 rows next time
        "$PY" "$PEER_GEN" --rows "$ROWS" --days "$DAYS" --devices "$DEVICES" --out "$PEER" >&2
    else
        log "reusing $PEER"
    fi
    datasets+=(--dataset "peer=$PEER")
else
    log "WARNING: $PEER_GEN not found; skipping the peer dataset (our own sample generator's data is still measured)"
fi

OURS="$DATA/ours"
if [[ "$(rows_of "$OURS")" != "$ROWS" ]]; then
    log "generating $OURS with telemetry-hunt sample ($ROWS rows, $DAYS days, $DEVICES devices)"
    rm -rf "$OURS" "$OURS.tmp"
    "$BIN" --log-format json -q sample --out "$OURS.tmp" --rows "$ROWS" --days "$DAYS" --devices "$DEVICES" >&2
    mv "$OURS.tmp" "$OURS"
else
    log "reusing $OURS"
fi
datasets+=(--dataset "ours=$OURS")

# 4-7. interleaved runs, correctness check, table; the figures also go to bench/last-results.txt
WORK="$(mktemp -d "${TMPDIR:-/tmp}/th-bench.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
HEAD="# $(date -u +%Y-%m-%dT%H:%M:%SZ) $(uname -srm), $(nproc) CPU(s), $("$BIN" --version), $("$PY" -c 'import duckdb; print("duckdb", duckdb.__version__)')"
echo "$HEAD"
status=0
"$PY" "$BENCH/bench.py" compare --bin "$BIN" "${datasets[@]}" \
    --runs "$RUNS" --threads "$THREADS" --rows "$ROWS" --tmp "$WORK" --results "$WORK/results.txt" || status=$?
if [[ -f "$WORK/results.txt" ]]; then
    { echo "$HEAD"; cat "$WORK/results.txt"; } > "$BENCH/last-results.txt"
    log "figures written to bench/last-results.txt"
fi
if [[ $status -eq 3 ]]; then log "RESULTS DIFFER between telemetry-hunt and DuckDB (see above)"; fi
exit "$status"
