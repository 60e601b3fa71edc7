//! What earlier days looked like, read back from the results store: the reference series of
//! `MdeTelemetryDaily` and the per-device activity of `MdeTelemetryDeviceHosts`. Raw events are
//! never scanned again; a day that was never hunted is simply absent.
//!
//! Strings (DeviceIds, hosts, process identities) are interned once per run, so the history of
//! a window costs a few machine words per activity row.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use rustc_hash::FxHashMap;

use crate::config::Settings;
use crate::hunt::aggregate::Interner;
use crate::hunt::rules::{expected_by, matched_folder_prefix};
use crate::sink::results::Results;
use crate::sink::tables::{self, DAILY_COLUMNS, DEVICE_HOSTS_COLUMNS};
use crate::sink::{Cell, Columns, SinkError};
use crate::time::Day;
use arrow_array::{Array, ArrayRef};

/// How the allow list and the exclusion rules saw a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcessClass {
    Expected,
    Excluded,
    Unexpected,
}

/// One row of `MdeTelemetryDeviceHosts`, interned.
#[derive(Debug, Clone)]
pub struct Activity {
    pub device: u32,
    pub host: u32,
    /// File name and identity folder (see [`identity_folder`]), interned in `Names::identities`.
    pub identity: u32,
    pub port: Option<i32>,
    /// On the reference list or `extra_hosts`; `false` for a look-alike.
    pub listed: bool,
    pub class: ProcessClass,
    /// One of the sensor's own processes, where the allow list expects it.
    pub sensor: bool,
    /// The spelling that hid a reference host from the reference query, interned in
    /// `Names::spellings`.
    pub spelling: Option<u32>,
    pub events: u64,
    pub failed: u64,
    /// The row in the day's table, for its process columns (see [`Evidence`]).
    pub row: usize,
}

/// A device's telemetry on one day (listed hosts only).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeviceDay {
    pub events: u64,
    pub failed: u64,
    pub sensor_events: u64,
    pub other_events: u64,
}

/// One stored day.
#[derive(Debug, Clone)]
pub struct DayData {
    pub day: Day,
    /// `MdeTelemetryDaily`: ActionType → Connections.
    pub connections: BTreeMap<String, f64>,
    pub activity: Vec<Activity>,
    /// Each device with listed activity, by device id: sorted, so the silent-device detector
    /// walks the days of the window side by side instead of hashing every device of every day.
    pub devices: Vec<(u32, DeviceDay)>,
    /// What the detectors count per day, worked out the first time and kept while the day is in
    /// the window (each day is counted once per run, not once per day it serves).
    pub counts: crate::detect::DayCounts,
    /// The process columns of the day's `MdeTelemetryDeviceHosts` rows, and each device's
    /// name; kept for the day being scored, dropped from history.
    pub evidence: Option<Evidence>,
    pub device_names: FxHashMap<u32, String>,
}

/// File name, folder, SHA1 and company of a row's initiating process.
pub type ProcessFields<'a> = (&'a str, &'a str, &'a str, &'a str);

/// Of each row of a day's device table, what the findings take from it beyond its
/// [`Activity`]: the process columns, interned. The rows as read are ten times the size (a cell
/// and a string per column), and holding them for the day being scored, the day read meanwhile
/// and the day before was most of what the detectors held; a device's processes repeat on every
/// host it reaches, so few strings are distinct.
#[derive(Debug, Default, Clone)]
pub struct Evidence {
    strings: Interner,
    rows: Vec<[u32; 4]>,
}

impl Evidence {
    /// The process columns of row `row`.
    pub fn process(&self, row: usize) -> Option<ProcessFields<'_>> {
        let [file, folder, sha1, company] = self.rows.get(row)?.map(|id| self.strings.name(id));
        Some((file, folder, sha1, company))
    }
}

/// What each distinct value of a text column of the device table stands for, worked out at its
/// first row and kept, by dictionary key, while the batches share the column's dictionary (a
/// file's column has one).
struct ByKey<T> {
    column: usize,
    dictionary: Option<ArrayRef>,
    by_key: Vec<Option<T>>,
    null: Option<T>,
}

