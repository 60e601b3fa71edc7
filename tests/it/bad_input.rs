//! The bad-input corpus: broken and hostile files, each with the one outcome it must have. A
//! row-level fault is a counted rejection with its reason (the run succeeds); a file that cannot
//! be read, or one past a `[limits]` bound, fails the run with a message naming the file (and the
//! setting). Never a panic, and (`memory_stays_bounded_on_endless_input`) never unbounded
//! memory. The files are generated here, so the big ones (a 100 MB line, gzip bombs) cost no
//! repository space.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use arrow_array::{
    ArrayRef, BooleanArray, Float64Array, Int32Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use telemetry_hunt::config::{Config, Limits};
use telemetry_hunt::job::{self, RunRequest};
use telemetry_hunt::time::Day;

const GW: &str = "winatp-gw-weu.microsoft.com";

/// What a case must give.
enum Expect {
    /// The run succeeds: rows scanned, rejections by reason (all of them), rows the reference
    /// query counts under `kql` and `normalized`, and the days that have rows.
    Rows {
        scanned: u64,
        rejected: &'static [(&'static str, u64)],
        kql: u64,
        normalized: u64,
        days: &'static [&'static str],
    },
    /// The run fails in the read stage; the message names the file and says all of these.
    Fails(&'static [&'static str]),
}

struct Case {
    name: &'static str,
    file: &'static str,
    make: fn(&Path),
    limits: Limits,
    expect: Expect,
}

fn json_line(timestamp: &str, device: &str, url: &str, port: &str) -> String {
    let url = serde_json::to_string(url).unwrap();
    format!(
        r#"{{"Timestamp":"{timestamp}","DeviceId":"{device}","ActionType":"ConnectionSuccess","RemoteUrl":{url},"RemotePort":{port}}}"#
    )
}

fn good_line(device: &str) -> String {
    json_line("2026-11-03T10:00:00Z", device, GW, "443")
}

fn write(path: &Path, bytes: impl AsRef<[u8]>) {
    std::fs::write(path, bytes).unwrap();
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(bytes).unwrap();
    gz.finish().unwrap()
}

/// `first`, then `copies` times `member`, as concatenated gzip members (which MultiGzDecoder
/// reads as one stream): the member is compressed once, so a bomb of gigabytes is quick to make.
fn gzip_members(path: &Path, first: &[u8], member: &[u8], copies: usize) {
    let member = gzip(member);
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    file.write_all(&gzip(first)).unwrap();
    for _ in 0..copies {
        file.write_all(&member).unwrap();
    }
    file.flush().unwrap();
}

/// A small valid Parquet file: `rows` events to the gateway on 2026-11-03.
fn parquet_bytes(rows: usize, time: Option<ArrayRef>) -> Vec<u8> {
    parquet_with(rows, time, None, None)
}

/// [`parquet_bytes`] with other times, ports (Int32 443 by default) or RemoteUrl values (the
/// gateway as text by default).
fn parquet_with(rows: usize, time: Option<ArrayRef>, ports: Option<ArrayRef>, urls: Option<ArrayRef>) -> Vec<u8> {
    let start = Day::parse("2026-11-03").unwrap().start_micros();
    let time: ArrayRef = time.unwrap_or_else(|| {
        Arc::new(TimestampMicrosecondArray::from_iter_values((0..rows).map(|i| start + i as i64)).with_timezone("UTC"))
    });
    let batch = RecordBatch::try_from_iter([
        ("Timestamp", time),
        ("DeviceId", Arc::new(StringArray::from_iter_values((0..rows).map(|i| format!("d{i}")))) as ArrayRef),
        ("ActionType", Arc::new(StringArray::from_iter_values((0..rows).map(|_| "ConnectionSuccess"))) as ArrayRef),
        ("RemoteUrl", urls.unwrap_or_else(|| Arc::new(StringArray::from_iter_values((0..rows).map(|_| GW))))),
        ("RemotePort", ports.unwrap_or_else(|| Arc::new(Int32Array::from_iter_values((0..rows).map(|_| 443))))),
    ])
    .unwrap();
    let mut bytes = Vec::new();
    let mut writer = parquet::arrow::ArrowWriter::try_new(&mut bytes, batch.schema(), None).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
    bytes
}

/// A Parquet file of events to the gateway on 2026-11-03, one per value of `ports` (a
/// `RemotePort` column of any type).
fn parquet_ports(path: &Path, ports: ArrayRef) {
    write(path, parquet_with(ports.len(), None, Some(ports), None));
}

