//! The short summary a person reads on the terminal after a run: the reference table as the
//! KQL `render linechart` would plot it (days × ActionType), and the run's counts.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

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
    for ((day, action), agg) in outcome.partial.daily(mode) {
        if outcome.days.contains(day) {
            grid.entry(*day).or_default().insert(action, agg.devices.len());
            actions.insert(action.as_ref());
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
    findings(&mut s, outcome);
    let _ = writeln!(
        s,
        "Results in {results} (MdeTelemetryDaily, MdeTelemetryHosts, MdeTelemetryProcesses, MdeTelemetryDeviceHosts, \
         MdeTelemetryFindings, MdeTelemetryRuns); report: {}",
        outcome.report
    );
    s
}

fn findings(s: &mut String, outcome: &RunOutcome) {
    use crate::detect::Severity;
    let all = &outcome.findings;
    let count = |severity: Severity| all.iter().filter(|f| f.severity == severity).count();
    let _ = writeln!(
        s,
        "Findings: {} ({} High, {} Medium, {} Low, {} Informational)",
        all.len(),
        count(Severity::High),
        count(Severity::Medium),
        count(Severity::Low),
        count(Severity::Informational)
    );
    let mut sorted: Vec<_> = all.iter().collect();
    sorted.sort_by(|a, b| {
        b.severity
            .cmp(&a.severity)
            .then(b.score.unwrap_or(0.0).abs().total_cmp(&a.score.unwrap_or(0.0).abs()))
            .then(a.day.cmp(&b.day))
    });
    for f in sorted.iter().take(SHOWN_FINDINGS) {
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
    if sorted.len() > SHOWN_FINDINGS {
        let _ = writeln!(s, "  ({} more in MdeTelemetryFindings and the report)", sorted.len() - SHOWN_FINDINGS);
    }
}
