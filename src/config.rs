//! Configuration: one TOML file, every field optional, defaults embedded.
//!
//! Parse, don't validate: [`Config`] is what the file says (unknown keys are errors, so a typo
//! never silently falls back to a default); [`Config::validate`] turns it into [`Settings`],
//! checking everything that can be checked without I/O.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::baseline::series::Trend;
use crate::hunt::host::{HostMatcher, MatchMode};

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
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SourceConfig {
    /// Local files or folders (searched recursively): Parquet, JSON lines (`.gz` too), portal CSV.
    pub inputs: Vec<PathBuf>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct OutputConfig {
    /// The results folder.
    pub dir: PathBuf,
    /// How many malformed rows are kept as samples in the run record.
    pub reject_samples: usize,
}

impl Default for OutputConfig {
    fn default() -> Self {
        OutputConfig { dir: PathBuf::from("out"), reject_samples: 20 }
    }
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

    pub fn from_toml(text: &str) -> Result<Config, String> {
        toml::from_str(text).map_err(|e| e.to_string())
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
        Ok(Settings {
            match_mode: self.match_mode,
            time_column: self.time_column,
            hosts,
            reference_hosts: self.reference_hosts.clone(),
            exclusions,
            expected,
            scope,
            reject_samples: self.output.reject_samples,
            detect,
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

/// The validated, ready-to-use form of [`Config`].
#[derive(Debug, Clone)]
pub struct Settings {
    pub match_mode: MatchMode,
    pub time_column: TimeColumn,
    pub hosts: HostMatcher,
    pub reference_hosts: Vec<String>,
    pub exclusions: Vec<CompiledExclusion>,
    pub expected: Vec<CompiledExpected>,
    pub scope: Scope,
    pub reject_samples: usize,
    pub detect: DetectSettings,
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
}
