"""Writes the files of this folder: the same DeviceNetworkEvents rows as other Parquet writers
lay them out (pages, encodings, compression, nulls, timestamp types). The parquet unit tests
read each with the page reader and with the arrow reader and require the same rows and counts.

    bench/.venv/bin/python tests/parquet-writers/make.py   # after bench/run.sh made bench/data/large
"""
import os
import duckdb
import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.join(HERE, "../../bench/data/large/events_2025-01-02.parquet")
COLUMNS = ["Timestamp", "DeviceId", "DeviceName", "ActionType", "RemoteUrl", "RemotePort",
           "InitiatingProcessFileName", "InitiatingProcessFolderPath", "InitiatingProcessSHA1",
           "InitiatingProcessCommandLine"]

table = pq.read_table(SOURCE, columns=COLUMNS).slice(0, 200_000)
url = pc.utf8_lower(pc.fill_null(table["RemoteUrl"], ""))
telemetry = pc.or_(pc.match_substring(url, "microsoft"), pc.match_substring(url, "winatp"))
rows = pa.concat_tables([table.filter(telemetry).slice(0, 600), table.filter(pc.invert(telemetry)).slice(0, 600)])
# the two halves interleaved, and nulls in every column the hunt reads
order = np.argsort(np.random.default_rng(3).random(rows.num_rows), kind="stable")
rows = rows.take(pa.array(order))
rng = np.random.default_rng(5)
rows = pa.table(
    [pc.if_else(pa.array(rng.random(rows.num_rows) < 0.03), pa.scalar(None, c.type), c) for c in rows.columns],
    schema=rows.schema,
)


def out(name):
    return os.path.join(HERE, name + ".parquet")


small = dict(data_page_size=1024, row_group_size=500)
pq.write_table(rows, out("pyarrow-dictionary"), **small)
pq.write_table(rows, out("pyarrow-plain-v2-zstd"), use_dictionary=False, data_page_version="2.0",
               compression="zstd", **small)
pq.write_table(rows, out("pyarrow-int96-dictionary-fallback-gzip"), use_deprecated_int96_timestamps=True,
               dictionary_pagesize_limit=1024, compression="gzip", **small)
wide = pa.schema([pa.field(f.name, pa.timestamp("ns", tz="UTC")) if pa.types.is_timestamp(f.type)
                  else pa.field(f.name, pa.large_string()) if f.type == pa.string() else f for f in rows.schema])
pq.write_table(rows.cast(wide), out("pyarrow-nanoseconds-large-strings"), version="2.6", **small)
con = duckdb.connect()
con.register("events", rows)
con.execute(f"COPY events TO '{out('duckdb')}' (FORMAT parquet, ROW_GROUP_SIZE 500)")
con.execute(f"COPY events TO '{out('duckdb-v2-zstd')}' (FORMAT parquet, PARQUET_VERSION v2, COMPRESSION zstd)")
frame = pl.from_arrow(rows)
frame.write_parquet(out("polars"), data_page_size=1024, row_group_size=500)
for name in sorted(os.listdir(HERE)):
    if name.endswith(".parquet"):
        print(f"{name}: {os.path.getsize(os.path.join(HERE, name)):,} bytes")
