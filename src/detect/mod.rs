//! The detectors: each compares one day with its history and says, with evidence, what is
//! wrong. One file per detector; each opens with what it finds, why, and an example.
//!
//! Every detector is a pure function of the day's data, its history (both read from the
//! results store) and the settings, so re-running a day gives the same findings, in the same
//! order, with the same ids.

pub mod lookalike;
pub mod new_combination;
pub mod series;
pub mod silent_device;
pub mod unexpected_process;
pub mod unusual_port;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;

use serde_json::Value;

use crate::baseline::history::{Activity, DayData, History, Names, ProcessFields};
use crate::config::Settings;
use crate::sink::results::{day_prefix, PART};
use crate::sink::Cell;
use crate::time::Day;

/// The Sentinel rule severities.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    Informational,
    Low,
    Medium,
    High,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Informational => "Informational",
            Severity::Low => "Low",
            Severity::Medium => "Medium",
            Severity::High => "High",
        }
    }

    pub fn parse(text: &str) -> Option<Severity> {
        [Severity::Informational, Severity::Low, Severity::Medium, Severity::High]
            .into_iter()
            .find(|s| s.as_str() == text)
    }
}

/// What a finding says, in the order findings of a day are listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FindingType {
    SeriesSpike,
    SeriesDrop,
    UnexpectedProcess,
    NewCombination,
    LookalikeHost,
    ReferenceQueryEvasion,
    UnusualPort,
    SilentDevice,
    FailingDevice,
}

impl FindingType {
    pub fn as_str(self) -> &'static str {
        match self {
            FindingType::SeriesSpike => "SeriesSpike",
            FindingType::SeriesDrop => "SeriesDrop",
            FindingType::UnexpectedProcess => "UnexpectedProcess",
            FindingType::NewCombination => "NewCombination",
            FindingType::LookalikeHost => "LookalikeHost",
            FindingType::ReferenceQueryEvasion => "ReferenceQueryEvasion",
            FindingType::UnusualPort => "UnusualPort",
            FindingType::SilentDevice => "SilentDevice",
            FindingType::FailingDevice => "FailingDevice",
        }
    }
}

/// The process a finding is about (the most frequent one when several share the finding).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProcessInfo {
    pub file_name: String,
    pub folder_path: String,
    pub sha1: String,
    pub company: String,
}

/// One finding: a row of `MdeTelemetryFindings`.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    pub day: Day,
    pub finding_type: FindingType,
    /// What the finding is about within its type and day (`host|file|folder`, an ActionType…):
    /// with the type and the day it makes the FindingId.
    pub key: String,
    pub severity: Severity,
    pub remote_host: Option<String>,
    pub action_type: Option<String>,
    pub process: Option<ProcessInfo>,
    pub remote_port: Option<i64>,
    /// (DeviceId, DeviceName) of every device, sorted; the table lists the first few.
    pub devices: Vec<(String, String)>,
    pub observed: Option<f64>,
    pub baseline: Option<f64>,
    pub score: Option<f64>,
    pub threshold: Option<f64>,
    /// +1 a rise, -1 a drop, 0 where a direction means nothing.
    pub direction: i64,
    pub method: &'static str,
    pub params: Document,
    pub series: Option<Document>,
    pub description: String,
    pub tactics: Vec<&'static str>,
    pub techniques: Vec<&'static str>,
    /// The result table (store path) that holds the rows behind the finding.
    pub evidence: String,
}

/// A finding's JSON document (Params, Series), kept as its text: a night can have thousands of
/// findings a day, and as a `Value` a document took several times the room (a string and an
/// enum for each day of a series) and was serialized again for each file it went to.
#[derive(Debug, Clone)]
pub struct Document(Box<serde_json::value::RawValue>);

impl PartialEq for Document {
    fn eq(&self, other: &Document) -> bool {
        self.0.get() == other.0.get()
    }
}

impl From<Value> for Document {
    fn from(value: Value) -> Document {
        // A `Value` always serializes: its map keys are strings.
        Document(serde_json::value::to_raw_value(&value).expect("a JSON value serializes"))
    }
}

impl Default for Document {
    fn default() -> Document {
        Document::from(Value::Null)
    }
}

