//! Exact distinct-device aggregation over canonical batches.
//!
//! Kusto's `dcount` is a HyperLogLog estimate above 1,000 values; here every group keeps the
//! set of its DeviceIds, so `Connections` is exact at any size. Only rows that matched a host
//! reach a set, which keeps memory proportional to telemetry rows, not to the input.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Int32Type, TimestampMicrosecondType};
use arrow_array::{Array, ArrayRef, RecordBatch, StringArray};
use rustc_hash::{FxBuildHasher, FxHashMap, FxHashSet};

use crate::config::Settings;
use crate::hunt::rules::{expected_by, first_exclusion, ProcessFields};
use crate::schema::col;
use crate::time::Day;

fn get<'a>(a: Text<'a>, row: usize) -> Option<&'a str> {
    a.get(row)
}

/// The key a null value stands under in caches keyed by dictionary keys.
const NULL_KEY: u32 = u32::MAX;

/// A canonical text column (see [`crate::schema`]): strings, or keys into the strings of a
/// dictionary that the batches of one Parquet row group share.
#[derive(Clone, Copy)]
pub enum Text<'a> {
    Plain(&'a StringArray),
    Keys { keys: &'a arrow_array::UInt32Array, values: &'a StringArray, dictionary: &'a ArrayRef },
}

impl<'a> Text<'a> {
    pub fn of(array: &'a dyn Array) -> Text<'a> {
        match array.as_any_dictionary_opt() {
            Some(keyed) => Text::Keys {
                keys: keyed.keys().as_primitive::<arrow_array::types::UInt32Type>(),
                values: keyed.values().as_string::<i32>(),
                dictionary: keyed.values(),
            },
            None => Text::Plain(array.as_string::<i32>()),
        }
    }

    /// What stands for the row's value in caches: its dictionary key (`NULL_KEY` for null), or
    /// `NULL_KEY` in a column that is all null; `None` when the column is plain strings.
    #[inline]
    fn key(&self, row: usize) -> Option<u32> {
        match self {
            Text::Keys { keys, .. } => Some(if keys.is_valid(row) { keys.value(row) } else { NULL_KEY }),
            Text::Plain(a) if a.null_count() == a.len() => Some(NULL_KEY),
            Text::Plain(_) => None,
        }
    }

    /// Whether [`Text::key`] stands for every row's value.
    fn keyable(&self) -> bool {
        match self {
            Text::Plain(a) => a.null_count() == a.len(),
            Text::Keys { .. } => true,
        }
    }

    /// The dictionary the keys index, if keyed.
    fn dictionary(&self) -> Option<&'a ArrayRef> {
        match self {
            Text::Keys { dictionary, .. } => Some(dictionary),
            Text::Plain(_) => None,
        }
    }

    #[inline]
    pub fn get(&self, row: usize) -> Option<&'a str> {
        match self {
            Text::Plain(a) => a.is_valid(row).then(|| a.value(row)),
            Text::Keys { keys, values, .. } => {
                let key = keys.is_valid(row).then(|| keys.value(row) as usize)?;
                (key < values.len() && values.is_valid(key)).then(|| values.value(key))
            }
        }
    }
}

/// The input columns the hunt reads under these settings; sources decode nothing else (the
/// other canonical columns arrive as nulls).
pub fn needed_columns(settings: &Settings) -> Vec<&'static str> {
    use crate::schema as s;
    let mut columns = vec![
        s::DEVICE_ID,
        s::ACTION_TYPE,
        s::REMOTE_URL,
        s::REMOTE_PORT,
        s::PROCESS_FILE_NAME,
        s::PROCESS_FOLDER_PATH,
        s::PROCESS_COMPANY,
        // the detectors' evidence names devices and binaries
        s::DEVICE_NAME,
        s::PROCESS_SHA1,
    ];
    let rules = &settings.exclusions;
    if rules.iter().any(|r| !r.command_line_contains.is_empty()) {
        columns.push(s::PROCESS_COMMAND_LINE);
    }
    if rules.iter().any(|r| !r.parent_file_names.is_empty()) {
        columns.push(s::PROCESS_PARENT);
    }
    if rules.iter().any(|r| !r.remote_cidrs.is_empty()) {
        columns.push(s::REMOTE_IP);
    }
    if !settings.scope.is_everything() {
        columns.push(s::MACHINE_GROUP);
    }
    columns
}

/// The tables' string-keyed groups. hashbrown rather than std: a row looks its group up by a key
/// borrowed from the batch ([`DayName`], [`DayHostAction`], [`ProcessProbe`]) and the owned key is
/// built only when the group is new, so the hot loop allocates nothing per row.
pub type GroupMap<K, V> = hashbrown::HashMap<K, V, FxBuildHasher>;

/// A `(day, name)` key borrowed from the row; hashes as the owned key does.
#[derive(Hash)]
struct DayName<'a>(Day, &'a str);

impl hashbrown::Equivalent<(Day, Box<str>)> for DayName<'_> {
    fn equivalent(&self, key: &(Day, Box<str>)) -> bool {
        self.0 == key.0 && self.1 == &*key.1
    }
}

impl From<&DayName<'_>> for (Day, Box<str>) {
    fn from(probe: &DayName<'_>) -> Self {
        (probe.0, probe.1.into())
    }
}

/// A `(day, host, ActionType)` key borrowed from the row.
#[derive(Hash)]
struct DayHostAction<'a>(Day, &'a str, &'a str);

impl hashbrown::Equivalent<(Day, Box<str>, Box<str>)> for DayHostAction<'_> {
    fn equivalent(&self, key: &(Day, Box<str>, Box<str>)) -> bool {
        self.0 == key.0 && self.1 == &*key.1 && self.2 == &*key.2
    }
}

impl From<&DayHostAction<'_>> for (Day, Box<str>, Box<str>) {
    fn from(probe: &DayHostAction<'_>) -> Self {
        (probe.0, probe.1.into(), probe.2.into())
    }
}

/// A [`ProcessKey`] borrowed from the row (file name and folder already lowercased).
#[derive(Hash)]
struct ProcessProbe<'a>(Day, &'a str, &'a str, &'a str, &'a str, Option<usize>);

impl hashbrown::Equivalent<ProcessKey> for ProcessProbe<'_> {
    fn equivalent(&self, key: &ProcessKey) -> bool {
        self.0 == key.0
            && self.1 == &*key.1
            && self.2 == &*key.2
            && self.3 == &*key.3
            && self.4 == &*key.4
            && self.5 == key.5
    }
}

