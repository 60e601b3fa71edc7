//! The result tables of DESIGN §4, built from the merged aggregate. Rows are sorted, so the
//! output is deterministic whatever order rayon merged in.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow_array::builder::{BooleanBuilder, Int64Builder, StringBuilder};
use arrow_array::{ArrayRef, Date32Array, RecordBatch};
use serde_json::json;

use super::table::{Cell, ColumnType as T, Table};
use crate::config::Settings;
use crate::hunt::aggregate::DayActivity;
use crate::hunt::host::MatchMode;
use crate::hunt::rules::expected_by;
use crate::hunt::Partial;
use crate::time::Day;

pub const DAILY: &str = "MdeTelemetryDaily";
pub const HOSTS: &str = "MdeTelemetryHosts";
pub const PROCESSES: &str = "MdeTelemetryProcesses";
pub const RUNS: &str = "MdeTelemetryRuns";
pub const FINDINGS: &str = "MdeTelemetryFindings";
pub const DEVICE_HOSTS: &str = "MdeTelemetryDeviceHosts";

pub const DAILY_COLUMNS: &[(&str, T)] =
    &[("Day", T::Day), ("ActionType", T::Text), ("Connections", T::Int), ("Events", T::Int), ("MatchMode", T::Text)];

pub const HOSTS_COLUMNS: &[(&str, T)] = &[
    ("Day", T::Day),
    ("RemoteHost", T::Text),
    ("ActionType", T::Text),
    ("Devices", T::Int),
    ("Events", T::Int),
    ("FailedDevices", T::Int),
    ("Ports", T::Text),
    ("OnReferenceList", T::Bool),
    ("EvasionEvents", T::Int),
];

pub const PROCESSES_COLUMNS: &[(&str, T)] = &[
    ("Day", T::Day),
    ("RemoteHost", T::Text),
    ("InitiatingProcessFileName", T::Text),
    ("InitiatingProcessFolderPath", T::Text),
    ("InitiatingProcessVersionInfoCompanyName", T::Text),
    ("Devices", T::Int),
    ("Events", T::Int),
    ("Expected", T::Bool),
    ("ExpectedBy", T::Text),
];

/// What each device reached through which process: the detectors' history and evidence
/// (telemetry hosts and look-alike hosts; one row per day × device × host × process × port ×
/// spelling × exclusion rule).
pub const DEVICE_HOSTS_COLUMNS: &[(&str, T)] = &[
    ("Day", T::Day),
    ("DeviceId", T::Text),
    ("DeviceName", T::Text),
    ("RemoteHost", T::Text),
    // false: a look-alike of a listed host, not a telemetry host
    ("Listed", T::Bool),
    ("RemotePort", T::Int),
    ("InitiatingProcessFileName", T::Text),
    ("InitiatingProcessFolderPath", T::Text),
    ("InitiatingProcessSHA1", T::Text),
    ("InitiatingProcessVersionInfoCompanyName", T::Text),
    // allow-list:<file>, exclusion:<rule>, or "" (unexpected)
    ("ExpectedBy", T::Text),
    // How the RemoteUrl hid a reference host from the reference query (`case+port`), or "".
    ("Spelling", T::Text),
    ("Events", T::Int),
    ("FailedEvents", T::Int),
];

/// One row per finding (DESIGN §4). The detectors fill it; the Sentinel table, the workbook and
/// the analytics rule read it, so a change here is a change of their schema too.
pub const FINDINGS_COLUMNS: &[(&str, T)] = &[
    ("Day", T::Day),
    // Stable hash of FindingType + key + Day: the same finding on a re-run has the same id.
    ("FindingId", T::Text),
    ("RunId", T::Text),
    ("FindingType", T::Text),
    // Informational, Low, Medium or High (the Sentinel rule severities).
    ("Severity", T::Text),
    ("RemoteHost", T::Text),
    ("ActionType", T::Text),
    ("InitiatingProcessFileName", T::Text),
    ("InitiatingProcessFolderPath", T::Text),
    ("InitiatingProcessSHA1", T::Text),
    ("InitiatingProcessVersionInfoCompanyName", T::Text),
    ("RemotePort", T::Int),
    ("DeviceCount", T::Int),
    // Capped lists; DeviceCount is the full count.
    ("DeviceIds", T::Json),
    ("DeviceNames", T::Json),
    ("Observed", T::Float),
    ("Baseline", T::Float),
    ("Score", T::Float),
    ("Threshold", T::Float),
    // +1 a rise, -1 a drop, 0 where a direction means nothing.
    ("Direction", T::Int),
    ("Method", T::Text),
    ("Params", T::Json),
    // Daily arrays (days, observed, baseline, score) so a chart needs no raw data.
    ("Series", T::Json),
    ("Description", T::Text),
    // Comma-separated MITRE ATT&CK tactics (e.g. CommandAndControl,Exfiltration) and techniques (T1071).
    ("Tactics", T::Text),
    ("Techniques", T::Text),
    ("EvidenceUri", T::Text),
];

