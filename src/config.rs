//! Configuration: one TOML file, every field optional, defaults embedded.
//!
//! Parse, don't validate: [`Config`] is what the file says (unknown keys are errors, so a typo
//! never silently falls back to a default); [`Config::validate`] turns it into [`Settings`],
//! checking everything that can be checked without I/O.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::azure::http::RetryPolicy;
use crate::azure::identity::{IdentityKind, IdentitySettings, EMULATOR_ACCOUNT, EMULATOR_ENDPOINT};
use crate::azure::{BlobLocation, Transport};
use crate::baseline::series::Trend;
use crate::hunt::host::{HostMatcher, MatchMode};
use crate::sink::sentinel::SentinelSettings;
use crate::source::blob::{BlobLayout, BlobSource};
use crate::source::log_analytics::{LogAnalyticsSettings, Pushdown};

/// The 19 hosts of Microsoft's "Defender for Endpoint Telemetry" hunting query.
pub const REFERENCE_HOSTS: [&str; 19] = [
    "winatp-gw-cus.microsoft.com",
    "winatp-gw-eus.microsoft.com",
    "winatp-gw-weu.microsoft.com",
    "winatp-gw-neu.microsoft.com",
    "winatp-gw-uks.microsoft.com",
    "winatp-gw-ukw.microsoft.com",
    "winatp-gw-usgv.microsoft.com",
    "winatp-gw-usgt.microsoft.com",
    "eu.vortex-win.data.microsoft.com",
    "us.vortex-win.data.microsoft.com",
    "uk.vortex-win.data.microsoft.com",
    "events.data.microsoft.com",
    "settings-win.data.microsoft.com",
    "eu-v20.events.data.microsoft.com",
    "uk-v20.events.data.microsoft.com",
    "us-v20.events.data.microsoft.com",
    "us4-v20.events.data.microsoft.com",
    "us5-v20.events.data.microsoft.com",
    "ctldl.windowsupdate.com",
];

/// Hosts Defender for Endpoint uses today beyond the reference list (the official commercial list:
/// streamlined connectivity, regional gateways, sample storage, cloud protection, CRLs).
/// Suffix entries start with `*.` and match any subdomain, not the bare domain.
pub const EXTRA_HOSTS: [&str; 49] = [
    "*.endpoint.security.microsoft.com",
    "*.endpoint.security.microsoft.us",
    "*.events.data.microsoft.com",
    "*.wdcp.microsoft.com",
    "*.wd.microsoft.com",
    "winatp-gw-cus3.microsoft.com",
    "winatp-gw-eus3.microsoft.com",
    "winatp-gw-neu3.microsoft.com",
    "winatp-gw-weu3.microsoft.com",
    "winatp-gw-aue.microsoft.com",
    "winatp-gw-aus.microsoft.com",
    "au.vortex-win.data.microsoft.com",
    "vortex-win.data.microsoft.com",
    "crl.microsoft.com",
    "ctldl.windowsupdate.com",
    "automatedirstrprdcus.blob.core.windows.net",
    "automatedirstrprdeus.blob.core.windows.net",
    "automatedirstrprdcus3.blob.core.windows.net",
    "automatedirstrprdeus3.blob.core.windows.net",
    "automatedirstrprdneu.blob.core.windows.net",
    "automatedirstrprdweu.blob.core.windows.net",
    "automatedirstrprdneu3.blob.core.windows.net",
    "automatedirstrprdweu3.blob.core.windows.net",
    "automatedirstrprduks.blob.core.windows.net",
    "automatedirstrprdukw.blob.core.windows.net",
    "automatedirstrprdaue.blob.core.windows.net",
    "automatedirstrprdaus.blob.core.windows.net",
    "ussus1eastprod.blob.core.windows.net",
    "ussus1westprod.blob.core.windows.net",
    "ussus2eastprod.blob.core.windows.net",
    "ussus2westprod.blob.core.windows.net",
    "ussus3eastprod.blob.core.windows.net",
    "ussus3westprod.blob.core.windows.net",
    "ussus4eastprod.blob.core.windows.net",
    "ussus4westprod.blob.core.windows.net",
    "wsus1eastprod.blob.core.windows.net",
    "wsus1westprod.blob.core.windows.net",
    "wsus2eastprod.blob.core.windows.net",
    "wsus2westprod.blob.core.windows.net",
    "usseu1northprod.blob.core.windows.net",
    "usseu1westprod.blob.core.windows.net",
    "wseu1northprod.blob.core.windows.net",
    "wseu1westprod.blob.core.windows.net",
    "ussuk1southprod.blob.core.windows.net",
    "ussuk1westprod.blob.core.windows.net",
    "wsuk1southprod.blob.core.windows.net",
    "wsuk1westprod.blob.core.windows.net",
    "ussau1southeastprod.blob.core.windows.net",
    "ussau1eastprod.blob.core.windows.net",
];

pub fn default_reference_hosts() -> Vec<String> {
    REFERENCE_HOSTS.iter().map(|h| h.to_string()).collect()
}

fn default_extra_hosts() -> Vec<String> {
    EXTRA_HOSTS.iter().map(|h| h.to_string()).collect()
}

/// Which column holds the event time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TimeColumn {
    /// `Timestamp` (Defender advanced hunting), falling back to `TimeGenerated` when a file has
    /// no `Timestamp` column.
    Timestamp,
    /// `TimeGenerated` (Log Analytics ingestion time) only.
    TimeGenerated,
}

impl TimeColumn {
    /// The column a query names (a query cannot fall back from one column to another).
    pub fn column(self) -> &'static str {
        match self {
            TimeColumn::Timestamp => crate::schema::TIMESTAMP,
            TimeColumn::TimeGenerated => crate::schema::TIME_GENERATED,
        }
    }
}

/// The whole configuration file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// How `MdeTelemetryDaily` matches hosts: `kql` (the reference query, exactly) or
    /// `normalized` (evasion-proof).
    pub match_mode: MatchMode,
    /// The event time column.
    pub time_column: TimeColumn,
    /// The reference query's host list: `MdeTelemetryDaily` counts these only.
    pub reference_hosts: Vec<String>,
    /// More Defender for Endpoint hosts, used by the host and process tables.
    pub extra_hosts: Vec<String>,
    /// Where events come from when `--input` is not given.
    pub source: SourceConfig,
    /// Where results go.
    pub output: OutputConfig,
    /// Which devices are hunted at all (the reference query's "scope here by MachineGroup").
    pub scope: ScopeConfig,
    /// Known benign traffic: rows are tagged with the rule, counted, and kept.
    pub exclusions: Vec<ExclusionRule>,
    /// Processes that are expected to talk to the telemetry hosts.
    pub expected_processes: Vec<ExpectedProcess>,
    /// The detectors that compare each day with its history and write findings.
    pub detect: DetectConfig,
    /// The identity every Azure call uses, and the retries and timeouts of those calls.
    pub azure: AzureConfig,
    /// Bounds on what hostile or broken input may cost; exceeding one fails the run, naming the
    /// file and the setting.
    pub limits: Limits,
    /// Sentinel custom tables (the Logs Ingestion API); absent means no Sentinel delivery.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sentinel: Option<SentinelConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            match_mode: MatchMode::Kql,
            time_column: TimeColumn::Timestamp,
            reference_hosts: default_reference_hosts(),
            extra_hosts: default_extra_hosts(),
            source: SourceConfig::default(),
            output: OutputConfig::default(),
            scope: ScopeConfig::default(),
            exclusions: default_exclusions(),
            expected_processes: default_expected_processes(),
            detect: DetectConfig::default(),
            azure: AzureConfig::default(),
            limits: Limits::default(),
            sentinel: None,
        }
    }
}

/// Resource bounds. The defaults hold a large tenant's nightly run in a 4 GiB container; a
/// run that needs more says which setting to raise.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// The longest line of a JSON-lines or CSV input, and the largest single (pretty-printed)
    /// JSON document, in bytes. A Defender event is a few KiB.
    pub max_line_bytes: u64,
    /// The most bytes one gzip input may decompress to (a gzip bomb stops here).
    pub max_decompressed_bytes: u64,
    /// The most input rows one run reads, checked as each file or row group finishes.
    pub max_rows_per_run: u64,
    /// Memory for the exact distinct-device sets of all groups together, estimated, in bytes.
    pub max_device_set_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_line_bytes: 16 << 20,
            max_decompressed_bytes: 64 << 30,
            max_rows_per_run: 20_000_000_000,
            max_device_set_bytes: 2 << 30,
        }
    }
}