impl Document {
    /// The document of a detector's typed parameters, serialized without building a JSON value
    /// first. Its fields must come in the order of their names, as a JSON value's keys are
    /// sorted (the detectors' tests check every document is the one its value gives).
    pub fn of(params: &impl serde::Serialize) -> Document {
        serde_json::value::to_raw_value(params).map_or_else(|_| Document::default(), Document)
    }

    /// A document written as text by a detector; text that is not JSON (a bug) becomes `null`.
    fn from_text(text: String) -> Document {
        match serde_json::value::RawValue::from_string(text) {
            Ok(raw) => Document(raw),
            Err(_) => Document::default(),
        }
    }

    pub fn value(&self) -> Value {
        serde_json::from_str(self.0.get()).unwrap_or(Value::Null)
    }
}

/// FNV-1a, 128 bits: fixed by its specification, so the same bytes give the same id on every
/// platform, Rust version and run (unlike std's `DefaultHasher`).
pub fn fnv1a_128(bytes: &[u8]) -> u128 {
    fnv1a_128_on(FNV_OFFSET, bytes)
}

const FNV_OFFSET: u128 = 0x6c62272e07bb014262b821756295c58d;

/// [`fnv1a_128`] of what `hash` was taken over followed by `bytes`.
fn fnv1a_128_on(hash: u128, bytes: &[u8]) -> u128 {
    const PRIME: u128 = 0x0000000001000000000000000000013b;
    bytes.iter().fold(hash, |hash, &b| (hash ^ u128::from(b)).wrapping_mul(PRIME))
}

impl Finding {
    /// A finding of `ctx`'s day whose evidence is the day's device table; the detector fills in
    /// the rest.
    pub fn new(
        ctx: &Context<'_>,
        finding_type: FindingType,
        key: String,
        severity: Severity,
        method: &'static str,
    ) -> Finding {
        Finding {
            day: ctx.day,
            finding_type,
            key,
            severity,
            remote_host: None,
            action_type: None,
            process: None,
            remote_port: None,
            devices: Vec::new(),
            observed: None,
            baseline: None,
            score: None,
            threshold: None,
            direction: 0,
            method,
            params: Document::default(),
            series: None,
            description: String::new(),
            tactics: Vec::new(),
            techniques: Vec::new(),
            evidence: ctx.device_evidence().to_string(),
        }
    }

    /// The stable id: FNV-1a 128 of `type \x1f key \x1f day`, as 32 hex digits.
    pub fn id(&self) -> String {
        // Hashed a part at a time and written digit by digit: a night has hundreds of thousands
        // of ids, and formatting the text and the hash cost more than hashing.
        let day = self.day.to_string();
        let parts = [self.finding_type.as_str().as_bytes(), b"\x1f", self.key.as_bytes(), b"\x1f", day.as_bytes()];
        let hash = parts.iter().fold(FNV_OFFSET, |hash, part| fnv1a_128_on(hash, part));
        (0..32).rev().map(|nibble| char::from(b"0123456789abcdef"[(hash >> (nibble * 4)) as usize & 15])).collect()
    }

    /// The table row, device lists capped at `max_listed`; `id` is [`Finding::id`].
    pub fn to_row(&self, id: &str, run_id: &str, max_listed: usize) -> Vec<Cell> {
        self.cells(id, run_id, max_listed).into_iter().map(FindingCell::to_cell).collect()
    }