impl From<&ProcessProbe<'_>> for ProcessKey {
    fn from(p: &ProcessProbe<'_>) -> Self {
        (p.0, p.1.into(), p.2.into(), p.3.into(), p.4.into(), p.5)
    }
}

/// What the hunt needs to know of one RemoteUrl value, worked out once per partial: a batch of
/// telemetry rows repeats a few hundred spellings of a few dozen hosts.
#[derive(Debug, Clone)]
struct UrlClass {
    kql_reference: bool,
    normalized_reference: bool,
    /// The normalized host, when listed.
    host: Option<Box<str>>,
    lookalike: Option<Box<str>>,
    /// [`spelling`] flags when the spelling hides a reference host from the reference query.
    spelled: u8,
    /// The partial's number for `host` (or `lookalike`), for the caches keyed by it.
    host_id: u32,
}

impl UrlClass {
    fn of(settings: &Settings, url: Option<&str>, hosts: &mut Interner) -> UrlClass {
        let class = settings.hosts.classify(url);
        let evading = class.evades_reference_query();
        let host_id = hosts.intern(class.host.as_deref().or(class.lookalike.as_deref()).unwrap_or(""));
        UrlClass {
            kql_reference: class.kql_reference,
            normalized_reference: class.normalized_reference,
            host: class.host.map(|h| h.as_ref().into()),
            lookalike: class.lookalike.map(|h| h.as_ref().into()),
            spelled: if evading { spelling::of(url.unwrap_or("")) } else { 0 },
            host_id,
        }
    }

    fn evades_reference_query(&self) -> bool {
        self.normalized_reference && !self.kql_reference
    }
}

/// `value` in ASCII lowercase, into a reused buffer.
fn lowercase_into(out: &mut String, value: &str) {
    out.clear();
    out.push_str(value);
    out.make_ascii_lowercase();
}

/// Distinct RemoteUrl values remembered per partial; past this the memo starts again, so a
/// file of unique URLs costs the classification it always did, and bounded memory.
const URL_MEMO_LIMIT: usize = 4096;

/// Strings interned per partial (DeviceIds, process-on-host identities): a group holds small
/// ids, so a value seen in many groups is stored once, and sets are cheap to build, merge and
/// drop.
#[derive(Debug, Default, Clone)]
pub struct Interner {
    ids: FxHashMap<Box<str>, u32>,
    names: Vec<Box<str>>,
}

impl Interner {
    pub fn intern(&mut self, value: &str) -> u32 {
        if let Some(&id) = self.ids.get(value) {
            return id;
        }
        let id = u32::try_from(self.names.len()).expect("fewer than 4 billion distinct values");
        self.names.push(value.into());
        self.ids.insert(value.into(), id);
        id
    }

    pub fn name(&self, id: u32) -> &str {
        &self.names[id as usize]
    }

    /// This interner's id for each of `other`'s ids, interning what is new (in `other`'s id
    /// order, so new values get the ids interning them one by one in that order would give).
    pub fn absorb(&mut self, other: &Interner) -> Vec<u32> {
        other.names.iter().map(|name| self.intern(name)).collect()
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

/// Distinct devices and events of one group.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct GroupAgg {
    pub devices: FxHashSet<u32>,
    pub events: u64,
}

impl GroupAgg {
    fn add(&mut self, device: u32, events: u64) {
        self.events += events;
        self.devices.insert(device);
    }

    /// Moves the other partial's device ids into this partial's numbering.
    fn renumber(&mut self, map: &[u32]) {
        self.devices = self.devices.iter().map(|&d| map[d as usize]).collect();
    }

    fn merge(&mut self, mut other: GroupAgg) {
        self.events += other.events;
        if other.devices.len() > self.devices.len() {
            std::mem::swap(&mut self.devices, &mut other.devices);
        }
        self.devices.extend(other.devices);
    }
}

/// One (day, host, ActionType) group of the hosts table.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct HostAgg {
    pub group: GroupAgg,
    pub ports: FxHashSet<i32>,
    /// Events whose RemoteUrl spelling hid a reference host from the reference query.
    pub evasion_events: u64,
}

/// Key of the processes table: day, host, lowercase file name, lowercase folder path, company,
/// and the exclusion rule (index into the settings) that tagged the rows.
pub type ProcessKey = (Day, Box<str>, Box<str>, Box<str>, Box<str>, Option<usize>);

/// The spellings of a reference host that the reference query misses (bit flags).
pub mod spelling {
    pub const CASE: u8 = 1;
    pub const PORT: u8 = 2;
    pub const TRAILING_DOT: u8 = 4;
    pub const WHITESPACE: u8 = 8;
    pub const PATH: u8 = 16;
    pub const NO_SCHEME: u8 = 32;
    pub const USERINFO: u8 = 64;
    /// None of the above (a malformed scheme, say).
    pub const OTHER: u8 = 128;
    /// Flag and name, in the order names are joined (`case+port`).
    pub const NAMES: [(u8, &str); 8] = [
        (CASE, "case"),
        (PORT, "port"),
        (TRAILING_DOT, "trailing-dot"),
        (WHITESPACE, "whitespace"),
        (PATH, "path"),
        (NO_SCHEME, "no-scheme"),
        (USERINFO, "userinfo"),
        (OTHER, "other"),
    ];

    /// What in `url` (whose normalized host is a reference host that the reference query does
    /// not match) hides it from the reference query.
    pub fn of(url: &str) -> u8 {
        let mut flags = 0;
        if url.trim() != url {
            flags |= WHITESPACE;
        }
        let url = url.trim();
        let Some(domain) = crate::hunt::host::kql_domain(url) else {
            return flags | OTHER;
        };
        if url.contains("//") {
            if !url.contains("://") || url.starts_with("//") {
                flags |= NO_SCHEME;
            }
            if domain.contains('@') {
                flags |= USERINFO;
            }
        } else {
            if url.contains('/') {
                flags |= PATH;
            }
            let host_part = url.split('/').next().unwrap_or(url);
            if host_part.contains(':') {
                flags |= PORT;
            }
        }
        let host_part = domain.split(['/', ':']).next().unwrap_or(domain);
        if host_part.bytes().any(|c| c.is_ascii_uppercase()) {
            flags |= CASE;
        }
        if host_part.ends_with('.') {
            flags |= TRAILING_DOT;
        }
        if flags == 0 {
            OTHER
        } else {
            flags
        }
    }