/// A Parquet file whose `RemoteUrl` column is `urls`, of any type.
fn parquet_urls(path: &Path, urls: ArrayRef) {
    write(path, parquet_with(urls.len(), None, None, Some(urls)));
}

/// INT96 times (Spark, Hive, older Data Factory) at 2300-01-01 and 1969-07-20, past what
/// nanoseconds since 1970 in an i64 can hold on the one side.
fn int96_parquet(path: &Path) {
    use parquet::data_type::{ByteArray, ByteArrayType, Int96, Int96Type};
    let message = "message schema { REQUIRED INT96 Timestamp; OPTIONAL BYTE_ARRAY DeviceId (UTF8); \
                   OPTIONAL BYTE_ARRAY ActionType (UTF8); OPTIONAL BYTE_ARRAY RemoteUrl (UTF8); }";
    let schema = Arc::new(parquet::schema::parser::parse_message_type(message).unwrap());
    let file = std::fs::File::create(path).unwrap();
    let mut writer = parquet::file::writer::SerializedFileWriter::new(file, schema, Default::default()).unwrap();
    let mut group = writer.next_row_group().unwrap();
    let days = [Day::parse("2300-01-01").unwrap(), Day::parse("1969-07-20").unwrap()];
    let times: Vec<Int96> = days
        .iter()
        .map(|d| {
            let mut v = Int96::new();
            let nanos: u64 = 3_600_000_000_000;
            v.set_data(nanos as u32, (nanos >> 32) as u32, (d.0 + 2_440_588) as u32);
            v
        })
        .collect();
    let mut column = group.next_column().unwrap().unwrap();
    column.typed::<Int96Type>().write_batch(&times, None, None).unwrap();
    column.close().unwrap();
    for values in [["d1", "d2"], ["ConnectionSuccess", "ConnectionSuccess"], [GW, GW]] {
        let mut column = group.next_column().unwrap().unwrap();
        let values: Vec<ByteArray> = values.iter().map(|v| ByteArray::from(*v)).collect();
        column.typed::<ByteArrayType>().write_batch(&values, Some(&[1, 1]), None).unwrap();
        column.close().unwrap();
    }
    group.close().unwrap();
    writer.close().unwrap();
}

fn small_limits() -> Limits {
    Limits { max_decompressed_bytes: 8 << 20, ..Limits::default() }
}