    /// The row's cells as borrowed from the finding, in the order of `FINDINGS_COLUMNS`: the one
    /// definition of the row, whether it is built as cells ([`Finding::to_row`]) or encoded in
    /// place (a night's findings are hundreds of thousands of rows, and cloning each into cells
    /// cost more than encoding them).
    pub fn cells<'a>(&'a self, id: &'a str, run_id: &'a str, max_listed: usize) -> [FindingCell<'a>; FINDING_CELLS] {
        let text = |v: &'a Option<String>| v.as_deref().map_or(FindingCell::Null, FindingCell::Text);
        let float = |v: Option<f64>| FindingCell::Float(v.filter(|x| x.is_finite()));
        let process = self.process.as_ref();
        let process_field =
            |f: fn(&ProcessInfo) -> &String| process.map_or(FindingCell::Null, |p| FindingCell::Text(f(p)));
        let listed = &self.devices[..self.devices.len().min(max_listed)];
        let devices = |field: DeviceField| {
            if self.devices.is_empty() {
                FindingCell::Null
            } else {
                FindingCell::Devices(listed, field)
            }
        };
        let count = i64::try_from(self.devices.len()).unwrap_or(i64::MAX);
        [
            FindingCell::Day(self.day),
            FindingCell::Text(id),
            FindingCell::Text(run_id),
            FindingCell::Text(self.finding_type.as_str()),
            FindingCell::Text(self.severity.as_str()),
            text(&self.remote_host),
            text(&self.action_type),
            process_field(|p| &p.file_name),
            process_field(|p| &p.folder_path),
            process_field(|p| &p.sha1),
            process_field(|p| &p.company),
            self.remote_port.map_or(FindingCell::Null, FindingCell::Int),
            if self.devices.is_empty() { FindingCell::Null } else { FindingCell::Int(count) },
            devices(DeviceField::Id),
            devices(DeviceField::Name),
            float(self.observed),
            float(self.baseline),
            float(self.score),
            float(self.threshold),
            FindingCell::Int(self.direction),
            FindingCell::Text(self.method),
            FindingCell::Json(&self.params.0),
            self.series.as_ref().map_or(FindingCell::Null, |series| FindingCell::Json(&series.0)),
            FindingCell::Text(&self.description),
            FindingCell::Joined(&self.tactics),
            FindingCell::Joined(&self.techniques),
            FindingCell::Text(&self.evidence),
        ]
    }
}

/// The columns of a finding's row (`FINDINGS_COLUMNS`).
pub const FINDING_CELLS: usize = 27;

/// Which half of a listed device a column shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceField {
    Id,
    Name,
}

impl DeviceField {
    pub fn of(self, device: &(String, String)) -> &str {
        match self {
            DeviceField::Id => &device.0,
            DeviceField::Name => &device.1,
        }
    }
}

/// One cell of a finding's row, borrowed from the finding (see [`Finding::cells`]).
#[derive(Debug, Clone, Copy)]
pub enum FindingCell<'a> {
    Day(Day),
    Text(&'a str),
    Int(i64),
    /// `None` for a value that is not finite, written as a null.
    Float(Option<f64>),
    /// Text joined with commas (tactics, techniques).
    Joined(&'a [&'static str]),
    /// The listed devices' ids or names: a JSON array of strings.
    Devices(&'a [(String, String)], DeviceField),
    Json(&'a serde_json::value::RawValue),
    Null,
}

impl FindingCell<'_> {
    /// The table cell: what the row held before it was borrowed.
    pub fn to_cell(self) -> Cell {
        match self {
            FindingCell::Day(day) => Cell::Day(day),
            FindingCell::Text(text) => Cell::Text(text.to_string()),
            FindingCell::Int(v) => Cell::Int(v),
            FindingCell::Float(v) => v.map_or(Cell::Null, Cell::Float),
            FindingCell::Joined(parts) => Cell::Text(parts.join(",")),
            FindingCell::Devices(listed, field) => {
                Cell::Json(Value::Array(listed.iter().map(|d| Value::String(field.of(d).to_string())).collect()))
            }
            FindingCell::Json(raw) => Cell::RawJson(raw.to_owned()),
            FindingCell::Null => Cell::Null,
        }
    }
}

/// What a detector sees.
pub struct Context<'a> {
    pub day: Day,
    pub settings: &'a Settings,
    pub today: &'a DayData,
    pub history: &'a History,
    /// The opening of every device series of the day, up to its counts (see [`device_series`]).
    series_days: OnceLock<String>,
    /// [`Context::device_evidence`], the evidence of most of the day's findings.
    evidence: String,
}