    /// `case+port`, or "" for none.
    pub fn name(flags: u8) -> String {
        NAMES.iter().filter(|(f, _)| flags & f != 0).map(|(_, n)| *n).collect::<Vec<_>>().join("+")
    }
}

/// Key of a day's device activity, the detectors' evidence: device, process-on-host identity (an
/// [`Interner`] id of [`activity_identity`]), RemotePort, the spelling flags of a reference
/// host the reference query missed, and the exclusion rule that tagged the rows. Millions of
/// these are held through the scan of a large night: 28 bytes, 4-byte aligned.
pub type ActivityKey = (u32, u32, Option<i32>, u8, Option<u32>);

/// One day's device activity. A map per day rather than one for the run: the day is not
/// repeated in every key, and growing or merging one day's map never needs room for all days.
pub type DayActivity = FxHashMap<ActivityKey, ActivityAgg>;

/// Events and `ConnectionFailed` events of one activity key.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ActivityAgg {
    pub events: u64,
    pub failed: u64,
}

/// The fields of a process-on-host identity, in [`activity_identity`] order.
pub const IDENTITY_FIELDS: usize = 5;

/// Host, lowercase file name, lowercase folder, SHA1 and company as one string: each field is its
/// byte length, `:`, then its bytes, so no value can be mistaken for a separator.
pub fn activity_identity(out: &mut String, fields: [&str; IDENTITY_FIELDS], lowercase: [bool; IDENTITY_FIELDS]) {
    // Built for every telemetry row when the detectors are on: digits and ASCII case by hand,
    // not through the formatting machinery or char by char.
    out.clear();
    for (value, lower) in fields.into_iter().zip(lowercase) {
        let mut digits = [0u8; 20];
        out.extend(crate::time::decimal(value.len() as u64, &mut digits).iter().map(|&d| char::from(d)));
        out.push(':');
        let start = out.len();
        out.push_str(value);
        if lower {
            out.as_mut_str()[start..].make_ascii_lowercase();
        }
    }
}

/// The fields of an identity written by [`activity_identity`].
pub fn identity_fields(identity: &str) -> [&str; IDENTITY_FIELDS] {
    let mut fields = [""; IDENTITY_FIELDS];
    let mut rest = identity;
    for field in &mut fields {
        let Some((length, tail)) = rest.split_once(':') else { break };
        let length: usize = length.parse().unwrap_or(0).min(tail.len());
        *field = &tail[..length];
        rest = &tail[length..];
    }
    fields
}

/// Row counts the run record reports.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct HuntCounts {
    /// Rows the hunt looked at (those the sources did not already rule out by RemoteUrl).
    pub rows_hunted: u64,
    pub rows_out_of_scope: u64,
    pub rows_reference_kql: u64,
    pub rows_reference_normalized: u64,
    /// Reference host under `normalized`, missed by the reference query's spelling rules.
    pub rows_evading: u64,
    /// Rows to any listed host (reference or extra).
    pub rows_telemetry: u64,
    /// Telemetry rows per exclusion rule index.
    pub excluded_by_rule: BTreeMap<usize, u64>,
    pub rows_without_device: u64,
}

impl HuntCounts {
    pub fn add(&mut self, other: HuntCounts) {
        self.rows_hunted += other.rows_hunted;
        self.rows_out_of_scope += other.rows_out_of_scope;
        self.rows_reference_kql += other.rows_reference_kql;
        self.rows_reference_normalized += other.rows_reference_normalized;
        self.rows_evading += other.rows_evading;
        self.rows_telemetry += other.rows_telemetry;
        self.rows_without_device += other.rows_without_device;
        for (rule, n) in other.excluded_by_rule {
            *self.excluded_by_rule.entry(rule).or_default() += n;
        }
    }
}

/// A partial aggregate: built per batch, merged by `reduce`.
#[derive(Debug, Default, Clone)]
pub struct Partial {
    pub daily_kql: GroupMap<(Day, Box<str>), GroupAgg>,
    pub daily_normalized: GroupMap<(Day, Box<str>), GroupAgg>,
    pub hosts: GroupMap<(Day, Box<str>, Box<str>), HostAgg>,
    /// Devices with a `ConnectionFailed` per (day, host).
    pub failed: GroupMap<(Day, Box<str>), FxHashSet<u32>>,
    /// The DeviceIds the groups refer to.
    pub devices: Interner,
    pub processes: GroupMap<ProcessKey, GroupAgg>,
    /// Per device: what it reached through which process, for the detectors (telemetry and
    /// look-alike hosts).
    pub activity: FxHashMap<Day, DayActivity>,
    /// The process-on-host identities `activity` refers to.
    pub identities: Interner,
    /// The DeviceName of each device id on each day (the smallest seen that day, so merging in
    /// any order agrees): a day's evidence names the device as it was named that day, whatever
    /// other days the run holds.
    pub device_names: FxHashMap<(Day, u32), Box<str>>,
    pub counts: HuntCounts,
    /// Scratch: RemoteUrl value → its class (see [`UrlClass`]); not part of the aggregate.
    url_memo: GroupMap<Box<str>, UrlClass>,
    /// Scratch: what was worked out per dictionary key of keyed batches (see [`Keyed`]).
    keyed: Keyed,
}

/// The process columns a row's process facts depend on, in [`ProcessKeys`] order.
const PROCESS_COLUMNS: [usize; 7] = [
    col::PROCESS_FILE_NAME,
    col::PROCESS_FOLDER_PATH,
    col::PROCESS_SHA1,
    col::PROCESS_COMPANY,
    col::PROCESS_COMMAND_LINE,
    col::PROCESS_PARENT,
    col::REMOTE_IP,
];

/// The dictionary keys of a row's process columns, and the host number and role of its
/// RemoteUrl (telemetry host or look-alike).
type ProcessKeys = ([u32; 7], u32, bool);

/// What a row's process fields give on a host: worked out once per distinct [`ProcessKeys`].
#[derive(Debug, Clone, Default)]
struct ProcessFacts {
    /// The exclusion rule that tags the rows (never for an expected process).
    excluded: Option<usize>,
    /// The process-on-host identity, interned (when detecting).
    identity: u32,
    file_lower: String,
    folder_lower: String,
    /// The identity's text, kept only as a buffer to build it in.
    identity_text: String,
}

