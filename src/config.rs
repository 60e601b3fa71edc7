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
use crate::hunt::host::{HostMatcher, MatchMode};
use crate::sink::sentinel::SentinelSettings;
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
            sentinel: None,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SourceConfig {
    /// Local files or folders (searched recursively): Parquet, JSON lines (`.gz` too), portal CSV.
    pub inputs: Vec<PathBuf>,
    /// A Log Analytics (Sentinel) workspace, read through the query API, instead of files.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_analytics: Option<LogAnalyticsConfig>,
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
    expected.push(ExpectedProcess {
        file_name: "svchost.exe".into(),
        folder_prefixes: strings(&[r"c:\windows\system32\"]),
        hosts: strings(&[
            "*.events.data.microsoft.com",
            "events.data.microsoft.com",
            "*.vortex-win.data.microsoft.com",
            "vortex-win.data.microsoft.com",
            "settings-win.data.microsoft.com",
        ]),
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
        let log_analytics = match &self.source.log_analytics {
            Some(la) => {
                if !self.source.inputs.is_empty() {
                    return Err(invalid(
                        "source",
                        "both `inputs` and `[source.log_analytics]` are set; keep one source".into(),
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
        Ok(Settings {
            match_mode: self.match_mode,
            time_column: self.time_column,
            hosts: HostMatcher::new(&self.reference_hosts, self.extra_hosts.iter().map(String::as_str)),
            reference_hosts: self.reference_hosts.clone(),
            extra_hosts: self.extra_hosts.clone(),
            exclusions,
            expected,
            scope,
            reject_samples: self.output.reject_samples,
            log_analytics,
            sentinel,
        })
    }

    /// The container's environment overrides (`TELEMETRY_HUNT_*`, see [`crate::cli::env_vars`]).
    /// `lookup` is the environment, passed in so this stays pure.
    pub fn apply_env(&mut self, lookup: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        use crate::cli::env_vars as env;
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty()).map(|v| v.trim().to_string());
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
}

/// `8-4-4-4-12` hexadecimal digits.
fn is_guid(text: &str) -> bool {
    let parts: Vec<&str> = text.split('-').collect();
    parts.len() == 5
        && parts.iter().zip([8, 4, 4, 4, 12]).all(|(p, n)| p.len() == n && p.bytes().all(|c| c.is_ascii_hexdigit()))
}

/// An endpoint URL: https, or plain http to the local machine only (test servers, emulators);
/// no credentials, query or fragment, since messages print it.
fn endpoint_url(field: &str, text: &str) -> Result<reqwest::Url, ConfigError> {
    let invalid = |message: String| ConfigError::Invalid { field: field.into(), message };
    if text.trim().is_empty() {
        return Err(invalid("is empty; set the endpoint URL".into()));
    }
    let url = reqwest::Url::parse(text.trim()).map_err(|e| invalid(format!("`{text}` is not a URL: {e}")))?;
    let local = matches!(url.host_str(), Some("127.0.0.1" | "localhost" | "[::1]"));
    match url.scheme() {
        "https" => {}
        "http" if local => {}
        "http" => return Err(invalid(format!("`{text}` must use https (plain http is only for 127.0.0.1/localhost)"))),
        other => return Err(invalid(format!("`{text}` has scheme `{other}`; use https"))),
    }
    if url.host_str().is_none() || !url.username().is_empty() || url.password().is_some() {
        return Err(invalid(format!("`{text}` needs a host and must not carry credentials")));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid(format!("`{text}` must not have a query or fragment; give the base URL only")));
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
        for table in crate::sink::sentinel::rows::TABLES {
            streams.insert(table.to_string(), crate::sink::sentinel::default_stream(table));
        }
        for (table, stream) in &self.streams {
            if !streams.contains_key(table) {
                return Err(invalid(
                    "streams",
                    format!(
                        "`{table}` is not a result table; the tables are {}",
                        crate::sink::sentinel::rows::TABLES.join(", ")
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

/// The validated, ready-to-use form of [`Config`].
#[derive(Debug, Clone)]
pub struct Settings {
    pub match_mode: MatchMode,
    pub time_column: TimeColumn,
    pub hosts: HostMatcher,
    pub reference_hosts: Vec<String>,
    pub extra_hosts: Vec<String>,
    pub exclusions: Vec<CompiledExclusion>,
    pub expected: Vec<CompiledExpected>,
    pub scope: Scope,
    pub reject_samples: usize,
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