impl<'a> Context<'a> {
    pub fn new(day: Day, settings: &'a Settings, today: &'a DayData, history: &'a History) -> Context<'a> {
        let evidence = format!("{}{PART}.parquet", day_prefix(crate::sink::tables::DEVICE_HOSTS, day));
        Context { day, settings, today, history, series_days: OnceLock::new(), evidence }
    }

    pub fn device_id(&self, device: u32) -> &str {
        self.history.names.devices.name(device)
    }

    pub fn host(&self, host: u32) -> &str {
        self.history.names.hosts.name(host)
    }

    /// The store path of the day's device table, the evidence of device findings.
    pub fn device_evidence(&self) -> &str {
        &self.evidence
    }

    /// Whether a device has at least `min_device_history_days` history days of telemetry, and
    /// at least one (even when the setting is 0): only such devices have a baseline to be new
    /// against.
    pub fn has_history(&self, device: u32) -> bool {
        let days = self.history.index.active_days.get(&device).copied().unwrap_or(0) as usize;
        days > 0 && days >= self.settings.detect.min_device_history_days
    }
}

/// The rows one finding is built from: devices, events and the evidence of the most frequent
/// process.
#[derive(Debug, Default)]
pub struct Group<'d> {
    pub devices: BTreeSet<u32>,
    pub events: u64,
    pub failed: u64,
    /// Events per (file, folder, SHA1, company) and per port, to name the most frequent.
    processes: BTreeMap<ProcessFields<'d>, u64>,
    ports: BTreeMap<Option<i32>, u64>,
}

impl<'d> Group<'d> {
    pub fn add(&mut self, activity: &Activity, process: Option<ProcessFields<'d>>) {
        self.devices.insert(activity.device);
        self.events += activity.events;
        self.failed += activity.failed;
        *self.ports.entry(activity.port).or_default() += activity.events;
        if let Some(process) = process {
            *self.processes.entry(process).or_default() += activity.events;
        }
    }

    /// The process with the most events (ties: the first in sort order).
    pub fn process(&self) -> Option<ProcessInfo> {
        let top = self.processes.iter().max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0)))?;
        let (file, folder, sha1, company) = *top.0;
        Some(ProcessInfo {
            file_name: file.to_string(),
            folder_path: folder.to_string(),
            sha1: sha1.to_string(),
            company: company.to_string(),
        })
    }

    /// Every distinct process, for `Params`.
    pub fn process_params(&self) -> Vec<ProcessParams<'d>> {
        let params = self.processes.iter();
        params
            .map(|(&(file, folder, sha1, company), &events)| ProcessParams { company, events, file, folder, sha1 })
            .collect()
    }

    /// [`Group::process_params`] as a JSON value, for a detector that builds its `Params` so.
    pub fn processes_json(&self) -> Value {
        serde_json::to_value(self.process_params()).unwrap_or(Value::Null)
    }

    /// The port with the most events.
    pub fn port(&self) -> Option<i64> {
        self.ports.iter().max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0))).and_then(|(p, _)| p.map(i64::from))
    }

    pub fn ports(&self) -> Vec<i32> {
        self.ports.keys().filter_map(|p| *p).collect()
    }

    /// (DeviceId, DeviceName), sorted by DeviceId.
    pub fn device_list(&self, ctx: &Context<'_>) -> Vec<(String, String)> {
        device_list(ctx, self.devices.iter().copied())
    }
}

/// A process of a group as `Params` lists it (see [`Document::of`] for the order of fields).
#[derive(Debug, serde::Serialize)]
pub struct ProcessParams<'d> {
    company: &'d str,
    events: u64,
    file: &'d str,
    folder: &'d str,
    sha1: &'d str,
}

/// (DeviceId, DeviceName) of devices, sorted by DeviceId; the name is today's, else "".
pub fn device_list(ctx: &Context<'_>, devices: impl IntoIterator<Item = u32>) -> Vec<(String, String)> {
    let names = &ctx.today.device_names;
    let mut list: Vec<(String, String)> = devices
        .into_iter()
        .map(|d| (ctx.device_id(d).to_string(), names.get(&d).cloned().unwrap_or_default()))
        .collect();
    list.sort();
    list
}