pub const RUNS_COLUMNS: &[(&str, T)] = &[
    ("RunId", T::Text),
    ("StartedAt", T::Time),
    ("FinishedAt", T::Time),
    ("Status", T::Text),
    ("FailedStage", T::Text),
    ("Error", T::Text),
    ("WindowFrom", T::Day),
    ("WindowTo", T::Day),
    ("Days", T::Int),
    ("MatchMode", T::Text),
    ("Source", T::Json),
    ("Files", T::Int),
    ("FilesSkipped", T::Int),
    ("Bytes", T::Int),
    ("RowGroupsRead", T::Int),
    ("RowGroupsPruned", T::Int),
    ("RowsScanned", T::Int),
    ("RowsPruned", T::Int),
    ("RowsOutsideWindow", T::Int),
    ("RowsRejected", T::Int),
    ("RejectReasons", T::Json),
    ("RejectSamples", T::Json),
    ("RowsOutOfScope", T::Int),
    ("RowsMatched", T::Int),
    ("RowsMatchedKql", T::Int),
    ("RowsMatchedNormalized", T::Int),
    ("RowsEvadingReferenceQuery", T::Int),
    ("RowsTelemetry", T::Int),
    ("RowsExcluded", T::Int),
    ("ExcludedByRule", T::Json),
    ("RowsWithoutDeviceId", T::Int),
    ("Scope", T::Json),
    ("DurationsMs", T::Json),
    ("Version", T::Text),
    // The Log Analytics query API source (null for files): windows answered, halvings, retried
    // calls, rows (or pre-aggregated groups) returned.
    ("QueryWindows", T::Int),
    ("QuerySplits", T::Int),
    ("QueryRetries", T::Int),
    ("QueryRowsReturned", T::Int),
    // Sentinel delivery (null without `[sentinel]`), counting the result tables' batches; the
    // run row itself is sent after it is written. Earlier runs' outbox batches sent first are
    // included, and counted again in SentinelOutboxResent.
    ("SentinelBatches", T::Int),
    ("SentinelRows", T::Int),
    ("SentinelOutboxResent", T::Int),
    ("SentinelBatchesFailed", T::Int),
    ("SentinelRowsFailed", T::Int),
    ("SentinelRowsUnsendable", T::Int),
    ("SentinelOutboxLeft", T::Int),
    ("SentinelErrors", T::Json),
    // The detectors: findings of the run's days, in all, by severity and by type.
    ("Findings", T::Int),
    ("FindingsBySeverity", T::Json),
    ("FindingsByType", T::Json),
];

/// A result table as the results store and Sentinel know it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableDef {
    pub name: &'static str,
    pub columns: &'static [(&'static str, T)],
    /// The columns that identify a row (the table's grain). A re-run re-sends rows with the same
    /// key, so readers keep the newest row per key.
    pub key: &'static [&'static str],
}

/// The definition of a result table by name.
pub fn table_def(name: &str) -> Option<&'static TableDef> {
    TABLES.iter().find(|t| t.name == name)
}

