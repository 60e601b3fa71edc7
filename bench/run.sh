#!/usr/bin/env bash
# Benchmark telemetry-hunt against DuckDB, Polars and DataFusion on the same Parquet files
# (see bench/README.md).
#
#   bench/run.sh                                  the 5M-row sets peer and ours
#   DATASETS=large,large_plain RUNS=3 bench/run.sh
#   NO_BUILD=1 BIN=/path/to/telemetry-hunt ENGINES=duckdb,polars_floor bench/run.sh
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

ROWS="${ROWS:-5000000}"               # rows of the 5M sets (peer, ours)
LARGE_ROWS="${LARGE_ROWS:-50000000}"  # rows of the large set
RUNS="${RUNS:-3}"
THREADS="${THREADS:-2}"
DATASETS="${DATASETS:-peer,ours}"
ENGINES="${ENGINES:-duckdb,polars,datafusion,polars_floor}"
DAYS=30
DEVICES=20000
BENCH="$ROOT/bench"
VENV="${VENV:-$BENCH/.venv}"
DATA="${DATA:-$BENCH/data}"
PEER_GEN="${PEER_GEN:-$ROOT/../shared/bench/gen_events.py}"

log() { printf '[bench] %s\n' "$*" >&2; }

# 1. the release binary: built here unless NO_BUILD=1 or BIN names another one
if [[ -n "${BIN:-}" ]]; then
    log "using BIN=$BIN (not building)"
elif [[ "${NO_BUILD:-}" == 1 ]]; then
    BIN="$ROOT/target/release/telemetry-hunt"
    log "NO_BUILD=1: using $BIN as it is"
else
    BIN="$ROOT/target/release/telemetry-hunt"
    log "building the release binary"
    if [[ -f Cargo.lock ]]; then
        cargo build --release --locked
    else
        cargo build --release
    fi
fi
[[ -x "$BIN" ]] || { log "no binary at $BIN"; exit 1; }

# 2. the Python environment: pyarrow and numpy (for gen_events.py) are required; each engine is
#    optional, and one that cannot be installed is skipped by bench.py with a message
if [[ ! -x "$VENV/bin/python" ]]; then
    log "creating $VENV"
    python3 -m venv "$VENV"
fi
PY="$VENV/bin/python"
pip_install() { "$PY" -m pip install -q --disable-pip-version-check "$@"; }
if ! "$PY" -c 'import pyarrow, numpy' 2>/dev/null; then
    log "installing pyarrow, numpy into $VENV"
    pip_install pyarrow numpy
fi
for mod in duckdb polars datafusion; do
    if ! "$PY" -c "import $mod" 2>/dev/null; then
        log "installing $mod into $VENV"
        pip_install "$mod" || log "WARNING: could not install $mod; it will be skipped"
    fi
done

rows_of() { "$PY" "$BENCH/bench.py" rows "$1" 2>/dev/null || echo 0; }

# 3. the data, generated once: each into PATH.tmp, renamed when complete, so an interrupted
#    generation is never taken for a finished one
gen_peer() {  # DEST ROWS [extra gen_events.py options]
    local dest="$1" rows="$2"; shift 2
    [[ -f "$PEER_GEN" ]] || { log "WARNING: $PEER_GEN not found"; return 1; }
    log "generating with $PEER_GEN ($rows rows $*)"
    "$PY" "$PEER_GEN" --rows "$rows" --days "$DAYS" --devices "$DEVICES" "$@" --out "$dest" >&2
}

# NAME -> prints the path of the dataset, generating it when its row count is not the expected
# one; fails if it cannot. It runs as an `if` condition, where set -e does not apply, hence the
# explicit `|| return 1`.
ensure() {
    local name="$1" path want src=""
    case "$name" in
        peer)  path="$DATA/peer/events.parquet"; want="$ROWS" ;;
        ours)  path="$DATA/ours"; want="$ROWS" ;;
        large) path="$DATA/large"; want="$LARGE_ROWS" ;;
        *_plain)
            src="$(ensure "${name%_plain}")" || return 1
            path="$DATA/$name"
            if [[ -f "$src" ]]; then path="$path/$(basename "$src")"; fi
            want="$(rows_of "$src")" ;;
        *)
            log "unknown dataset $name (known: peer, ours, large, and NAME_plain of each)"
            return 1 ;;
    esac
    if [[ "$(rows_of "$path")" != "$want" ]]; then
        log "writing $path ($want rows)"
        rm -rf "$path" "$path.tmp"
        mkdir -p "$(dirname "$path")"
        case "$name" in
            peer)  gen_peer "$path.tmp" "$ROWS" ;;
            large) log "the large set takes about 15 minutes"; gen_peer "$path.tmp" "$LARGE_ROWS" --split-daily ;;
            ours)  "$BIN" --log-format json -q sample --out "$path.tmp" --rows "$ROWS" --days "$DAYS" \
                       --devices "$DEVICES" >&2 ;;
            *)     log "the rows of $src, string columns without dictionary encoding"
                   "$PY" "$BENCH/bench.py" plain "$src" "$path.tmp" >&2 ;;
        esac || return 1
        mv "$path.tmp" "$path" || return 1
    fi
    printf '%s\n' "$path"
}

mkdir -p "$DATA"
datasets=()
IFS=',' read -r -a names <<< "$DATASETS"
for name in "${names[@]}"; do
    [[ -n "$name" ]] || continue
    if path="$(ensure "$name")"; then
        log "dataset $name: $path"
        datasets+=(--dataset "$name=$path")
    else
        log "WARNING: skipping dataset $name"
    fi
done
[[ ${#datasets[@]} -gt 0 ]] || { log "no dataset to measure"; exit 1; }

# 4-7. interleaved runs, correctness check, table, ratios; the figures also go to bench/last-results.txt
WORK="$(mktemp -d "${TMPDIR:-/tmp}/th-bench.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
HEAD="# $(date -u +%Y-%m-%dT%H:%M:%SZ) $(uname -srm), $(nproc) CPU(s), $("$BIN" --version)"
echo "$HEAD"
status=0
"$PY" "$BENCH/bench.py" compare --bin "$BIN" "${datasets[@]}" --engines "$ENGINES" \
    --runs "$RUNS" --threads "$THREADS" --tmp "$WORK" --results "$WORK/results.txt" || status=$?
if [[ -f "$WORK/results.txt" ]]; then
    { echo "$HEAD"; cat "$WORK/results.txt"; } > "$BENCH/last-results.txt"
    log "figures written to bench/last-results.txt"
fi
if [[ $status -eq 3 ]]; then log "RESULTS DIFFER between telemetry-hunt and a peer engine (see above)"; fi
if [[ $status -eq 4 ]]; then log "a peer engine failed (see above)"; fi
exit "$status"
