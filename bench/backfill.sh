#!/usr/bin/env bash
# Backfill over DAYS days of ROWS/DAYS rows each (default 35 days of 1 million rows): prints the
# wall time and the peak resident memory of the whole backfill (`/usr/bin/time -v`), and what the
# backfill said. The generated data lives in a temporary folder that is deleted at the end.
#
#   bench/backfill.sh                    # 35,000,000 rows over 35 days
#   ROWS=7000000 DAYS=7 bench/backfill.sh
#   RAYON_NUM_THREADS=2 bench/backfill.sh
set -euo pipefail
cd "$(dirname "$0")/.."

ROWS=${ROWS:-35000000}
DAYS=${DAYS:-35}
START=${START:-2026-10-27}

cargo build --release --locked
bin="$PWD/target/release/telemetry-hunt"
work=$(mktemp -d "${TMPDIR:-/tmp}/th-backfill.XXXXXX")
trap 'rm -rf "$work"' EXIT

echo "== generating $ROWS rows over $DAYS days into $work/data"
/usr/bin/time -f "generated in %e s (peak %M KiB)" "$bin" sample --out "$work/data" --rows "$ROWS" --days "$DAYS" --start "$START"
du -sh "$work/data" | sed 's/^/input: /'

to=$(date -u -d "$START + $((DAYS - 1)) days" +%F)
echo "== backfill $START .. $to"
/usr/bin/time -v "$bin" --no-progress --log-format json \
    backfill --input "$work/data" --from "$START" --to "$to" --out "$work/out" \
    >"$work/stdout" 2>"$work/stderr" || { tail -20 "$work/stderr"; exit 1; }
cat "$work/stdout"
grep -E "Elapsed \(wall clock\)|Maximum resident set size|User time|System time" "$work/stderr" | sed 's/^\s*/  /'
du -sh "$work/out" | sed 's/^/results: /'