impl ProcessFacts {
    /// The facts of `fields` (and the row's SHA1 and company) on `host`: a telemetry host, where
    /// an expected process needs no excuse and exclusions only tag the unexpected ones, or a
    /// look-alike, where every exclusion applies. The identity is interned only when detecting.
    #[allow(clippy::too_many_arguments)]
    fn work_out(
        &mut self,
        settings: &Settings,
        fields: &ProcessFields<'_>,
        sha1: &str,
        company: &str,
        host: &str,
        telemetry: bool,
        detecting: bool,
        identities: &mut Interner,
    ) {
        let (file, folder) = (fields.file_name.unwrap_or(""), fields.folder_path.unwrap_or(""));
        let expected = telemetry && expected_by(&settings.expected, file, folder, host).is_some();
        self.excluded = if expected { None } else { first_exclusion(&settings.exclusions, fields) };
        if detecting {
            activity_identity(
                &mut self.identity_text,
                [host, file, folder, sha1, company],
                [false, true, true, false, false],
            );
            self.identity = identities.intern(&self.identity_text);
        }
        lowercase_into(&mut self.file_lower, file);
        lowercase_into(&mut self.folder_lower, folder);
    }
}

/// Work keyed by the dictionary keys of the batches of one Parquet row group (their text columns
/// share one dictionary each): a DeviceId is interned once per key, a process's rules and
/// identity are worked out once per combination of keys, not once per row. Forgotten when the
/// dictionaries change.
#[derive(Debug, Default, Clone)]
struct Keyed {
    /// The dictionaries the keys index (held, so that one is never mistaken for a later one).
    device_dictionary: Option<ArrayRef>,
    devices: Vec<u32>,
    process_dictionaries: [Option<ArrayRef>; 7],
    processes: FxHashMap<ProcessKeys, ProcessFacts>,
    /// Host names (and look-alikes) by number, for [`ProcessKeys`].
    hosts: Interner,
}

/// Whether `column` is keyed into `dictionary` (both absent counts: an unkeyed column).
pub(crate) fn same_dictionary(known: &Option<ArrayRef>, column: Option<&ArrayRef>) -> bool {
    match (known, column) {
        (Some(known), Some(column)) => Arc::ptr_eq(known, column),
        (None, None) => true,
        _ => false,
    }
}

impl Keyed {
    /// Takes up the DeviceId column's dictionary; `true` when its keys can be cached by.
    fn follow_devices(&mut self, device_id: Text<'_>) -> bool {
        let Text::Keys { values, dictionary, .. } = device_id else { return false };
        if !same_dictionary(&self.device_dictionary, Some(dictionary)) {
            self.device_dictionary = Some(dictionary.clone());
            self.devices.clear();
            self.devices.resize(values.len(), NULL_KEY);
        }
        true
    }

    /// Takes up the process columns' dictionaries; `true` when every one of them is keyed (or
    /// all null) so that their keys can be cached by.
    fn follow_processes(&mut self, process: &[Text<'_>; 7]) -> bool {
        let changed =
            process.iter().zip(&self.process_dictionaries).any(|(t, known)| !same_dictionary(known, t.dictionary()));
        if changed {
            self.process_dictionaries = process.each_ref().map(|t| t.dictionary().cloned());
            self.processes.clear();
        }
        process.iter().all(Text::keyable)
    }
}

fn merge_maps<K: std::hash::Hash + Eq, V>(into: &mut GroupMap<K, V>, from: GroupMap<K, V>, merge: impl Fn(&mut V, V)) {
    for (k, v) in from {
        match into.entry(k) {
            hashbrown::hash_map::Entry::Occupied(mut e) => merge(e.get_mut(), v),
            hashbrown::hash_map::Entry::Vacant(e) => {
                e.insert(v);
            }
        }
    }
}

fn set_min_name(names: &mut FxHashMap<(Day, u32), Box<str>>, device: (Day, u32), name: &str) {
    match names.get_mut(&device) {
        Some(current) if name < current.as_ref() => *current = name.into(),
        Some(_) => {}
        None => {
            names.insert(device, name.into());
        }
    }
}

/// The group of `probe`, created (and its owned key built) only when new.
fn entry<'m, K, Q, V>(map: &'m mut GroupMap<K, V>, probe: &Q) -> &'m mut V
where
    K: std::hash::Hash + Eq + for<'q> From<&'q Q>,
    Q: std::hash::Hash + hashbrown::Equivalent<K> + ?Sized,
    V: Default,
{
    map.raw_entry_mut().from_key(probe).or_insert_with(|| (K::from(probe), V::default())).1
}

impl Partial {
    /// The groups split by day, each day a partial of its own (with its own device and identity
    /// numbering), and the row counts, which belong to the run rather than to a day. The scan
    /// writes a day, and lets go of it, as soon as every unit that can hold its rows is read; a
    /// row group of a daily export holds one day, or two when late rows spill over midnight.
    pub fn into_days(mut self) -> (HuntCounts, BTreeMap<Day, Partial>) {
        let counts = std::mem::take(&mut self.counts);
        self.url_memo = GroupMap::default();
        let mut days: BTreeSet<Day> = self.activity.keys().copied().collect();
        days.extend(self.daily_kql.keys().chain(self.daily_normalized.keys()).map(|k| k.0));
        days.extend(self.hosts.keys().map(|k| k.0));
        days.extend(self.failed.keys().map(|k| k.0));
        days.extend(self.processes.keys().map(|k| k.0));
        days.extend(self.device_names.keys().map(|k| k.0));
        if days.len() <= 1 {
            return (counts, days.first().map(|&day| (day, self)).into_iter().collect());
        }

        /// One day's partial and the old ids it has renumbered (`u32::MAX`: not yet).
        struct Split {
            part: Partial,
            devices: Vec<u32>,
            identities: Vec<u32>,
        }
        fn renumber(slot: &mut u32, into: &mut Interner, from: &Interner, old: u32) -> u32 {
            if *slot == u32::MAX {
                *slot = into.intern(from.name(old));
            }
            *slot
        }
        impl Split {
            fn device(&mut self, old: u32, from: &Interner) -> u32 {
                renumber(&mut self.devices[old as usize], &mut self.part.devices, from, old)
            }
            fn devices(&mut self, set: FxHashSet<u32>, from: &Interner) -> FxHashSet<u32> {
                set.into_iter().map(|d| self.device(d, from)).collect()
            }
        }
        let (devices, identities) = (std::mem::take(&mut self.devices), std::mem::take(&mut self.identities));
        let mut split: BTreeMap<Day, Split> = BTreeMap::new();
        let sizes = (devices.len(), identities.len());
        fn of_day(split: &mut BTreeMap<Day, Split>, day: Day, (devices, identities): (usize, usize)) -> &mut Split {
            split.entry(day).or_insert_with(|| Split {
                part: Partial::default(),
                devices: vec![u32::MAX; devices],
                identities: vec![u32::MAX; identities],
            })
        }
        for (key, mut agg) in self.daily_kql {
            let s = of_day(&mut split, key.0, sizes);
            agg.devices = s.devices(agg.devices, &devices);
            s.part.daily_kql.insert(key, agg);
        }
        for (key, mut agg) in self.daily_normalized {
            let s = of_day(&mut split, key.0, sizes);
            agg.devices = s.devices(agg.devices, &devices);
            s.part.daily_normalized.insert(key, agg);
        }
        for (key, mut agg) in self.hosts {
            let s = of_day(&mut split, key.0, sizes);
            agg.group.devices = s.devices(agg.group.devices, &devices);
            s.part.hosts.insert(key, agg);
        }
        for (key, set) in self.failed {
            let s = of_day(&mut split, key.0, sizes);
            let set = s.devices(set, &devices);
            s.part.failed.insert(key, set);
        }
        for (key, mut agg) in self.processes {
            let s = of_day(&mut split, key.0, sizes);
            agg.devices = s.devices(agg.devices, &devices);
            s.part.processes.insert(key, agg);
        }
        for ((day, device), name) in self.device_names {
            let s = of_day(&mut split, day, sizes);
            let device = s.device(device, &devices);
            s.part.device_names.insert((day, device), name);
        }
        for (day, activity) in self.activity {
            let s = of_day(&mut split, day, sizes);
            let renumbered = activity
                .into_iter()
                .map(|((device, identity, port, spelled, excluded), agg)| {
                    let device = s.device(device, &devices);
                    let identity =
                        renumber(&mut s.identities[identity as usize], &mut s.part.identities, &identities, identity);
                    ((device, identity, port, spelled, excluded), agg)
                })
                .collect();
            s.part.activity.insert(day, renumbered);
        }
        (counts, split.into_iter().map(|(day, s)| (day, s.part)).collect())
    }