impl Limits {
    fn validate(&self) -> Result<(), ConfigError> {
        let checks: [(&str, u64, u64, &str); 4] = [
            ("limits.max_line_bytes", self.max_line_bytes, 4096, "4096 bytes (a Defender event is a few KiB)"),
            ("limits.max_decompressed_bytes", self.max_decompressed_bytes, 1 << 20, "1 MiB"),
            ("limits.max_rows_per_run", self.max_rows_per_run, 1, "1 row"),
            ("limits.max_device_set_bytes", self.max_device_set_bytes, 1 << 20, "1 MiB"),
        ];
        for (field, value, minimum, words) in checks {
            if value < minimum {
                return Err(ConfigError::Invalid {
                    field: field.into(),
                    message: format!("at least {words}; remove the key for the default"),
                });
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SourceConfig {
    /// Local files or folders (searched recursively): Parquet, JSON lines (`.gz` too), portal CSV.
    pub inputs: Vec<PathBuf>,
    /// Read events from a blob container instead of local files.
    pub blob: Option<BlobSourceConfig>,
    /// A nightly run (a blob source without `--from/--to`) hunts yesterday (UTC) and this many
    /// days before it again, so events that arrive late are counted.
    pub reprocess_days: u32,
    /// A Log Analytics (Sentinel) workspace, read through the query API, instead of files.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_analytics: Option<LogAnalyticsConfig>,
}

impl Default for SourceConfig {
    fn default() -> Self {
        SourceConfig { inputs: Vec::new(), blob: None, reprocess_days: 1, log_analytics: None }
    }
}

/// A blob container of events. No keys or SAS tokens: requests are signed by `[azure]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct BlobSourceConfig {
    /// The storage account name; optional when `endpoint` names it.
    pub account: Option<String>,
    /// The blob endpoint, default `https://<account>.blob.core.windows.net` (Azurite:
    /// `http://127.0.0.1:10000/devstoreaccount1`).
    pub endpoint: Option<String>,
    /// e.g. `insights-logs-advancedhunting-devicenetworkevents` or `am-devicenetworkevents`.
    pub container: String,
    /// A folder in the container; empty for all of it.
    pub prefix: String,
    /// `auto`, `parquet`, `defender-streaming` or `log-analytics-export`.
    pub layout: BlobLayout,
}

/// `[source.log_analytics]`: the Log Analytics query API.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LogAnalyticsConfig {
    /// The workspace's Workspace ID (the GUID on its Overview page).
    pub workspace_id: String,
    /// The API's base URL; `https://api.loganalytics.azure.cn` in Azure China.
    pub endpoint: String,
    /// The table holding the events.
    pub table: String,
    /// `rows`: pull the telemetry rows; `aggregate`: let Kusto count them per (day, device,
    /// ActionType, RemoteUrl, process, port) and pull the counts (same tables, far fewer rows).
    pub pushdown: Pushdown,
    /// Width of one query window; a window that hits an API limit is halved.
    pub window_hours: u32,
    /// Windows are not halved below this width; a window that still hits a limit fails the run.
    pub min_window_minutes: u32,
    /// The API's row cap (500,000): an answer this long may be cut, so its window is halved.
    pub max_rows: u64,
    /// Answers larger than this (MiB, uncompressed) are not read; their window is halved.
    pub max_answer_mib: u64,
    /// Windows queried at once (the API runs five queries per identity).
    pub max_in_flight: usize,
    /// Server-side query timeout (`Prefer: wait=`, at most 600); past it the window is halved.
    pub server_timeout_secs: u64,
    /// Client-side timeout of one call, answer included.
    pub timeout_secs: u64,
    /// Attempts per call on throttling, server errors, timeouts and dropped connections.
    pub max_attempts: u32,
    /// First retry delay; doubled up to `retry_max_ms`, with jitter. `Retry-After` wins.
    pub retry_base_ms: u64,
    pub retry_max_ms: u64,
    /// How far the `timespan` of a query reaches beyond its window: the API filters
    /// `TimeGenerated` by it, which trails `Timestamp` by the ingestion delay.
    pub timespan_slack_hours: u32,
    /// Window halvings allowed in one run.
    pub max_splits: u32,
}

impl Default for LogAnalyticsConfig {
    fn default() -> Self {
        LogAnalyticsConfig {
            workspace_id: String::new(),
            endpoint: "https://api.loganalytics.azure.com".into(),
            table: "DeviceNetworkEvents".into(),
            pushdown: Pushdown::Rows,
            window_hours: 6,
            min_window_minutes: 5,
            max_rows: 500_000,
            max_answer_mib: 100,
            max_in_flight: 4,
            server_timeout_secs: 600,
            timeout_secs: 660,
            max_attempts: 5,
            retry_base_ms: 1_000,
            retry_max_ms: 60_000,
            timespan_slack_hours: 48,
            max_splits: 256,
        }
    }
}

/// `[sentinel]`: the result tables as Sentinel custom tables, through the Logs Ingestion API.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SentinelConfig {
    /// The DCR's logs ingestion endpoint (`properties.endpoints.logsIngestion`) or a DCE
    /// (`https://<dce>.<region>-1.ingest.monitor.azure.com`).
    pub endpoint: String,
    /// The DCR's immutable ID (`dcr-` and 32 hex digits).
    pub dcr_immutable_id: String,
    /// Streams other than `Custom-<Table>_CL`, by table (e.g. `MdeTelemetryDaily = "Custom-X_CL"`).
    pub streams: BTreeMap<String, String>,
    /// Batches sent at once.
    pub max_in_flight: usize,
    /// Uncompressed JSON per call (the API takes 1,000,000 bytes at most).
    pub max_batch_bytes: usize,
    pub timeout_secs: u64,
    pub max_attempts: u32,
    pub retry_base_ms: u64,
    pub retry_max_ms: u64,
}

impl Default for SentinelConfig {
    fn default() -> Self {
        SentinelConfig {
            endpoint: String::new(),
            dcr_immutable_id: String::new(),
            streams: BTreeMap::new(),
            max_in_flight: 4,
            max_batch_bytes: crate::sink::sentinel::MAX_BATCH_BYTES,
            timeout_secs: 60,
            max_attempts: 5,
            retry_base_ms: 1_000,
            retry_max_ms: 60_000,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct OutputConfig {
    /// The results folder, when `[output.blob]` is not set.
    pub dir: PathBuf,
    /// How many malformed rows are kept as samples in the run record.
    pub reject_samples: usize,
    /// Keep results (and history) in a blob container instead of `dir`.
    pub blob: Option<BlobResultsConfig>,
    /// How long the results store's lock outlives a run that stopped renewing it (was killed);
    /// a live run renews it every third of this.
    pub lock_ttl_seconds: u64,
}

impl Default for OutputConfig {
    fn default() -> Self {
        OutputConfig { dir: PathBuf::from("out"), reject_samples: 20, blob: None, lock_ttl_seconds: 600 }
    }
}

/// The results container. No keys or SAS tokens: requests are signed by `[azure]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct BlobResultsConfig {
    pub account: Option<String>,
    pub endpoint: Option<String>,
    pub container: String,
    pub prefix: String,
}

/// The Azure identity and transport.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AzureConfig {
    /// `managed-identity` (Azure Container Apps, App Service, VMs), `workload-identity` (AKS),
    /// `azure-cli` or `developer-tools` (a workstation's `az login`), `emulator` (Azurite).
    pub identity: IdentityKind,
    /// The client id of a user-assigned managed identity (absent: the system-assigned one), or
    /// of the workload identity's application (absent: `AZURE_CLIENT_ID`).
    pub client_id: Option<String>,
    /// Workload identity only: the tenant (absent: `AZURE_TENANT_ID`).
    pub tenant_id: Option<String>,
    /// Retries of a failed request (5xx, 429, broken connections), with jittered backoff.
    pub max_retries: u32,
    /// No retry starts this long after the first attempt.
    pub retry_timeout_seconds: u64,
    pub connect_timeout_seconds: u64,
    /// One whole request, including a streamed body.
    pub request_timeout_seconds: u64,
}

impl Default for AzureConfig {
    fn default() -> Self {
        AzureConfig {
            identity: IdentityKind::ManagedIdentity,
            client_id: None,
            tenant_id: None,
            max_retries: 4,
            retry_timeout_seconds: 120,
            connect_timeout_seconds: 10,
            request_timeout_seconds: 900,
        }
    }
}

/// Environment variables that override the configuration file, for the container.
pub mod env {
    pub const SOURCE_ACCOUNT: &str = "TELEMETRY_HUNT_SOURCE_ACCOUNT";
    pub const SOURCE_ENDPOINT: &str = "TELEMETRY_HUNT_SOURCE_ENDPOINT";
    pub const SOURCE_CONTAINER: &str = "TELEMETRY_HUNT_SOURCE_CONTAINER";
    pub const SOURCE_PREFIX: &str = "TELEMETRY_HUNT_SOURCE_PREFIX";
    pub const SOURCE_LAYOUT: &str = "TELEMETRY_HUNT_SOURCE_LAYOUT";
    pub const RESULTS_ACCOUNT: &str = "TELEMETRY_HUNT_RESULTS_ACCOUNT";
    pub const RESULTS_ENDPOINT: &str = "TELEMETRY_HUNT_RESULTS_ENDPOINT";
    pub const RESULTS_CONTAINER: &str = "TELEMETRY_HUNT_RESULTS_CONTAINER";
    pub const RESULTS_PREFIX: &str = "TELEMETRY_HUNT_RESULTS_PREFIX";
    pub const IDENTITY: &str = "TELEMETRY_HUNT_IDENTITY";
    pub const CLIENT_ID: &str = "TELEMETRY_HUNT_CLIENT_ID";
    pub const TENANT_ID: &str = "TELEMETRY_HUNT_TENANT_ID";
    pub const REPROCESS_DAYS: &str = "TELEMETRY_HUNT_REPROCESS_DAYS";
    pub const LOCK_TTL_SECONDS: &str = "TELEMETRY_HUNT_LOCK_TTL_SECONDS";
    /// `[source.log_analytics] workspace_id` (setting it selects the query API as the source).
    pub const LA_WORKSPACE_ID: &str = "TELEMETRY_HUNT_LA_WORKSPACE_ID";
    /// `[source.log_analytics] endpoint`.
    pub const LA_ENDPOINT: &str = "TELEMETRY_HUNT_LA_ENDPOINT";
    /// `[source.log_analytics] pushdown`: `rows` or `aggregate`.
    pub const LA_PUSHDOWN: &str = "TELEMETRY_HUNT_LA_PUSHDOWN";
    /// `[sentinel] endpoint`.
    pub const SENTINEL_ENDPOINT: &str = "TELEMETRY_HUNT_SENTINEL_ENDPOINT";
    /// `[sentinel] dcr_immutable_id`.
    pub const SENTINEL_DCR: &str = "TELEMETRY_HUNT_SENTINEL_DCR_IMMUTABLE_ID";
}

/// Device scoping. Empty include lists mean "everything".
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ScopeConfig {
    pub machine_groups_include: Vec<String>,
    pub machine_groups_exclude: Vec<String>,
    /// Device name patterns, `*` matches any run of characters, case-insensitive.
    pub device_names_include: Vec<String>,
    pub device_names_exclude: Vec<String>,
}

/// A named rule for known benign traffic. Every non-empty condition must hold; within a
/// condition, any listed value is enough. Text comparisons are case-insensitive.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ExclusionRule {
    pub name: String,
    pub enabled: bool,
    pub process_file_names: Vec<String>,
    pub folder_path_prefixes: Vec<String>,
    pub command_line_contains: Vec<String>,
    pub parent_file_names: Vec<String>,
    /// CIDR ranges of the remote address (`RemoteIP`).
    pub remote_cidrs: Vec<String>,
}

/// A process expected to talk to telemetry hosts, matched on file name and folder.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ExpectedProcess {
    pub file_name: String,
    /// Folder prefixes the file must run from (case-insensitive); empty means anywhere.
    pub folder_prefixes: Vec<String>,
    /// Hosts (normalized, `*.suffix` allowed) this process is expected on; empty means all.
    pub hosts: Vec<String>,
}

/// The detectors (README "Detectors"). Each compares a day with the `history_days` before it,
/// read back from the results store.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DetectConfig {
    /// Run the detectors after a run's day tables are written.
    pub enabled: bool,
    /// Days of history before the day being scored.
    pub history_days: u32,
    /// A device needs telemetry on at least this many history days before anything about it is
    /// called new or silent: a device enrolled yesterday has no baseline yet.
    pub min_device_history_days: u32,
    /// How many DeviceIds and DeviceNames a finding lists (DeviceCount is always the full count).
    pub max_listed_devices: usize,
    pub series: SeriesConfig,
    pub unexpected_process: DetectorToggle,
    pub new_combination: DetectorToggle,
    pub lookalike: LookalikeConfig,
    pub unusual_port: UnusualPortConfig,
    pub silent_device: SilentDeviceConfig,
}

