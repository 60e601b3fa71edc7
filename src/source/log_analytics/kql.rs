//! The KQL the job sends: the run's window, the telemetry-host filter and the projection (or
//! the pre-aggregation), so that only rows that can matter leave the workspace.
//!
//! The host filter must be a **superset** of what the job keeps under either match mode,
//! because the job applies the exact rules afterwards and cannot get back a row Kusto dropped:
//!
//! - every host the job can match is a substring of RemoteUrl, up to ASCII case. `kql` mode
//!   compares `parse_url(RemoteUrl).Host` or RemoteUrl itself with a verbatim entry, and both are
//!   substrings of RemoteUrl; `normalized` mode only trims, cuts away a scheme, userinfo, a port,
//!   a path and trailing dots, and lowercases ASCII, so the host it compares is still a
//!   contiguous piece of RemoteUrl. A `*.suffix` entry matches hosts ending in `.suffix`, which
//!   is again a substring. Hence `RemoteUrl contains "<entry>"` (case-insensitive) holds for
//!   every row the job keeps, evasion spellings included (`HOST:443`, `host.`, `//host/x`, ...).
//! - Kusto's `has` matches whole terms, the maximal runs of alphanumeric characters. A run of
//!   ASCII letters and digits that sits between two `.`/`-` *inside* an entry is such a term in
//!   any string that contains the entry. So `RemoteUrl has_any (one such term per entry)` is
//!   implied by the `contains` test; it adds nothing to the meaning but lets Kusto use its term
//!   index before scanning for substrings. An entry without such a term drops the `has_any`
//!   line (slower, still exact).

use crate::hunt::aggregate::needed_columns;
use crate::time::format_micros;

/// A query window: `[start, end)` in microseconds since the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Window {
    pub start: i64,
    pub end: i64,
}

impl Window {
    pub fn width(&self) -> i64 {
        self.end - self.start
    }

    /// The two halves, or `None` when a half would be narrower than `min_width`.
    pub fn halves(&self, min_width: i64) -> Option<(Window, Window)> {
        let half = self.width() / 2;
        (half >= min_width.max(1)).then(|| {
            (Window { start: self.start, end: self.start + half }, Window { start: self.start + half, end: self.end })
        })
    }
}

impl std::fmt::Display for Window {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", format_micros(self.start), format_micros(self.end))
    }
}

/// The host filter: substrings that every kept RemoteUrl contains, and index terms they imply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostFilter {
    /// Index terms for `has_any`; empty when some needle has none.
    pub terms: Vec<String>,
    /// Substrings for `contains`, none of which contains another.
    pub needles: Vec<String>,
}

impl HostFilter {
    /// From the reference list (verbatim for `kql`, normalized for `normalized`) and the extra
    /// hosts (normalized), the way [`crate::hunt::host::HostList`] reads them.
    pub fn new(reference: &[String], extra: &[String]) -> HostFilter {
        let normalize = |entry: &str| -> String {
            let entry = entry.trim().trim_end_matches('.').to_ascii_lowercase();
            match entry.strip_prefix("*.") {
                Some(suffix) => format!(".{suffix}"),
                None => entry,
            }
        };
        let mut candidates: Vec<String> = reference
            .iter()
            .cloned()
            .chain(reference.iter().map(|e| normalize(e)))
            .chain(extra.iter().map(|e| normalize(e)))
            .filter(|n| !n.is_empty())
            .collect();
        candidates.sort_by(|a, b| a.len().cmp(&b.len()).then_with(|| a.cmp(b)));
        candidates.dedup();
        // A needle that contains a shorter one is implied by it (contains is case-insensitive).
        let mut needles: Vec<String> = Vec::new();
        for candidate in candidates {
            let lower = candidate.to_ascii_lowercase();
            if !needles.iter().any(|n| lower.contains(&n.to_ascii_lowercase())) {
                needles.push(candidate);
            }
        }
        needles.sort();
        let terms: Option<Vec<String>> = needles.iter().map(|n| inner_term(n)).collect();
        let mut terms = terms.unwrap_or_default();
        terms.sort();
        terms.dedup();
        HostFilter { terms, needles }
    }

    /// The `where` lines.
    pub fn kql(&self) -> String {
        let mut text = String::new();
        if !self.terms.is_empty() {
            let terms: Vec<String> = self.terms.iter().map(|t| string_literal(t)).collect();
            text.push_str(&format!("| where RemoteUrl has_any ({})\n", terms.join(", ")));
        }
        let tests: Vec<String> =
            self.needles.iter().map(|n| format!("RemoteUrl contains {}", string_literal(n))).collect();
        text.push_str(&format!("| where {}\n", tests.join(" or ")));
        text
    }
}

