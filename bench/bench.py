#!/usr/bin/env python3
"""Benchmark helper for bench/run.sh: telemetry-hunt against DuckDB, Polars and DataFusion on the
same Parquet files, and against Polars merely decoding the 4 columns the query needs.

Subcommands
  rows PATH                     total Parquet rows in a file or a folder (0 if none or unreadable)
  plain SRC DST                 rewrite SRC (a file or a folder of them) to DST (a file or a folder,
                                written in place: run.sh renames it when complete) with the same rows,
                                row groups and compression, but string columns without dictionary
                                encoding (pyarrow use_dictionary for the other columns only)
  worker ENGINE DATA THREADS    run one engine once (duckdb, polars, datafusion, polars_floor),
                                timing the query inside the process; print one JSON line
  compare --bin BIN --dataset NAME=PATH [...] --engines E,... --runs N --threads N --results FILE
                                the benchmark proper: interleaved repetitions, correctness check,
                                the table, the ratios, and FILE with the same text

Every measured repetition is its own child process, reaped with os.wait4, so wall time, CPU time
and peak RSS (ru_maxrss) belong to that one process only; /proc/PID/io is read after the child
exits and before it is reaped (waitid with WNOWAIT).

The engine expressions are copied from /work/shared/bench/anchors.py (DOMAINS, COLS,
AFTER_SCHEME_RE, sql_host for DuckDB and DataFusion, polars_host, in_list, make_duckdb,
make_polars, make_datafusion, and make_floor("polars_min")): the KQL reference query with exact
parse_url Host semantics. They are copied, not imported, so this folder runs on its own.
"""
from __future__ import annotations

import argparse
import glob
import importlib.metadata
import importlib.util
import json
import os
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
COLS = ["Timestamp", "DeviceId", "ActionType", "RemoteUrl"]
# host regex applied to the text AFTER the first "://"
AFTER_SCHEME_RE = r"^(?:[^/?#]*@)?([^:/?#]*)"


def sql_host(col="RemoteUrl", dialect="duckdb"):
    if dialect == "duckdb":
        extract = f"regexp_extract(substr({col}, strpos({col}, '://') + 3), '{AFTER_SCHEME_RE}', 1)"
        has = f"contains({col}, '//')"
    else:  # datafusion
        extract = f"regexp_match(substr({col}, strpos({col}, '://') + 3), '{AFTER_SCHEME_RE}')[1]"
        has = f"strpos({col}, '//') > 0"
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


def datafusion_query() -> str:
    return f"""
      SELECT "ActionType", date_trunc('day', "Timestamp") AS day, count(DISTINCT "DeviceId") AS devices
      FROM ev WHERE {sql_host('"RemoteUrl"', dialect="datafusion")} IN {in_list()}
      GROUP BY 1, 2"""


def polars_host():
    import polars as pl

    u = pl.col("RemoteUrl")
    p = u.str.find("://", literal=True)
    return (pl.when(~u.str.contains("//", literal=True)).then(u)
            .when(p.fill_null(-1) <= 0).then(pl.lit(""))
            .otherwise(u.str.slice(p + 3).str.extract(AFTER_SCHEME_RE, 1)))


def polars_query(data_glob: str):
    import polars as pl

    return (pl.scan_parquet(data_glob)
            .select(COLS)
            .filter(polars_host().is_in(DOMAINS))
            .group_by("ActionType", pl.col("Timestamp").dt.date().alias("day"))
            .agg(pl.col("DeviceId").drop_nulls().n_unique().alias("devices")))


def polars_floor(data_glob: str):
    """floor.polars_min: decode the 4 needed columns; max(byte length) forces every value to be
    decoded (plain min/max could be answered from Parquet statistics)."""
    import polars as pl

    return pl.scan_parquet(data_glob).select(
        [pl.len().alias("n"), pl.col("Timestamp").max()] + [pl.col(c).str.len_bytes().max() for c in COLS[1:]])
# ---------------------------------------------------------------- end of the copy