    /// Merges another partial into this one. Associative and commutative, so rayon may reduce
    /// in any order and the tables come out the same.
    pub fn merge(mut self, mut other: Partial) -> Partial {
        if other.devices.len() > self.devices.len() {
            std::mem::swap(&mut self, &mut other);
        }
        let identity_map = self.identities.absorb(&other.identities);
        let mut device_map: Vec<u32> = Vec::new();
        if !other.devices.is_empty() {
            let map: Vec<u32> = self.devices.absorb(&other.devices);
            for agg in other
                .daily_kql
                .values_mut()
                .chain(other.daily_normalized.values_mut())
                .chain(other.processes.values_mut())
            {
                agg.renumber(&map);
            }
            for agg in other.hosts.values_mut() {
                agg.group.renumber(&map);
            }
            for set in other.failed.values_mut() {
                *set = set.iter().map(|&d| map[d as usize]).collect();
            }
            device_map = map;
        }
        for (day, activity) in other.activity {
            let into_day = self.activity.entry(day).or_default();
            for ((device, identity, port, spelled, excluded), agg) in activity {
                let key = (device_map[device as usize], identity_map[identity as usize], port, spelled, excluded);
                let into = into_day.entry(key).or_default();
                into.events += agg.events;
                into.failed += agg.failed;
            }
        }
        for ((day, device), name) in other.device_names {
            set_min_name(&mut self.device_names, (day, device_map[device as usize]), &name);
        }
        merge_maps(&mut self.daily_kql, other.daily_kql, GroupAgg::merge);
        merge_maps(&mut self.daily_normalized, other.daily_normalized, GroupAgg::merge);
        merge_maps(&mut self.hosts, other.hosts, |a, b| {
            a.group.merge(b.group);
            a.ports.extend(b.ports);
            a.evasion_events += b.evasion_events;
        });
        merge_maps(&mut self.failed, other.failed, |a, b| a.extend(b));
        merge_maps(&mut self.processes, other.processes, GroupAgg::merge);
        self.counts.add(other.counts);
        self
    }

    /// Aggregates one canonical batch (see [`crate::schema::canonical`]).
    pub fn add_batch(&mut self, settings: &Settings, batch: &RecordBatch) {
        self.add_weighted_batch(settings, batch, None);
    }