impl<T: Copy> ByKey<T> {
    fn new(column: usize) -> ByKey<T> {
        ByKey { column, dictionary: None, by_key: Vec::new(), null: None }
    }

    /// Takes up a batch: what the keys meant stays if its dictionary is the one before.
    fn start(&mut self, batch: &Columns) {
        let dictionary = batch.dictionary(self.column);
        if !crate::hunt::aggregate::same_dictionary(&self.dictionary, dictionary) {
            self.dictionary = dictionary.cloned();
            self.by_key.clear();
            self.by_key.resize(dictionary.map_or(0, |values| values.len()), None);
        }
    }

    /// What the value of `row` stands for; `meaning` works it out from the text (a null's is "")
    /// the first time.
    fn get(&mut self, batch: &Columns, row: usize, meaning: impl FnOnce(&str) -> T) -> T {
        let key = batch.key(self.column, row);
        let slot = match key.and_then(|key| self.by_key.get_mut(key)) {
            Some(slot) => slot,
            None => &mut self.null,
        };
        *slot.get_or_insert_with(|| meaning(batch.text(self.column, row)))
    }
}

/// Interned strings shared by every day of a run.
#[derive(Debug, Default, Clone)]
pub struct Names {
    pub devices: Interner,
    pub hosts: Interner,
    pub identities: Interner,
    pub spellings: Interner,
}

/// The stored days before the day being scored, oldest first. Change `days` only through
/// [`History::prepare`] and [`History::push`], which keep `index` in step.
#[derive(Debug, Clone)]
pub struct History {
    pub names: Names,
    pub days: VecDeque<DayData>,
    pub window: usize,
    pub index: WindowIndex,
}

/// What the days of the window add up to, updated as a day comes in or falls out, so a
/// detector asks the window with one lookup instead of walking every activity row of 30 days
/// every day (which made the detectors quadratic in the days of a run).
#[derive(Debug, Default, Clone)]
pub struct WindowIndex {
    /// Per device: the history days it had telemetry on (listed events > 0).
    pub active_days: FxHashMap<u32, u32>,
    /// Activity rows the new-combination detector judges (listed, not excluded), per
    /// (host, identity): the last day of the window each device had one.
    pub combinations: FxHashMap<(u32, u32), FxHashMap<u32, Day>>,
    /// Per (device, host, spelling) of a spelling the reference query misses: the last day of
    /// the window it was seen.
    pub spellings: FxHashMap<(u32, u32, u32), Day>,
}

impl WindowIndex {
    /// Adds a day, from its activity rows (before [`DayData::settle`] lets go of them).
    pub(crate) fn add(&mut self, data: &DayData) {
        for (device, day) in &data.devices {
            if day.events > 0 {
                *self.active_days.entry(*device).or_default() += 1;
            }
        }
        let latest = |last: &mut Day| *last = (*last).max(data.day);
        for a in data.activity.iter().filter(|a| crate::detect::new_combination::judged(a)) {
            let devices = self.combinations.entry((a.host, a.identity)).or_default();
            devices.entry(a.device).and_modify(latest).or_insert(data.day);
        }
        for a in &data.activity {
            if let Some(spelling) = a.spelling {
                self.spellings.entry((a.device, a.host, spelling)).and_modify(latest).or_insert(data.day);
            }
        }
    }

    /// Takes away a day that left the window. What it added by the day (combinations, spellings)
    /// goes with [`WindowIndex::forget_before`]: a day keeps only its device list, not the keys
    /// of its activity rows, once it is history.
    pub(crate) fn remove(&mut self, data: &DayData) {
        for (device, day) in &data.devices {
            if day.events > 0 {
                if let std::collections::hash_map::Entry::Occupied(mut days) = self.active_days.entry(*device) {
                    *days.get_mut() = days.get().saturating_sub(1);
                    if *days.get() == 0 {
                        days.remove();
                    }
                }
            }
        }
    }

    /// Forgets what was last seen before `first`, the window's first day. Days leave the window
    /// oldest first, so a key last seen before it was seen on no day still in the window.
    pub(crate) fn forget_before(&mut self, first: Day) {
        self.combinations.retain(|_, devices| {
            devices.retain(|_, last| *last >= first);
            !devices.is_empty()
        });
        self.spellings.retain(|_, last| *last >= first);
    }
}

