//! Exclusion rules and the expected-process allow list, applied to rows the hosts matched.

use crate::config::{CompiledExclusion, CompiledExpected};

/// The process fields a rule looks at, as the event carries them.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessFields<'a> {
    pub file_name: Option<&'a str>,
    pub folder_path: Option<&'a str>,
    pub command_line: Option<&'a str>,
    pub parent_file_name: Option<&'a str>,
    pub remote_ip: Option<&'a str>,
}

fn eq_any(value: Option<&str>, wanted: &[String]) -> bool {
    let value = value.unwrap_or("");
    wanted.iter().any(|w| value.eq_ignore_ascii_case(w))
}

fn starts_with_any(value: Option<&str>, prefixes: &[String]) -> bool {
    let value = value.unwrap_or("");
    prefixes.iter().any(|p| value.len() >= p.len() && value.as_bytes()[..p.len()].eq_ignore_ascii_case(p.as_bytes()))
}

/// Defender writes the folder either with the file name (`…\mssense.exe`) or without it and
/// without a trailing separator (the portal export): both are compared as `…\`.
fn folder_starts_with_any(folder: Option<&str>, prefixes: &[String]) -> bool {
    let Some(folder) = folder else { return false };
    let separator = if folder.contains('\\') || !folder.contains('/') { '\\' } else { '/' };
    let mut folder = folder.to_string();
    if !folder.ends_with(separator) {
        folder.push(separator);
    }
    starts_with_any(Some(&folder), prefixes)
}

fn contains_any(value: Option<&str>, needles: &[String]) -> bool {
    let value = value.unwrap_or("").to_ascii_lowercase();
    needles.iter().any(|n| value.contains(n.as_str()))
}

impl CompiledExclusion {
    /// Every non-empty condition holds.
    pub fn matches(&self, p: &ProcessFields<'_>) -> bool {
        (self.process_file_names.is_empty() || eq_any(p.file_name, &self.process_file_names))
            && (self.folder_path_prefixes.is_empty()
                || folder_starts_with_any(p.folder_path, &self.folder_path_prefixes))
            && (self.command_line_contains.is_empty() || contains_any(p.command_line, &self.command_line_contains))
            && (self.parent_file_names.is_empty() || eq_any(p.parent_file_name, &self.parent_file_names))
            && (self.remote_cidrs.is_empty()
                || p.remote_ip.is_some_and(|ip| self.remote_cidrs.iter().any(|c| c.contains_text(ip))))
    }
}

/// The index of the first exclusion rule that matches, if any.
pub fn first_exclusion(rules: &[CompiledExclusion], p: &ProcessFields<'_>) -> Option<usize> {
    rules.iter().position(|r| r.matches(p))
}

/// The allow-list entry that expects this process on this host, if any. The file name **and**
/// the folder must match, so `mssense.exe` copied to `c:\users\public\` is not expected.
pub fn expected_by<'r>(
    expected: &'r [CompiledExpected],
    file_name: &str,
    folder_path: &str,
    host: &str,
) -> Option<&'r CompiledExpected> {
    expected.iter().find(|e| {
        file_name.eq_ignore_ascii_case(&e.file_name)
            && (e.folder_prefixes.is_empty() || folder_starts_with_any(Some(folder_path), &e.folder_prefixes))
            && e.hosts.as_ref().is_none_or(|hosts| hosts.contains(host))
    })
}

/// The folder prefix of `entry` that `folder_path` runs under: how a process expected there is
/// named whatever platform-version subfolder it runs from today.
pub fn matched_folder_prefix<'e>(entry: &'e CompiledExpected, folder_path: &str) -> Option<&'e str> {
    entry
        .folder_prefixes
        .iter()
        .find(|p| folder_starts_with_any(Some(folder_path), std::slice::from_ref(*p)))
        .map(String::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn default_exclusions_tag_the_benign_scenarios_and_nothing_else() {
        let settings = Config::default().validate().unwrap();
        let rule = |p: ProcessFields<'_>| {
            first_exclusion(&settings.exclusions, &p).map(|i| settings.exclusions[i].name.as_str())
        };
        let cases: &[(ProcessFields<'_>, Option<&str>)] = &[
            (
                ProcessFields {
                    file_name: Some("CcmExec.exe"),
                    folder_path: Some(r"c:\windows\ccm\ccmexec.exe"),
                    ..Default::default()
                },
                Some("mecm-client"),
            ),
            (
                ProcessFields {
                    file_name: Some("taskhostw.exe"),
                    command_line: Some(
                        r"taskhostw.exe \Microsoft\Windows\Windows Defender\Windows Defender Scheduled Scan",
                    ),
                    ..Default::default()
                },
                Some("task-scheduler-microsoft-tasks"),
            ),
            (
                ProcessFields {
                    file_name: Some("taskhostw.exe"),
                    command_line: Some(r"taskhostw.exe \Updater\evil"),
                    ..Default::default()
                },
                None,
            ),
            (
                ProcessFields {
                    file_name: Some("svchost.exe"),
                    command_line: Some("svchost.exe -k netsvcs -p -s wuauserv"),
                    ..Default::default()
                },
                Some("windows-update-service"),
            ),
            (
                ProcessFields {
                    file_name: Some("svchost.exe"),
                    command_line: Some("svchost.exe -k LocalService"),
                    ..Default::default()
                },
                None,
            ),
            (
                ProcessFields {
                    file_name: Some("Microsoft.Management.Services.IntuneWindowsAgent.exe"),
                    ..Default::default()
                },
                Some("intune-management-extension"),
            ),
            (
                ProcessFields {
                    file_name: Some("SenseCM.exe"),
                    folder_path: Some(r"C:\Program Files\Windows Defender Advanced Threat Protection\SenseCM.exe"),
                    ..Default::default()
                },
                Some("mde-self-health"),
            ),
            (
                ProcessFields {
                    file_name: Some("powershell.exe"),
                    folder_path: Some(r"c:\windows\system32\windowspowershell\v1.0\powershell.exe"),
                    ..Default::default()
                },
                None,
            ),
            (ProcessFields::default(), None),
        ];
        for (fields, want) in cases {
            assert_eq!(rule(*fields), *want, "{fields:?}");
        }
    }

    #[test]
    fn expected_needs_name_and_folder_and_host() {
        let settings = Config::default().validate().unwrap();
        let e = &settings.expected;
        let mde = r"c:\program files\windows defender advanced threat protection\mssense.exe";
        assert!(expected_by(e, "MsSense.exe", mde, "winatp-gw-weu.microsoft.com").is_some());
        // the portal export writes the folder without the file name and without a trailing `\`
        let portal = r"c:\program files\windows defender advanced threat protection";
        assert!(expected_by(e, "MsSense.exe", portal, "eu-v20.events.data.microsoft.com").is_some());
        assert!(expected_by(
            e,
            "MsSense.exe",
            r"c:\program files\windows defender advanced threat protection-evil",
            "eu-v20.events.data.microsoft.com"
        )
        .is_none());
        assert!(expected_by(e, "mssense.exe", r"c:\users\public\mssense.exe", "winatp-gw-weu.microsoft.com").is_none());
        let svchost = r"c:\windows\system32\svchost.exe";
        assert!(expected_by(e, "svchost.exe", svchost, "eu-v20.events.data.microsoft.com").is_some());
        assert!(expected_by(e, "svchost.exe", svchost, "winatp-gw-weu.microsoft.com").is_none());
        assert!(expected_by(e, "powershell.exe", svchost, "winatp-gw-weu.microsoft.com").is_none());
    }
}