impl Default for DetectConfig {
    fn default() -> Self {
        DetectConfig {
            enabled: true,
            history_days: 30,
            min_device_history_days: 7,
            max_listed_devices: 50,
            series: SeriesConfig::default(),
            unexpected_process: DetectorToggle { enabled: true },
            new_combination: DetectorToggle { enabled: true },
            lookalike: LookalikeConfig::default(),
            unusual_port: UnusualPortConfig::default(),
            silent_device: SilentDeviceConfig::default(),
        }
    }
}

/// A detector with nothing to tune but whether it runs.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DetectorToggle {
    pub enabled: bool,
}

impl Default for DetectorToggle {
    fn default() -> Self {
        DetectorToggle { enabled: true }
    }
}

/// Anomalies in the daily series of `MdeTelemetryDaily` (distinct devices per ActionType), scored
/// like KQL `series_decompose_anomalies(series, threshold, seasonality, trend, 1)`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SeriesConfig {
    pub enabled: bool,
    /// |score| above this is an anomaly (KQL: 1.5 mild, 3.0 strong).
    pub threshold: f64,
    /// Days in the series (the scored day included) before a day is scored at all.
    pub min_points: u32,
    /// Period of the seasonal part in days, used once the series has three periods.
    pub seasonality: u32,
    /// `avg`, `linefit` or `none`.
    pub trend: String,
    /// The day must also differ from its baseline by at least this many devices …
    pub min_change: f64,
    /// … and by this many standard deviations of the count's own sampling noise (binomial:
    /// `sqrt(b (1 - b/N))` for a baseline of `b` of the `N` devices reporting that day), so
    /// that a series of a few devices does not alarm on every wobble.
    pub noise_sigmas: f64,
}

impl Default for SeriesConfig {
    fn default() -> Self {
        SeriesConfig {
            enabled: true,
            threshold: 3.0,
            min_points: 21,
            seasonality: 7,
            trend: "avg".into(),
            min_change: 5.0,
            noise_sigmas: 4.0,
        }
    }
}

/// Hosts that look like Defender for Endpoint's but are not listed, and listed hosts spelled so
/// the reference query misses them.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LookalikeConfig {
    pub enabled: bool,
    /// MDE naming patterns (`*` for any run of characters) an unlisted host must not match.
    pub patterns: Vec<String>,
    /// An unlisted host within this many edits of a listed host is a look-alike (0 turns it off).
    pub max_edit_distance: u32,
    /// Report devices that start spelling a reference host in a way the reference query misses.
    pub new_spellings: bool,
}

impl Default for LookalikeConfig {
    fn default() -> Self {
        LookalikeConfig {
            enabled: true,
            patterns: strings(&[
                "winatp-gw-*.microsoft.com",
                "winatp-gw-*.microsoft.us",
                "*-v20.events.data.microsoft.com",
                "automatedirstrprd*.blob.core.windows.net",
                "uss*prod.blob.core.windows.net",
                "ws*prod.blob.core.windows.net",
            ]),
            max_edit_distance: 2,
            new_spellings: true,
        }
    }
}

/// Listed hosts reached on a port they do not serve.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct UnusualPortConfig {
    pub enabled: bool,
    /// Ports every listed host serves.
    pub allowed_ports: Vec<i32>,
    /// Hosts that also serve plain HTTP (certificate revocation lists and trust lists).
    pub plain_http_hosts: Vec<String>,
    pub plain_http_ports: Vec<i32>,
}

impl Default for UnusualPortConfig {
    fn default() -> Self {
        UnusualPortConfig {
            enabled: true,
            allowed_ports: vec![443],
            plain_http_hosts: strings(&["ctldl.windowsupdate.com", "crl.microsoft.com", "www.microsoft.com"]),
            plain_http_ports: vec![80],
        }
    }
}

/// Devices whose sensor stops talking to its cloud, or whose connections start failing.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SilentDeviceConfig {
    pub enabled: bool,
    /// The sensor's own processes (the ones EDR-silencing tools block), by file name; they count
    /// only when the allow list expects them where they ran.
    pub sensor_processes: Vec<String>,
    /// A device is "sensor-silent" when it still reaches the listed hosts through other
    /// processes but its sensor processes do not, after they did on at least this share of its
    /// history days.
    pub min_sensor_share: f64,
    /// A device that stops reporting entirely, or whose failures jump, is reported when the
    /// chance of that under its own history is at most this.
    pub max_chance: f64,
    /// A failure jump needs at least this share of the day's events failed …
    pub min_failed_share: f64,
    /// … and at least this many failed events.
    pub min_failed_events: u64,
}

