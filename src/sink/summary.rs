//! The short summary a person reads on the terminal after a run: the reference table as the
//! KQL `render linechart` would plot it (days × ActionType), and the run's counts.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

use crate::detect::{Finding, FindingType, Severity};
use crate::hunt::host::MatchMode;
use crate::job::RunOutcome;
use crate::time::Day;

/// How many days the terminal table shows; the tables on disk hold them all.
const SHOWN_DAYS: usize = 14;
/// How many findings the terminal lists; the findings table and the report hold them all.
const SHOWN_FINDINGS: usize = 12;

fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `results` names the store: a folder or a container, as [`crate::sink::store::Store::location`] does.
pub fn render(outcome: &RunOutcome, mode: MatchMode, results: &str) -> String {
    let record = &outcome.record;
    let stats = &record.stats;
    let mut s = String::new();
    let mut grid: BTreeMap<Day, BTreeMap<&str, usize>> = BTreeMap::new();
    let mut actions = BTreeSet::new();
    for (day, connections) in &outcome.connections {
        if outcome.days.contains(day) {
            for (action, &n) in connections {
                grid.entry(*day).or_default().insert(action, n);
                actions.insert(action.as_str());
            }
        }
    }
    let _ = writeln!(
        s,
        "Connections: distinct devices per ActionType and day (MdeTelemetryDaily, {} mode, exact counts)",
        mode.as_str()
    );
    if actions.is_empty() {
        let _ = writeln!(s, "  no row matched the reference hosts in {} day(s)", outcome.days.len());
    } else {
        let actions: Vec<&str> = actions.into_iter().collect();
        let widths: Vec<usize> = actions.iter().map(|a| a.len().max(6)).collect();
        let _ = write!(s, "  {:<10}", "Day");
        for (a, w) in actions.iter().zip(&widths) {
            let _ = write!(s, "  {a:>w$}");
        }
        s.push('\n');
        let hidden = outcome.days.len().saturating_sub(SHOWN_DAYS);
        for day in outcome.days.iter().skip(hidden) {
            let _ = write!(s, "  {:<10}", day.to_string());
            for (a, w) in actions.iter().zip(&widths) {
                let n = grid.get(day).and_then(|row| row.get(a)).copied().unwrap_or(0);
                let _ = write!(s, "  {:>w$}", thousands(n as u64));
            }
            s.push('\n');
        }
        if hidden > 0 {
            let _ = writeln!(s, "  ({hidden} earlier day(s) are in the tables)");
        }
    }
    let window = record.window.map_or("no days".to_string(), |(a, b)| format!("{a} .. {b}"));
    let _ = writeln!(s, "Run {} {}: {window}, {} day(s)", record.run_id, record.status, record.days);
    let _ = writeln!(
        s,
        "  read    {} file(s), {} bytes, {} rows scanned, {} outside the window, {} row group(s) pruned",
        record.files,
        thousands(record.bytes),
        thousands(stats.rows_scanned),
        thousands(stats.rows_outside_window),
        stats.row_groups_pruned
    );
    let c = &record.counts;
    let _ = writeln!(
        s,
        "  matched {} rows by the reference query (kql), {} normalized; {} hide from the reference query by spelling",
        thousands(c.rows_reference_kql),
        thousands(c.rows_reference_normalized),
        thousands(c.rows_evading)
    );
    let excluded: u64 = record.excluded_by_rule.values().sum();
    let _ = writeln!(
        s,
        "  telemetry rows (reference + extra hosts) {}, excluded as benign {}, out of scope {}, rejected {}",
        thousands(c.rows_telemetry),
        thousands(excluded),
        thousands(c.rows_out_of_scope),
        thousands(stats.rejects.total())
    );
    for (reason, n) in &stats.rejects.by_reason {
        let _ = writeln!(s, "    rejected {}: {reason}", thousands(*n));
    }
    findings(&mut s, &outcome.findings);
    let _ = writeln!(
        s,
        "Results in {results} (MdeTelemetryDaily, MdeTelemetryHosts, MdeTelemetryProcesses, MdeTelemetryDeviceHosts, \
         MdeTelemetryFindings, MdeTelemetryRuns); report: {}",
        outcome.report
    );
    s
}

