#!/usr/bin/env python3
"""Benchmark: the job reading a Log Analytics workspace through the query API.

    python3 bench/log_analytics.py                 # 2,000,000 telemetry rows over one day
    ROWS=500000 PUSHDOWN=aggregate python3 bench/log_analytics.py

A local server answers the query API (and the managed-identity endpoint) with canned rows for
the window each query asks (the window is read from the KQL the job sends). The answer bodies are
built before the clock starts, so what is timed is the job: HTTP, decoding the answers into
canonical batches, the hunt and writing the tables. Prints wall time, rows/s, answer MB/s and the
job's peak memory (from /usr/bin/time). Standard library only.
"""
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "telemetry-hunt")
ROWS = int(os.environ.get("ROWS", "2000000"))
WINDOW_HOURS = int(os.environ.get("WINDOW_HOURS", "1"))
PUSHDOWN = os.environ.get("PUSHDOWN", "rows")
WORKSPACE = "5e1d8f3a-7c2b-4a9e-8f10-2b3c4d5e6f70"
DAY = datetime(2026, 11, 2, tzinfo=timezone.utc)
HOSTS = ["winatp-gw-weu.microsoft.com", "eu-v20.events.data.microsoft.com", "WINATP-GW-NEU.MICROSOFT.COM:443"]
ACTIONS = ["ConnectionSuccess", "ConnectionFailed", "ConnectionAttempt"]
COLUMNS = ["Timestamp", "DeviceId", "ActionType", "RemoteUrl", "RemotePort", "InitiatingProcessFileName",
           "InitiatingProcessFolderPath", "InitiatingProcessVersionInfoCompanyName", "InitiatingProcessCommandLine"]
TYPES = {"Timestamp": "datetime", "RemotePort": "int"}
DATETIME = re.compile(r"datetime\(([^)]+)\)")


def answers():
    """The canned answer of every window: ROWS spread evenly over the day, in whole microseconds."""
    width = WINDOW_HOURS * 3_600_000_000
    windows = {}
    for i in range(ROWS):
        t = i * 86_400_000_000 // ROWS
        stamp = (DAY + timedelta(microseconds=t)).strftime("%Y-%m-%dT%H:%M:%S.%f") + "0Z"
        windows.setdefault(t // width, []).append(
            [stamp, "device-%05d" % (i * 7919 % 20011), ACTIONS[i % 3], HOSTS[i // 3 % 3], 443, "MsSense.exe",
             "c:\\program files\\windows defender advanced threat protection\\mssense.exe",
             "Microsoft Corporation", "\"MsSense.exe\""])
    columns = [{"name": c, "type": TYPES.get(c, "string")} for c in COLUMNS]
    out = {}
    for n, rows in windows.items():
        start = DAY + timedelta(microseconds=n * width)
        body = {"tables": [{"name": "PrimaryResult", "columns": columns, "rows": rows}]}
        out[(start, start + timedelta(microseconds=width))] = json.dumps(body).encode()
    return out


def parse(text):
    return datetime.strptime(text[:19], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=timezone.utc)


ANSWERS = {}


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def reply(self, status, body):
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):  # the managed-identity endpoint
        self.reply(200, json.dumps({"access_token": "bench-token", "expires_on": str(int(time.time()) + 3600),
                                    "resource": "https://api.loganalytics.io", "token_type": "Bearer"}).encode())

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        start, end = (parse(t) for t in DATETIME.findall(body["query"])[:2])
        self.reply(200, ANSWERS[(start, end)])


def main():
    if not os.path.exists(BIN):
        sys.exit(f"build first: cargo build --release --locked ({BIN} is missing)")
    if PUSHDOWN != "rows":
        sys.exit("the canned answers are rows; PUSHDOWN=rows only")
    print(f"[bench] preparing {ROWS} rows in {24 // WINDOW_HOURS} windows", file=sys.stderr)
    ANSWERS.update(answers())
    answer_bytes = sum(len(b) for b in ANSWERS.values())
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}"
    with tempfile.TemporaryDirectory() as tmp:
        config = os.path.join(tmp, "hunt.toml")
        with open(config, "w") as f:
            f.write(f'[source.log_analytics]\nworkspace_id = "{WORKSPACE}"\nendpoint = "{url}"\n'
                    f"window_hours = {WINDOW_HOURS}\n")
        env = dict(os.environ, IDENTITY_ENDPOINT=f"{url}/msi/token", IDENTITY_HEADER="bench")
        clock = time.monotonic()
        # /usr/bin/time reports the job's own peak: ru_maxrss of a child forked from this process
        # would include the answers this process holds.
        wrap = os.environ.get("WRAP", "").split() or ["/usr/bin/time", "-f", "peak-kib %M"]
        run = subprocess.run(wrap + [BIN, "-q", "run", "--config", config, "--out", os.path.join(tmp, "out"),
                              "--from", "2026-11-02", "--to", "2026-11-02"], env=env, capture_output=True, text=True)
        wall = time.monotonic() - clock
        if run.returncode != 0:
            sys.exit(run.stderr)
        with open(os.path.join(tmp, "out", "MdeTelemetryDaily", "day=2026-11-02", "part-0.jsonl")) as f:
            events = sum(json.loads(line)["Events"] for line in f)
    peaks = [line.split()[1] for line in run.stderr.splitlines() if line.startswith("peak-kib ")]
    peak = f"{int(peaks[-1]) / 1024:.0f}" if peaks else "n/a"
    expected = sum(1 for i in range(ROWS) if i // 3 % 3 != 2)
    print(f"rows        {ROWS}")
    print(f"windows     {len(ANSWERS)} of {WINDOW_HOURS} h")
    print(f"answer MB   {answer_bytes / 1e6:.1f}")
    print(f"wall s      {wall:.2f}")
    print(f"Mrows/s     {ROWS / wall / 1e6:.2f}")
    print(f"answer MB/s {answer_bytes / wall / 1e6:.1f}")
    print(f"peak MiB    {peak}")
    print(f"events ok   {'yes' if events == expected else f'NO ({events} != {expected})'}")


if __name__ == "__main__":
    main()