/// Every result table. The results store, the Sentinel custom tables, the DCR streams and the
/// `schema` command all follow this list: a table added here is deployed and sent everywhere.
pub const TABLES: &[TableDef] = &[
    TableDef { name: DAILY, columns: DAILY_COLUMNS, key: &["Day", "ActionType"] },
    TableDef { name: HOSTS, columns: HOSTS_COLUMNS, key: &["Day", "RemoteHost", "ActionType"] },
    TableDef {
        name: PROCESSES,
        columns: PROCESSES_COLUMNS,
        key: &[
            "Day",
            "RemoteHost",
            "InitiatingProcessFileName",
            "InitiatingProcessFolderPath",
            "InitiatingProcessVersionInfoCompanyName",
            "ExpectedBy",
        ],
    },
    TableDef { name: FINDINGS, columns: FINDINGS_COLUMNS, key: &["FindingId"] },
    TableDef { name: RUNS, columns: RUNS_COLUMNS, key: &["RunId"] },
];

/// The reference table for one day: (ActionType → distinct devices, events).
pub fn daily(partial: &Partial, mode: MatchMode, day: Day) -> Table {
    let mut table = Table::new(DAILY, DAILY_COLUMNS);
    let mut rows: Vec<_> = partial.daily(mode).iter().filter(|((d, _), _)| *d == day).collect();
    rows.sort_by(|a, b| a.0.cmp(b.0));
    for ((d, action), agg) in rows {
        table.push(vec![
            Cell::Day(*d),
            Cell::from(action.as_ref()),
            Cell::from(agg.devices.len()),
            Cell::from(agg.events),
            Cell::from(mode.as_str()),
        ]);
    }
    table
}

pub fn hosts(partial: &Partial, settings: &Settings, day: Day) -> Table {
    let mut table = Table::new(HOSTS, HOSTS_COLUMNS);
    let mut rows: Vec<_> = partial.hosts.iter().filter(|((d, _, _), _)| *d == day).collect();
    rows.sort_by(|a, b| a.0.cmp(b.0));
    for ((d, host, action), agg) in rows {
        let failed = partial.failed.get(&(*d, host.clone())).map_or(0, |s| s.len());
        let mut ports: Vec<i32> = agg.ports.iter().copied().collect();
        ports.sort_unstable();
        let ports = ports.iter().map(i32::to_string).collect::<Vec<_>>().join(",");
        let on_reference = settings.hosts.classify(Some(host)).normalized_reference;
        table.push(vec![
            Cell::Day(*d),
            Cell::from(host.as_ref()),
            Cell::from(action.as_ref()),
            Cell::from(agg.group.devices.len()),
            Cell::from(agg.group.events),
            Cell::from(failed),
            Cell::from(ports),
            Cell::from(on_reference),
            Cell::from(agg.evasion_events),
        ]);
    }
    table
}

pub fn processes(partial: &Partial, settings: &Settings, day: Day) -> Table {
    let mut table = Table::new(PROCESSES, PROCESSES_COLUMNS);
    let mut rows: Vec<_> = partial.processes.iter().filter(|(k, _)| k.0 == day).collect();
    rows.sort_by(|a, b| a.0.cmp(b.0));
    for ((d, host, file, folder, company, excluded), agg) in rows {
        let allowed = expected_by(&settings.expected, file, folder, host);
        let expected_by = match (allowed, excluded) {
            (Some(e), _) => format!("allow-list:{}", e.file_name),
            (None, Some(rule)) => format!("exclusion:{}", settings.exclusions[*rule].name),
            (None, None) => String::new(),
        };
        table.push(vec![
            Cell::Day(*d),
            Cell::from(host.as_ref()),
            Cell::from(file.as_ref()),
            Cell::from(folder.as_ref()),
            Cell::from(company.as_ref()),
            Cell::from(agg.devices.len()),
            Cell::from(agg.events),
            Cell::from(!expected_by.is_empty()),
            Cell::from(expected_by),
        ]);
    }
    table
}

/// The detectors' per-device table for one day. What depends on the process-on-host identity
/// alone (the allow-list verdict, whether the host is listed) is worked out once per identity,
/// and rows are sorted by reference, so a busy day costs little more than its cells.
pub fn device_hosts(partial: &Partial, settings: &Settings, day: Day) -> Table {
    let mut table = Table::new(DEVICE_HOSTS, DEVICE_HOSTS_COLUMNS);
    device_hosts_chunks(partial, settings, day, |chunk| table.extend_from_record_batch(&chunk))
        .expect("a device table batch reads back as the table it was built as");
    table
}