impl Default for SilentDeviceConfig {
    fn default() -> Self {
        SilentDeviceConfig {
            enabled: true,
            sensor_processes: strings(&[
                "MsSense.exe",
                "SenseCncProxy.exe",
                "SenseIR.exe",
                "SenseNdr.exe",
                "SenseSampleUploader.exe",
                "MsMpEng.exe",
            ]),
            min_sensor_share: 0.9,
            max_chance: 1e-6,
            min_failed_share: 0.5,
            min_failed_events: 3,
        }
    }
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

const MDE_FOLDERS: [&str; 2] = [
    r"c:\program files\windows defender advanced threat protection\",
    r"c:\programdata\microsoft\windows defender advanced threat protection\",
];
const DEFENDER_FOLDERS: [&str; 3] = [
    r"c:\programdata\microsoft\windows defender\platform\",
    r"c:\program files\windows defender\",
    r"c:\program files\microsoft security client\",
];

fn default_exclusions() -> Vec<ExclusionRule> {
    let rule = |name: &str| ExclusionRule { name: name.into(), enabled: true, ..Default::default() };
    vec![
        ExclusionRule {
            process_file_names: strings(&["taskhostw.exe", "taskeng.exe"]),
            command_line_contains: strings(&["microsoft", "defender"]),
            ..rule("task-scheduler-microsoft-tasks")
        },
        ExclusionRule {
            process_file_names: strings(&["ccmexec.exe", "smsexec.exe", "ccmsetup.exe", "ccmeval.exe"]),
            ..rule("mecm-client")
        },
        ExclusionRule {
            process_file_names: strings(&["svchost.exe"]),
            command_line_contains: strings(&["wuauserv", "usosvc", "dosvc", "bits"]),
            ..rule("windows-update-service")
        },
        ExclusionRule {
            process_file_names: strings(&["wuauclt.exe", "usoclient.exe", "usocoreworker.exe", "wsusutil.exe"]),
            ..rule("windows-update-client")
        },
        ExclusionRule {
            process_file_names: strings(&[
                "microsoft.management.services.intunewindowsagent.exe",
                "agentexecutor.exe",
                "devicehealthmonitoring.exe",
                "omadmclient.exe",
            ]),
            ..rule("intune-management-extension")
        },
        ExclusionRule { folder_path_prefixes: strings(&MDE_FOLDERS), ..rule("mde-self-health") },
        ExclusionRule { enabled: false, remote_cidrs: Vec::new(), ..rule("microsoft-cloud-cidrs") },
    ]
}

fn default_expected_processes() -> Vec<ExpectedProcess> {
    let sense = |name: &str| ExpectedProcess {
        file_name: name.into(),
        folder_prefixes: strings(&MDE_FOLDERS),
        hosts: Vec::new(),
    };
    let defender = |name: &str| ExpectedProcess {
        file_name: name.into(),
        folder_prefixes: strings(&DEFENDER_FOLDERS),
        hosts: Vec::new(),
    };
    let mut expected: Vec<ExpectedProcess> = [
        "MsSense.exe",
        "SenseCncProxy.exe",
        "SenseIR.exe",
        "SenseNdr.exe",
        "SenseCE.exe",
        "SenseSampleUploader.exe",
        "SenseCM.exe",
        "SenseTVM.exe",
        "SenseSC.exe",
    ]
    .into_iter()
    .map(sense)
    .collect();
    expected.extend(["MsMpEng.exe", "MpCmdRun.exe", "MpDefenderCoreService.exe", "NisSrv.exe"].map(defender));
    // The Connected User Experiences and Telemetry service (DiagTrack, in svchost) and its
    // compatibility appraiser talk to the Windows telemetry hosts; the cryptographic service
    // (CryptSvc, in svchost) fetches revocation and trust lists.
    const WINDOWS_TELEMETRY: [&str; 5] = [
        "*.events.data.microsoft.com",
        "events.data.microsoft.com",
        "*.vortex-win.data.microsoft.com",
        "vortex-win.data.microsoft.com",
        "settings-win.data.microsoft.com",
    ];
    let mut svchost_hosts = strings(&WINDOWS_TELEMETRY);
    svchost_hosts.extend(strings(&["ctldl.windowsupdate.com", "crl.microsoft.com"]));
    expected.push(ExpectedProcess {
        file_name: "svchost.exe".into(),
        folder_prefixes: strings(&[r"c:\windows\system32\"]),
        hosts: svchost_hosts,
    });
    expected.push(ExpectedProcess {
        file_name: "CompatTelRunner.exe".into(),
        folder_prefixes: strings(&[r"c:\windows\system32\"]),
        hosts: strings(&WINDOWS_TELEMETRY),
    });
    for mma in ["MonitoringHost.exe", "HealthService.exe"] {
        expected.push(ExpectedProcess {
            file_name: mma.into(),
            folder_prefixes: strings(&[r"c:\program files\microsoft monitoring agent\"]),
            hosts: Vec::new(),
        });
    }
    expected
}

/// Configuration that cannot be used, with the fix in words.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the configuration file `{path}`: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("the configuration file `{path}` is not valid: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("`{field}`: {message}")]
    Invalid { field: String, message: String },
}

impl Config {
    /// Reads a TOML file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
        Config::from_toml(&text).map_err(|message| ConfigError::Parse { path: path.to_path_buf(), message })
    }

    /// Parses TOML. An error names the line and column but never quotes the file, whose line
    /// may hold a secret put where it does not belong (`access_key = "…"`).
    pub fn from_toml(text: &str) -> Result<Config, String> {
        toml::from_str(text).map_err(|e: toml::de::Error| {
            let at = e.span().map(|span| {
                let before = &text[..span.start.min(text.len())];
                let line = before.matches('\n').count() + 1;
                let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
                // The key of that line, never its value: `max_retries = "…"` names `max_retries`.
                let key = text.lines().nth(line - 1).and_then(|l| l.split('=').next()).map(str::trim);
                let key = key.filter(|k| {
                    !k.is_empty()
                        && k.len() <= 64
                        && k.chars().all(|c| c.is_ascii_alphanumeric() || "_-.[]\" ".contains(c))
                });
                match key {
                    Some(key) => format!("line {line}, column {column} (`{key}`): "),
                    None => format!("line {line}, column {column}: "),
                }
            });
            crate::redact::redacted(&format!("{}{}", at.unwrap_or_default(), e.message()))
        })
    }

    /// Checks the configuration and resolves it into [`Settings`]. Pure: no I/O.
    pub fn validate(&self) -> Result<Settings, ConfigError> {
        let invalid = |field: &str, message: String| ConfigError::Invalid { field: field.into(), message };
        if self.reference_hosts.is_empty() {
            return Err(invalid(
                "reference_hosts",
                "the list is empty; remove the key to use the 19 reference hosts".into(),
            ));
        }
        for (field, list) in [("reference_hosts", &self.reference_hosts), ("extra_hosts", &self.extra_hosts)] {
            for host in list {
                if host.trim().is_empty() {
                    return Err(invalid(field, "contains an empty host name".into()));
                }
            }
        }
        let mut exclusions = Vec::new();
        let mut names = std::collections::BTreeSet::new();
        for (i, rule) in self.exclusions.iter().enumerate() {
            let field = format!("exclusions[{i}]");
            if rule.name.trim().is_empty() {
                return Err(invalid(&field, "every exclusion rule needs a `name`".into()));
            }
            if !names.insert(rule.name.clone()) {
                return Err(invalid(&field, format!("the name `{}` is used twice; names must be unique", rule.name)));
            }
            let conditions = rule.process_file_names.len()
                + rule.folder_path_prefixes.len()
                + rule.command_line_contains.len()
                + rule.parent_file_names.len()
                + rule.remote_cidrs.len();
            if !rule.enabled {
                continue;
            }
            if conditions == 0 {
                return Err(invalid(&field, format!("rule `{}` is enabled but has no condition; it would exclude every row. Add a condition or set `enabled = false`", rule.name)));
            }
            let mut cidrs = Vec::new();
            for text in &rule.remote_cidrs {
                cidrs.push(Cidr::parse(text).ok_or_else(|| {
                    invalid(&field, format!("`{text}` is not a CIDR range such as `13.64.0.0/11` or `2603:1000::/24`"))
                })?);
            }
            let lower = |v: &Vec<String>| v.iter().map(|s| s.to_ascii_lowercase()).collect::<Vec<_>>();
            exclusions.push(CompiledExclusion {
                name: rule.name.clone(),
                process_file_names: lower(&rule.process_file_names),
                folder_path_prefixes: lower(&rule.folder_path_prefixes),
                command_line_contains: lower(&rule.command_line_contains),
                parent_file_names: lower(&rule.parent_file_names),
                remote_cidrs: cidrs,
            });
        }
        let mut expected = Vec::new();
        for (i, process) in self.expected_processes.iter().enumerate() {
            if process.file_name.trim().is_empty() {
                return Err(invalid(&format!("expected_processes[{i}]"), "`file_name` is empty".into()));
            }
            expected.push(CompiledExpected {
                file_name: process.file_name.to_ascii_lowercase(),
                folder_prefixes: process.folder_prefixes.iter().map(|s| s.to_ascii_lowercase()).collect(),
                hosts: (!process.hosts.is_empty())
                    .then(|| crate::hunt::host::HostList::new(process.hosts.iter().map(String::as_str), false)),
            });
        }
        let scope = Scope {
            machine_groups_include: self.scope.machine_groups_include.iter().map(|s| s.to_ascii_lowercase()).collect(),
            machine_groups_exclude: self.scope.machine_groups_exclude.iter().map(|s| s.to_ascii_lowercase()).collect(),
            device_names_include: self.scope.device_names_include.iter().map(|s| s.to_ascii_lowercase()).collect(),
            device_names_exclude: self.scope.device_names_exclude.iter().map(|s| s.to_ascii_lowercase()).collect(),
        };
        let detect = self.detect.validate()?;
        let mut hosts = HostMatcher::new(&self.reference_hosts, self.extra_hosts.iter().map(String::as_str));
        if detect.enabled && detect.lookalike.enabled {
            let lookalike = &detect.lookalike;
            hosts = hosts
                .with_lookalikes(lookalike.patterns.iter().map(String::as_str), lookalike.max_edit_distance as usize);
        }
        let identity = self.validate_azure()?;
        let source_blob = match &self.source.blob {
            None => None,
            Some(_) if !self.source.inputs.is_empty() => {
                return Err(invalid(
                    "source",
                    "both `inputs` (local files) and `[source.blob]` are set; keep one of them".into(),
                ))
            }
            Some(blob) => Some(BlobSource {
                location: blob_location(
                    "source.blob",
                    &blob.account,
                    &blob.endpoint,
                    &blob.container,
                    &blob.prefix,
                    identity.kind,
                )?,
                layout: blob.layout,
            }),
        };
        let results_blob = match &self.output.blob {
            None => None,
            Some(blob) => Some(blob_location(
                "output.blob",
                &blob.account,
                &blob.endpoint,
                &blob.container,
                &blob.prefix,
                identity.kind,
            )?),
        };
        if self.source.reprocess_days > 31 {
            return Err(invalid(
                "source.reprocess_days",
                "at most 31 days; a longer range is a backfill: pass `--from` and `--to`".into(),
            ));
        }
        if !(1..=86_400).contains(&self.output.lock_ttl_seconds) {
            return Err(invalid(
                "output.lock_ttl_seconds",
                "between 1 and 86400 seconds; it must exceed a pause of the job (e.g. a slow request), so keep minutes"
                    .into(),
            ));
        }
        let a = &self.azure;
        for (field, value) in [
            ("azure.retry_timeout_seconds", a.retry_timeout_seconds),
            ("azure.connect_timeout_seconds", a.connect_timeout_seconds),
            ("azure.request_timeout_seconds", a.request_timeout_seconds),
        ] {
            if value == 0 {
                return Err(invalid(field, "must be at least 1 second".into()));
            }
        }
        if a.max_retries > 20 {
            return Err(invalid("azure.max_retries", "at most 20; every retry waits longer".into()));
        }
        let log_analytics = match &self.source.log_analytics {
            Some(la) => {
                if !self.source.inputs.is_empty() || self.source.blob.is_some() {
                    return Err(invalid(
                        "source",
                        "`[source.log_analytics]` is set together with `inputs` or `[source.blob]`; keep one source"
                            .into(),
                    ));
                }
                for host in self.reference_hosts.iter().chain(&self.extra_hosts) {
                    if host.chars().any(char::is_control) {
                        return Err(invalid("reference_hosts", format!("host {host:?} contains a control character")));
                    }
                }
                Some(la.validate()?)
            }
            None => None,
        };
        let sentinel = self.sentinel.as_ref().map(SentinelConfig::validate).transpose()?;
        self.limits.validate()?;
        Ok(Settings {
            source_blob,
            results_blob,
            reprocess_days: self.source.reprocess_days,
            identity,
            transport: Transport {
                max_retries: a.max_retries as usize,
                retry_timeout: Duration::from_secs(a.retry_timeout_seconds),
                connect_timeout: Duration::from_secs(a.connect_timeout_seconds),
                request_timeout: Duration::from_secs(a.request_timeout_seconds),
            },
            lock_ttl: Duration::from_secs(self.output.lock_ttl_seconds),
            match_mode: self.match_mode,
            time_column: self.time_column,
            hosts,
            reference_hosts: self.reference_hosts.clone(),
            extra_hosts: self.extra_hosts.clone(),
            exclusions,
            expected,
            scope,
            reject_samples: self.output.reject_samples,
            limits: self.limits,
            detect,
            log_analytics,
            sentinel,
        })
    }
}

impl DetectConfig {
    /// Checks the detector settings (pure) and resolves them, lists lowercased.
    fn validate(&self) -> Result<DetectSettings, ConfigError> {
        let invalid = |field: &str, message: String| ConfigError::Invalid { field: format!("detect.{field}"), message };
        if !(1..=366).contains(&self.history_days) {
            return Err(invalid("history_days", format!("{} is outside 1..=366 days", self.history_days)));
        }
        if self.min_device_history_days > self.history_days {
            return Err(invalid(
                "min_device_history_days",
                format!(
                    "{} is more than `history_days` ({}), so no device could ever qualify",
                    self.min_device_history_days, self.history_days
                ),
            ));
        }
        if self.max_listed_devices == 0 {
            return Err(invalid(
                "max_listed_devices",
                "must be at least 1; DeviceCount always has the full count".into(),
            ));
        }
        let series = &self.series;
        if !(series.threshold.is_finite() && series.threshold > 0.0) {
            return Err(invalid(
                "series.threshold",
                format!("{} is not a positive number (KQL uses 1.5 mild, 3.0 strong)", series.threshold),
            ));
        }
        if series.min_points < 3 {
            return Err(invalid(
                "series.min_points",
                format!(
                    "{} is too few days to score against; use 3 or more (21 gives weekly seasonality)",
                    series.min_points
                ),
            ));
        }
        if series.seasonality > 60 {
            return Err(invalid(
                "series.seasonality",
                format!("{} days is longer than any history this job keeps", series.seasonality),
            ));
        }
        let trend = match series.trend.as_str() {
            "avg" => Trend::Average,
            "linefit" => Trend::LineFit,
            "none" => Trend::None,
            other => return Err(invalid("series.trend", format!("`{other}` is not one of `avg`, `linefit`, `none`"))),
        };
        if !(series.min_change.is_finite() && series.min_change >= 0.0) {
            return Err(invalid("series.min_change", format!("{} is not a number of devices >= 0", series.min_change)));
        }
        if !(series.noise_sigmas.is_finite() && series.noise_sigmas >= 0.0) {
            return Err(invalid(
                "series.noise_sigmas",
                format!("{} is not a number >= 0 (0 turns the gate off)", series.noise_sigmas),
            ));
        }
        let lookalike = &self.lookalike;
        if lookalike.patterns.iter().any(|p| p.trim().trim_matches('*').is_empty()) {
            return Err(invalid(
                "lookalike.patterns",
                "a pattern is empty or only `*`, which would call every host a look-alike".into(),
            ));
        }
        if lookalike.max_edit_distance > 3 {
            return Err(invalid(
                "lookalike.max_edit_distance",
                format!("{} edits reach unrelated hosts; use 0 to 3", lookalike.max_edit_distance),
            ));
        }
        let ports = &self.unusual_port;
        for (field, list) in [
            ("unusual_port.allowed_ports", &ports.allowed_ports),
            ("unusual_port.plain_http_ports", &ports.plain_http_ports),
        ] {
            if let Some(bad) = list.iter().find(|p| !(0..=65_535).contains(*p)) {
                return Err(invalid(field, format!("{bad} is not a TCP/UDP port")));
            }
        }
        let silent = &self.silent_device;
        let share = |field: &str, v: f64| -> Result<f64, ConfigError> {
            if (0.0..=1.0).contains(&v) {
                Ok(v)
            } else {
                Err(invalid(field, format!("{v} is not a share between 0 and 1")))
            }
        };
        share("silent_device.min_sensor_share", silent.min_sensor_share)?;
        share("silent_device.min_failed_share", silent.min_failed_share)?;
        if !(silent.max_chance > 0.0 && silent.max_chance < 1.0) {
            return Err(invalid(
                "silent_device.max_chance",
                format!("{} is not a probability between 0 and 1 (exclusive); 1e-6 is the default", silent.max_chance),
            ));
        }
        let lower = |v: &[String]| v.iter().map(|s| s.trim().to_ascii_lowercase()).collect::<Vec<_>>();
        Ok(DetectSettings {
            enabled: self.enabled,
            history_days: self.history_days as usize,
            min_device_history_days: self.min_device_history_days as usize,
            max_listed_devices: self.max_listed_devices,
            series: SeriesSettings {
                enabled: series.enabled,
                threshold: series.threshold,
                min_points: series.min_points as usize,
                seasonality: series.seasonality as usize,
                trend,
                trend_name: series.trend.clone(),
                min_change: series.min_change,
                noise_sigmas: series.noise_sigmas,
            },
            unexpected_process: self.unexpected_process.enabled,
            new_combination: self.new_combination.enabled,
            lookalike: LookalikeConfig { patterns: lower(&lookalike.patterns), ..lookalike.clone() },
            unusual_port: UnusualPortConfig { plain_http_hosts: lower(&ports.plain_http_hosts), ..ports.clone() },
            silent_device: SilentDeviceConfig { sensor_processes: lower(&silent.sensor_processes), ..silent.clone() },
        })
    }
}

/// An endpoint URL: https, or plain http to the local machine only (test servers, emulators);
/// no credentials, query or fragment, since messages print it.
fn endpoint_url(field: &str, text: &str) -> Result<reqwest::Url, ConfigError> {
    let invalid = |message: String| ConfigError::Invalid { field: field.into(), message };
    if text.trim().is_empty() {
        return Err(invalid("is empty; set the endpoint URL".into()));
    }
    // The text may hold a password or a signature: messages show it without them, or not at all.
    let url = reqwest::Url::parse(text.trim()).map_err(|e| invalid(format!("is not a URL ({e})")))?;
    let mut shown = url.clone();
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    shown.set_query(None);
    shown.set_fragment(None);
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid(format!(
            "`{shown}` must not carry credentials (they are left out here); the job signs requests with its identity"
        )));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid(format!(
            "`{shown}` must not have a query or fragment (left out here); give the base URL only"
        )));
    }
    let local = matches!(url.host_str(), Some("127.0.0.1" | "localhost" | "[::1]"));
    match url.scheme() {
        "https" => {}
        "http" if local => {}
        "http" => {
            return Err(invalid(format!("`{shown}` must use https (plain http is only for 127.0.0.1/localhost)")))
        }
        other => return Err(invalid(format!("`{shown}` has scheme `{other}`; use https"))),
    }
    if url.host_str().is_none() {
        return Err(invalid(format!("`{shown}` needs a host")));
    }
    Ok(url)
}

fn in_range<T: PartialOrd + std::fmt::Display + Copy>(field: &str, value: T, min: T, max: T) -> Result<T, ConfigError> {
    if value < min || value > max {
        return Err(ConfigError::Invalid { field: field.into(), message: format!("{value} is outside {min}..={max}") });
    }
    Ok(value)
}

fn retry_policy(
    section: &str,
    max_attempts: u32,
    base_ms: u64,
    max_ms: u64,
    timeout_secs: u64,
) -> Result<RetryPolicy, ConfigError> {
    let field = |name: &str| format!("{section}.{name}");
    in_range(&field("max_attempts"), max_attempts, 1, 10)?;
    in_range(&field("timeout_secs"), timeout_secs, 1, 3_600)?;
    in_range(&field("retry_max_ms"), max_ms, 1, 600_000)?;
    in_range(&field("retry_base_ms"), base_ms, 1, max_ms)?;
    Ok(RetryPolicy {
        max_attempts,
        base_delay: Duration::from_millis(base_ms),
        max_delay: Duration::from_millis(max_ms),
        timeout: Duration::from_secs(timeout_secs),
    })
}

impl LogAnalyticsConfig {
    pub fn validate(&self) -> Result<LogAnalyticsSettings, ConfigError> {
        const S: &str = "source.log_analytics";
        let invalid = |name: &str, message: String| ConfigError::Invalid { field: format!("{S}.{name}"), message };
        if !is_guid(self.workspace_id.trim()) {
            return Err(invalid(
                "workspace_id",
                format!(
                    "`{}` is not a GUID; use the workspace's Workspace ID from its Overview page",
                    self.workspace_id
                ),
            ));
        }
        let table_ok = self.table.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && self.table.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !table_ok {
            return Err(invalid("table", format!("`{}` is not a table name", self.table)));
        }
        let hour = 3_600_000_000i64;
        let window_hours = in_range(&format!("{S}.window_hours"), self.window_hours, 1, 24)?;
        let min_minutes = in_range(&format!("{S}.min_window_minutes"), self.min_window_minutes, 1, window_hours * 60)?;
        Ok(LogAnalyticsSettings {
            workspace_id: self.workspace_id.trim().to_ascii_lowercase(),
            endpoint: endpoint_url(&format!("{S}.endpoint"), &self.endpoint)?,
            table: self.table.clone(),
            pushdown: self.pushdown,
            window: i64::from(window_hours) * hour,
            min_window: i64::from(min_minutes) * 60_000_000,
            max_rows: in_range(&format!("{S}.max_rows"), self.max_rows, 1, 500_000)?,
            max_answer_bytes: in_range(&format!("{S}.max_answer_mib"), self.max_answer_mib, 1, 1_024)? as usize
                * (1 << 20),
            max_in_flight: in_range(&format!("{S}.max_in_flight"), self.max_in_flight, 1, 5)?,
            server_timeout: Duration::from_secs(in_range(
                &format!("{S}.server_timeout_secs"),
                self.server_timeout_secs,
                1,
                600,
            )?),
            timespan_slack: i64::from(in_range(
                &format!("{S}.timespan_slack_hours"),
                self.timespan_slack_hours,
                0,
                720,
            )?) * hour,
            max_splits: self.max_splits,
            retry: retry_policy(S, self.max_attempts, self.retry_base_ms, self.retry_max_ms, self.timeout_secs)?,
        })
    }
}

/// The validated detector settings; the sub-tables that need no conversion are the
/// configuration itself, their lists lowercased.
#[derive(Debug, Clone)]
pub struct DetectSettings {
    pub enabled: bool,
    pub history_days: usize,
    pub min_device_history_days: usize,
    pub max_listed_devices: usize,
    pub series: SeriesSettings,
    pub unexpected_process: bool,
    pub new_combination: bool,
    pub lookalike: LookalikeConfig,
    pub unusual_port: UnusualPortConfig,
    pub silent_device: SilentDeviceConfig,
}

#[derive(Debug, Clone)]
pub struct SeriesSettings {
    pub enabled: bool,
    pub threshold: f64,
    pub min_points: usize,
    pub seasonality: usize,
    pub trend: Trend,
    pub trend_name: String,
    pub min_change: f64,
    pub noise_sigmas: f64,
}

impl SentinelConfig {
    pub fn validate(&self) -> Result<SentinelSettings, ConfigError> {
        const S: &str = "sentinel";
        let invalid = |name: &str, message: String| ConfigError::Invalid { field: format!("{S}.{name}"), message };
        let id = self.dcr_immutable_id.trim();
        let hex = id.strip_prefix("dcr-").unwrap_or("");
        if hex.len() != 32 || !hex.bytes().all(|c| c.is_ascii_hexdigit()) {
            return Err(invalid(
                "dcr_immutable_id",
                format!(
                    "`{id}` is not a DCR immutable ID (`dcr-` and 32 hex digits, the DCR's `immutableId` property)"
                ),
            ));
        }
        let mut streams = BTreeMap::new();
        for table in crate::sink::tables::TABLES {
            streams.insert(table.name.to_string(), crate::sink::sentinel::default_stream(table.name));
        }
        for (table, stream) in &self.streams {
            if !streams.contains_key(table) {
                return Err(invalid(
                    "streams",
                    format!(
                        "`{table}` is not a result table; the tables are {}",
                        crate::sink::tables::TABLES.iter().map(|t| t.name).collect::<Vec<_>>().join(", ")
                    ),
                ));
            }
            let well_formed = stream.strip_prefix("Custom-").is_some_and(|rest| {
                !rest.is_empty() && rest.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            });
            if !well_formed {
                return Err(invalid("streams", format!("`{stream}` is not a custom stream name (`Custom-<Name>`)")));
            }
            streams.insert(table.clone(), stream.clone());
        }
        Ok(SentinelSettings {
            endpoint: endpoint_url(&format!("{S}.endpoint"), &self.endpoint)?,
            dcr_immutable_id: id.to_string(),
            streams,
            max_in_flight: in_range(&format!("{S}.max_in_flight"), self.max_in_flight, 1, 16)?,
            max_batch_bytes: in_range(
                &format!("{S}.max_batch_bytes"),
                self.max_batch_bytes,
                1_024,
                crate::sink::sentinel::MAX_BATCH_BYTES,
            )?,
            retry: retry_policy(S, self.max_attempts, self.retry_base_ms, self.retry_max_ms, self.timeout_secs)?,
        })
    }
}

impl Config {
    /// Applies the `TELEMETRY_HUNT_*` overrides of [`env`]; `lookup` reads one variable (the
    /// process environment in the binary, a map in tests). Empty values count as unset.
    pub fn apply_env(&mut self, lookup: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        let get = |name: &str| lookup(name).map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
        let invalid = |name: &str, message: String| ConfigError::Invalid { field: name.into(), message };
        let set = |field: &mut String, name: &str| get(name).into_iter().for_each(|v| *field = v);
        let set_some = |field: &mut Option<String>, name: &str| get(name).into_iter().for_each(|v| *field = Some(v));
        let source_keys =
            [env::SOURCE_ACCOUNT, env::SOURCE_ENDPOINT, env::SOURCE_CONTAINER, env::SOURCE_PREFIX, env::SOURCE_LAYOUT];
        if source_keys.iter().any(|k| get(k).is_some()) {
            let blob = self.source.blob.get_or_insert_with(BlobSourceConfig::default);
            set_some(&mut blob.account, env::SOURCE_ACCOUNT);
            set_some(&mut blob.endpoint, env::SOURCE_ENDPOINT);
            set(&mut blob.container, env::SOURCE_CONTAINER);
            set(&mut blob.prefix, env::SOURCE_PREFIX);
            if let Some(v) = get(env::SOURCE_LAYOUT) {
                blob.layout = BlobLayout::parse(&v).ok_or_else(|| {
                    invalid(
                        env::SOURCE_LAYOUT,
                        format!("`{v}` is not a layout; use auto, parquet, defender-streaming or log-analytics-export"),
                    )
                })?;
            }
        }
        let results_keys = [env::RESULTS_ACCOUNT, env::RESULTS_ENDPOINT, env::RESULTS_CONTAINER, env::RESULTS_PREFIX];
        if results_keys.iter().any(|k| get(k).is_some()) {
            let blob = self.output.blob.get_or_insert_with(BlobResultsConfig::default);
            set_some(&mut blob.account, env::RESULTS_ACCOUNT);
            set_some(&mut blob.endpoint, env::RESULTS_ENDPOINT);
            set(&mut blob.container, env::RESULTS_CONTAINER);
            set(&mut blob.prefix, env::RESULTS_PREFIX);
        }
        if let Some(v) = get(env::IDENTITY) {
            self.azure.identity = IdentityKind::parse(&v).ok_or_else(|| {
                invalid(env::IDENTITY, format!("`{v}` is not an identity; use managed-identity, workload-identity, azure-cli, developer-tools or emulator"))
            })?;
        }
        set_some(&mut self.azure.client_id, env::CLIENT_ID);
        set_some(&mut self.azure.tenant_id, env::TENANT_ID);
        if let Some(v) = get(env::REPROCESS_DAYS) {
            self.source.reprocess_days =
                v.parse().map_err(|_| invalid(env::REPROCESS_DAYS, format!("`{v}` is not a number of days")))?;
        }
        if let Some(v) = get(env::LOCK_TTL_SECONDS) {
            self.output.lock_ttl_seconds =
                v.parse().map_err(|_| invalid(env::LOCK_TTL_SECONDS, format!("`{v}` is not a number of seconds")))?;
        }
        if let Some(id) = get(env::LA_WORKSPACE_ID) {
            self.source.log_analytics.get_or_insert_with(Default::default).workspace_id = id;
        }
        if let Some(endpoint) = get(env::LA_ENDPOINT) {
            self.source.log_analytics.get_or_insert_with(Default::default).endpoint = endpoint;
        }
        if let Some(pushdown) = get(env::LA_PUSHDOWN) {
            let pushdown = match pushdown.as_str() {
                "rows" => Pushdown::Rows,
                "aggregate" => Pushdown::Aggregate,
                other => {
                    return Err(ConfigError::Invalid {
                        field: env::LA_PUSHDOWN.into(),
                        message: format!("`{other}` is neither `rows` nor `aggregate`"),
                    })
                }
            };
            self.source.log_analytics.get_or_insert_with(Default::default).pushdown = pushdown;
        }
        if let Some(endpoint) = get(env::SENTINEL_ENDPOINT) {
            self.sentinel.get_or_insert_with(Default::default).endpoint = endpoint;
        }
        if let Some(id) = get(env::SENTINEL_DCR) {
            self.sentinel.get_or_insert_with(Default::default).dcr_immutable_id = id;
        }
        Ok(())
    }

    fn validate_azure(&self) -> Result<IdentitySettings, ConfigError> {
        let a = &self.azure;
        let invalid = |field: &str, message: String| ConfigError::Invalid { field: field.into(), message };
        if let Some(id) = &a.client_id {
            if !is_guid(id) {
                return Err(invalid("azure.client_id", format!("{} is not a client id (a GUID such as 00000000-0000-0000-0000-000000000000); take it from the identity's overview page", never_shown(id))));
            }
            if !matches!(a.identity, IdentityKind::ManagedIdentity | IdentityKind::WorkloadIdentity) {
                return Err(invalid(
                    "azure.client_id",
                    format!(
                        "only a managed or workload identity takes a client id, not `{}`; remove it",
                        a.identity.as_str()
                    ),
                ));
            }
        }
        if let Some(tenant) = &a.tenant_id {
            if a.identity != IdentityKind::WorkloadIdentity {
                return Err(invalid("azure.tenant_id", "only a workload identity takes a tenant id; remove it".into()));
            }
            if tenant.is_empty() || !tenant.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.') {
                return Err(invalid(
                    "azure.tenant_id",
                    format!("{} is not a tenant id or domain", never_shown(tenant)),
                ));
            }
        }
        Ok(IdentitySettings {
            kind: a.identity,
            client_id: a.client_id.clone(),
            tenant_id: a.tenant_id.clone(),
            max_retries: a.max_retries,
            retry_timeout: Duration::from_secs(a.retry_timeout_seconds),
        })
    }
}

/// A configured value for a message: quoted when it cannot be a secret, else described. A
/// connection string pasted as an endpoint, or a key as an account name, is a secret.
fn shown(value: &str) -> String {
    if value.len() <= 100 && crate::redact::redact(value) == value {
        format!("`{value}`")
    } else {
        never_shown(value)
    }
}

/// A value of a field next to which secrets live (a client id beside its client secret): never
/// quoted, only described.
fn never_shown(value: &str) -> String {
    format!("the value ({} characters, not shown: it may be a secret)", value.chars().count())
}

fn is_guid(text: &str) -> bool {
    let groups: Vec<&str> = text.split('-').collect();
    groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12])
        && groups.iter().all(|g| g.chars().all(|c| c.is_ascii_hexdigit()))
}