/// Distinct devices per key on one day, for the keys a detector draws a series of (see
/// [`device_series`]). Each is counted the first time a detector asks and kept with the day, so
/// a day of history is counted once, not again for each of the days it serves. `OnceLock`, not
/// `OnceCell`, so a day can be shared with the thread that reads the next day meanwhile.
#[derive(Debug, Default, Clone)]
pub struct DayCounts {
    pub unexpected_process: OnceLock<DeviceCounts<(u32, u32)>>,
    pub unusual_port: OnceLock<DeviceCounts<(u32, i32)>>,
    pub lookalike: OnceLock<DeviceCounts<u32>>,
}

/// Distinct devices per key of one day, sorted by key: a day of the window keeps one of these
/// per detector, so they are held in 12 bytes a key rather than in a hash map's 24 and spare room.
#[derive(Debug, Clone, Default)]
pub struct DeviceCounts<K>(Vec<(K, u32)>);

impl<K: Ord> DeviceCounts<K> {
    /// The devices of `key` (0 for a key the day did not have).
    pub fn devices(&self, key: &K) -> usize {
        self.0.binary_search_by(|(k, _)| k.cmp(key)).map_or(0, |at| self.0[at].1 as usize)
    }
}

/// Distinct devices per key of a day's activity (rows without a key are left out).
pub fn distinct_devices<K: Ord + Copy>(data: &DayData, key_of: impl Fn(&Activity) -> Option<K>) -> DeviceCounts<K> {
    // A device has several rows per key (ports, spellings, binaries): sorting and deduplicating
    // the pairs counts it once, without a set per key.
    let mut pairs: Vec<(K, u32)> = data.activity.iter().filter_map(|a| Some((key_of(a)?, a.device))).collect();
    pairs.sort_unstable();
    pairs.dedup();
    let mut counts: Vec<(K, u32)> = Vec::new();
    for (key, _) in pairs {
        match counts.last_mut() {
            Some((last, n)) if *last == key => *n += 1,
            _ => counts.push((key, 1)),
        }
    }
    counts.shrink_to_fit();
    DeviceCounts(counts)
}

/// Works out every count the enabled detectors ask of a day that serves as history, so that the
/// day can let go of its activity rows (most of a day's memory on a large night) once scored.
pub fn count_day(settings: &Settings, names: &Names, data: &DayData) {
    let d = &settings.detect;
    if d.unexpected_process {
        unexpected_process::devices_per_key(data);
    }
    if d.lookalike.enabled {
        lookalike::devices_per_host(data);
    }
    if d.unusual_port.enabled {
        unusual_port::devices_per_port(&d.unusual_port, &names.hosts, data);
    }
}

/// `{"days": [...], "devices": [...]}` over the history days and today, and the mean over the
/// history days; `devices_on` says how many devices a day had.
pub fn device_series(ctx: &Context<'_>, devices_on: impl Fn(&DayData) -> usize) -> (Document, f64) {
    // The text `json!` would give (keys sorted), written directly: a busy night has thousands
    // of findings a day, each with the same list of days.
    let opening = ctx.series_days.get_or_init(|| {
        let days = ctx.history.days.iter().map(|d| d.day).chain(std::iter::once(ctx.day));
        let quoted: Vec<String> = days.map(|day| format!("\"{day}\"")).collect();
        format!("{{\"days\":[{}],\"devices\":[", quoted.join(","))
    });
    let days = ctx.history.days.len() + 1;
    let mut text = String::with_capacity(opening.len() + days * 4 + 2);
    text.push_str(opening);
    let mut history = 0;
    let mut digits = [0u8; 20];
    for (i, data) in ctx.history.days.iter().chain(std::iter::once(ctx.today)).enumerate() {
        let count = devices_on(data);
        if i > 0 {
            text.push(',');
        }
        text.extend(crate::time::decimal(count as u64, &mut digits).iter().map(|&d| char::from(d)));
        if i + 1 < days {
            history += count;
        }
    }
    text.push_str("]}");
    let mean = if days == 1 { 0.0 } else { history as f64 / (days - 1) as f64 };
    (Document::from_text(text), mean)
}

