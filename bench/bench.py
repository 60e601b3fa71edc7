#!/usr/bin/env python3
"""Benchmark helper for bench/run.sh: telemetry-hunt against DuckDB on the same Parquet files.

Subcommands
  rows PATH                     total Parquet rows in a file or a folder (0 if none or unreadable)
  duckdb-worker DATA THREADS    run the exact-semantics query once, print one JSON line
  compare --bin BIN --dataset NAME=PATH [...] --runs N --threads N --rows N --results FILE
                                the benchmark proper: interleaved repetitions, correctness check,
                                the table, and FILE with the same figures

Every measured repetition is its own child process, reaped with os.wait4, so wall time, CPU time
and peak RSS (ru_maxrss) belong to that one process only.

The DuckDB SQL is copied from /work/shared/bench/anchors.py (DOMAINS, AFTER_SCHEME_RE,
sql_host(dialect="duckdb"), in_list, make_duckdb): the KQL reference query with exact
parse_url Host semantics. It is copied, not imported, so this folder runs on its own.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

# ---------------------------------------------------------------- copied from shared/bench/anchors.py
DOMAINS = [
    "winatp-gw-cus.microsoft.com", "winatp-gw-eus.microsoft.com",
    "winatp-gw-weu.microsoft.com", "winatp-gw-neu.microsoft.com",
    "winatp-gw-uks.microsoft.com", "winatp-gw-ukw.microsoft.com",
    "winatp-gw-usgv.microsoft.com", "winatp-gw-usgt.microsoft.com",
    "eu.vortex-win.data.microsoft.com", "us.vortex-win.data.microsoft.com",
    "uk.vortex-win.data.microsoft.com", "events.data.microsoft.com",
    "settings-win.data.microsoft.com", "eu-v20.events.data.microsoft.com",
    "uk-v20.events.data.microsoft.com", "us-v20.events.data.microsoft.com",
    "us4-v20.events.data.microsoft.com", "us5-v20.events.data.microsoft.com",
    "ctldl.windowsupdate.com",
]
# host regex applied to the text AFTER the first "://"
AFTER_SCHEME_RE = r"^(?:[^/?#]*@)?([^:/?#]*)"


def sql_host(col="RemoteUrl"):
    extract = f"regexp_extract(substr({col}, strpos({col}, '://') + 3), '{AFTER_SCHEME_RE}', 1)"
    has = f"contains({col}, '//')"
    return (f"CASE WHEN NOT {has} THEN {col} "
            f"WHEN strpos({col}, '://') <= 1 THEN '' "
            f"ELSE {extract} END")


def in_list():
    return "(" + ", ".join(f"'{d}'" for d in DOMAINS) + ")"


def duckdb_query(data_glob: str) -> str:
    return f"""
      SELECT ActionType, CAST(date_trunc('day', "Timestamp") AS DATE) AS day,
             count(DISTINCT DeviceId) AS devices
      FROM read_parquet('{data_glob}')
      WHERE {sql_host()} IN {in_list()}
      GROUP BY ALL"""
# ---------------------------------------------------------------- end of the copy


def parquet_files(path: str) -> list[str]:
    if os.path.isdir(path):
        return sorted(glob.glob(os.path.join(path, "**", "*.parquet"), recursive=True))
    return [path] if os.path.isfile(path) else []


def data_glob(path: str) -> str:
    if os.path.isdir(path):
        return os.path.join(path, "*.parquet")
    return path


def cmd_rows(args) -> None:
    total = 0
    try:
        import pyarrow.parquet as pq
        for f in parquet_files(args.path):
            total += pq.ParquetFile(f).metadata.num_rows
    except Exception as e:  # a half-written file from an interrupted run counts as absent
        print(f"rows: {args.path}: {e}", file=sys.stderr)
        total = 0
    print(total)


def cmd_duckdb_worker(args) -> None:
    import duckdb

    con = duckdb.connect()
    con.execute(f"SET threads={args.threads}")
    con.execute("SET TimeZone='UTC'")  # date_trunc/CAST on TIMESTAMPTZ use the session zone
    q = duckdb_query(data_glob(args.data))
    t0 = time.perf_counter()
    rows = con.sql(q).fetchall()
    dt = time.perf_counter() - t0
    result = sorted([d.isoformat(), a, int(n)] for a, d, n in rows)
    print(json.dumps({"query_s": dt, "result": result}))


# ---------------------------------------------------------------- measurement
def measure(cmd: list[str], env=None, stdout_path=None) -> dict:
    """Run cmd once as a child; wall seconds, CPU seconds and peak RSS of that child."""
    out = open(stdout_path, "wb") if stdout_path else subprocess.PIPE
    err = tempfile.TemporaryFile()
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=out, stderr=err, env=env)
    stdout = p.stdout.read() if p.stdout else b""
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    if stdout_path:
        out.close()
    err.seek(0)
    stderr = err.read().decode(errors="replace")
    if p.returncode != 0:
        raise SystemExit(f"command failed (rc={p.returncode}): {' '.join(cmd)}\n{stderr[-4000:]}")
    return {"wall": wall, "cpu": ru.ru_utime + ru.ru_stime, "maxrss_kib": ru.ru_maxrss,
            "stdout": stdout.decode(errors="replace"), "stderr": stderr}


def warm_page_cache(path: str) -> int:
    n = 0
    buf = bytearray(8 << 20)
    for f in parquet_files(path):
        with open(f, "rb", buffering=0) as fh:
            while k := fh.readinto(buf):
                n += k
    return n


def read_daily(out_dir: str) -> list:
    rows = []
    for f in sorted(glob.glob(os.path.join(out_dir, "MdeTelemetryDaily", "day=*", "part-0.jsonl"))):
        with open(f) as fh:
            for line in fh:
                if line.strip():
                    r = json.loads(line)
                    rows.append([r["Day"], r["ActionType"], int(r["Connections"])])
    return sorted(rows)


def summary_int(text: str, pattern: str):
    m = re.search(pattern, text)
    return int(m.group(1).replace(",", "")) if m else None


def cmd_compare(args) -> None:
    env = dict(os.environ)
    env["RAYON_NUM_THREADS"] = str(args.threads)  # the job's worker pool, same budget as DuckDB
    me = os.path.abspath(__file__)
    lines: list[str] = []

    def say(s=""):
        print(s, flush=True)
        lines.append(s)

    table = []
    ratios = []
    checks = []
    for spec in args.dataset:
        name, path = spec.split("=", 1)
        nbytes = warm_page_cache(path)
        nfiles = len(parquet_files(path))
        say(f"== {name}: {path} ({nfiles} file(s), {nbytes / 2**20:.0f} MiB, {args.rows:,} rows), "
            f"{args.runs} interleaved runs per engine, {args.threads} threads")
        ours, duck = [], []
        our_result = duck_result = None
        scanned = matched = None
        for i in range(args.runs):
            tmp = tempfile.mkdtemp(prefix="th-bench-", dir=args.tmp)
            try:
                m = measure([args.bin, "--log-format", "json", "-q", "run", "--input", path, "--out", tmp], env=env)
                res = read_daily(tmp)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
            scanned = summary_int(m["stdout"], r"([\d,]+) rows scanned")
            matched = summary_int(m["stdout"], r"matched ([\d,]+) rows by the reference query")
            if our_result is not None and res != our_result:
                say(f"  WARNING: telemetry-hunt run {i + 1} gave a different result from run 1")
            our_result = res
            ours.append(m)
            say(f"  run {i + 1}  telemetry-hunt  wall {m['wall']:.3f}s  cpu {m['cpu']:.2f}s  "
                f"rss {m['maxrss_kib'] / 1024:.0f} MiB  groups {len(res)}  rows scanned {scanned}  matched(kql) {matched}")

            m = measure([sys.executable, me, "duckdb-worker", path, str(args.threads)])
            r = json.loads(m["stdout"].strip().splitlines()[-1])
            m["query_s"] = r["query_s"]
            if duck_result is not None and r["result"] != duck_result:
                say(f"  WARNING: duckdb run {i + 1} gave a different result from run 1")
            duck_result = r["result"]
            duck.append(m)
            say(f"  run {i + 1}  duckdb          query {m['query_s']:.3f}s  process wall {m['wall']:.3f}s  "
                f"cpu {m['cpu']:.2f}s  rss {m['maxrss_kib'] / 1024:.0f} MiB  groups {len(duck_result)}")

        if scanned is not None and scanned != args.rows:
            say(f"  WARNING: telemetry-hunt scanned {scanned:,} rows, expected {args.rows:,}")
        same = our_result == duck_result
        checks.append((name, same, len(duck_result)))
        say(f"  results identical: {'yes' if same else 'no'} ({len(duck_result)} groups"
            + ("" if same else f" in duckdb, {len(our_result)} in telemetry-hunt") + ")")
        if not same:
            a, b = {tuple(x) for x in our_result}, {tuple(x) for x in duck_result}
            say(f"    only in telemetry-hunt ({len(a - b)}): {sorted(a - b)[:10]}")
            say(f"    only in duckdb ({len(b - a)}): {sorted(b - a)[:10]}")
        say(f"  sum of per-group distinct devices: telemetry-hunt {sum(x[2] for x in our_result):,}, "
            f"duckdb {sum(x[2] for x in duck_result):,}")

        o_med = statistics.median(m["wall"] for m in ours)
        d_med = statistics.median(m["query_s"] for m in duck)
        table.append((name, "telemetry-hunt", o_med, statistics.median(m["wall"] for m in ours),
                      statistics.median(m["cpu"] for m in ours), max(m["maxrss_kib"] for m in ours), len(our_result)))
        table.append((name, "duckdb", d_med, statistics.median(m["wall"] for m in duck),
                      statistics.median(m["cpu"] for m in duck), max(m["maxrss_kib"] for m in duck), len(duck_result)))
        ratios.append((name, d_med / o_med, statistics.median(m["wall"] for m in duck) / o_med))
        say()

    say(f"{'dataset':<8} {'engine':<15} {'median_s':>8} {'Mrows/s':>8} {'peak_MiB':>8} {'groups':>6}   "
        f"{'proc_s':>6} {'cpu_s':>6}")
    for name, eng, med, wall, cpu, rss, groups in table:
        say(f"{name:<8} {eng:<15} {med:>8.3f} {args.rows / med / 1e6:>8.1f} {rss / 1024:>8.0f} {groups:>6}   "
            f"{wall:>6.3f} {cpu:>6.2f}")
    for name, r, rw in ratios:
        say(f"ratio duckdb/telemetry-hunt on {name}: {r:.2f}x (whole DuckDB process: {rw:.2f}x)")
    for name, same, n in checks:
        say(f"results identical on {name}: {'yes' if same else 'no'} ({n} groups)")
    say("median_s: telemetry-hunt = whole process wall time (read, hunt, write every table);")
    say("          duckdb = the query alone inside its process (connect, interpreter start and import excluded).")
    say("proc_s: median whole-process wall time; cpu_s: median user+system CPU; peak_MiB: max ru_maxrss over the runs.")
    say("This machine drifts by about ±25%: compare figures from the same invocation only.")

    with open(args.results, "w") as fh:
        fh.write("\n".join(lines) + "\n")
    if not all(same for _, same, _ in checks):
        sys.exit(3)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("rows")
    p.add_argument("path")
    p.set_defaults(fn=cmd_rows)
    p = sub.add_parser("duckdb-worker")
    p.add_argument("data")
    p.add_argument("threads", type=int)
    p.set_defaults(fn=cmd_duckdb_worker)
    p = sub.add_parser("compare")
    p.add_argument("--bin", required=True)
    p.add_argument("--dataset", action="append", required=True, help="NAME=FILE_OR_DIR")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rows", type=int, required=True)
    p.add_argument("--results", required=True)
    p.add_argument("--tmp", default=None, help="parent folder of the job's temporary --out folders")
    p.set_defaults(fn=cmd_compare)
    args = ap.parse_args()
    args.fn(args)


if __name__ == "__main__":
    main()