/// The folder a process is known by: for a process the allow list expects, the allow-list
/// folder it runs under (so a platform update that moves `MsMpEng.exe` into a new version
/// folder is not a new process); for any other, its own folder.
pub fn identity_folder<'a>(settings: &'a Settings, file: &str, folder: &'a str, host: &str) -> &'a str {
    expected_by(&settings.expected, file, folder, host).and_then(|e| matched_folder_prefix(e, folder)).unwrap_or(folder)
}

/// Column positions of `MdeTelemetryDeviceHosts`, by name, so the table can grow.
pub mod device_col {
    use crate::sink::tables::DEVICE_HOSTS_COLUMNS;

    const fn at(name: &str) -> usize {
        let mut i = 0;
        while i < DEVICE_HOSTS_COLUMNS.len() {
            if const_eq(DEVICE_HOSTS_COLUMNS[i].0, name) {
                return i;
            }
            i += 1;
        }
        panic!("no such column")
    }

    const fn const_eq(a: &str, b: &str) -> bool {
        let (a, b) = (a.as_bytes(), b.as_bytes());
        if a.len() != b.len() {
            return false;
        }
        let mut i = 0;
        while i < a.len() {
            if a[i] != b[i] {
                return false;
            }
            i += 1;
        }
        true
    }

    pub const DEVICE_ID: usize = at("DeviceId");
    pub const DEVICE_NAME: usize = at("DeviceName");
    pub const REMOTE_HOST: usize = at("RemoteHost");
    pub const LISTED: usize = at("Listed");
    pub const REMOTE_PORT: usize = at("RemotePort");
    pub const FILE_NAME: usize = at("InitiatingProcessFileName");
    pub const FOLDER_PATH: usize = at("InitiatingProcessFolderPath");
    pub const SHA1: usize = at("InitiatingProcessSHA1");
    pub const COMPANY: usize = at("InitiatingProcessVersionInfoCompanyName");
    pub const EXPECTED_BY: usize = at("ExpectedBy");
    pub const SPELLING: usize = at("Spelling");
    pub const EVENTS: usize = at("Events");
    pub const FAILED_EVENTS: usize = at("FailedEvents");
}

pub fn text(cell: &Cell) -> &str {
    match cell {
        Cell::Text(s) => s,
        _ => "",
    }
}

pub fn int(cell: &Cell) -> Option<i64> {
    match cell {
        Cell::Int(v) => Some(*v),
        Cell::Float(v) => Some(*v as i64),
        _ => None,
    }
}

fn count(cell: &Cell) -> u64 {
    int(cell).map_or(0, |v| v.max(0) as u64)
}