fn cases() -> Vec<Case> {
    let defaults = Limits::default();
    vec![
        Case {
            name: "truncated Parquet",
            file: "truncated.parquet",
            make: |p| {
                let bytes = parquet_bytes(100, None);
                write(p, &bytes[..bytes.len() / 2]);
            },
            limits: defaults,
            expect: Expect::Fails(&["truncated.parquet", "is not a readable Parquet file"]),
        },
        Case {
            name: "wrong magic at the start",
            file: "wrong-magic.parquet",
            make: |p| {
                let mut bytes = parquet_bytes(10, None);
                bytes[..4].copy_from_slice(b"PAR2");
                write(p, bytes);
            },
            limits: defaults,
            expect: Expect::Fails(&["wrong-magic.parquet", "does not start with the Parquet magic bytes `PAR1`"]),
        },
        Case {
            name: "wrong magic at the end",
            file: "wrong-footer-magic.parquet",
            make: |p| {
                let mut bytes = parquet_bytes(10, None);
                let n = bytes.len();
                bytes[n - 4..].copy_from_slice(b"PARX");
                write(p, bytes);
            },
            limits: defaults,
            expect: Expect::Fails(&["wrong-footer-magic.parquet", "is not a readable Parquet file"]),
        },
        Case {
            name: "a time column of the wrong type",
            file: "boolean-time.parquet",
            make: |p| write(p, parquet_bytes(3, Some(Arc::new(BooleanArray::from(vec![true, false, true]))))),
            limits: defaults,
            expect: Expect::Fails(&[
                "boolean-time.parquet",
                "the time column has type Boolean, which is not a timestamp",
            ]),
        },
        Case {
            name: "a RemoteUrl column of numbers",
            file: "url-int64.parquet",
            make: |p| parquet_urls(p, Arc::new(Int64Array::from(vec![443, 80]))),
            limits: defaults,
            expect: Expect::Fails(&["url-int64.parquet", "column `RemoteUrl` is of type Int64; it must hold text"]),
        },
        Case {
            name: "a RemoteUrl column of lists (would read as `[host]`, an evasion look)",
            file: "url-list.parquet",
            make: |p| {
                let mut list = arrow_array::builder::ListBuilder::new(arrow_array::builder::StringBuilder::new());
                list.values().append_value(GW);
                list.append(true);
                parquet_urls(p, Arc::new(list.finish()))
            },
            limits: defaults,
            expect: Expect::Fails(&["url-list.parquet", "column `RemoteUrl` is of type List("]),
        },
        Case {
            name: "a footer claiming a huge size",
            file: "huge-footer.parquet",
            make: |p| {
                let mut bytes = parquet_bytes(10, None);
                let n = bytes.len();
                bytes[n - 8..n - 4].copy_from_slice(&0x7fff_fff0u32.to_le_bytes());
                write(p, bytes);
            },
            limits: defaults,
            expect: Expect::Fails(&["huge-footer.parquet", "is not a readable Parquet file"]),
        },
        Case {
            name: "INT96 times after 2262 and before 1970",
            file: "int96.parquet",
            make: int96_parquet,
            limits: defaults,
            expect: Expect::Rows {
                scanned: 2,
                rejected: &[],
                kql: 2,
                normalized: 2,
                days: &["1969-07-20", "2300-01-01"],
            },
        },
        Case {
            name: "a gzip bomb",
            file: "bomb.json.gz",
            // 64 MiB of line ends per member, 4 members: 256 MiB out of about 250 KiB.
            make: |p| gzip_members(p, b"\n", &vec![b'\n'; 64 << 20], 4),
            limits: small_limits(),
            expect: Expect::Fails(&[
                "bomb.json.gz",
                "the decompressed data exceeds `limits.max_decompressed_bytes` = 8388608",
                "raise `max_decompressed_bytes`",
            ]),
        },
        Case {
            name: "a JSON line of 100 MB",
            file: "long-line.jsonl",
            make: |p| {
                let mut file = std::io::BufWriter::new(std::fs::File::create(p).unwrap());
                writeln!(file, "{}", good_line("d1")).unwrap();
                write!(file, r#"{{"Timestamp":"2026-11-03T10:00:00Z","RemoteUrl":"{GW}","DeviceId":""#).unwrap();
                let chunk = vec![b'a'; 1 << 20];
                for _ in 0..100 {
                    file.write_all(&chunk).unwrap();
                }
                writeln!(file, r#""}}"#).unwrap();
            },
            limits: defaults,
            expect: Expect::Fails(&["long-line.jsonl", "a line exceeds `limits.max_line_bytes` = 16777216"]),
        },
        Case {
            name: "a pretty-printed document larger than a line may be",
            file: "big-document.json",
            make: |p| {
                let mut text = String::from("[\n");
                for i in 0..2000 {
                    text += &format!("  {},\n", good_line(&format!("d{i}")));
                }
                text += &format!("  {}\n]\n", good_line("last"));
                write(p, text);
            },
            limits: Limits { max_line_bytes: 64 << 10, ..Limits::default() },
            expect: Expect::Fails(&[
                "big-document.json",
                "a JSON document that is not one value per line exceeds `limits.max_line_bytes` = 65536",
            ]),
        },
        Case {
            name: "invalid UTF-8 in a JSON line",
            file: "latin1.jsonl",
            make: |p| {
                let mut bytes = format!("{}\n", good_line("d1")).into_bytes();
                bytes.extend_from_slice(
                    b"{\"Timestamp\":\"2026-11-03T10:00:00Z\",\"DeviceId\":\"caf\xe9\",\"RemoteUrl\":\"x\"}\n",
                );
                write(p, bytes);
            },
            limits: defaults,
            expect: Expect::Rows {
                scanned: 2,
                rejected: &[("json: not UTF-8", 1)],
                kql: 1,
                normalized: 1,
                days: &["2026-11-03"],
            },
        },
        Case {
            name: "invalid UTF-8 in a CSV field",
            file: "latin1.csv",
            make: |p| {
                let mut bytes = b"Timestamp,DeviceId,ActionType,RemoteUrl,RemotePort\n".to_vec();
                bytes.extend_from_slice(format!("2026-11-03T10:00:00Z,d1,ConnectionSuccess,{GW},443\n").as_bytes());
                bytes.extend_from_slice(b"2026-11-03T10:00:00Z,caf\xe9,ConnectionSuccess,");
                bytes.extend_from_slice(format!("{GW},443\n").as_bytes());
                write(p, bytes);
            },
            limits: defaults,
            expect: Expect::Rows {
                scanned: 2,
                rejected: &[("csv: not UTF-8", 1)],
                kql: 1,
                normalized: 1,
                days: &["2026-11-03"],
            },
        },
        Case {
            name: "a byte-order mark before JSON lines",
            file: "bom.jsonl",
            make: |p| write(p, format!("\u{feff}{}\n{}\n", good_line("d1"), good_line("d2"))),
            limits: defaults,
            expect: Expect::Rows { scanned: 2, rejected: &[], kql: 2, normalized: 2, days: &["2026-11-03"] },
        },
        Case {
            name: "a byte-order mark before a CSV header",
            file: "bom.csv",
            make: |p| {
                write(p, format!("\u{feff}Timestamp,DeviceId,ActionType,RemoteUrl\n2026-11-03T10:00:00Z,d1,ConnectionSuccess,{GW}\n"))
            },
            limits: defaults,
            expect: Expect::Rows { scanned: 1, rejected: &[], kql: 1, normalized: 1, days: &["2026-11-03"] },
        },
        Case {
            name: "a partial last JSON line",
            file: "partial.jsonl",
            make: |p| {
                let last = good_line("d2");
                write(p, format!("{}\n{}", good_line("d1"), &last[..last.len() / 2]))
            },
            limits: defaults,
            expect: Expect::Rows {
                scanned: 2,
                rejected: &[("json: not valid JSON", 1)],
                kql: 1,
                normalized: 1,
                days: &["2026-11-03"],
            },
        },
        Case {
            name: "a partial last CSV line",
            file: "partial.csv",
            make: |p| {
                write(p, format!("Timestamp,DeviceId,ActionType,RemoteUrl\n2026-11-03T10:00:00Z,d1,ConnectionSuccess,{GW}\n2026-11-03T1"))
            },
            limits: defaults,
            expect: Expect::Rows {
                scanned: 2,
                rejected: &[("time: not a valid timestamp", 1)],
                kql: 1,
                normalized: 1,
                days: &["2026-11-03"],
            },
        },
        Case {
            name: "timestamps before 1970, after 2262 and outside Kusto's range",
            file: "times.jsonl",
            make: |p| {
                let lines = [
                    json_line("1969-07-20T20:17:40Z", "d1", GW, "443"),
                    json_line("2300-01-01T00:00:00Z", "d2", GW, "443"),
                    json_line("0000-12-31T00:00:00Z", "d3", GW, "443"),
                    json_line("9999-12-31T23:00:00-02:00", "d4", GW, "443"),
                ];
                write(p, lines.join("\n"))
            },
            limits: defaults,
            expect: Expect::Rows {
                scanned: 4,
                rejected: &[("time: not a valid timestamp", 2)],
                kql: 2,
                normalized: 2,
                days: &["1969-07-20", "2300-01-01"],
            },
        },
        Case {
            name: "NaN, negative, fractional and out-of-range ports",
            file: "ports.jsonl",
            make: |p| {
                let lines = [
                    json_line("2026-11-03T10:00:00Z", "d1", GW, "NaN"),
                    json_line("2026-11-03T10:00:00Z", "d2", GW, "\"NaN\""),
                    json_line("2026-11-03T10:00:00Z", "d3", GW, "-1"),
                    json_line("2026-11-03T10:00:00Z", "d4", GW, "443.5"),
                    json_line("2026-11-03T10:00:00Z", "d5", GW, "65536"),
                    json_line("2026-11-03T10:00:00Z", "d6", GW, "\"443\""),
                ];
                write(p, lines.join("\n"))
            },
            limits: defaults,
            expect: Expect::Rows {
                scanned: 6,
                rejected: &[("json: not valid JSON", 1), ("type: RemotePort", 4)],
                kql: 1,
                normalized: 1,
                days: &["2026-11-03"],
            },
        },
        Case {
            name: "negative and NaN ports in CSV",
            file: "ports.csv",
            make: |p| {
                let mut text = String::from("Timestamp,DeviceId,ActionType,RemoteUrl,RemotePort\n");
                for (device, port) in [("d1", "-443"), ("d2", "NaN"), ("d3", "70000"), ("d4", "443")] {
                    text += &format!("2026-11-03T10:00:00Z,{device},ConnectionSuccess,{GW},{port}\n");
                }
                write(p, text)
            },
            limits: defaults,
            expect: Expect::Rows {
                scanned: 4,
                rejected: &[("type: RemotePort", 3)],
                kql: 1,
                normalized: 1,
                days: &["2026-11-03"],
            },
        },
        Case {
            name: "out-of-range and negative INT64 ports in Parquet",
            file: "ports-int64.parquet",
            make: |p| {
                let ports = [Some(443), Some(70_000), Some(-1), Some(65_535), None, Some((1i64 << 32) + 443)];
                parquet_ports(p, Arc::new(Int64Array::from(ports.to_vec())))
            },
            limits: defaults,
            // 443, 65535 and the missing port are kept
            expect: Expect::Rows {
                scanned: 6,
                rejected: &[("type: RemotePort", 3)],
                kql: 3,
                normalized: 3,
                days: &["2026-11-03"],
            },
        },
        Case {
            name: "NaN, negative, fractional and huge DOUBLE ports in Parquet",
            file: "ports-double.parquet",
            make: |p| {
                let ports = [Some(443.0), Some(f64::NAN), Some(-80.0), Some(443.5), Some(1e10), None, Some(80.0)];
                parquet_ports(p, Arc::new(Float64Array::from(ports.to_vec())))
            },
            limits: defaults,
            expect: Expect::Rows {
                scanned: 7,
                rejected: &[("type: RemotePort", 4)],
                kql: 3,
                normalized: 3,
                days: &["2026-11-03"],
            },
        },
        Case {
            name: "10,000-character URLs",
            file: "long-urls.jsonl",
            make: |p| {
                let path = "a".repeat(10_000);
                let lines = [
                    json_line("2026-11-03T10:00:00Z", "d1", &format!("https://{GW}/{path}"), "443"),
                    json_line("2026-11-03T10:00:00Z", "d2", &format!("{path}.{GW}"), "443"),
                    json_line("2026-11-03T10:00:00Z", "d3", &format!("https://{}@{GW}/", "u".repeat(10_000)), "443"),
                ];
                write(p, lines.join("\n"))
            },
            limits: defaults,
            // the userinfo one hides from kql (a bare `user@` stays in parse_url's Host)
            expect: Expect::Rows { scanned: 3, rejected: &[], kql: 1, normalized: 2, days: &["2026-11-03"] },
        },
        Case {
            name: "null bytes",
            file: "nul.jsonl",
            make: |p| {
                let mut text = json_line("2026-11-03T10:00:00Z", "d1", &format!("{GW}\u{0}"), "443") + "\n";
                text += &json_line("2026-11-03T10:00:00Z", "d2", &format!("\u{0}{GW}"), "443");
                text += "\n{\"Timestamp\":\"2026-11-03T10:00:00Z\",\"RemoteUrl\":\"raw\u{0}nul\"}\n";
                write(p, text)
            },
            limits: defaults,
            // an escaped NUL is a character like any other: neither rule drops it, so no match;
            // a raw NUL inside a JSON string is not JSON
            expect: Expect::Rows {
                scanned: 3,
                rejected: &[("json: not valid JSON", 1)],
                kql: 0,
                normalized: 0,
                days: &["2026-11-03"],
            },
        },
        Case {
            name: "right-to-left marks and homoglyphs in hosts",
            file: "unicode-hosts.jsonl",
            make: |p| {
                let lines = [
                    json_line("2026-11-03T10:00:00Z", "d1", &format!("\u{202e}{GW}"), "443"),
                    json_line("2026-11-03T10:00:00Z", "d2", &format!("{GW}\u{200f}"), "443"),
                    // Cyrillic і (U+0456) for the Latin i
                    json_line("2026-11-03T10:00:00Z", "d3", "w\u{456}natp-gw-weu.microsoft.com", "443"),
                    json_line("2026-11-03T10:00:00Z", "d4", "WINATP-GW-WEU.MICROSOFT.COM\u{3000}", "443"),
                ];
                write(p, lines.join("\n"))
            },
            limits: defaults,
            // marks and homoglyphs never match (they are other hosts); trailing Unicode
            // whitespace is trimmed by normalized, as a leading or trailing space is
            expect: Expect::Rows { scanned: 4, rejected: &[], kql: 0, normalized: 1, days: &["2026-11-03"] },
        },
    ]
}

#[test]
fn every_bad_input_has_its_outcome() {
    let mut failures = Vec::new();
    for case in cases() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(case.file);
        (case.make)(&path);
        let out = tempfile::tempdir().unwrap();
        let mut config = Config::default();
        config.limits = case.limits;
        let request = RunRequest {
            inputs: vec![path.clone()],
            out: out.path().to_path_buf(),
            window: None,
            settings: config.validate().unwrap(),
            progress: false,
            credential: None,
        };
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job::run(&request)));
        let problem = match (&case.expect, result) {
            (_, Err(_)) => Some("panicked".to_string()),
            (Expect::Rows { scanned, rejected, kql, normalized, days }, Ok(Ok(outcome))) => {
                let r = &outcome.record;
                let got_rejected: Vec<(&str, u64)> =
                    r.stats.rejects.by_reason.iter().map(|(k, v)| (k.as_str(), *v)).collect();
                let got_days: Vec<String> = r.stats.rows_per_day.keys().map(Day::to_string).collect();
                let got = (
                    r.stats.rows_scanned,
                    got_rejected,
                    r.counts.rows_reference_kql,
                    r.counts.rows_reference_normalized,
                    got_days,
                );
                let want =
                    (*scanned, rejected.to_vec(), *kql, *normalized, days.iter().map(|d| d.to_string()).collect());
                (got != want).then(|| format!("got {got:?}, want {want:?}"))
            }
            (Expect::Rows { .. }, Ok(Err((error, _)))) => Some(format!("failed: {error}")),
            (Expect::Fails(_), Ok(Ok(outcome))) => Some(format!("succeeded: {:?}", outcome.record.stats)),
            (Expect::Fails(mentions), Ok(Err((error, record)))) => {
                let message = error.to_string();
                let missing: Vec<&&str> = mentions.iter().filter(|m| !message.contains(**m)).collect();
                if !missing.is_empty() {
                    Some(format!("the message {message:?} lacks {missing:?}"))
                } else if record.failed_stage.as_deref() != Some("read") || record.status != "failed" {
                    Some(format!("the run record says {:?} at {:?}", record.status, record.failed_stage))
                } else {
                    None
                }
            }
        };
        if let Some(problem) = problem {
            failures.push(format!("{}: {problem}", case.name));
        }
    }
    assert!(failures.is_empty(), "{} case(s) went wrong:\n{}", failures.len(), failures.join("\n"));
}