/// Rows of [`device_hosts`] handed on a chunk at a time, in order, as Arrow batches of the
/// table's schema: a busy day's device table is tens of thousands of rows, and built as cells
/// (a `String` for each of ten text columns of every row) it cost more than encoding it.
pub fn device_hosts_chunks<E>(
    partial: &Partial,
    settings: &Settings,
    day: Day,
    mut each: impl FnMut(RecordBatch) -> Result<(), E>,
) -> Result<(), E> {
    const CHUNK_ROWS: usize = 8192;
    use crate::hunt::aggregate::{identity_fields, spelling, ActivityAgg};
    struct Identity<'p> {
        fields: [&'p str; 5],
        allowed: Option<String>,
        listed: bool,
        rank: u32,
    }
    struct Device<'p> {
        id: &'p str,
        name: &'p str,
        rank: u32,
    }
    struct Row<'a, 'p> {
        device: &'a Device<'p>,
        identity: &'a Identity<'p>,
        port: Option<i32>,
        spelled: u8,
        excluded: Option<u32>,
        agg: &'p ActivityAgg,
    }
    let activity: Option<&DayActivity> = partial.activity.get(&day);
    let mut identities: rustc_hash::FxHashMap<u32, Identity<'_>> = rustc_hash::FxHashMap::default();
    let mut devices: rustc_hash::FxHashMap<u32, Device<'_>> = rustc_hash::FxHashMap::default();
    for &(device, identity, ..) in activity.into_iter().flat_map(|a| a.keys()) {
        devices.entry(device).or_insert_with(|| Device {
            id: partial.devices.name(device),
            name: partial.device_names.get(&(day, device)).map_or("", |n| n.as_ref()),
            rank: 0,
        });
        identities.entry(identity).or_insert_with(|| {
            let fields = identity_fields(partial.identities.name(identity));
            let [host, file, folder, _, _] = fields;
            Identity {
                fields,
                allowed: expected_by(&settings.expected, file, folder, host)
                    .map(|e| format!("allow-list:{}", e.file_name)),
                listed: settings.hosts.classify(Some(host)).host.is_some(),
                rank: 0,
            }
        });
    }
    // Rows are ordered by DeviceId and the identity's fields: each distinct device and identity
    // is ranked once by its text, and the rows are sorted by the ranks, integers, rather than by
    // comparing the same strings again at every step of the sort. Interned texts are unique, so
    // a rank stands for its text.
    let mut ranked: Vec<&mut Device<'_>> = devices.values_mut().collect();
    ranked.sort_unstable_by_key(|device| device.id);
    for (rank, device) in ranked.into_iter().enumerate() {
        device.rank = rank as u32;
    }
    let mut ranked: Vec<&mut Identity<'_>> = identities.values_mut().collect();
    ranked.sort_unstable_by_key(|identity| identity.fields);
    for (rank, identity) in ranked.into_iter().enumerate() {
        identity.rank = rank as u32;
    }
    let rows: Vec<Row<'_, '_>> = activity
        .into_iter()
        .flatten()
        .map(|(&(device, identity, port, spelled, excluded), agg)| Row {
            device: &devices[&device],
            identity: &identities[&identity],
            port,
            spelled,
            excluded,
            agg,
        })
        .collect();
    // A device has a handful of rows: they are bucketed by its rank, and each bucket sorted by
    // the rest of the key. The keys are unique (a day's activity key maps one to one onto
    // them), so unstable sorts give the one order a stable sort would, without its buffer.
    let mut starts = vec![0usize; devices.len() + 1];
    for row in &rows {
        starts[row.device.rank as usize + 1] += 1;
    }
    for i in 1..starts.len() {
        starts[i] += starts[i - 1];
    }
    let mut order = vec![0usize; rows.len()];
    let mut next = starts.clone();
    for (i, row) in rows.iter().enumerate() {
        let at = &mut next[row.device.rank as usize];
        order[*at] = i;
        *at += 1;
    }
    for bucket in starts.windows(2) {
        order[bucket[0]..bucket[1]].sort_unstable_by_key(|&i| {
            let row = &rows[i];
            (row.identity.rank, row.port, row.spelled, row.excluded)
        });
    }
    // The same few tags on every row: each written once.
    let exclusions: Vec<String> = settings.exclusions.iter().map(|rule| format!("exclusion:{}", rule.name)).collect();
    let mut spellings: rustc_hash::FxHashMap<u8, String> = rustc_hash::FxHashMap::default();
    let schema = Table::new(DEVICE_HOSTS, DEVICE_HOSTS_COLUMNS).schema();
    for chunk in order.chunks(CHUNK_ROWS) {
        let text = |width: usize| StringBuilder::with_capacity(chunk.len(), chunk.len() * width);
        let int = || Int64Builder::with_capacity(chunk.len());
        let (mut device_ids, mut device_names, mut hosts) = (text(40), text(32), text(32));
        let mut listed = BooleanBuilder::with_capacity(chunk.len());
        let mut ports = int();
        let (mut files, mut folders, mut sha1s, mut companies) = (text(16), text(64), text(40), text(24));
        let (mut expected, mut spelled_as) = (text(24), text(8));
        let (mut events, mut failed) = (int(), int());
        for row in chunk.iter().map(|&i| &rows[i]) {
            let id = row.identity;
            let [host, file, folder, sha1, company] = id.fields;
            device_ids.append_value(row.device.id);
            device_names.append_value(row.device.name);
            hosts.append_value(host);
            listed.append_value(id.listed);
            ports.append_option(row.port.map(i64::from));
            files.append_value(file);
            folders.append_value(folder);
            sha1s.append_value(sha1);
            companies.append_value(company);
            let excluded = row.excluded.and_then(|rule| exclusions.get(rule as usize));
            expected.append_value(id.allowed.as_deref().or(excluded.map(String::as_str)).unwrap_or(""));
            spelled_as.append_value(spellings.entry(row.spelled).or_insert_with(|| spelling::name(row.spelled)));
            // as `Cell::from(u64)` stores counts
            events.append_value(i64::try_from(row.agg.events).unwrap_or(i64::MAX));
            failed.append_value(i64::try_from(row.agg.failed).unwrap_or(i64::MAX));
        }
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Date32Array::from(vec![day.0; chunk.len()])),
            Arc::new(device_ids.finish()),
            Arc::new(device_names.finish()),
            Arc::new(hosts.finish()),
            Arc::new(listed.finish()),
            Arc::new(ports.finish()),
            Arc::new(files.finish()),
            Arc::new(folders.finish()),
            Arc::new(sha1s.finish()),
            Arc::new(companies.finish()),
            Arc::new(expected.finish()),
            Arc::new(spelled_as.finish()),
            Arc::new(events.finish()),
            Arc::new(failed.finish()),
        ];
        each(
            RecordBatch::try_new(schema.clone(), columns).expect("the columns of DEVICE_HOSTS_COLUMNS, in its order"),
        )?;
    }
    Ok(())
}