/// Checks a container's settings and resolves the endpoint and account. Pure: no I/O.
fn blob_location(
    section: &str,
    account: &Option<String>,
    endpoint: &Option<String>,
    container: &str,
    prefix: &str,
    identity: IdentityKind,
) -> Result<BlobLocation, ConfigError> {
    let invalid = |key: &str, message: String| ConfigError::Invalid { field: format!("{section}.{key}"), message };
    let emulator = identity == IdentityKind::Emulator;
    if container.is_empty() {
        return Err(invalid("container", "is required: the name of the blob container".into()));
    }
    let container_ok = (3..=63).contains(&container.len())
        && container.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !container.starts_with('-')
        && !container.ends_with('-')
        && !container.contains("--");
    if !container_ok {
        return Err(invalid("container", format!("{} is not a container name: 3 to 63 lowercase letters, digits and single hyphens, starting and ending with a letter or digit", shown(container))));
    }
    let account_ok =
        |a: &str| (3..=24).contains(&a.len()) && a.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if let Some(a) = account {
        if !account_ok(a) {
            return Err(invalid(
                "account",
                format!("{} is not a storage account name: 3 to 24 lowercase letters and digits", shown(a)),
            ));
        }
    }
    let endpoint = match endpoint {
        Some(text) => {
            let url = url::Url::parse(text).map_err(|e| {
                invalid(
                    "endpoint",
                    format!("{} is not a URL ({e}); e.g. https://contoso.blob.core.windows.net", shown(text)),
                )
            })?;
            if url.query().is_some() || url.fragment().is_some() {
                return Err(invalid("endpoint", "a query string (SAS token) is not allowed: the job signs requests with its identity (`[azure]`); remove everything from `?`".into()));
            }
            if !url.username().is_empty() || url.password().is_some() {
                return Err(invalid("endpoint", "credentials in the URL are not allowed; remove them".into()));
            }
            match url.scheme() {
                "https" => {}
                "http" if emulator => {}
                "http" => return Err(invalid("endpoint", "plain http is only for the Azurite emulator (`azure.identity = \"emulator\"`): tokens are never sent unencrypted; use https".into())),
                other => return Err(invalid("endpoint", format!("`{other}` is not http or https"))),
            }
            if url.host_str().is_none() {
                return Err(invalid("endpoint", format!("{} has no host", shown(text))));
            }
            text.trim_end_matches('/').to_string()
        }
        None if emulator => EMULATOR_ENDPOINT.to_string(),
        None => match account {
            Some(a) => format!("https://{a}.blob.core.windows.net"),
            None => return Err(invalid("account", "is required (or an `endpoint` that names the account)".into())),
        },
    };
    let account = match account {
        Some(a) => a.clone(),
        None => account_from_endpoint(&endpoint)
            .filter(|a| account_ok(a))
            .or(emulator.then(|| EMULATOR_ACCOUNT.to_string()))
            .ok_or_else(|| {
                invalid("account", format!("cannot tell the storage account from `{endpoint}`; set `account`"))
            })?,
    };
    let prefix = prefix.trim_matches('/');
    if prefix.split('/').any(|part| part == ".." || part == ".") || prefix.contains("//") {
        return Err(invalid("prefix", format!("`{prefix}` is not a folder path (no `.`, `..` or empty parts)")));
    }
    Ok(BlobLocation { account, endpoint, container: container.to_string(), prefix: prefix.to_string() })
}