fn findings(s: &mut String, summary: &FindingsSummary) {
    let _ = writeln!(
        s,
        "Findings: {} ({} High, {} Medium, {} Low, {} Informational)",
        summary.total,
        summary.count(Severity::High),
        summary.count(Severity::Medium),
        summary.count(Severity::Low),
        summary.count(Severity::Informational)
    );
    for f in &summary.top {
        let subject = f.remote_host.clone().or_else(|| f.action_type.clone()).unwrap_or_else(|| f.method.to_string());
        let process = f.process.as_ref().map_or(String::new(), |p| format!("  {}", p.file_name));
        let devices = if f.devices.is_empty() { String::new() } else { format!("  {} device(s)", f.devices.len()) };
        let _ = writeln!(
            s,
            "  {:<13} {}  {:<22} {subject}{process}{devices}",
            f.severity.as_str(),
            f.day,
            f.finding_type.as_str()
        );
    }
    if summary.total > SHOWN_FINDINGS {
        let _ = writeln!(s, "  ({} more in MdeTelemetryFindings and the report)", summary.total - SHOWN_FINDINGS);
    }
}

/// What a run keeps of its findings once each day's are written: a night of a large fleet has
/// hundreds of thousands, and the terminal needs only their counts and the first few.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct FindingsSummary {
    pub total: usize,
    pub by_severity: BTreeMap<Severity, usize>,
    pub by_type: BTreeMap<FindingType, usize>,
    /// The findings the terminal lists, in its order (see [`FindingsSummary::add`]).
    pub top: Vec<Finding>,
}

impl FindingsSummary {
    /// Counts a day's findings and keeps those that rank among the first. The terminal lists
    /// the highest severity first, then the largest |score|, then the earliest day, and findings
    /// equal in all three in the order they were added: days must be added in order, each in
    /// the detectors' order, for the list to be that of sorting every finding of the run.
    pub fn add(&mut self, findings: Vec<Finding>) {
        for finding in &findings {
            self.total += 1;
            *self.by_severity.entry(finding.severity).or_default() += 1;
            *self.by_type.entry(finding.finding_type).or_default() += 1;
        }
        keep_first(&mut self.top, findings, SHOWN_FINDINGS, listed_order);
    }

    /// Adds the summary of the days after this one's: the same as adding their findings here
    /// (equals stay in the order they came, so a later summary's come after this one's). A
    /// day's summary can so be made beside the detectors, and its findings dropped there.
    pub fn merge(&mut self, later: FindingsSummary) {
        self.total += later.total;
        for (severity, n) in later.by_severity {
            *self.by_severity.entry(severity).or_default() += n;
        }
        for (finding_type, n) in later.by_type {
            *self.by_type.entry(finding_type).or_default() += n;
        }
        keep_first(&mut self.top, later.top, SHOWN_FINDINGS, listed_order);
    }

    pub fn count(&self, severity: Severity) -> usize {
        self.by_severity.get(&severity).copied().unwrap_or(0)
    }
}

/// Adds `new` to `kept` (sorted by `order`, at most `n`) and keeps the first `n` of everything
/// added so far, equals in the order they came: what a stable sort of every item would list
/// first, without holding every item. Only what beats the last one kept can enter, so a storm
/// of items costs a comparison each.
pub(crate) fn keep_first<T>(
    kept: &mut Vec<T>,
    new: impl IntoIterator<Item = T>,
    n: usize,
    order: impl Fn(&T, &T) -> Ordering,
) {
    if n == 0 {
        kept.clear();
        return;
    }
    let full = kept.len() >= n;
    let entering: Vec<T> = new
        .into_iter()
        .filter(|item| !full || kept.last().is_some_and(|last| order(item, last) == Ordering::Less))
        .collect();
    if entering.is_empty() {
        return;
    }
    // Ties broken by arrival, the order made total: the first `n` are then selected in linear
    // time and only they are sorted (a first day can bring thousands, large to move about).
    let total = |a: &(usize, T), b: &(usize, T)| order(&a.1, &b.1).then(a.0.cmp(&b.0));
    let mut all: Vec<(usize, T)> = kept.drain(..).chain(entering).enumerate().collect();
    if all.len() > n {
        all.select_nth_unstable_by(n - 1, total);
        all.truncate(n);
    }
    all.sort_unstable_by(total);
    kept.extend(all.into_iter().map(|(_, item)| item));
}

