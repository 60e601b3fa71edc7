//! The parallel pipeline against a straightforward, independent computation of the reference
//! query over the same Parquet files, value by value, on over a million generated rows.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;

use arrow_array::cast::AsArray;
use arrow_array::types::TimestampMicrosecondType;
use arrow_array::Array;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use telemetry_hunt::config::REFERENCE_HOSTS;
use telemetry_hunt::hunt::host::MatchMode;

use crate::support::{daily, generated_sample, run};

/// `case(RemoteUrl contains "//", parse_url(RemoteUrl).Host, RemoteUrl)`, written as a plain
/// scan over characters, separately from the crate's implementation.
fn oracle_kql_domain(url: &str) -> String {
    if !url.contains("//") {
        return url.to_string();
    }
    let chars: Vec<char> = url.chars().collect();
    let mut i = 0;
    while i < chars.len() && (chars[i].is_ascii_alphanumeric() || "+-.".contains(chars[i])) {
        i += 1;
    }
    let scheme_ok = i > 0 && chars[0].is_ascii_alphabetic() && url[i..].starts_with("://");
    if !scheme_ok {
        return String::new();
    }
    let authority: String = chars[i + 3..].iter().take_while(|c| !"/?#".contains(**c)).collect();
    let host_port = match authority.rsplit_once('@') {
        Some((userinfo, rest)) if userinfo.contains(':') => rest.to_string(),
        _ => authority.clone(),
    };
    match host_port.rsplit_once(':') {
        Some((host, _)) => host.to_string(),
        None => host_port,
    }
}

fn oracle_normalized_host(url: &str) -> String {
    let mut s = url.trim().to_string();
    let scheme_len = s.find("://").filter(|&n| {
        n > 0
            && s.as_bytes()[0].is_ascii_alphabetic()
            && s[..n].chars().all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
    });
    if let Some(n) = scheme_len {
        s = s[n + 3..].to_string();
    } else if let Some(rest) = s.strip_prefix("//") {
        s = rest.to_string();
    }
    let authority: String = s.chars().take_while(|c| !"/?#".contains(*c)).collect();
    let host_port = authority.rsplit('@').next().unwrap_or("").to_string();
    let host = if let Some(inner) = host_port.strip_prefix('[') {
        inner.split(']').next().unwrap_or("").to_string()
    } else {
        host_port.split(':').next().unwrap_or("").to_string()
    };
    host.to_ascii_lowercase().trim_end_matches('.').to_string()
}

type Table = BTreeMap<(String, String), (u64, u64)>;

fn oracle(dir: &std::path::Path) -> (Table, Table, u64) {
    let hosts: BTreeSet<&str> = REFERENCE_HOSTS.into_iter().collect();
    let mut kql: BTreeMap<(String, String), (BTreeSet<String>, u64)> = BTreeMap::new();
    let mut normalized = kql.clone();
    let mut rows = 0u64;
    let mut files: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.retain(|p| p.extension().is_some_and(|e| e == "parquet"));
    for path in files {
        let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(&path).unwrap()).unwrap().build().unwrap();
        for batch in reader {
            let batch = batch.unwrap();
            let ts = batch.column_by_name("Timestamp").unwrap().as_primitive::<TimestampMicrosecondType>().clone();
            let text = |name: &str| {
                arrow_cast::cast(batch.column_by_name(name).unwrap(), &arrow_schema::DataType::Utf8).unwrap()
            };
            let (device, action, url) = (text("DeviceId"), text("ActionType"), text("RemoteUrl"));
            let (device, action, url) = (device.as_string::<i32>(), action.as_string::<i32>(), url.as_string::<i32>());
            for row in 0..batch.num_rows() {
                rows += 1;
                if url.is_null(row) || url.value(row).is_empty() {
                    continue;
                }
                let days = ts.value(row).div_euclid(86_400_000_000) as i32;
                let day = telemetry_hunt::time::Day(days).to_string();
                let key = (day, action.value(row).to_string());
                let dev = if device.is_null(row) { String::new() } else { device.value(row).to_string() };
                if hosts.contains(oracle_kql_domain(url.value(row)).as_str()) {
                    let e = kql.entry(key.clone()).or_default();
                    e.0.insert(dev.clone());
                    e.1 += 1;
                }
                if hosts.contains(oracle_normalized_host(url.value(row)).as_str()) {
                    let e = normalized.entry(key).or_default();
                    e.0.insert(dev);
                    e.1 += 1;
                }
            }
        }
    }
    let flatten = |t: BTreeMap<(String, String), (BTreeSet<String>, u64)>| -> Table {
        t.into_iter().map(|(k, (d, e))| (k, (d.len() as u64, e))).collect()
    };
    (flatten(kql), flatten(normalized), rows)
}

#[test]
fn a_million_rows_over_a_week_match_the_straightforward_computation() {
    let sample = generated_sample(1_200_000, 8, 3_000);
    let (want_kql, want_normalized, rows) = oracle(&sample);
    assert_eq!(rows, 1_200_000);
    assert!(want_kql.len() >= 8 * 3, "several ActionTypes a day: {}", want_kql.len());
    let evasion_gap: u64 =
        want_normalized.values().map(|v| v.1).sum::<u64>() - want_kql.values().map(|v| v.1).sum::<u64>();
    assert!(evasion_gap > 0, "the sample carries spellings the reference query misses");

    let out = tempfile::tempdir().unwrap();
    let outcome = run(&[&sample], out.path(), MatchMode::Kql);
    assert_eq!(outcome.record.stats.rows_scanned, rows);
    let got = daily(out.path());
    assert_eq!(got.len(), want_kql.len());
    for (key, value) in &want_kql {
        assert_eq!(got.get(key), Some(value), "kql {key:?}");
    }
    assert_eq!(outcome.record.counts.rows_evading, evasion_gap);

    let out = tempfile::tempdir().unwrap();
    run(&[&sample], out.path(), MatchMode::Normalized);
    assert_eq!(daily(out.path()), want_normalized);
}

#[test]
fn the_oracle_itself_follows_the_documented_examples() {
    assert_eq!(oracle_kql_domain("scheme://username:password@host:1234/this/is/a/path?k1=v1"), "host");
    assert_eq!(oracle_kql_domain("https://john.doe@www.example.com:123/forum/"), "john.doe@www.example.com");
    assert_eq!(oracle_kql_domain("HOST:443"), "HOST:443");
    assert_eq!(oracle_kql_domain("//host/x"), "");
    assert_eq!(oracle_normalized_host(" HTTPS://u@Host.Example.:443/x "), "host.example");
    assert_eq!(oracle_normalized_host("[::1]:443"), "::1");
}