/// `https://<account>.blob.core…` names the account in its host; Azurite's path-style
/// `http://127.0.0.1:10000/<account>` in its first path segment.
fn account_from_endpoint(endpoint: &str) -> Option<String> {
    let url = url::Url::parse(endpoint).ok()?;
    let host = url.host_str()?;
    if let Some((account, rest)) = host.split_once('.') {
        if rest.starts_with("blob.") {
            return Some(account.to_string());
        }
    }
    url.path_segments()?.find(|s| !s.is_empty()).map(str::to_string)
}

/// The validated, ready-to-use form of [`Config`].
#[derive(Debug, Clone)]
pub struct Settings {
    /// Events from a blob container (else local inputs).
    pub source_blob: Option<BlobSource>,
    /// Results in a blob container (else the local folder).
    pub results_blob: Option<BlobLocation>,
    pub reprocess_days: u32,
    pub identity: IdentitySettings,
    pub transport: Transport,
    pub lock_ttl: Duration,
    pub match_mode: MatchMode,
    pub time_column: TimeColumn,
    pub hosts: HostMatcher,
    pub reference_hosts: Vec<String>,
    pub extra_hosts: Vec<String>,
    pub exclusions: Vec<CompiledExclusion>,
    pub expected: Vec<CompiledExpected>,
    pub scope: Scope,
    pub reject_samples: usize,
    pub limits: Limits,
    pub detect: DetectSettings,
    /// The query API source, when configured instead of files.
    pub log_analytics: Option<LogAnalyticsSettings>,
    /// Sentinel delivery, when configured.
    pub sentinel: Option<SentinelSettings>,
}

#[derive(Debug, Clone)]
pub struct CompiledExclusion {
    pub name: String,
    pub process_file_names: Vec<String>,
    pub folder_path_prefixes: Vec<String>,
    pub command_line_contains: Vec<String>,
    pub parent_file_names: Vec<String>,
    pub remote_cidrs: Vec<Cidr>,
}

#[derive(Debug, Clone)]
pub struct CompiledExpected {
    pub file_name: String,
    pub folder_prefixes: Vec<String>,
    pub hosts: Option<crate::hunt::host::HostList>,
}

#[derive(Debug, Clone, Default)]
pub struct Scope {
    pub machine_groups_include: Vec<String>,
    pub machine_groups_exclude: Vec<String>,
    pub device_names_include: Vec<String>,
    pub device_names_exclude: Vec<String>,
}

