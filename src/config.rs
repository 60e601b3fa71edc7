//! Configuration: one TOML file, every field optional, defaults embedded.
//!
//! Parse, don't validate: [`Config`] is what the file says (unknown keys are errors, so a typo
//! never silently falls back to a default); [`Config::validate`] turns it into [`Settings`],
//! checking everything that can be checked without I/O.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

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
        Ok(Settings {
            match_mode: self.match_mode,
            time_column: self.time_column,
            hosts: HostMatcher::new(&self.reference_hosts, self.extra_hosts.iter().map(String::as_str)),
            reference_hosts: self.reference_hosts.clone(),
            exclusions,
            expected,
            scope,
            reject_samples: self.output.reject_samples,
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
    pub exclusions: Vec<CompiledExclusion>,
    pub expected: Vec<CompiledExpected>,
    pub scope: Scope,
    pub reject_samples: usize,
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
}