impl DayData {
    /// Reads one day from the store, its strings interned in `names`; `None` when the day was
    /// never hunted. The device table is taken a batch of rows at a time: its rows as read are
    /// ten times the size of what the day keeps of them.
    pub fn load(
        results: &Results,
        day: Day,
        settings: &Settings,
        names: &mut Names,
    ) -> Result<Option<DayData>, SinkError> {
        let Some(daily) = results.read_day(tables::DAILY, DAILY_COLUMNS, day)? else { return Ok(None) };
        let connections = daily.rows.iter().map(|row| (text(&row[1]).to_string(), count(&row[2]) as f64)).fold(
            BTreeMap::new(),
            |mut map, (action, n)| {
                *map.entry(action).or_insert(0.0) += n;
                map
            },
        );
        let sensors = &settings.detect.silent_device.sensor_processes;
        let mut activity = Vec::new();
        let mut devices: FxHashMap<u32, DeviceDay> = FxHashMap::default();
        let mut device_names: FxHashMap<u32, String> = FxHashMap::default();
        let mut evidence = Evidence::default();
        // A device's rows repeat its id, and its processes repeat on every host it reaches: what
        // a text means (its interned id, the class its ExpectedBy tag gives) is worked out at
        // the first row of each distinct value, in row order, so ids come out as interning every
        // row would give them.
        use device_col as c;
        let mut device_ids = ByKey::new(c::DEVICE_ID);
        let mut hosts = ByKey::new(c::REMOTE_HOST);
        let mut process_columns = [c::FILE_NAME, c::FOLDER_PATH, c::SHA1, c::COMPANY].map(ByKey::new);
        let mut classes = ByKey::new(c::EXPECTED_BY);
        let mut spellings = ByKey::new(c::SPELLING);
        // per (host, file, folder): the identity, and whether the file is one of the sensor's
        let mut identities: FxHashMap<(u32, u32, u32), (u32, bool)> = FxHashMap::default();
        let mut identity_text = String::new();
        // A day hunted by a version without the device table has no device history.
        results.read_day_columns(tables::DEVICE_HOSTS, DEVICE_HOSTS_COLUMNS, day, true, |batch| {
            let batch = &batch;
            for column in [&mut device_ids, &mut hosts].into_iter().chain(&mut process_columns) {
                column.start(batch);
            }
            classes.start(batch);
            spellings.start(batch);
            for row in 0..batch.rows() {
                let text = |column: usize| batch.text(column, row);
                let count = |column: usize| batch.int(column, row).map_or(0, |v| v.max(0) as u64);
                let device = device_ids.get(batch, row, |id| {
                    let device = names.devices.intern(id);
                    device_names.entry(device).or_insert_with(|| text(c::DEVICE_NAME).to_string());
                    device
                });
                let host = hosts.get(batch, row, |host| names.hosts.intern(host));
                let process = process_columns
                    .each_mut()
                    .map(|column| column.get(batch, row, |value| evidence.strings.intern(value)));
                let [file, folder, ..] = process;
                let (identity, sensor_file) = *identities.entry((host, file, folder)).or_insert_with(|| {
                    let (host, file, folder) = (text(c::REMOTE_HOST), text(c::FILE_NAME), text(c::FOLDER_PATH));
                    let folder_key = identity_folder(settings, file, folder, host);
                    identity_text.clear();
                    {
                        use std::fmt::Write as _;
                        let _ = write!(identity_text, "{}:{file}{folder_key}", file.len());
                    }
                    (names.identities.intern(&identity_text), sensors.iter().any(|s| s.eq_ignore_ascii_case(file)))
                });
                let class = classes.get(batch, row, |expected| {
                    if expected.starts_with("allow-list:") {
                        ProcessClass::Expected
                    } else if expected.starts_with("exclusion:") {
                        ProcessClass::Excluded
                    } else {
                        ProcessClass::Unexpected
                    }
                });
                let entry = Activity {
                    device,
                    host,
                    identity,
                    port: batch.int(c::REMOTE_PORT, row).and_then(|p| i32::try_from(p).ok()),
                    listed: batch.bool(c::LISTED, row) != Some(false),
                    class,
                    sensor: class == ProcessClass::Expected && sensor_file,
                    spelling: spellings
                        .get(batch, row, |spelled| (!spelled.is_empty()).then(|| names.spellings.intern(spelled))),
                    events: count(c::EVENTS),
                    failed: count(c::FAILED_EVENTS),
                    row: activity.len(),
                };
                if entry.listed {
                    let device = devices.entry(entry.device).or_default();
                    device.events += entry.events;
                    device.failed += entry.failed;
                    if entry.sensor {
                        device.sensor_events += entry.events;
                    } else {
                        device.other_events += entry.events;
                    }
                }
                activity.push(entry);
                evidence.rows.push(process);
            }
            Ok(())
        })?;
        // The activity stays while the day is in the window, without the room it grew into.
        activity.shrink_to_fit();
        evidence.rows.shrink_to_fit();
        let mut devices: Vec<(u32, DeviceDay)> = devices.into_iter().collect();
        devices.sort_unstable_by_key(|(device, _)| *device);
        let counts = Default::default();
        Ok(Some(DayData { day, connections, activity, devices, counts, evidence: Some(evidence), device_names }))
    }