/// The longest run of ASCII letters and digits bounded on both sides, inside `needle`, by `.`
/// or `-` (characters that end a term under any reading of "alphanumeric").
fn inner_term(needle: &str) -> Option<String> {
    let bytes = needle.as_bytes();
    let separator = |i: usize| bytes.get(i).is_some_and(|&c| c == b'.' || c == b'-');
    let mut best: Option<&str> = None;
    let mut i = 0;
    while i < bytes.len() {
        if !bytes[i].is_ascii_alphanumeric() {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_alphanumeric() {
            i += 1;
        }
        let bounded = start > 0 && separator(start - 1) && separator(i);
        if bounded && best.is_none_or(|b| i - start > b.len()) {
            best = Some(&needle[start..i]);
        }
    }
    best.map(str::to_ascii_lowercase)
}

/// A KQL double-quoted string literal. Entries with control characters are refused by
/// configuration validation, so backslash and quote are the only characters to escape.
pub fn string_literal(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        if matches!(c, '"' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// Whether the job pulls rows or a pre-aggregation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pushdown {
    /// Every telemetry row (only the columns the hunt reads).
    Rows,
    /// `summarize Events = count()` at the grain of every column the hunt reads, with the day
    /// instead of the time: the same tables, from far fewer rows on a busy tenant.
    Aggregate,
}

impl Pushdown {
    pub fn as_str(self) -> &'static str {
        match self {
            Pushdown::Rows => "rows",
            Pushdown::Aggregate => "aggregate",
        }
    }
}

/// Name of the event-count column of the pre-aggregation.
pub const EVENTS: &str = "Events";
/// Name of the day column of the pre-aggregation.
pub const DAY: &str = "Day";

/// The query of one window, built from the parts that do not change between windows.
#[derive(Debug, Clone)]
pub struct QueryText {
    table: String,
    time_column: &'static str,
    filter: String,
    shape: String,
}

impl QueryText {
    pub fn new(
        table: &str,
        time_column: &'static str,
        pushdown: Pushdown,
        settings: &crate::config::Settings,
        filter: &HostFilter,
    ) -> QueryText {
        let columns = needed_columns(settings);
        let shape = match pushdown {
            Pushdown::Rows => format!("| project {time_column}, {}\n", columns.join(", ")),
            // Kusto's string columns hold "" rather than null, and summarize groups null
            // numbers together, so the groups lose nothing the rows had.
            Pushdown::Aggregate => {
                format!("| summarize {EVENTS} = count() by {DAY} = bin({time_column}, 1d), {}\n", columns.join(", "))
            }
        };
        QueryText { table: table.to_string(), time_column, filter: filter.kql(), shape }
    }

    /// The half-open window is in the query itself (`between` would include its end).
    pub fn for_window(&self, window: Window) -> String {
        format!(
            "{table}\n| where {t} >= datetime({start}) and {t} < datetime({end})\n{filter}{shape}",
            table = self.table,
            t = self.time_column,
            start = format_micros(window.start),
            end = format_micros(window.end),
            filter = self.filter,
            shape = self.shape,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{default_reference_hosts, Config};

    /// Kusto's `has`: the term equals, ignoring ASCII case, a maximal run of alphanumerics.
    fn has(text: &str, term: &str) -> bool {
        text.split(|c: char| !c.is_ascii_alphanumeric()).any(|run| run.eq_ignore_ascii_case(term))
    }

    fn contains(text: &str, needle: &str) -> bool {
        text.to_ascii_lowercase().contains(&needle.to_ascii_lowercase())
    }

    fn passes(filter: &HostFilter, url: &str) -> bool {
        (filter.terms.is_empty() || filter.terms.iter().any(|t| has(url, t)))
            && filter.needles.iter().any(|n| contains(url, n))
    }

    fn default_filter() -> (HostFilter, crate::config::Settings) {
        let config = Config::default();
        (HostFilter::new(&config.reference_hosts, &config.extra_hosts), config.validate().unwrap())
    }

    /// Every RemoteUrl the job keeps under either mode passes the pushed-down filter: the
    /// evasion forms of `hunt::host::tests::kql_semantics_table` and every host of both lists
    /// in every spelling shape the matcher knows.
    #[test]
    fn the_pushed_filter_keeps_every_row_either_mode_keeps() {
        let (filter, settings) = default_filter();
        let gw = "winatp-gw-weu.microsoft.com";
        let mut urls: Vec<String> = [
            gw,
            "WINATP-GW-WEU.MICROSOFT.COM",
            "winatp-gw-weu.microsoft.com:443",
            "WINATP-GW-WEU.MICROSOFT.COM:443",
            "winatp-gw-weu.microsoft.com.",
            "winatp-gw-weu.microsoft.com/path",
            " winatp-gw-weu.microsoft.com ",
            "https://winatp-gw-weu.microsoft.com/x?y=1",
            "https://winatp-gw-weu.microsoft.com:443/",
            "tcp://winatp-gw-weu.microsoft.com:443",
            "HTTPS://WINATP-GW-WEU.MICROSOFT.COM/",
            "https://winatp-gw-weu.microsoft.com.:443/x",
            "https://svc:pw@winatp-gw-weu.microsoft.com/",
            "https://svc@winatp-gw-weu.microsoft.com/",
            "//winatp-gw-weu.microsoft.com/x",
            "winatp-gw-weu.microsoft.com//api",
            "eu-v20.events.data.microsoft.com",
            "edr-weu.eu.endpoint.security.microsoft.com",
            "HTTP://CRL.MICROSOFT.COM/pki",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let shapes = [
            "{}",
            "{}.",
            " {} ",
            "https://{}/p",
            "{}:443",
            "HTTP://{}",
            "//{}/x",
            "u:p@{}",
            "https://u@{}/",
            "{}/x?y#z",
            "[{}]:443",
        ];
        let config = Config::default();
        for host in config.reference_hosts.iter().chain(&config.extra_hosts) {
            let host = host.replace("*.", "x1.");
            for shape in shapes {
                for variant in [host.clone(), host.to_ascii_uppercase()] {
                    urls.push(shape.replace("{}", &variant));
                }
            }
        }
        let mut kept = 0;
        for url in &urls {
            if settings.hosts.is_relevant(url) {
                kept += 1;
                assert!(passes(&filter, url), "the pushed filter drops `{url}`, which the job keeps");
            }
        }
        assert!(kept > 1000, "{kept}");
        // and it still filters: ordinary traffic and look-alikes do not travel
        for url in [
            "www.bing.com",
            "https://login.live.com/x",
            "winatp-gw-weu.microsoft.co",
            "eu-v20.events.data.microsoft.co",
        ] {
            assert!(!passes(&filter, url), "{url}");
        }
    }

    #[test]
    fn needles_are_minimal_and_terms_index_friendly() {
        let (filter, _) = default_filter();
        // `events.data.microsoft.com` implies every regional events host
        assert!(filter.needles.contains(&"events.data.microsoft.com".to_string()));
        assert!(!filter.needles.iter().any(|n| n.contains("-v20.events")), "{:?}", filter.needles);
        assert_eq!(filter.terms, ["microsoft", "windows", "windowsupdate"]);
        for needle in &filter.needles {
            assert!(filter.terms.iter().any(|t| has(needle, t)), "{needle}");
        }
        let only = HostFilter::new(&default_reference_hosts()[..1], &[]);
        assert_eq!(only.needles, ["winatp-gw-cus.microsoft.com"]);
        assert_eq!(
            only.kql(),
            "| where RemoteUrl has_any (\"microsoft\")\n| where RemoteUrl contains \"winatp-gw-cus.microsoft.com\"\n"
        );
        // no inner term: the has_any line goes, the contains line stays
        let bare = HostFilter::new(&["localhost".to_string(), "a.example".to_string()], &[]);
        assert!(bare.terms.is_empty());
        assert!(!bare.kql().contains("has_any"));
        // verbatim entries with a space are implied by their trimmed form
        let dirty = HostFilter::new(&["go.microsoft.com ".to_string()], &[]);
        assert_eq!(dirty.needles, ["go.microsoft.com"]);
    }

    #[test]
    fn terms_sit_between_separators() {
        assert_eq!(inner_term("winatp-gw-weu.microsoft.com").as_deref(), Some("microsoft"));
        assert_eq!(inner_term(".endpoint.security.microsoft.com").as_deref(), Some("microsoft"));
        assert_eq!(inner_term("ctldl.windowsupdate.com").as_deref(), Some("windowsupdate"));
        assert_eq!(inner_term("a.b_c.d"), None);
        assert_eq!(inner_term("host"), None);
        assert_eq!(inner_term("x.yy.z").as_deref(), Some("yy"));
        assert_eq!(string_literal("a\"b\\c"), "\"a\\\"b\\\\c\"");
    }

    #[test]
    fn the_query_of_a_window() {
        let (filter, settings) = default_filter();
        let window = Window { start: 1_700_000_000_000_000, end: 1_700_021_600_000_000 };
        let rows = QueryText::new("DeviceNetworkEvents", "Timestamp", Pushdown::Rows, &settings, &filter);
        let text = rows.for_window(window);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "DeviceNetworkEvents");
        assert_eq!(
            lines[1],
            "| where Timestamp >= datetime(2023-11-14T22:13:20.000000Z) and Timestamp < datetime(2023-11-15T04:13:20.000000Z)"
        );
        assert!(lines[2].starts_with("| where RemoteUrl has_any ("));
        assert!(lines[3].starts_with("| where RemoteUrl contains "));
        assert!(
            lines[4].starts_with("| project Timestamp, DeviceId, ActionType, RemoteUrl, RemotePort,"),
            "{}",
            lines[4]
        );
        let agg = QueryText::new("DeviceNetworkEvents", "TimeGenerated", Pushdown::Aggregate, &settings, &filter);
        let text = agg.for_window(window);
        assert!(
            text.contains("| summarize Events = count() by Day = bin(TimeGenerated, 1d), DeviceId, ActionType,"),
            "{text}"
        );
        assert_eq!(window.halves(1).unwrap().0.end, 1_700_010_800_000_000);
        assert_eq!(Window { start: 0, end: 10 }.halves(6), None);
    }
}