/// Runs every enabled detector on one day. Findings come sorted by type, then key.
pub fn run_day(ctx: &Context<'_>) -> Vec<Finding> {
    let d = &ctx.settings.detect;
    let mut findings = Vec::new();
    if d.series.enabled {
        findings.extend(series::detect(ctx));
    }
    if d.unexpected_process {
        findings.extend(unexpected_process::detect(ctx));
    }
    if d.new_combination {
        findings.extend(new_combination::detect(ctx));
    }
    if d.lookalike.enabled {
        findings.extend(lookalike::detect(ctx));
    }
    if d.unusual_port.enabled {
        findings.extend(unusual_port::detect(ctx));
    }
    if d.silent_device.enabled {
        findings.extend(silent_device::detect(ctx));
    }
    // Sorted by position, then moved once into place: a finding is hundreds of bytes, which a
    // sort of the findings themselves moved at every step of the merge.
    let mut order: Vec<usize> = (0..findings.len()).collect();
    order.sort_by(|&a, &b| {
        (findings[a].finding_type, &findings[a].key).cmp(&(findings[b].finding_type, &findings[b].key))
    });
    let mut slots: Vec<Option<Finding>> = findings.into_iter().map(Some).collect();
    order.into_iter().filter_map(|i| slots[i].take()).collect()
}

#[cfg(test)]
pub(crate) mod testing {
    //! Building days of device activity by hand for the detectors' tests.

    use super::*;
    use crate::baseline::history::Names;
    use crate::config::Config;
    use crate::sink::results::Results;
    use crate::sink::tables::{DEVICE_HOSTS, DEVICE_HOSTS_COLUMNS};
    use crate::sink::Table;

    pub const MDE: &str = r"c:\program files\windows defender advanced threat protection\";
    pub const GW: &str = "winatp-gw-weu.microsoft.com";

    pub fn settings() -> Settings {
        Config::default().validate().expect("defaults are valid")
    }

    pub fn day(n: i32) -> Day {
        Day(Day::parse("2026-11-01").unwrap().0 + n)
    }

    /// One activity row as the hunt writes it.
    #[derive(Debug, Clone)]
    pub struct Row {
        pub device: &'static str,
        pub host: &'static str,
        pub file: &'static str,
        pub folder: String,
        pub port: Option<i32>,
        pub spelling: &'static str,
        pub events: u64,
        pub failed: u64,
        /// What the hunt tagged the row with; `None`: what the allow list says.
        pub expected_by: Option<&'static str>,
    }

    pub fn row(device: &'static str, host: &'static str, file: &'static str, folder: &str) -> Row {
        Row {
            device,
            host,
            file,
            folder: folder.to_string(),
            port: Some(443),
            spelling: "",
            events: 3,
            failed: 0,
            expected_by: None,
        }
    }

    /// The sensor on a device: MsSense to the gateway.
    pub fn sensor(device: &'static str) -> Row {
        row(device, GW, "mssense.exe", &format!("{MDE}mssense.exe"))
    }

    /// Builds a day the way `DayData::load` reads it from the store.
    pub fn day_data(
        settings: &Settings,
        names: &mut Names,
        day: Day,
        rows: &[Row],
        connections: &[(&str, f64)],
    ) -> DayData {
        let mut table = Table::new(DEVICE_HOSTS, DEVICE_HOSTS_COLUMNS);
        for r in rows {
            let listed = settings.hosts.classify(Some(r.host)).host.is_some();
            let expected = match r.expected_by {
                Some(tag) => tag.to_string(),
                None => crate::hunt::rules::expected_by(&settings.expected, r.file, &r.folder, r.host)
                    .map(|e| format!("allow-list:{}", e.file_name))
                    .unwrap_or_default(),
            };
            table.push(vec![
                Cell::Day(day),
                Cell::from(r.device),
                Cell::from(format!("{}.contoso.local", r.device)),
                Cell::from(r.host),
                Cell::from(listed),
                r.port.map_or(Cell::Null, |p| Cell::Int(i64::from(p))),
                Cell::from(r.file),
                Cell::from(r.folder.as_str()),
                Cell::from("da39a3ee5e6b4b0d3255bfef95601890afd80709"),
                Cell::from("Microsoft Corporation"),
                Cell::from(expected),
                Cell::from(r.spelling),
                Cell::from(r.events),
                Cell::from(r.failed),
            ]);
        }
        let dir = tempfile::tempdir().unwrap();
        let results = Results::new(std::sync::Arc::new(crate::sink::local::LocalDir::new(dir.path())));
        results.write_day(&table, day).unwrap();
        let mut daily = Table::new(crate::sink::tables::DAILY, crate::sink::tables::DAILY_COLUMNS);
        for (action, n) in connections {
            daily.push(vec![
                Cell::Day(day),
                Cell::from(*action),
                Cell::Int(*n as i64),
                Cell::Int(*n as i64),
                Cell::from("kql"),
            ]);
        }
        results.write_day(&daily, day).unwrap();
        DayData::load(&results, day, settings, names).unwrap().unwrap()
    }