    /// A day read with names of its own (on any thread), for [`DayData::adopt`].
    pub fn load_alone(results: &Results, day: Day, settings: &Settings) -> Result<Option<(DayData, Names)>, SinkError> {
        let mut names = Names::default();
        Ok(DayData::load(results, day, settings, &mut names)?.map(|data| (data, names)))
    }

    /// Moves a day read by [`DayData::load_alone`] into the run's `names`. Its values are
    /// interned in the order the day first saw them, which is the order [`DayData::load`]
    /// into `names` would have interned them: the ids come out the same.
    pub fn adopt(mut self, own: &Names, names: &mut Names) -> DayData {
        let devices = names.devices.absorb(&own.devices);
        let hosts = names.hosts.absorb(&own.hosts);
        let identities = names.identities.absorb(&own.identities);
        let spellings = names.spellings.absorb(&own.spellings);
        for a in &mut self.activity {
            a.device = devices[a.device as usize];
            a.host = hosts[a.host as usize];
            a.identity = identities[a.identity as usize];
            a.spelling = a.spelling.map(|s| spellings[s as usize]);
        }
        for (device, _) in &mut self.devices {
            *device = devices[*device as usize];
        }
        self.devices.sort_unstable_by_key(|(device, _)| *device);
        self.device_names = self.device_names.into_iter().map(|(d, name)| (devices[d as usize], name)).collect();
        self
    }

    /// What only the day being scored needs, taken out so it can be dropped elsewhere.
    pub fn take_evidence(&mut self) -> (Option<Evidence>, FxHashMap<u32, String>) {
        (self.evidence.take(), std::mem::take(&mut self.device_names))
    }

    /// Makes the day history: works out what the detectors count of it and what it adds to the
    /// window, then lets go of what only the day being scored needs (its activity rows, their
    /// process columns, its device names).
    fn settle(&mut self, settings: &Settings, names: &Names) {
        crate::detect::count_day(settings, names, self);
        self.activity = Vec::new();
        self.evidence = None;
        self.device_names = FxHashMap::default();
    }

    /// The process columns of an activity entry's row.
    pub fn process(&self, activity: &Activity) -> Option<ProcessFields<'_>> {
        self.evidence.as_ref().and_then(|e| e.process(activity.row))
    }
}

impl History {
    pub fn new(window: usize) -> History {
        History { names: Names::default(), days: VecDeque::new(), window, index: WindowIndex::default() }
    }

    /// Makes `days` the stored days of the window before `day`: loads what is missing (a day
    /// is read once per run however many days it serves), drops what fell out.
    pub fn prepare(
        &mut self,
        results: &Results,
        stored: &BTreeSet<Day>,
        day: Day,
        settings: &Settings,
    ) -> Result<(), SinkError> {
        let first = Day(day.0 - self.window as i32);
        let index = &mut self.index;
        let before = self.days.len();
        self.days.retain(|d| {
            let keep = d.day >= first && d.day < day;
            if !keep {
                index.remove(d);
            }
            keep
        });
        if self.days.len() < before {
            index.forget_before(first);
        }
        for &wanted in stored.range(first..day) {
            if self.days.iter().any(|d| d.day == wanted) {
                continue;
            }
            if let Some(mut data) = DayData::load(results, wanted, settings, &mut self.names)? {
                self.index.add(&data);
                data.settle(settings, &self.names);
                let at = self.days.partition_point(|d| d.day < wanted);
                self.days.insert(at, data);
            }
        }
        Ok(())
    }

    /// Adds the day just scored, so it serves the days after it.
    pub fn push(&mut self, mut today: DayData, settings: &Settings) {
        if self.days.back().is_none_or(|last| last.day < today.day) {
            self.index.add(&today);
            today.settle(settings, &self.names);
            self.days.push_back(today);
        }
    }