    /// Aggregates a canonical batch whose rows stand for `events[row]` events each (a source's
    /// pre-aggregation); `None` is one event per row. Distinct devices do not depend on the
    /// weights, so the tables are the same as from the rows the weights count.
    pub fn add_weighted_batch(&mut self, settings: &Settings, batch: &RecordBatch, events: Option<&[u64]>) {
        let time = batch.column(col::TIME).as_primitive::<TimestampMicrosecondType>();
        let text = |i: usize| Text::of(batch.column(i).as_ref());
        let (device_id, device_name, action_type, remote_url) =
            (text(col::DEVICE_ID), text(col::DEVICE_NAME), text(col::ACTION_TYPE), text(col::REMOTE_URL));
        let machine_group = text(col::MACHINE_GROUP);
        let process = PROCESS_COLUMNS.map(text);
        let [file_name, folder_path, sha1, company, command_line, parent, remote_ip] = process;
        let remote_port = batch.column(col::REMOTE_PORT).as_primitive::<Int32Type>();
        let scoped = !settings.scope.is_everything();
        // Per-device activity is the detectors' evidence; without them it costs for nothing.
        let detecting = settings.detect.enabled;
        // Out of `self` for the batch, so a row borrows its class while the groups change.
        let mut memo = std::mem::take(&mut self.url_memo);
        let mut keyed = std::mem::take(&mut self.keyed);
        let devices_keyed = keyed.follow_devices(device_id);
        let processes_keyed = keyed.follow_processes(&process);
        let mut scratch = ProcessFacts::default();

        for row in 0..batch.num_rows() {
            let weight = events.map_or(1, |e| e[row]);
            self.counts.rows_hunted += weight;
            let url = get(remote_url, row);
            let unremembered;
            let class: &UrlClass = match url {
                Some(url) if url.len() <= 512 => {
                    if memo.len() >= URL_MEMO_LIMIT {
                        memo.clear();
                    }
                    let hosts = &mut keyed.hosts;
                    let (_, class) = memo
                        .raw_entry_mut()
                        .from_key(url)
                        .or_insert_with(|| (url.into(), UrlClass::of(settings, url.into(), hosts)));
                    class
                }
                _ => {
                    unremembered = UrlClass::of(settings, url, &mut keyed.hosts);
                    &unremembered
                }
            };
            if !class.kql_reference && class.host.is_none() && class.lookalike.is_none() {
                continue;
            }
            if scoped && !settings.scope.admits(get(machine_group, row), get(device_name, row)) {
                self.counts.rows_out_of_scope += weight;
                continue;
            }
            let day = Day::of_micros(time.value(row));
            // Kusto strings are never null, so a missing DeviceId is the value "" for dcount.
            let device_text = get(device_id, row).unwrap_or("");
            if device_text.is_empty() {
                self.counts.rows_without_device += weight;
            }
            let device = match device_id.key(row).filter(|&key| devices_keyed && key != NULL_KEY) {
                Some(key) => {
                    let slot = keyed.devices.get_mut(key as usize).expect("sized to the dictionary");
                    if *slot == NULL_KEY {
                        *slot = self.devices.intern(device_text);
                    }
                    *slot
                }
                None => self.devices.intern(device_text),
            };
            let action = get(action_type, row).unwrap_or("");
            if class.kql_reference {
                self.counts.rows_reference_kql += weight;
                entry(&mut self.daily_kql, &DayName(day, action)).add(device, weight);
            }
            if class.normalized_reference {
                self.counts.rows_reference_normalized += weight;
                entry(&mut self.daily_normalized, &DayName(day, action)).add(device, weight);
            }
            let evading = class.evades_reference_query();
            if evading {
                self.counts.rows_evading += weight;
            }
            let port = remote_port.is_valid(row).then(|| remote_port.value(row));
            let failed = action == "ConnectionFailed";
            let telemetry = class.host.is_some();
            if !telemetry && !detecting {
                // A look-alike: the detectors' evidence only, never a telemetry row.
                continue;
            }
            let host = class.host.as_deref().or(class.lookalike.as_deref()).expect("relevant rows have one");
            let fields = || ProcessFields {
                file_name: get(file_name, row),
                folder_path: get(folder_path, row),
                command_line: get(command_line, row),
                parent_file_name: get(parent, row),
                remote_ip: get(remote_ip, row),
            };
            let work_out = |facts: &mut ProcessFacts, identities: &mut Interner| {
                let (sha1, company) = (get(sha1, row).unwrap_or(""), get(company, row).unwrap_or(""));
                facts.work_out(settings, &fields(), sha1, company, host, telemetry, detecting, identities);
            };
            let facts: &ProcessFacts = match processes_keyed {
                true => {
                    let keys = process.map(|column| column.key(row).expect("every process column is keyed"));
                    keyed.processes.entry((keys, class.host_id, telemetry)).or_insert_with(|| {
                        let mut facts = ProcessFacts::default();
                        work_out(&mut facts, &mut self.identities);
                        facts
                    })
                }
                false => {
                    work_out(&mut scratch, &mut self.identities);
                    &scratch
                }
            };
            let excluded = facts.excluded;
            if detecting {
                let spelled = if telemetry { class.spelled } else { 0 };
                let rule =
                    excluded.map(|rule| u32::try_from(rule).expect("2^32 compiled rules would not fit in memory"));
                let agg = self
                    .activity
                    .entry(day)
                    .or_default()
                    .entry((device, facts.identity, port, spelled, rule))
                    .or_default();
                agg.events += weight;
                agg.failed += if failed { weight } else { 0 };
                if let Some(name) = get(device_name, row) {
                    set_min_name(&mut self.device_names, (day, device), name);
                }
            }
            if !telemetry {
                continue;
            }
            self.counts.rows_telemetry += weight;
            let host_agg = entry(&mut self.hosts, &DayHostAction(day, host, action));
            host_agg.group.add(device, weight);
            if let Some(port) = port {
                host_agg.ports.insert(port);
            }
            host_agg.evasion_events += if evading { weight } else { 0 };
            if failed {
                entry(&mut self.failed, &DayName(day, host)).insert(device);
            }
            if let Some(rule) = excluded {
                *self.counts.excluded_by_rule.entry(rule).or_default() += weight;
            }
            let company = get(company, row).unwrap_or("");
            entry(
                &mut self.processes,
                &ProcessProbe(day, host, &facts.file_lower, &facts.folder_lower, company, excluded),
            )
            .add(device, weight);
        }
        self.url_memo = memo;
        self.keyed = keyed;
    }

    /// An estimate of the memory the device sets and the interned DeviceIds take, for
    /// `limits.max_device_set_bytes`: hash-set slots of a `u32` (with control byte and spare
    /// capacity) per member, and each name with its map entry.
    pub fn device_set_bytes(&self) -> u64 {
        const PER_MEMBER: u64 = 8;
        const PER_NAME: u64 = 48;
        let sets = self.daily_kql.values().chain(self.daily_normalized.values()).chain(self.processes.values());
        let members: usize = sets.map(|g| g.devices.len()).sum::<usize>()
            + self.hosts.values().map(|h| h.group.devices.len()).sum::<usize>()
            + self.failed.values().map(FxHashSet::len).sum::<usize>();
        let names: usize = self.devices.names.iter().map(|n| n.len()).sum();
        members as u64 * PER_MEMBER + self.devices.len() as u64 * PER_NAME + names as u64
    }