impl Scope {
    pub fn is_everything(&self) -> bool {
        self.machine_groups_include.is_empty()
            && self.machine_groups_exclude.is_empty()
            && self.device_names_include.is_empty()
            && self.device_names_exclude.is_empty()
    }

    /// Whether a device is in scope. Inputs are compared case-insensitively.
    pub fn admits(&self, machine_group: Option<&str>, device_name: Option<&str>) -> bool {
        let group = machine_group.unwrap_or("").to_ascii_lowercase();
        let name = device_name.unwrap_or("").to_ascii_lowercase();
        if !self.machine_groups_include.is_empty() && !self.machine_groups_include.contains(&group) {
            return false;
        }
        if self.machine_groups_exclude.contains(&group) {
            return false;
        }
        if !self.device_names_include.is_empty() && !self.device_names_include.iter().any(|p| glob_match(p, &name)) {
            return false;
        }
        !self.device_names_exclude.iter().any(|p| glob_match(p, &name))
    }
}

/// `*` matches any run of characters; everything else literally.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first) || text.len() < first.len() + last.len() || !text.ends_with(last) {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for middle in &parts[1..parts.len() - 1] {
        match rest.find(middle) {
            Some(at) => rest = &rest[at + middle.len()..],
            None => return false,
        }
    }
    true
}