    /// History of `days` (each a list of rows) followed by `today`; runs `detect`.
    pub fn run(
        settings: &Settings,
        history_days: &[Vec<Row>],
        today_rows: &[Row],
        detect: fn(&Context<'_>) -> Vec<Finding>,
    ) -> Vec<Finding> {
        let mut history = History::new(settings.detect.history_days);
        let n = history_days.len() as i32;
        for (i, rows) in history_days.iter().enumerate() {
            let data = day_data(settings, &mut history.names, day(i as i32 - n), rows, &[]);
            history.push(data, settings);
        }
        let today = day_data(settings, &mut history.names, day(0), today_rows, &[]);
        let ctx = Context::new(day(0), settings, &today, &history);
        let mut findings = detect(&ctx);
        findings.sort_by(|a, b| (a.finding_type, &a.key).cmp(&(b.finding_type, &b.key)));
        // Documents written by hand or from typed fields are the text their JSON values give
        // (keys sorted), which findings re-read from the store are compared with.
        for f in &findings {
            for document in std::iter::once(&f.params).chain(&f.series) {
                assert_eq!(document.0.get(), document.value().to_string(), "{:?} {}", f.finding_type, f.key);
            }
        }
        findings
    }

    /// Device ids of a finding.
    pub fn ids(finding: &Finding) -> Vec<&str> {
        finding.devices.iter().map(|(id, _)| id.as_str()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The series is written as text: it must be the document `json!` gives, for no history,
    /// one day and a gap-free window, and the days text is shared by every series of the day.
    #[test]
    fn a_device_series_is_the_json_document_of_its_days_and_counts() {
        use testing::{day, day_data, sensor, settings};
        let settings = settings();
        for history_days in [0, 1, 3] {
            let mut history = History::new(30);
            for i in 0..history_days {
                let rows: Vec<_> = (0..=i).map(|d| sensor(["dev-a", "dev-b", "dev-c"][d])).collect();
                let data = day_data(&settings, &mut history.names, day(i as i32 - history_days as i32), &rows, &[]);
                history.push(data, &settings);
            }
            let today = day_data(&settings, &mut history.names, day(0), &[sensor("dev-a")], &[]);
            let ctx = Context::new(day(0), &settings, &today, &history);
            let on = |data: &DayData| data.devices.len();
            for _ in 0..2 {
                let (series, mean) = device_series(&ctx, on);
                let days: Vec<String> = (-(history_days as i32)..=0).map(|d| day(d).to_string()).collect();
                let counts: Vec<usize> = (1..=history_days).chain([1]).collect();
                let expected = json!({"days": days, "devices": counts});
                assert_eq!(series.0.get(), serde_json::to_string(&expected).unwrap(), "{history_days} days");
                let history_mean = if history_days == 0 {
                    0.0
                } else {
                    (1..=history_days).sum::<usize>() as f64 / history_days as f64
                };
                assert_eq!(mean, history_mean);
            }
        }
    }

    /// The running index says what walking the window's days says, and a day taken away
    /// leaves no trace.
    #[test]
    fn the_window_index_is_what_its_days_add_up_to() {
        use crate::baseline::history::WindowIndex;
        use testing::{day, day_data, row, sensor, settings, GW};
        let settings = settings();
        let mut history = History::new(30);
        let mut spelled = sensor("dev-b");
        spelled.spelling = "port";
        let mut quiet = sensor("dev-c");
        quiet.events = 0;
        let days = [
            vec![sensor("dev-a"), row("dev-a", GW, "x.exe", r"c:\x\x.exe"), quiet.clone()],
            vec![sensor("dev-a"), spelled.clone(), sensor("dev-b")],
            vec![spelled, quiet],
        ];
        // the days as loaded, activity rows and all (the history keeps only what they add up to)
        let mut loaded = Vec::new();
        for (i, rows) in days.iter().enumerate() {
            let data = day_data(&settings, &mut history.names, day(i as i32), rows, &[]);
            loaded.push(data.clone());
            history.push(data, &settings);
        }
        assert!(history.days.iter().all(|d| d.activity.is_empty() && d.evidence.is_none()));
        let walk = |days: &[DayData]| {
            let mut walked = WindowIndex::default();
            for data in days {
                for (device, d) in &data.devices {
                    if d.events > 0 {
                        *walked.active_days.entry(*device).or_default() += 1;
                    }
                }
                // the days come in order: the last one seen overwrites
                for a in &data.activity {
                    if new_combination::judged(a) {
                        walked.combinations.entry((a.host, a.identity)).or_default().insert(a.device, data.day);
                    }
                    if let Some(s) = a.spelling {
                        walked.spellings.insert((a.device, a.host, s), data.day);
                    }
                }
            }
            walked
        };
        let walked = walk(&loaded);
        let index = &history.index;
        assert_eq!(
            (&index.active_days, &index.combinations, &index.spellings),
            (&walked.active_days, &walked.combinations, &walked.spellings)
        );
        let a = history.names.devices.intern("dev-a");
        let c = history.names.devices.intern("dev-c");
        assert_eq!((index.active_days.get(&a), index.active_days.get(&c)), (Some(&2), None));
        let spelled_by_b = (history.names.devices.intern("dev-b"), history.names.hosts.intern(GW));
        let last_spelled: Vec<Day> = index
            .spellings
            .iter()
            .filter(|((device, host, _), _)| (*device, *host) == spelled_by_b)
            .map(|(_, &last)| last)
            .collect();
        assert_eq!(last_spelled, [day(2)]);
        // the first day leaves the window: what only it had goes, what a later day had stays
        let mut later = history.index.clone();
        later.remove(&history.days[0]);
        later.forget_before(day(1));
        let rest = walk(&loaded[1..]);
        assert_eq!(
            (&later.active_days, &later.combinations, &later.spellings),
            (&rest.active_days, &rest.combinations, &rest.spellings)
        );
        assert_ne!(later.combinations, index.combinations, "day 0 alone had dev-a's x.exe");
        let mut emptied = history.index.clone();
        for data in &history.days {
            emptied.remove(data);
        }
        emptied.forget_before(day(3));
        assert!(emptied.active_days.is_empty() && emptied.combinations.is_empty() && emptied.spellings.is_empty());
    }

    #[test]
    fn finding_ids_are_fnv1a_128_of_type_key_and_day() {
        // Published FNV-1a 128 test values.
        assert_eq!(fnv1a_128(b""), 0x6c62272e07bb014262b821756295c58d);
        assert_eq!(fnv1a_128(b"a"), 0xd228cb696f1a8caf78912b704e4a8964);
        let finding = Finding {
            day: Day::parse("2026-11-20").unwrap(),
            finding_type: FindingType::UnexpectedProcess,
            key: "winatp-gw-neu.microsoft.com|mssense.exe|c:\\users\\public\\libraries\\mssense.exe".into(),
            severity: Severity::High,
            remote_host: None,
            action_type: None,
            process: None,
            remote_port: None,
            devices: Vec::new(),
            observed: None,
            baseline: None,
            score: None,
            threshold: None,
            direction: 0,
            method: "m",
            params: Document::default(),
            series: None,
            description: String::new(),
            tactics: Vec::new(),
            techniques: Vec::new(),
            evidence: String::new(),
        };
        let text = format!("UnexpectedProcess\u{1f}{}\u{1f}2026-11-20", finding.key);
        assert_eq!(finding.id(), format!("{:032x}", fnv1a_128(text.as_bytes())));
        assert_eq!(finding.id().len(), 32);
        let other_day = Finding { day: finding.day.next(), ..finding.clone() };
        assert_ne!(finding.id(), other_day.id());
    }
}
