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

/// Defender writes the folder either with the file name (`…\mssense.exe`) or without it and
/// without a trailing separator (the portal export): both are compared as `…\`. This runs for
/// every telemetry row and every rule, so the separator is added in the comparison, not by
/// building a new string.
fn folder_starts_with_any(folder: Option<&str>, prefixes: &[String]) -> bool {
    let Some(folder) = folder else { return false };
    let separator = if folder.contains('\\') || !folder.contains('/') { b'\\' } else { b'/' };
    let folder = folder.as_bytes();
    let closed = folder.last() == Some(&separator);
    prefixes.iter().any(|prefix| {
        let prefix = prefix.as_bytes();
        match prefix.len().cmp(&folder.len()) {
            std::cmp::Ordering::Greater => {
                !closed
                    && prefix.len() == folder.len() + 1
                    && prefix[folder.len()] == separator
                    && folder.eq_ignore_ascii_case(&prefix[..folder.len()])
            }
            _ => folder[..prefix.len()].eq_ignore_ascii_case(prefix),
        }
    })
}

/// `needles` are lowercase (compiled so).
fn contains_any(value: Option<&str>, needles: &[String]) -> bool {
    let value = value.unwrap_or("").as_bytes();
    needles.iter().any(|needle| {
        let needle = needle.as_bytes();
        needle.is_empty() || value.windows(needle.len()).any(|window| window.eq_ignore_ascii_case(needle))
    })
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

    /// Folder prefixes (compiled lowercase) against the two ways Defender writes a folder.
    #[test]
    fn folder_prefixes_match_with_or_without_the_file_name_and_trailing_separator() {
        let prefixes = |p: &[&str]| p.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let sense = prefixes(&[r"c:\program files\windows defender advanced threat protection\"]);
        #[rustfmt::skip]
        let cases: &[(Option<&str>, &[String], bool)] = &[
            (None,                                                                              &sense, false),
            (Some(r"C:\Program Files\Windows Defender Advanced Threat Protection\MsSense.exe"),    &sense, true),
            (Some(r"C:\Program Files\Windows Defender Advanced Threat Protection"),                 &sense, true),
            (Some(r"C:\Program Files\Windows Defender Advanced Threat Protection\"),               &sense, true),
            (Some(r"C:\Program Files\Windows Defender Advanced Threat Protectio"),                  &sense, false),
            (Some(r"C:\Program Files\Windows Defender Advanced Threat Protection2\x.exe"),         &sense, false),
            (Some(r"c:\users\public\mssense.exe"),                                                &sense, false),
            (Some(""),                                                                          &sense, false),
        ];
        for (folder, prefixes, want) in cases {
            assert_eq!(folder_starts_with_any(*folder, prefixes), *want, "{folder:?}");
        }
        let unix = prefixes(&["/opt/microsoft/mdatp/"]);
        assert!(folder_starts_with_any(Some("/opt/microsoft/mdatp"), &unix));
        assert!(folder_starts_with_any(Some("/OPT/Microsoft/mdatp/sbin/wdavdaemon"), &unix));
        assert!(!folder_starts_with_any(Some("/opt/microsoft/mdatpx"), &unix));
        // A folder without any `/` is closed with `\`: it runs under `mdatp\`, not under `mdatp/`.
        assert!(!folder_starts_with_any(Some("mdatp"), &prefixes(&["mdatp/"])));
        assert!(folder_starts_with_any(Some("mdatp"), &prefixes(&["mdatp\\"])));
    }

    #[test]
    fn command_line_needles_match_in_any_case() {
        let needles = vec!["\\microsoft\\windows\\".to_string(), "--scan".to_string()];
        assert!(contains_any(Some(r"taskhostw.exe \MICROSOFT\Windows\Defender"), &needles));
        assert!(contains_any(Some("x --SCAN"), &needles));
        assert!(!contains_any(Some("x --sca"), &needles));
        assert!(!contains_any(None, &needles));
        assert!(contains_any(None, &[String::new()]));
    }

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