    /// The unbroken run of stored days that ends the day before `day`, oldest first.
    pub fn contiguous_before(&self, day: Day) -> Vec<&DayData> {
        let mut run: Vec<&DayData> = Vec::new();
        let mut expected = day.prev();
        for data in self.days.iter().rev() {
            if data.day != expected {
                break;
            }
            run.push(data);
            expected = expected.prev();
        }
        run.reverse();
        run
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::local::LocalDir;
    use crate::sink::Table;

    /// A day read by dictionary key, over batches and with nulls, is what reading and interning
    /// every row in order gives: the same ids, classes, names and process columns.
    #[test]
    fn a_day_read_by_its_dictionaries_is_what_interning_every_row_gives() {
        let settings = crate::config::Config::default().validate().unwrap();
        let day = Day::parse("2026-11-01").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let results = Results::new(std::sync::Arc::new(LocalDir::new(dir.path())));
        let hosts = ["winatp-gw-weu.microsoft.com", "crl.microsoft.com", "x.example"];
        let files = ["mssense.exe", "svchost.exe"];
        let tags = ["", "allow-list:mde.toml", "exclusion:mecm"];
        let text = |value: Option<String>| value.map_or(Cell::Null, Cell::Text);
        let row_of = |i: usize| {
            let file = files[i % 2];
            [
                Some(format!("dev-{}", (i * 7) % 13)),
                (i % 5 != 0).then(|| format!("name-{}", i % 13)),
                Some(hosts[i % 3].to_string()),
                Some(file.to_string()),
                Some(format!(r"c:\folder{}\{file}", i % 4)),
                (i % 11 != 0).then(|| format!("sha-{}", i % 6)),
                Some("Microsoft Corporation".to_string()),
                Some(tags[(i / 2) % 3].to_string()),
                (i % 4 == 0).then(|| "case".to_string()),
            ]
        };
        let mut table = Table::new(tables::DEVICE_HOSTS, DEVICE_HOSTS_COLUMNS);
        let rows = 2600;
        for i in 0..rows {
            let [device, name, host, file, folder, sha1, company, tag, spelling] = row_of(i).map(text);
            table.push(vec![
                Cell::Day(day),
                device,
                name,
                host,
                Cell::Bool(i % 7 != 0),
                Cell::Int(443),
                file,
                folder,
                sha1,
                company,
                tag,
                spelling,
                Cell::Int(i as i64),
                Cell::Int(1),
            ]);
        }
        results.write_day_parquet(&table, day).unwrap();
        let mut daily = Table::new(tables::DAILY, DAILY_COLUMNS);
        daily.push(vec![
            Cell::Day(day),
            Cell::from("ConnectionSuccess"),
            Cell::Int(1),
            Cell::Int(1),
            Cell::from("kql"),
        ]);
        results.write_day(&daily, day).unwrap();

        let mut names = Names::default();
        let data = DayData::load(&results, day, &settings, &mut names).unwrap().unwrap();
        assert_eq!(data.activity.len(), rows);
        let mut expected = Names::default();
        for (i, a) in data.activity.iter().enumerate() {
            let values = row_of(i);
            let [device, name, host, file, folder, sha1, company, tag, spelling] =
                values.each_ref().map(|v| v.as_deref().unwrap_or(""));
            let identity = format!("{}:{file}{}", file.len(), identity_folder(&settings, file, folder, host));
            assert_eq!(a.device, expected.devices.intern(device), "row {i}");
            assert_eq!(a.host, expected.hosts.intern(host), "row {i}");
            assert_eq!(a.identity, expected.identities.intern(&identity), "row {i}");
            assert_eq!(a.spelling, (!spelling.is_empty()).then(|| expected.spellings.intern(spelling)), "row {i}");
            let class = [ProcessClass::Unexpected, ProcessClass::Expected, ProcessClass::Excluded]
                [tags.iter().position(|t| *t == tag).unwrap()];
            assert_eq!((a.class, a.listed, a.events, a.row), (class, i % 7 != 0, i as u64, i), "row {i}");
            let sensor = settings.detect.silent_device.sensor_processes.iter().any(|s| s.eq_ignore_ascii_case(file));
            assert_eq!(a.sensor, class == ProcessClass::Expected && sensor, "row {i}");
            assert_eq!(data.process(a), Some((file, folder, sha1, company)), "row {i}");
            // a device's name is the one of its first row
            let first = (0..rows).find(|&j| row_of(j)[0] == values[0]).unwrap();
            assert_eq!(data.device_names[&a.device], row_of(first)[1].clone().unwrap_or_default(), "row {i} ({name})");
        }
    }
}