/// The findings of one day, in the detectors' order; `ids` are their [`crate::detect::Finding::id`]s.
pub fn findings(findings: &[crate::detect::Finding], ids: &[String], run_ids: &[&str], max_listed: usize) -> Table {
    let mut table = Table::new(FINDINGS, FINDINGS_COLUMNS);
    for ((finding, id), run_id) in findings.iter().zip(ids).zip(run_ids) {
        table.push(finding.to_row(id, run_id, max_listed));
    }
    table
}

/// Everything the run record says.
#[derive(Debug, Clone, Default)]
pub struct RunRecord {
    pub run_id: String,
    pub started_at: i64,
    pub finished_at: i64,
    pub status: String,
    pub failed_stage: Option<String>,
    pub error: Option<String>,
    pub window: Option<(Day, Day)>,
    pub days: usize,
    pub match_mode: String,
    pub sources: Vec<String>,
    pub files: usize,
    pub files_skipped: usize,
    pub bytes: u64,
    pub stats: crate::source::ScanStats,
    pub counts: crate::hunt::HuntCounts,
    pub excluded_by_rule: BTreeMap<String, u64>,
    pub scope: serde_json::Value,
    pub durations_ms: BTreeMap<&'static str, u64>,
    pub query: Option<crate::source::log_analytics::QueryStats>,
    pub delivery: Option<crate::sink::sentinel::Delivery>,
    /// Findings of the run's days, by severity and by type.
    pub findings_by_severity: BTreeMap<String, u64>,
    pub findings_by_type: BTreeMap<String, u64>,
}