# peer engines: name -> (module that must be importable, label in the tables)
PEERS = {
    "duckdb": ("duckdb", "duckdb"),
    "polars": ("polars", "polars (lazy)"),
    "datafusion": ("datafusion", "datafusion"),
    "polars_floor": ("polars", "polars 4-col floor"),
}
REFERENCE_QUERIES = ("duckdb", "polars", "datafusion")
OURS = "telemetry-hunt"


def parquet_files(path: str) -> list[str]:
    if os.path.isdir(path):
        return sorted(glob.glob(os.path.join(path, "**", "*.parquet"), recursive=True))
    return [path] if os.path.isfile(path) else []


def data_glob(path: str) -> str:
    if os.path.isdir(path):
        return os.path.join(path, "*.parquet")
    return path


def count_rows(path: str) -> int:
    import pyarrow.parquet as pq

    return sum(pq.ParquetFile(f).metadata.num_rows for f in parquet_files(path))


def cmd_rows(args) -> None:
    try:
        total = count_rows(args.path)
    except Exception as e:  # a half-written file from an interrupted run counts as absent
        print(f"rows: {args.path}: {e}", file=sys.stderr)
        total = 0
    print(total)


# ---------------------------------------------------------------- the plain-strings variant
def cmd_plain(args) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    src = args.src.rstrip("/")
    files = parquet_files(src)
    if not files:
        raise SystemExit(f"plain: no Parquet files in {src}")
    dst = args.dst.rstrip("/")
    if os.path.isfile(src):
        targets = [(src, dst)]
    else:
        targets = [(f, os.path.join(dst, os.path.relpath(f, src))) for f in files]
    t0 = time.perf_counter()
    for f, out in targets:
        pf = pq.ParquetFile(f)
        md = pf.metadata
        schema = pf.schema_arrow
        # dictionary-typed Arrow columns are written dense; strings get no dictionary at all
        fields = [pa.field(x.name, x.type.value_type, x.nullable, x.metadata) if pa.types.is_dictionary(x.type) else x
                  for x in schema]
        schema = pa.schema(fields, metadata=schema.metadata)
        strings = {x.name for x in schema
                   if pa.types.is_string(x.type) or pa.types.is_large_string(x.type)
                   or pa.types.is_string_view(x.type) or pa.types.is_binary(x.type) or pa.types.is_large_binary(x.type)}
        keep_dict = [x.name for x in schema if x.name not in strings]
        comp = md.row_group(0).column(0).compression.lower() if md.num_row_groups else "snappy"
        comp = None if comp == "uncompressed" else comp
        os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
        with pq.ParquetWriter(out, schema, compression=comp, use_dictionary=keep_dict or False) as w:
            for i in range(md.num_row_groups):  # the same row groups as the source
                t = pf.read_row_group(i).cast(schema)
                w.write_table(t, row_group_size=max(t.num_rows, 1))
        print(f"plain: {f} -> {out} ({md.num_rows:,} rows, {md.num_row_groups} row groups, "
              f"{len(strings)} string columns without dictionary, {time.perf_counter() - t0:.0f}s)",
              file=sys.stderr, flush=True)
    # the encodings of the query's string columns, as written
    md = pq.ParquetFile(targets[0][1]).metadata
    names = [md.schema.column(i).name for i in range(md.num_columns)]
    for c in COLS[1:]:
        print(f"plain: {c} encodings {md.row_group(0).column(names.index(c)).encodings}", file=sys.stderr)