    /// The reference table under a match mode: (day, ActionType) → group.
    pub fn daily(&self, mode: crate::hunt::host::MatchMode) -> &GroupMap<(Day, Box<str>), GroupAgg> {
        match mode {
            crate::hunt::host::MatchMode::Kql => &self.daily_kql,
            crate::hunt::host::MatchMode::Normalized => &self.daily_normalized,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use super::*;
    use crate::config::Config;
    use crate::source::canonical::{RowBuilder, RowValues};
    use arrow_schema::DataType;

    #[test]
    fn spellings_that_hide_a_host_from_the_reference_query_are_named() {
        let gw = "winatp-gw-weu.microsoft.com";
        for (url, want) in [
            ("WINATP-GW-WEU.MICROSOFT.COM".to_string(), "case"),
            (format!("{gw}:443"), "port"),
            ("WINATP-GW-WEU.MICROSOFT.COM:443".to_string(), "case+port"),
            (format!("{gw}."), "trailing-dot"),
            (format!(" {gw} "), "whitespace"),
            (format!("{gw}/path"), "path"),
            (format!("//{gw}/x"), "no-scheme"),
            (format!("https://svc@{gw}/"), "userinfo"),
            ("HTTPS://Winatp-Gw-Weu.Microsoft.Com/x".to_string(), "case"),
            (format!("https://{gw}.:443/x"), "trailing-dot"),
            (format!("1http://{gw}/"), "other"),
        ] {
            assert_eq!(spelling::name(spelling::of(&url)), want, "{url}");
        }
    }

    #[test]
    fn identities_keep_any_value_apart() {
        let mut text = String::new();
        activity_identity(&mut text, ["h:1", "A.EXE", "c:\\x\\", "", "Co"], [false, true, true, false, false]);
        assert_eq!(identity_fields(&text), ["h:1", "a.exe", "c:\\x\\", "", "Co"]);
        // a value holding the separator cannot shift the fields
        activity_identity(&mut text, ["3:abc", "", "", "", ""], [false; IDENTITY_FIELDS]);
        assert_eq!(identity_fields(&text), ["3:abc", "", "", "", ""]);
        // lengths in bytes, in decimal; only ASCII letters change case
        let long = "winatp-gw-weu.microsoft.com";
        activity_identity(&mut text, [long, "ÉDGE.EXE", "C:\\Ü\\", "ab", ""], [false, true, true, false, false]);
        assert_eq!(text, "27:winatp-gw-weu.microsoft.com9:Édge.exe6:c:\\Ü\\2:ab0:");
    }

    /// Rows (device, action, url, port, process), and how often each occurs.
    const ROWS: &[(&str, &str, &str, i32, &str, u64)] = &[
        ("d1", "ConnectionSuccess", "winatp-gw-weu.microsoft.com", 443, "MsSense.exe", 3),
        ("d2", "ConnectionSuccess", "winatp-gw-weu.microsoft.com", 443, "MsSense.exe", 1),
        ("d1", "ConnectionFailed", "WINATP-GW-WEU.MICROSOFT.COM:443", 443, "powershell.exe", 2),
        ("d3", "ConnectionSuccess", "eu-v20.events.data.microsoft.com", 80, "svchost.exe", 5),
        ("", "ConnectionSuccess", "https://crl.microsoft.com/pki", 80, "CcmExec.exe", 4),
    ];

    fn batch(repeat: bool) -> (RecordBatch, Vec<u64>) {
        let mut builder = RowBuilder::default();
        let mut weights = Vec::new();
        for &(device, action, url, port, process, n) in ROWS {
            let mut row =
                RowValues { time_micros: 1_700_000_000_000_000, remote_port: Some(port), ..Default::default() };
            row.text[col::DEVICE_ID] = Some(Cow::Borrowed(device));
            row.text[col::ACTION_TYPE] = Some(Cow::Borrowed(action));
            row.text[col::REMOTE_URL] = Some(Cow::Borrowed(url));
            row.text[col::PROCESS_FILE_NAME] = Some(Cow::Borrowed(process));
            for _ in 0..if repeat { n } else { 1 } {
                builder.push(&row);
            }
            weights.push(n);
        }
        (builder.finish(), weights)
    }

    fn sorted<K: Ord + Clone, V: Clone>(map: &GroupMap<K, V>) -> Vec<(K, V)> {
        let mut items: Vec<(K, V)> = map.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        items.sort_by(|a, b| a.0.cmp(&b.0));
        items
    }

    /// A partial split by day gives, day by day, the tables the whole partial gives: same
    /// groups, devices, names and activity, whatever numbering each day got.
    #[test]
    fn a_partial_split_by_day_gives_each_day_its_own_tables() {
        let settings = Config::default().validate().unwrap();
        let mut builder = RowBuilder::default();
        let day_one = 1_700_000_000_000_000;
        for (i, &(device, action, url, port, process, _)) in ROWS.iter().enumerate() {
            // every row on both days, and the second day's rows in the opposite order
            for (time, name) in [(day_one, "first"), (day_one + 86_400_000_000 * (1 + i as i64 % 2), "second")] {
                let mut row = RowValues { time_micros: time, remote_port: Some(port), ..Default::default() };
                row.text[col::DEVICE_ID] = Some(Cow::Borrowed(device));
                row.text[col::DEVICE_NAME] = Some(Cow::Owned(format!("{device}-{name}")));
                row.text[col::ACTION_TYPE] = Some(Cow::Borrowed(action));
                row.text[col::REMOTE_URL] = Some(Cow::Borrowed(url));
                row.text[col::PROCESS_FILE_NAME] = Some(Cow::Borrowed(process));
                builder.push(&row);
            }
        }
        let mut whole = Partial::default();
        whole.add_batch(&settings, &builder.finish());
        let expected_counts = whole.counts.clone();
        let days: Vec<Day> = (0..3).map(|n| Day(Day::of_micros(day_one).0 + n)).collect();
        let tables_of = |p: &Partial, day: Day| {
            use crate::sink::tables;
            [
                tables::daily(p, crate::hunt::host::MatchMode::Kql, day),
                tables::daily(p, crate::hunt::host::MatchMode::Normalized, day),
                tables::hosts(p, &settings, day),
                tables::processes(p, &settings, day),
                tables::device_hosts(p, &settings, day),
            ]
        };
        let expected: Vec<_> = days.iter().map(|&day| tables_of(&whole, day)).collect();

        let (counts, split) = whole.into_days();
        assert_eq!(counts, expected_counts);
        assert_eq!(split.keys().copied().collect::<Vec<_>>(), days);
        for (day, expected) in days.iter().zip(&expected) {
            let part = &split[day];
            assert_eq!(part.counts, HuntCounts::default());
            assert!(part.hosts.keys().all(|k| k.0 == *day) && part.activity.keys().all(|d| d == day));
            assert!(expected[4].rows.len() > 0, "{day} has device activity");
            assert_eq!(&tables_of(part, *day), expected, "{day}");
        }
        // one day: the partial itself
        let mut one = Partial::default();
        one.add_batch(&settings, &batch(true).0);
        let devices = one.devices.len();
        let (_, split) = one.into_days();
        assert_eq!((split.len(), split.values().next().map(|p| p.devices.len())), (1, Some(devices)));
    }

    /// A pre-aggregated batch (one row per group, with its event count) gives the partial of
    /// the rows it counts: same groups, devices, events and counts.
    #[test]
    fn weighted_rows_equal_the_rows_they_count() {
        let settings = Config::default().validate().unwrap();
        let (rows, _) = batch(true);
        let (groups, weights) = batch(false);
        let mut by_rows = Partial::default();
        by_rows.add_batch(&settings, &rows);
        let mut by_groups = Partial::default();
        by_groups.add_weighted_batch(&settings, &groups, Some(&weights));

        assert_eq!(by_rows.counts, by_groups.counts);
        assert_eq!(by_rows.counts.rows_hunted, 15);
        assert_eq!(by_rows.counts.rows_evading, 2);
        let devices = |p: &Partial, set: &FxHashSet<u32>| {
            let mut names: Vec<String> = set.iter().map(|&d| p.devices.name(d).to_string()).collect();
            names.sort();
            names
        };
        for mode in [crate::hunt::host::MatchMode::Kql, crate::hunt::host::MatchMode::Normalized] {
            let (a, b) = (sorted(by_rows.daily(mode)), sorted(by_groups.daily(mode)));
            assert_eq!(a.len(), b.len());
            for ((ka, va), (kb, vb)) in a.iter().zip(&b) {
                assert_eq!(ka, kb);
                assert_eq!(va.events, vb.events);
                assert_eq!(devices(&by_rows, &va.devices), devices(&by_groups, &vb.devices));
            }
        }
        let (a, b) = (sorted(&by_rows.hosts), sorted(&by_groups.hosts));
        assert_eq!(a.len(), 4);
        for ((ka, va), (kb, vb)) in a.iter().zip(&b) {
            assert_eq!(ka, kb);
            assert_eq!(
                (va.group.events, va.evasion_events, &va.ports),
                (vb.group.events, vb.evasion_events, &vb.ports)
            );
            assert_eq!(devices(&by_rows, &va.group.devices), devices(&by_groups, &vb.group.devices));
        }
        let (a, b) = (sorted(&by_rows.processes), sorted(&by_groups.processes));
        assert_eq!(
            a.iter().map(|(k, v)| (k.clone(), v.events)).collect::<Vec<_>>(),
            b.iter().map(|(k, v)| (k.clone(), v.events)).collect::<Vec<_>>()
        );
    }

    /// Text keyed into dictionaries (as the Parquet source hands it out, the batches of a row
    /// group sharing them) gives the tables plain strings give: what is worked out once per key
    /// is what each row would have worked out.
    #[test]
    fn keyed_text_gives_what_plain_text_gives() {
        let settings = Config::default().validate().unwrap();
        let processes = [
            (
                Some("MsSense.exe"),
                Some(r"C:\Program Files\Windows Defender Advanced Threat Protection\MsSense.exe"),
                None,
            ),
            (Some("taskhostw.exe"), Some(r"C:\Windows\System32\taskhostw.exe"), Some("taskhostw.exe Microsoft Update")),
            (
                Some("powershell.exe"),
                Some(r"C:\Windows\System32\WindowsPowerShell\v1.0\powershell.exe"),
                Some("-enc AAAA"),
            ),
            (None, None, None),
        ];
        let urls = [
            "winatp-gw-weu.microsoft.com",
            "WINATP-GW-CUS.MICROSOFT.COM:443",
            "winatp-gw-weu.rnicrosoft.com",
            "https://eu-v20.events.data.microsoft.com/ping",
            "www.bing.com",
        ];
        let mut builder = RowBuilder::default();
        for i in 0..600usize {
            let (file, folder, command_line) = processes[i % processes.len()];
            let mut row = RowValues {
                time_micros: 1_700_000_000_000_000 + (i as i64 % 2) * 86_400_000_000,
                remote_port: Some([443, 8080][i % 7 / 6]),
                ..Default::default()
            };
            let device = format!("device-{}", i % 23);
            row.text[col::DEVICE_ID] = (i % 29 != 3).then(|| Cow::Owned(device.clone()));
            row.text[col::DEVICE_NAME] = Some(Cow::Owned(format!("{device}-{}", i % 3)));
            row.text[col::ACTION_TYPE] = Some(Cow::Borrowed(["ConnectionSuccess", "ConnectionFailed"][i % 5 / 4]));
            row.text[col::REMOTE_URL] = Some(Cow::Borrowed(urls[i % urls.len()]));
            row.text[col::PROCESS_FILE_NAME] = file.map(Cow::Borrowed);
            row.text[col::PROCESS_FOLDER_PATH] = folder.map(Cow::Borrowed);
            row.text[col::PROCESS_COMMAND_LINE] = command_line.map(Cow::Borrowed);
            row.text[col::PROCESS_SHA1] = Some(Cow::Owned(format!("sha{}", i % 4)));
            builder.push(&row);
        }
        let plain = builder.finish();
        // every text column keyed; the batches are slices, so they share the dictionaries
        let keyed_type = DataType::Dictionary(Box::new(DataType::UInt32), Box::new(DataType::Utf8));
        let columns: Vec<ArrayRef> = plain
            .columns()
            .iter()
            .map(|c| match c.data_type() {
                DataType::Utf8 => arrow_cast::cast(c, &keyed_type).unwrap(),
                _ => c.clone(),
            })
            .collect();
        let fields: Vec<arrow_schema::Field> = plain
            .schema()
            .fields()
            .iter()
            .zip(&columns)
            .map(|(f, c)| f.as_ref().clone().with_data_type(c.data_type().clone()))
            .collect();
        let keyed = RecordBatch::try_new(Arc::new(arrow_schema::Schema::new(fields)), columns).unwrap();
        let mut by_plain = Partial::default();
        by_plain.add_batch(&settings, &plain);
        let mut by_keys = Partial::default();
        for start in (0..600).step_by(128) {
            by_keys.add_batch(&settings, &keyed.slice(start, 128.min(600 - start)));
        }
        assert!(!by_keys.keyed.processes.is_empty(), "the process facts were cached by key");
        assert_eq!(by_plain.counts, by_keys.counts);
        assert!(by_plain.counts.excluded_by_rule.values().sum::<u64>() > 0, "a rule tagged rows");
        for day in [Day::of_micros(1_700_000_000_000_000), Day::of_micros(1_700_086_400_000_000)] {
            use crate::sink::tables;
            for mode in [crate::hunt::host::MatchMode::Kql, crate::hunt::host::MatchMode::Normalized] {
                assert_eq!(tables::daily(&by_plain, mode, day), tables::daily(&by_keys, mode, day));
            }
            assert_eq!(tables::hosts(&by_plain, &settings, day), tables::hosts(&by_keys, &settings, day));
            assert_eq!(tables::processes(&by_plain, &settings, day), tables::processes(&by_keys, &settings, day));
            let devices = tables::device_hosts(&by_plain, &settings, day);
            assert!(devices.rows.len() > 20, "{day}: {} device rows", devices.rows.len());
            assert_eq!(devices, tables::device_hosts(&by_keys, &settings, day));
        }
    }
}