/// Peak resident memory of the binary on inputs that never end: a gigabyte-long line (gzip,
/// default limits) and a gzip bomb of short lines (a configured decompression limit). Both
/// runs fail naming the file and the setting, and stay far below what the input would take.
#[test]
fn memory_stays_bounded_on_endless_input() {
    let dir = tempfile::tempdir().unwrap();
    let line = dir.path().join("endless-line.json.gz");
    // JSON by its first bytes, then a string that never ends
    gzip_members(&line, br#"{"RemoteUrl":""#, &vec![b'a'; 64 << 20], 16);
    let bomb = dir.path().join("bomb.json.gz");
    gzip_members(&bomb, b"\n", &vec![b'\n'; 64 << 20], 16);
    let config = dir.path().join("limits.toml");
    write(&config, "[limits]\nmax_decompressed_bytes = 268_435_456\n");

    for (input, setting) in [(&line, "max_line_bytes"), (&bomb, "max_decompressed_bytes")] {
        let out = dir.path().join("out");
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_telemetry-hunt"))
            .args(["run", "--config", config.to_str().unwrap(), "--input", input.to_str().unwrap()])
            .arg("--out")
            .arg(&out)
            .env_remove("RUST_LOG")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let status = format!("/proc/{}/status", child.id());
        let mut peak_kib = 0u64;
        while child.try_wait().unwrap().is_none() {
            if let Ok(text) = std::fs::read_to_string(&status) {
                if let Some(kib) = text.lines().find_map(|l| l.strip_prefix("VmHWM:")) {
                    peak_kib = peak_kib.max(kib.trim().trim_end_matches(" kB").trim().parse().unwrap_or(0));
                }
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let output = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{stderr}");
        let name = input.file_name().unwrap().to_str().unwrap();
        assert!(stderr.contains(name) && stderr.contains(setting), "{stderr}");
        // 1 GiB of input; the line limit is 16 MiB and the buffers a few more.
        assert!(peak_kib > 0 && peak_kib < 400 * 1024, "peak RSS {peak_kib} KiB on {name}");
    }
}