fn listed_order(a: &Finding, b: &Finding) -> Ordering {
    b.severity
        .cmp(&a.severity)
        .then(b.score.unwrap_or(0.0).abs().total_cmp(&a.score.unwrap_or(0.0).abs()))
        .then(a.day.cmp(&b.day))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Findings of a day as a detector makes them: an UnusualPort when the key starts with `p`.
    fn findings_of(day: i32, made: &[(Severity, Option<f64>, &str)]) -> Vec<Finding> {
        use crate::baseline::history::History;
        use crate::detect::{testing, Context};
        let settings = testing::settings();
        let mut history = History::new(settings.detect.history_days);
        let today = testing::day_data(&settings, &mut history.names, testing::day(day), &[], &[]);
        let ctx = Context::new(testing::day(day), &settings, &today, &history);
        made.iter()
            .map(|&(severity, score, key)| {
                let kind = if key.starts_with('p') { FindingType::UnusualPort } else { FindingType::UnexpectedProcess };
                let mut finding = Finding::new(&ctx, kind, key.to_string(), severity, "m");
                finding.score = score;
                finding.remote_host = Some(format!("{key}.example"));
                finding
            })
            .collect()
    }

    fn keys(findings: &[Finding]) -> Vec<&str> {
        findings.iter().map(|f| f.key.as_str()).collect()
    }

    #[test]
    fn the_summary_keeps_the_first_findings_by_severity_then_score_then_day() {
        use Severity::*;
        let medium: Vec<(String, f64)> = (0..12).map(|i| (format!("m2-{i}"), f64::from(i))).collect();
        let days = vec![
            findings_of(
                0,
                &[
                    (Medium, Some(9.0), "m0"),
                    (High, None, "h0-none"),
                    (High, Some(3.0), "h0-3"),
                    (Low, Some(100.0), "l0"),
                ],
            ),
            findings_of(
                1,
                &[
                    (High, Some(-3.0), "h1-3"),
                    (High, Some(3.0), "h1-3b"),
                    (Informational, None, "i1"),
                    (High, Some(7.5), "p1-7"),
                ],
            ),
            findings_of(2, &medium.iter().map(|(key, score)| (Medium, Some(*score), key.as_str())).collect::<Vec<_>>()),
        ];
        let mut summary = FindingsSummary::default();
        for day in days {
            summary.add(day);
        }
        assert_eq!(summary.total, 20);
        assert_eq!(summary.by_severity, BTreeMap::from([(High, 5), (Medium, 13), (Low, 1), (Informational, 1)]));
        assert_eq!(
            summary.by_type,
            BTreeMap::from([(FindingType::UnexpectedProcess, 19), (FindingType::UnusualPort, 1)])
        );
        // |score| ranks a drop with a rise; an earlier day first; equals in the order they came
        assert_eq!(
            keys(&summary.top),
            ["p1-7", "h0-3", "h1-3", "h1-3b", "h0-none", "m2-11", "m2-10", "m0", "m2-9", "m2-8", "m2-7", "m2-6"]
        );

        let mut text = String::new();
        findings(&mut text, &summary);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "Findings: 20 (5 High, 13 Medium, 1 Low, 1 Informational)");
        assert_eq!(lines[1], "  High          2026-11-02  UnusualPort            p1-7.example");
        assert_eq!(lines.len(), 1 + SHOWN_FINDINGS + 1);
        assert_eq!(lines[SHOWN_FINDINGS + 1], "  (8 more in MdeTelemetryFindings and the report)");
    }

    /// Day by day, the summary lists what sorting every finding of the run listed.
    #[test]
    fn the_bounded_list_is_the_head_of_the_sorted_run() {
        let severities = [Severity::Informational, Severity::Low, Severity::Medium, Severity::High];
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let mut all = Vec::new();
        let mut summary = FindingsSummary::default();
        let mut merged = FindingsSummary::default();
        for day in 0..20 {
            let keys: Vec<String> = (0..next(60)).map(|i| format!("{day}-{i}")).collect();
            let made: Vec<(Severity, Option<f64>, &str)> = keys
                .iter()
                .map(|key| {
                    // few distinct scores, so ties across days and within a day are common
                    let score = (next(4) > 0).then(|| next(5) as f64 - 2.0);
                    (severities[next(4) as usize], score, key.as_str())
                })
                .collect();
            let findings = findings_of(day, &made);
            all.extend(findings.clone());
            // a day summed up on its own, then added to the days before it
            let mut day_summary = FindingsSummary::default();
            day_summary.add(findings.clone());
            merged.merge(day_summary);
            summary.add(findings);
        }
        all.sort_by(listed_order);
        all.truncate(SHOWN_FINDINGS);
        assert_eq!(keys(&summary.top), keys(&all));
        assert!(summary.total > SHOWN_FINDINGS);
        assert_eq!(merged, summary);
    }
}