impl RunRecord {
    pub fn rows_matched(&self) -> u64 {
        if self.match_mode == MatchMode::Normalized.as_str() {
            self.counts.rows_reference_normalized
        } else {
            self.counts.rows_reference_kql
        }
    }

    pub fn to_table(&self) -> Table {
        let mut table = Table::new(RUNS, RUNS_COLUMNS);
        let opt_text = |v: &Option<String>| v.clone().map_or(Cell::Null, Cell::Text);
        let c = &self.counts;
        let s = &self.stats;
        table.push(vec![
            Cell::from(self.run_id.as_str()),
            Cell::Time(self.started_at),
            Cell::Time(self.finished_at),
            Cell::from(self.status.as_str()),
            opt_text(&self.failed_stage),
            // Errors quote what endpoints answered, which may echo a credential.
            opt_text(&self.error.as_deref().map(crate::redact::redacted)),
            self.window.map_or(Cell::Null, |w| Cell::Day(w.0)),
            self.window.map_or(Cell::Null, |w| Cell::Day(w.1)),
            Cell::from(self.days),
            Cell::from(self.match_mode.as_str()),
            Cell::Json(json!(self.sources)),
            Cell::from(self.files),
            Cell::from(self.files_skipped),
            Cell::from(self.bytes),
            Cell::from(s.row_groups_read),
            Cell::from(s.row_groups_pruned),
            Cell::from(s.rows_scanned),
            Cell::from(s.rows_pruned),
            Cell::from(s.rows_outside_window),
            Cell::from(s.rejects.total()),
            Cell::Json(json!(s.rejects.by_reason)),
            Cell::Json(json!(s.rejects.samples)),
            Cell::from(c.rows_out_of_scope),
            Cell::from(self.rows_matched()),
            Cell::from(c.rows_reference_kql),
            Cell::from(c.rows_reference_normalized),
            Cell::from(c.rows_evading),
            Cell::from(c.rows_telemetry),
            Cell::from(self.excluded_by_rule.values().sum::<u64>()),
            Cell::Json(json!(self.excluded_by_rule)),
            Cell::from(c.rows_without_device),
            Cell::Json(self.scope.clone()),
            Cell::Json(json!(self.durations_ms)),
            Cell::from(env!("CARGO_PKG_VERSION")),
        ]);
        let row = table.rows.last_mut().expect("the row just pushed");
        let q = self.query.as_ref();
        for value in [q.map(|q| q.windows), q.map(|q| q.splits), q.map(|q| q.retries), q.map(|q| q.rows_returned)] {
            row.push(value.map_or(Cell::Null, Cell::from));
        }
        let d = self.delivery.as_ref();
        for value in [
            d.map(|d| d.batches),
            d.map(|d| d.rows),
            d.map(|d| d.resent_batches),
            d.map(|d| d.failed_batches + d.unrecorded_batches),
            d.map(|d| d.failed_rows),
            d.map(|d| d.unsendable_rows),
            d.map(|d| d.outbox_left),
        ] {
            row.push(value.map_or(Cell::Null, Cell::from));
        }
        let errors = |d: &crate::sink::sentinel::Delivery| -> Vec<String> {
            d.errors.iter().map(|e| crate::redact::redacted(e)).collect()
        };
        row.push(d.map_or(Cell::Null, |d| Cell::Json(json!(errors(d)))));
        row.push(Cell::from(self.findings_by_type.values().sum::<u64>()));
        row.push(Cell::Json(json!(self.findings_by_severity)));
        row.push(Cell::Json(json!(self.findings_by_type)));
        table
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_table_is_listed_once_and_keyed_by_its_own_columns() {
        let mut names: Vec<&str> = TABLES.iter().map(|t| t.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names, [DAILY, FINDINGS, HOSTS, PROCESSES, RUNS]);
        for table in TABLES {
            assert!(!table.key.is_empty(), "{}", table.name);
            for key in table.key {
                assert!(
                    table.columns.iter().any(|(name, _)| name == key),
                    "{}: key `{key}` is not a column",
                    table.name
                );
            }
        }
    }
}