# ---------------------------------------------------------------- the peer workers
def canon(table) -> list:
    """[ISO day, ActionType, n] rows of an Arrow table (ActionType, day, n), sorted."""
    import datetime as dt
    import pyarrow as pa

    a, d, n = table.column(0), table.column(1), table.column(2)
    if pa.types.is_timestamp(d.type):
        unit = {"s": 1, "ms": 10**3, "us": 10**6, "ns": 10**9}[d.type.unit]
        days = [None if v is None else (dt.date(1970, 1, 1) + dt.timedelta(days=v // (86400 * unit))).isoformat()
                for v in d.cast(pa.int64()).to_pylist()]
    elif pa.types.is_date(d.type):
        days = [None if v is None else v.isoformat() for v in d.to_pylist()]
    else:
        raise TypeError(d.type)
    return sorted([day, act, int(k)] for act, day, k in zip(a.to_pylist(), days, n.to_pylist()))


def cmd_worker(args) -> None:
    """One engine, one run; POLARS_MAX_THREADS comes from the environment (set by compare)."""
    eng, data, threads = args.engine, args.data, args.threads
    if eng == "duckdb":
        import duckdb

        con = duckdb.connect()
        con.execute(f"SET threads={threads}")
        con.execute("SET TimeZone='UTC'")  # date_trunc/CAST on TIMESTAMPTZ use the session zone
        q = duckdb_query(data_glob(data))
        t0 = time.perf_counter()
        rows = con.sql(q).fetchall()
        dt = time.perf_counter() - t0
        out = {"result": sorted([d.isoformat(), a, int(n)] for a, d, n in rows)}
    elif eng == "polars":
        lf = polars_query(data_glob(data))
        t0 = time.perf_counter()
        table = lf.collect().to_arrow()
        dt = time.perf_counter() - t0
        out = {"result": canon(table)}
    elif eng == "datafusion":
        from datafusion import SessionConfig, SessionContext

        ctx = SessionContext(SessionConfig().with_target_partitions(threads))
        ctx.register_parquet("ev", data)
        q = datafusion_query()
        t0 = time.perf_counter()
        table = ctx.sql(q).to_arrow_table()
        dt = time.perf_counter() - t0
        out = {"result": canon(table)}
    elif eng == "polars_floor":
        lf = polars_floor(data_glob(data))
        t0 = time.perf_counter()
        df = lf.collect()
        dt = time.perf_counter() - t0
        out = {"rows": int(df["n"][0])}
    else:
        raise SystemExit(f"unknown engine {eng}")
    out["query_s"] = dt
    print(json.dumps(out))


# ---------------------------------------------------------------- measurement
def read_proc_io(pid: int) -> dict:
    try:
        with open(f"/proc/{pid}/io") as fh:
            return {k: int(v) for k, v in (line.split(":") for line in fh if ":" in line)}
    except OSError:
        return {}


def measure(cmd: list[str], env=None) -> dict:
    """Run cmd once as a child: wall seconds, CPU seconds, peak RSS and /proc/PID/io of that child."""
    err = tempfile.TemporaryFile()
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, env=env)
    stdout = p.stdout.read()
    p.stdout.close()
    os.waitid(os.P_PID, p.pid, os.WEXITED | os.WNOWAIT)  # exited, not yet reaped: /proc/PID/io is still there
    io = read_proc_io(p.pid)
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    err.seek(0)
    stderr = err.read().decode(errors="replace")
    return {"rc": p.returncode, "wall": wall, "cpu": ru.ru_utime + ru.ru_stime, "maxrss_kib": ru.ru_maxrss,
            "rchar": io.get("rchar"), "read_bytes": io.get("read_bytes"),
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


def read_run_record(out_dir: str) -> dict:
    recs = glob.glob(os.path.join(out_dir, "MdeTelemetryRuns", "day=*", "*.jsonl"))
    if len(recs) != 1:
        return {}
    with open(recs[0]) as fh:
        lines = [json.loads(x) for x in fh if x.strip()]
    return lines[-1] if lines else {}


def mib(n) -> str:
    return "-" if n is None else f"{n / 2**20:.0f}"


def median_or_none(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def run_ours(args, env, path) -> dict:
    tmp = tempfile.mkdtemp(prefix="th-bench-", dir=args.tmp)
    try:
        m = measure([args.bin, "--log-format", "json", "-q", "run", "--input", path, "--out", tmp], env=env)
        if m["rc"] != 0:
            raise SystemExit(f"telemetry-hunt failed (rc={m['rc']}) on {path}\n{m['stderr'][-4000:]}")
        m["result"] = read_daily(tmp)
        m["record"] = read_run_record(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    m["query_s"] = m["wall"]  # our figure is the whole process
    return m


def run_peer(args, env, eng, path) -> dict:
    m = measure([sys.executable, os.path.abspath(__file__), "worker", eng, path, str(args.threads)], env=env)
    if m["rc"] != 0:
        m["error"] = m["stderr"].strip().splitlines()[-1:] or [f"rc={m['rc']}"]
        return m
    r = json.loads(m["stdout"].strip().splitlines()[-1])
    m.update(r)
    return m


def cmd_compare(args) -> None:
    env = dict(os.environ)
    t = str(args.threads)
    # the same thread budget everywhere: our worker pool, Polars (read at import), DuckDB `SET threads`
    # and DataFusion target_partitions are set in the workers
    env.update(RAYON_NUM_THREADS=t, POLARS_MAX_THREADS=t, OMP_NUM_THREADS=t)
    lines: list[str] = []

    def say(s=""):
        print(s, flush=True)
        lines.append(s)

    peers = []
    for eng in [e for e in args.engines.split(",") if e and e != OURS]:
        if eng not in PEERS:
            raise SystemExit(f"unknown engine {eng!r} (known: {OURS}, {', '.join(PEERS)})")
        mod = PEERS[eng][0]
        if importlib.util.find_spec(mod) is None:
            say(f"SKIPPED {eng}: python module {mod!r} is not importable by {sys.executable}")
            continue
        peers.append(eng)
    versions = []
    for mod in sorted({PEERS[e][0] for e in peers} | {"pyarrow"}):
        try:
            versions.append(f"{mod} {importlib.metadata.version(mod)}")
        except importlib.metadata.PackageNotFoundError:
            versions.append(f"{mod} ?")
    say(f"# engines: {OURS} ({args.bin}), {', '.join(versions)}; {args.threads} threads each; "
        f"{args.runs} interleaved runs")

    sets = []
    for spec in args.dataset:
        name, path = spec.split("=", 1)
        rows = count_rows(path)
        nbytes = warm_page_cache(path)
        sets.append({"name": name, "path": path, "rows": rows, "runs": {e: [] for e in [OURS] + peers}})
        say(f"== {name}: {path} ({len(parquet_files(path))} file(s), {nbytes / 2**20:,.0f} MiB, {rows:,} rows)")
    say()

    failed: set = set()  # (dataset, engine) that failed once: not run again
    for i in range(args.runs):
        for ds in sets:
            name, path = ds["name"], ds["path"]
            m = run_ours(args, env, path)
            ds["runs"][OURS].append(m)
            rec = m["record"]
            d = rec.get("DurationsMs", {})
            say(f"  run {i + 1} {name:<11} {OURS:<18} wall {m['wall']:7.3f}s  cpu {m['cpu']:6.2f}s  "
                f"rss {m['maxrss_kib'] / 1024:5.0f} MiB  rchar {mib(m['rchar'])} MiB (disk {mib(m['read_bytes'])})  groups {len(m['result'])}  "
                f"stages ms scan {d.get('scan')} write {d.get('write')} detect {d.get('detect')} total {d.get('total')}  "
                f"rows scanned {rec.get('RowsScanned')}  matched(kql) {rec.get('RowsMatchedKql')}")
            for eng in peers:
                if (name, eng) in failed:
                    continue
                m = run_peer(args, env, eng, path)
                if "error" in m:
                    failed.add((name, eng))
                    say(f"  run {i + 1} {name:<11} {PEERS[eng][1]:<18} FAILED (rc={m['rc']}): {m['error'][0][:300]}"
                        " -- not run again on this dataset")
                    continue
                ds["runs"][eng].append(m)
                what = f"groups {len(m['result'])}" if "result" in m else f"rows {m['rows']:,}"
                say(f"  run {i + 1} {name:<11} {PEERS[eng][1]:<18} query {m['query_s']:7.3f}s  "
                    f"process {m['wall']:7.3f}s  cpu {m['cpu']:6.2f}s  rss {m['maxrss_kib'] / 1024:5.0f} MiB  "
                    f"rchar {mib(m['rchar'])} MiB (disk {mib(m['read_bytes'])})  {what}")
    say()

    # correctness: every reference query against our MdeTelemetryDaily, exactly
    all_same = True
    for ds in sets:
        name, runs = ds["name"], ds["runs"]
        ours = runs[OURS][0]["result"]
        for m in runs[OURS][1:]:
            if m["result"] != ours:
                say(f"WARNING: {OURS} gave different results between runs on {name}")
        ds["same"] = {}
        for eng in peers:
            if not runs[eng]:
                continue
            if eng == "polars_floor":
                got = runs[eng][0]["rows"]
                ok = got == ds["rows"]
                ds["same"][eng] = "rows ok" if ok else "ROWS DIFFER"
                if not ok:
                    say(f"WARNING: the Polars floor counted {got:,} rows on {name}, the files hold {ds['rows']:,}")
                continue
            theirs = runs[eng][0]["result"]
            for m in runs[eng][1:]:
                if m["result"] != theirs:
                    say(f"WARNING: {eng} gave different results between runs on {name}")
            same = theirs == ours
            all_same &= same
            ds["same"][eng] = "yes" if same else "NO"
            say(f"results identical on {name}, {eng} vs {OURS}: {'yes' if same else 'NO'} "
                f"({len(theirs)} groups in {eng}, {len(ours)} in {OURS}; sum of distinct devices "
                f"{sum(x[2] for x in theirs):,} / {sum(x[2] for x in ours):,})")
            if not same:
                a, b = {tuple(x) for x in ours}, {tuple(x) for x in theirs}
                say(f"    only in {OURS} ({len(a - b)}): {sorted(a - b)[:10]}")
                say(f"    only in {eng} ({len(b - a)}): {sorted(b - a)[:10]}")
    say()

    # the table
    say(f"{'dataset':<11} {'engine':<18} {'query_s':>8} {'Mrows/s':>8} {'proc_s':>8} {'cpu_s':>7} "
        f"{'peak_MiB':>8} {'read_MiB':>8} {'rchar_MiB':>9} {'groups':>6}  same")
    for ds in sets:
        ds["med"] = {}
        for eng in [OURS] + peers:
            runs = ds["runs"][eng]
            if not runs:
                continue
            q = statistics.median(m["query_s"] for m in runs)
            ds["med"][eng] = {"query_s": q, "proc_s": statistics.median(m["wall"] for m in runs),
                              "rss_kib": max(m["maxrss_kib"] for m in runs)}
            rd = median_or_none(m["record"].get("Bytes") for m in runs) if eng == OURS else None
            groups = len(runs[0]["result"]) if "result" in runs[0] else "-"
            label = PEERS[eng][1] if eng in PEERS else eng
            say(f"{ds['name']:<11} {label:<18} {q:>8.3f} {ds['rows'] / q / 1e6:>8.1f} "
                f"{ds['med'][eng]['proc_s']:>8.3f} {statistics.median(m['cpu'] for m in runs):>7.2f} "
                f"{ds['med'][eng]['rss_kib'] / 1024:>8.0f} {mib(rd):>8} {mib(median_or_none(m['rchar'] for m in runs)):>9} "
                f"{groups:>6}  {ds['same'].get(eng, 'ref' if eng == OURS else '-')}")
    for ds in sets:
        runs = ds["runs"][OURS]
        stage = {k: median_or_none(m["record"].get("DurationsMs", {}).get(k) for m in runs)
                 for k in ("scan", "write", "detect", "total")}
        rec = runs[0]["record"]
        say(f"{OURS} stages on {ds['name']} (median ms, run record): "
            + "  ".join(f"{k} {v:.0f}" if v is not None else f"{k} -" for k, v in stage.items())
            + f"  | {rec.get('Files')} file(s), {rec.get('RowGroupsRead')} row groups read, "
              f"{rec.get('RowGroupsPruned')} pruned, {rec.get('Findings')} findings")
    say()

    # the ratios of issue 7
    for ds in sets:
        med, name = ds["med"], ds["name"]
        ours = med[OURS]["query_s"]
        refs = [(med[e]["query_s"], e) for e in REFERENCE_QUERIES if e in med]
        if refs:
            q, e = min(refs)
            r = ours / q
            rp = ours / min(med[x]["proc_s"] for _, x in refs)
            say(f"ratio {OURS} / fastest reference query ({e} {q:.3f}s) on {name}: {r:.2f} "
                f"[target <= 0.33: {'met' if r <= 1 / 3 else 'NOT met'}] (against whole peer processes: {rp:.2f})")
        if "polars_floor" in med:
            q = med["polars_floor"]["query_s"]
            r = ours / q
            say(f"ratio {OURS} / Polars 4-column decode floor ({q:.3f}s) on {name}: {r:.2f} "
                f"[target <= 1: {'met' if r <= 1 else 'NOT met'}]")
    by_name = {ds["name"]: ds for ds in sets}
    for ds in sets:
        base = by_name.get(ds["name"].removesuffix("_plain")) if ds["name"].endswith("_plain") else None
        if base is not None:
            r = ds["med"][OURS]["query_s"] / base["med"][OURS]["query_s"]
            say(f"ratio {OURS} plain strings / dictionary ({ds['name']} / {base['name']}): {r:.2f} "
                f"[target <= 2: {'met' if r <= 2 else 'NOT met'}]")
    say(f"{OURS} peak RSS: " + ", ".join(
        f"{ds['name']} {ds['med'][OURS]['rss_kib'] * 1024 / 1e6:.0f} MB ({ds['rows'] / 1e6:g}M rows)" for ds in sets)
        + " [target <= 300 MB on 50M rows, and flat from 5M to 50M]")
    say()
    say("query_s: telemetry-hunt = whole process wall time (read, hunt, detect, write every table);")
    say("         peers = the query alone, timed inside their worker process (interpreter start, import, connect excluded).")
    say("Mrows/s: rows / query_s.  proc_s: whole-process wall time.  cpu_s: user+system CPU of the process.  All medians.")
    say("peak_MiB: max ru_maxrss over the runs.  read_MiB: the run record's Bytes (input files' size).")
    say("rchar_MiB: read() bytes of the process (/proc/PID/io; includes Python's imports, excludes mmap'ed files).")
    say("This machine drifts by about ±25%: compare figures from the same invocation only.")

    with open(args.results, "w") as fh:
        fh.write("\n".join(lines) + "\n")
    if not all_same:
        sys.exit(3)
    if failed:
        say_err = ", ".join(f"{e} on {n}" for n, e in sorted(failed))
        print(f"FAILED: {say_err}", file=sys.stderr)
        sys.exit(4)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("rows")
    p.add_argument("path")
    p.set_defaults(fn=cmd_rows)
    p = sub.add_parser("plain")
    p.add_argument("src")
    p.add_argument("dst")
    p.set_defaults(fn=cmd_plain)
    p = sub.add_parser("worker")
    p.add_argument("engine", choices=sorted(PEERS))
    p.add_argument("data")
    p.add_argument("threads", type=int)
    p.set_defaults(fn=cmd_worker)
    p = sub.add_parser("compare")
    p.add_argument("--bin", required=True)
    p.add_argument("--dataset", action="append", required=True, help="NAME=FILE_OR_DIR")
    p.add_argument("--engines", default=",".join(PEERS), help=f"comma list of peers ({', '.join(PEERS)})")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--results", required=True)
    p.add_argument("--tmp", default=None, help="parent folder of the job's temporary --out folders")
    p.set_defaults(fn=cmd_compare)
    args = ap.parse_args()
    args.fn(args)


if __name__ == "__main__":
    main()