/// An IPv4 or IPv6 network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn parse(text: &str) -> Option<Cidr> {
        let (addr, prefix) = text.trim().split_once('/')?;
        let network: IpAddr = addr.parse().ok()?;
        let prefix: u8 = prefix.parse().ok()?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        (prefix <= max).then_some(Cidr { network, prefix })
    }

    /// Total: a value that is not an IP address is simply not in the range.
    pub fn contains_text(&self, ip: &str) -> bool {
        ip.trim().parse::<IpAddr>().is_ok_and(|ip| self.contains(ip))
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = if self.prefix == 0 { 0 } else { u32::MAX << (32 - self.prefix) };
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = if self.prefix == 0 { 0 } else { u128::MAX << (128 - self.prefix) };
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_validate_and_hold_the_reference_list() {
        let settings = Config::default().validate().expect("defaults are valid");
        assert_eq!(settings.reference_hosts.len(), 19);
        assert_eq!(settings.match_mode, MatchMode::Kql);
        let names: Vec<&str> = settings.exclusions.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "task-scheduler-microsoft-tasks",
                "mecm-client",
                "windows-update-service",
                "windows-update-client",
                "intune-management-extension",
                "mde-self-health"
            ]
        );
        assert_eq!(Config::from_toml("").unwrap(), Config::default());
    }

    #[test]
    fn unknown_keys_are_errors_that_name_the_key() {
        let err = Config::from_toml("match_mod = \"kql\"").unwrap_err();
        assert!(err.contains("match_mod"), "{err}");
        let err = Config::from_toml("[output]\ndirr = \"x\"").unwrap_err();
        assert!(err.contains("dirr"), "{err}");
        let err = Config::from_toml("match_mode = \"fuzzy\"").unwrap_err();
        assert!(err.contains("fuzzy") || err.contains("variant"), "{err}");
        // the line and its key, never the line itself: a value may be a secret
        let err = Config::from_toml("[azure]\nclient_secret = \"s3cret-Value-1\"").unwrap_err();
        assert!(err.starts_with("line 2, column 1 (`client_secret`): unknown field `client_secret`"), "{err}");
        assert!(!err.contains("s3cret"), "{err}");
        let err = Config::from_toml("[azure]\nmax_retries = \"sig=s3cretValue\"").unwrap_err();
        assert!(err.contains("(`max_retries`)") && !err.contains("s3cret"), "{err}");
    }

    #[test]
    fn validation_names_the_field_and_the_fix() {
        let mut config = Config::default();
        config.exclusions.push(ExclusionRule { name: "empty".into(), enabled: true, ..Default::default() });
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("exclusions[7]") && err.contains("enabled = false"), "{err}");

        let config =
            Config::from_toml("[[exclusions]]\nname = \"ms\"\nenabled = true\nremote_cidrs = [\"13.64.0.0/33\"]")
                .unwrap();
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("13.64.0.0/33"), "{err}");

        let config = Config::from_toml("reference_hosts = []").unwrap();
        assert!(config.validate().unwrap_err().to_string().contains("reference_hosts"));
    }

    #[test]
    fn detector_settings_are_checked_and_name_the_key() {
        let settings = Config::default().validate().unwrap();
        assert_eq!(settings.detect.history_days, 30);
        assert_eq!(settings.detect.series.trend, Trend::Average);
        assert!(settings.hosts.lookalikes().is_some());
        assert!(settings.detect.silent_device.sensor_processes.contains(&"mssense.exe".to_string()));

        let err = Config::from_toml("[detect]\nhistroy_days = 3").unwrap_err();
        assert!(err.contains("histroy_days"), "{err}");
        let err = Config::from_toml("[detect.series]\nthreshhold = 3").unwrap_err();
        assert!(err.contains("threshhold"), "{err}");
        for (toml, field) in [
            ("[detect.series]\nthreshold = 0.0", "detect.series.threshold"),
            ("[detect.series]\ntrend = \"cubic\"", "detect.series.trend"),
            ("[detect.series]\nmin_points = 2", "detect.series.min_points"),
            ("[detect]\nmin_device_history_days = 40", "detect.min_device_history_days"),
            ("[detect]\nhistory_days = 0", "detect.history_days"),
            ("[detect.lookalike]\npatterns = [\"**\"]", "detect.lookalike.patterns"),
            ("[detect.lookalike]\nmax_edit_distance = 5", "detect.lookalike.max_edit_distance"),
            ("[detect.unusual_port]\nallowed_ports = [70000]", "detect.unusual_port.allowed_ports"),
            ("[detect.silent_device]\nmax_chance = 1.5", "detect.silent_device.max_chance"),
            ("[detect.silent_device]\nmin_sensor_share = -0.1", "detect.silent_device.min_sensor_share"),
        ] {
            let err = Config::from_toml(toml).unwrap().validate().unwrap_err().to_string();
            assert!(err.contains(field), "{toml}: {err}");
        }
        // without the look-alike detector the hunt does not look for look-alikes at all
        let off = Config::from_toml("[detect.lookalike]\nenabled = false").unwrap().validate().unwrap();
        assert!(off.hosts.lookalikes().is_none());
        let off = Config::from_toml("[detect]\nenabled = false").unwrap().validate().unwrap();
        assert!(off.hosts.lookalikes().is_none());
    }

    #[test]
    fn blob_sections_resolve_endpoints_and_accounts() {
        let config = Config::from_toml(
            "[source.blob]\naccount = \"contosomde\"\ncontainer = \"insights-logs-advancedhunting-devicenetworkevents\"\nprefix = \"/tenantId=abc/\"\n\n[output.blob]\nendpoint = \"https://contosoresults.blob.core.windows.net/\"\ncontainer = \"mde-results\"\n\n[azure]\nidentity = \"managed-identity\"\nclient_id = \"11111111-2222-3333-4444-555555555555\"",
        )
        .unwrap();
        let settings = config.validate().unwrap();
        let source = settings.source_blob.unwrap();
        assert_eq!(source.location.endpoint, "https://contosomde.blob.core.windows.net");
        assert_eq!(source.location.prefix, "tenantId=abc");
        assert_eq!(source.layout, BlobLayout::Auto);
        let results = settings.results_blob.unwrap();
        assert_eq!(
            (results.account.as_str(), results.endpoint.as_str()),
            ("contosoresults", "https://contosoresults.blob.core.windows.net")
        );
        assert_eq!(settings.identity.client_id.as_deref(), Some("11111111-2222-3333-4444-555555555555"));

        let emulator =
            Config::from_toml("[output.blob]\ncontainer = \"results\"\n[azure]\nidentity = \"emulator\"").unwrap();
        let results = emulator.validate().unwrap().results_blob.unwrap();
        assert_eq!((results.account.as_str(), results.endpoint.as_str()), ("devstoreaccount1", EMULATOR_ENDPOINT));
        let path_style = Config::from_toml("[output.blob]\nendpoint = \"http://127.0.0.1:10001/otheraccount\"\ncontainer = \"results\"\n[azure]\nidentity = \"emulator\"").unwrap();
        assert_eq!(path_style.validate().unwrap().results_blob.unwrap().account, "otheraccount");
        // the defaults have no blob and print as TOML without one
        assert!(Config::default().validate().unwrap().results_blob.is_none());
        let printed = toml::to_string_pretty(&Config::default()).unwrap();
        assert!(printed.contains("[azure]") && !printed.contains("[output.blob]"), "{printed}");
        assert_eq!(Config::from_toml(&printed).unwrap(), Config::default());
    }

    #[test]
    fn blob_mistakes_name_the_field_and_the_fix() {
        let cases = [
            ("[output.blob]\naccount = \"contoso\"", "output.blob.container", "required"),
            ("[output.blob]\naccount = \"contoso\"\ncontainer = \"Results_1\"", "output.blob.container", "lowercase"),
            ("[output.blob]\naccount = \"Contoso-Storage\"\ncontainer = \"results\"", "output.blob.account", "3 to 24"),
            ("[output.blob]\ncontainer = \"results\"", "output.blob.account", "required"),
            ("[output.blob]\nendpoint = \"https://contoso.blob.core.windows.net/?sv=2022&sig=abc\"\ncontainer = \"results\"", "output.blob.endpoint", "SAS"),
            ("[output.blob]\nendpoint = \"http://contoso.blob.core.windows.net\"\ncontainer = \"results\"", "output.blob.endpoint", "https"),
            ("[source.blob]\naccount = \"contoso\"\ncontainer = \"events\"\nprefix = \"a/../b\"", "source.blob.prefix", ".."),
            ("[source]\ninputs = [\"x\"]\n[source.blob]\naccount = \"contoso\"\ncontainer = \"events\"", "source", "keep one"),
            ("[azure]\nclient_id = \"my-identity\"", "azure.client_id", "GUID"),
            ("[azure]\nidentity = \"azure-cli\"\nclient_id = \"11111111-2222-3333-4444-555555555555\"", "azure.client_id", "remove it"),
            ("[azure]\ntenant_id = \"contoso.onmicrosoft.com\"", "azure.tenant_id", "workload"),
            ("[output]\nlock_ttl_seconds = 0", "output.lock_ttl_seconds", "between"),
            ("[source]\nreprocess_days = 90", "source.reprocess_days", "--from"),
        ];
        for (toml_text, field, fix) in cases {
            let err = Config::from_toml(toml_text).unwrap().validate().unwrap_err().to_string();
            assert!(err.contains(&format!("`{field}`")) && err.contains(fix), "{toml_text}: {err}");
        }
        // a key (or SAS) is not a configuration key at all
        let err = Config::from_toml("[output.blob]\ncontainer = \"r\"\naccess_key = \"abc\"").unwrap_err();
        assert!(err.contains("access_key"), "{err}");
        let err = Config::from_toml("[azure]\nidentity = \"default\"").unwrap_err();
        assert!(err.contains("default"), "{err}");
    }

    #[test]
    fn environment_overrides_set_the_containers_and_identity() {
        let vars: std::collections::HashMap<&str, &str> = [
            (env::SOURCE_ACCOUNT, "contosomde"),
            (env::SOURCE_CONTAINER, "am-devicenetworkevents"),
            (env::SOURCE_LAYOUT, "log-analytics-export"),
            (env::RESULTS_ACCOUNT, "contosoresults"),
            (env::RESULTS_CONTAINER, "results"),
            (env::RESULTS_PREFIX, "nightly"),
            (env::CLIENT_ID, "11111111-2222-3333-4444-555555555555"),
            (env::REPROCESS_DAYS, "2"),
            (env::TENANT_ID, " "),
        ]
        .into_iter()
        .collect();
        let mut config = Config::default();
        config.apply_env(|name| vars.get(name).map(|v| v.to_string())).unwrap();
        let settings = config.validate().unwrap();
        let source = settings.source_blob.unwrap();
        assert_eq!(source.location.url(), "https://contosomde.blob.core.windows.net/am-devicenetworkevents");
        assert_eq!(source.layout, BlobLayout::LogAnalyticsExport);
        assert_eq!(
            settings.results_blob.unwrap().url(),
            "https://contosoresults.blob.core.windows.net/results/nightly"
        );
        assert_eq!(settings.reprocess_days, 2);
        assert_eq!(settings.identity.tenant_id, None, "a blank variable is unset");

        let mut config = Config::default();
        let err = config.apply_env(|name| (name == env::IDENTITY).then(|| "default".to_string())).unwrap_err();
        assert!(
            err.to_string().contains("TELEMETRY_HUNT_IDENTITY") && err.to_string().contains("managed-identity"),
            "{err}"
        );
    }

    #[test]
    fn the_container_example_is_a_valid_configuration() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/container.toml");
        let settings = Config::load(&path).unwrap().validate().unwrap();
        assert_eq!(settings.source_blob.unwrap().layout, BlobLayout::DefenderStreaming);
        assert_eq!(
            settings.results_blob.unwrap().url(),
            "https://contosohuntresults.blob.core.windows.net/mde-telemetry"
        );
        assert_eq!(settings.identity.kind, IdentityKind::ManagedIdentity);
    }

    #[test]
    fn endpoint_errors_never_show_credentials_or_signatures() {
        for endpoint in [
            "https://user:s3cretPass@evil.example.com/x",
            "https://evil.example.com/x?sig=s3cretPass",
            "http://u:s3cretPass@evil.example.com",
            "ftp://u:s3cretPass@evil.example.com",
            "not a url s3cretPass",
        ] {
            let err = endpoint_url("sentinel.endpoint", endpoint).unwrap_err().to_string();
            assert!(err.contains("sentinel.endpoint") && !err.contains("s3cretPass"), "{endpoint}: {err}");
        }
    }

    #[test]
    fn cidr_and_glob() {
        let c = Cidr::parse("13.64.0.0/11").unwrap();
        assert!(c.contains_text("13.95.255.255"));
        assert!(!c.contains_text("13.96.0.0"));
        assert!(!c.contains_text("-"));
        assert!(Cidr::parse("2603:1000::/24").unwrap().contains_text("2603:10ff::1"));
        assert!(Cidr::parse("0.0.0.0/0").unwrap().contains_text("1.2.3.4"));
        assert!(Cidr::parse("1.2.3.4").is_none());
        assert!(glob_match("ws-*.contoso.local", "ws-0042.contoso.local"));
        assert!(!glob_match("ws-*.contoso.local", "srv-1.contoso.local"));
        assert!(glob_match("*", ""));
        assert!(glob_match("a*b*c", "aXbYc"));
        assert!(!glob_match("a*b*c", "acb"));
        assert!(glob_match("exact", "exact"));
    }

    #[test]
    fn scope_include_and_exclude() {
        let config = Config::from_toml(
            "[scope]\nmachine_groups_include = [\"Servers\"]\ndevice_names_exclude = [\"srv-test*\"]",
        )
        .unwrap();
        let scope = config.validate().unwrap().scope;
        assert!(scope.admits(Some("servers"), Some("srv-01")));
        assert!(!scope.admits(Some("Workstations"), Some("ws-01")));
        assert!(!scope.admits(Some("Servers"), Some("SRV-TEST-3")));
        assert!(!scope.admits(None, Some("srv-01")));
        assert!(Scope::default().admits(None, None));
    }

    const WS: &str = "8f6a4c2e-1b3d-4e5f-9a7b-0c1d2e3f4a5b";
    const DCR: &str = "dcr-0123456789abcdef0123456789abcdef";

    #[test]
    fn azure_sections_validate_purely_and_name_the_field() {
        let base = format!(
            "[source.log_analytics]\nworkspace_id = \"{WS}\"\n\n[sentinel]\nendpoint = \"https://dce-x.westeurope-1.ingest.monitor.azure.com\"\ndcr_immutable_id = \"{DCR}\"\n"
        );
        let settings = Config::from_toml(&base).unwrap().validate().unwrap();
        let la = settings.log_analytics.unwrap();
        assert_eq!(la.query_url().as_str(), format!("https://api.loganalytics.azure.com/v1/workspaces/{WS}/query"));
        assert_eq!((la.window, la.max_rows, la.max_in_flight), (6 * 3_600_000_000, 500_000, 4));
        let sentinel = settings.sentinel.unwrap();
        assert_eq!(
            sentinel.stream_url(&sentinel.stream("MdeTelemetryDaily")).as_str(),
            format!("https://dce-x.westeurope-1.ingest.monitor.azure.com/dataCollectionRules/{DCR}/streams/Custom-MdeTelemetryDaily_CL?api-version=2023-01-01")
        );
        let local = Config::from_toml(
            &base.replace("https://dce-x.westeurope-1.ingest.monitor.azure.com", "http://127.0.0.1:8080/"),
        )
        .unwrap()
        .validate()
        .unwrap();
        assert_eq!(
            local.sentinel.unwrap().stream_url("Custom-A_CL").as_str(),
            format!("http://127.0.0.1:8080/dataCollectionRules/{DCR}/streams/Custom-A_CL?api-version=2023-01-01")
        );

        let cases: &[(&str, &str, &str)] = &[
            (WS, "not-a-guid", "source.log_analytics.workspace_id"),
            ("https://dce-x.westeurope-1.ingest.monitor.azure.com", "http://dce.example", "must use https"),
            ("https://dce-x.westeurope-1.ingest.monitor.azure.com", "https://u:p@dce.example", "credentials"),
            ("https://dce-x.westeurope-1.ingest.monitor.azure.com", "https://dce.example/?sig=1", "query or fragment"),
            ("https://dce-x.westeurope-1.ingest.monitor.azure.com", "ftp://dce.example", "scheme `ftp`"),
            (DCR, "dcr-123", "sentinel.dcr_immutable_id"),
            ("[sentinel]", "[sentinel]\nstreams = { MdeTelemetryDaily = \"Daily_CL\" }", "Custom-"),
            ("[sentinel]", "[sentinel]\nstreams = { Nope = \"Custom-Nope_CL\" }", "not a result table"),
            ("[sentinel]", "[sentinel]\nmax_batch_bytes = 2000000", "sentinel.max_batch_bytes"),
            ("[sentinel]", "[sentinel]\nretry_base_ms = 90000", "sentinel.retry_base_ms"),
            ("[source.log_analytics]", "[source.log_analytics]\nmax_rows = 600000", "max_rows"),
            ("[source.log_analytics]", "[source.log_analytics]\nwindow_hours = 0", "window_hours"),
            ("[source.log_analytics]", "[source.log_analytics]\nmax_in_flight = 9", "max_in_flight"),
            ("[source.log_analytics]", "[source.log_analytics]\ntable = \"Device Events\"", "not a table name"),
            ("[source.log_analytics]", "[source.log_analytics]\nserver_timeout_secs = 900", "server_timeout_secs"),
            ("[source.log_analytics]", "[source]\ninputs = [\"x\"]\n[source.log_analytics]", "keep one source"),
        ];
        for (from, to, want) in cases {
            let text = base.replacen(from, to, 1);
            let err = Config::from_toml(&text).unwrap().validate().unwrap_err().to_string();
            assert!(err.contains(want), "{to}: {err}");
        }
        let err = Config::from_toml(&format!("{base}\n[sentinel.extra]\n")).unwrap_err();
        assert!(err.contains("extra") || err.contains("duplicate"), "{err}");
        let err = Config::from_toml("[source.log_analytics]\nworkspaceid = \"x\"").unwrap_err();
        assert!(err.contains("workspaceid"), "{err}");
        let mut config = Config::from_toml(&format!("reference_hosts = [\"a\\u0007b\"]\n{base}")).unwrap();
        config.sentinel = None;
        assert!(config.validate().unwrap_err().to_string().contains("control character"));
    }

    #[test]
    fn environment_overrides_fill_the_azure_sections() {
        let env: BTreeMap<&str, &str> = [
            ("TELEMETRY_HUNT_LA_WORKSPACE_ID", WS),
            ("TELEMETRY_HUNT_LA_ENDPOINT", "http://127.0.0.1:9"),
            ("TELEMETRY_HUNT_LA_PUSHDOWN", "aggregate"),
            ("TELEMETRY_HUNT_SENTINEL_ENDPOINT", "http://localhost:10"),
            ("TELEMETRY_HUNT_SENTINEL_DCR_IMMUTABLE_ID", DCR),
        ]
        .into_iter()
        .collect();
        let mut config = Config::default();
        config.apply_env(|k| env.get(k).map(|v| v.to_string())).unwrap();
        let settings = config.validate().unwrap();
        let la = settings.log_analytics.unwrap();
        assert_eq!((la.workspace_id.as_str(), la.pushdown), (WS, Pushdown::Aggregate));
        assert_eq!(la.endpoint.as_str(), "http://127.0.0.1:9/");
        assert_eq!(settings.sentinel.unwrap().dcr_immutable_id, DCR);

        let mut config = Config::default();
        config.apply_env(|_| None).unwrap();
        assert_eq!(config, Config::default());
        let err = config.apply_env(|k| (k == "TELEMETRY_HUNT_LA_PUSHDOWN").then(|| "fast".to_string())).unwrap_err();
        assert!(err.to_string().contains("TELEMETRY_HUNT_LA_PUSHDOWN"), "{err}");
    }
}
