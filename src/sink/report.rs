//! `report.html`: one self-contained page a person opens at 9 a.m. It is drawn from the results
//! store only (so `telemetry-hunt report` draws the same page again): the last 30 days of
//! connections per ActionType as the reference query's `render linechart` would plot them, the
//! findings sorted by severity and score, the host and process breakdown of the latest day, and
//! the figures of the latest run.
//!
//! No scripts, fonts or images are loaded: the chart is inline SVG, and the chart's numbers also
//! sit in a JSON block (`<script type="application/json" id="chart-data">`, data, not code) for
//! anyone who wants to check them. Every value from the data (host names, process paths, device
//! names: all attacker-controlled) is HTML-escaped.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use bytes::Bytes;
use serde_json::{json, Map, Value};

use super::results::{day_prefix, Results, PART};
use super::tables::{self, DAILY_COLUMNS, HOSTS_COLUMNS, PROCESSES_COLUMNS};
use super::{Cell, ColumnType, Columns, SinkError, Table};
use crate::config::Settings;
use crate::detect::Severity;
use crate::time::Day;

/// Days the chart and the findings table cover, ending with the latest stored day.
pub const REPORT_DAYS: i32 = 30;
/// The object the report is written to, at the top of the results store.
pub const REPORT: &str = "report.html";
/// Rows of the host and process tables.
const TOP_ROWS: usize = 25;
/// Findings listed in the table; the rest (the least severe, lowest scores) are counted under it.
/// A storm of tens of thousands of findings otherwise makes a page no browser opens, and the
/// findings table in the store has them all.
const MAX_FINDING_ROWS: usize = 1000;

/// Draws the report from the store and writes it beside the tables.
pub fn write(results: &Results, settings: &Settings) -> Result<(), SinkError> {
    let html = render(results, settings)?;
    results.store.put(REPORT, Bytes::from(html))?;
    Ok(())
}

/// HTML-escapes text for element content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// JSON for a `<script type="application/json">` block: `<`, `>` and `&` as `\u00XX`, so no value
/// can close the block.
fn json_block(value: &Value) -> String {
    value.to_string().replace('<', "\\u003c").replace('>', "\\u003e").replace('&', "\\u0026")
}

fn cell_text(cell: &Cell) -> String {
    match cell {
        Cell::Text(s) => s.clone(),
        Cell::Null => String::new(),
        other => match other.to_json() {
            Value::String(s) => s,
            v => v.to_string(),
        },
    }
}

fn cell_f64(cell: &Cell) -> Option<f64> {
    match cell {
        Cell::Int(v) => Some(*v as f64),
        Cell::Float(v) => Some(*v),
        _ => None,
    }
}

fn column(table: &Table, name: &str) -> usize {
    table.column_index(name).expect("the table definition has the column")
}

/// A finding as the report shows it.
struct FindingRow {
    day: String,
    severity: Severity,
    score: Option<f64>,
    finding_type: String,
    id: String,
    host: String,
    process: String,
    port: String,
    devices: String,
    description: String,
    names: Vec<String>,
}

/// The findings of the report's days as the page shows them: the first [`MAX_FINDING_ROWS`] by
/// severity and score, and what all of them count to. Each day's rows are ranked with those
/// kept so far as they are read: the rows of a storm of findings held together are gigabytes.
#[derive(Default)]
struct Findings {
    listed: Vec<FindingRow>,
    total: usize,
    by_severity: BTreeMap<Severity, usize>,
    /// The worst severity of each day with findings, for the chart's ticks.
    worst: BTreeMap<String, Severity>,
}

impl Findings {
    fn count(&mut self, day: &str, severity: Severity) {
        self.total += 1;
        *self.by_severity.entry(severity).or_default() += 1;
        match self.worst.get_mut(day) {
            Some(worst) => *worst = (*worst).max(severity),
            None => {
                self.worst.insert(day.to_string(), severity);
            }
        }
    }

    /// A day's findings table, every row counted; rows are built only for the findings that
    /// make the list (ranked by the columns that rank them): a storm's day is tens of thousands
    /// of findings, each with its device names.
    fn of_day(batches: &[Columns]) -> Result<Findings, String> {
        let c =
            |name: &str| SHOWN_FINDING_COLUMNS.iter().position(|(n, _)| *n == name).expect("a column the report reads");
        let (day, severity, score) = (c("Day"), c("Severity"), c("Score"));
        let (kind, id, device_names) = (c("FindingType"), c("FindingId"), c("DeviceNames"));
        // as a cell's text gives them
        let text_of_day = |d: Option<Day>| d.map_or(String::new(), |d| d.to_string());
        let int_text = |v: Option<i64>| v.map_or(String::new(), |v| v.to_string());
        let mut days: Vec<(Option<Day>, String)> = Vec::new();
        for batch in batches {
            for row in 0..batch.rows() {
                let d = batch.day(day, row);
                if days.iter().all(|(seen, _)| *seen != d) {
                    days.push((d, text_of_day(d)));
                }
            }
        }
        let mut findings = Findings::default();
        let mut ranked = Vec::new();
        // the file's row number of each batch's first row, for errors
        let mut first_row = 0;
        for (b, batch) in batches.iter().enumerate() {
            for row in 0..batch.rows() {
                // Every row's names must read, as when each row was parsed whole.
                if !batch.is_null(device_names, row) {
                    serde_json::from_str::<serde::de::IgnoredAny>(batch.text(device_names, row))
                        .map_err(|e| format!("column `DeviceNames` row {}: not JSON: {e}", first_row + row))?;
                }
                let d = batch.day(day, row);
                let day_text = days.iter().find(|(seen, _)| *seen == d).map_or("", |(_, text)| text.as_str());
                let rank = Rank {
                    severity: Severity::parse(batch.text(severity, row)).unwrap_or(Severity::Informational),
                    score: batch.float(score, row),
                    day: day_text,
                    finding_type: batch.text(kind, row),
                    id: batch.text(id, row),
                };
                findings.count(rank.day, rank.severity);
                ranked.push((rank, b, row));
            }
            first_row += batch.rows();
        }
        let mut first = Vec::new();
        super::summary::keep_first(&mut first, ranked, MAX_FINDING_ROWS, |a, b| rank_order(&a.0, &b.0));
        findings.listed = first
            .into_iter()
            .map(|(rank, b, row)| {
                let batch = &batches[b];
                let names = match serde_json::from_str::<Value>(batch.text(device_names, row)) {
                    Ok(Value::Array(items)) => {
                        items.into_iter().filter_map(|v| v.as_str().map(str::to_string)).collect()
                    }
                    _ => Vec::new(),
                };
                let file = batch.text(c("InitiatingProcessFileName"), row);
                let folder = batch.text(c("InitiatingProcessFolderPath"), row);
                FindingRow {
                    day: rank.day.to_string(),
                    severity: rank.severity,
                    score: rank.score,
                    finding_type: rank.finding_type.to_string(),
                    id: rank.id.to_string(),
                    host: batch.text(c("RemoteHost"), row).to_string(),
                    process: if folder.is_empty() { file.to_string() } else { format!("{file} ({folder})") },
                    port: int_text(batch.int(c("RemotePort"), row)),
                    devices: int_text(batch.int(c("DeviceCount"), row)),
                    description: batch.text(c("Description"), row).to_string(),
                    names,
                }
            })
            .collect();
        Ok(findings)
    }

    fn merge(&mut self, other: Findings) {
        self.total += other.total;
        for (severity, n) in other.by_severity {
            *self.by_severity.entry(severity).or_default() += n;
        }
        for (day, severity) in other.worst {
            let worst = self.worst.entry(day).or_insert(severity);
            *worst = (*worst).max(severity);
        }
        super::summary::keep_first(&mut self.listed, other.listed, MAX_FINDING_ROWS, listed_order);
    }
}

/// What ranks a finding in the list.
struct Rank<'a> {
    severity: Severity,
    score: Option<f64>,
    day: &'a str,
    finding_type: &'a str,
    id: &'a str,
}

impl FindingRow {
    fn rank(&self) -> Rank<'_> {
        let (day, finding_type, id) = (&self.day, &self.finding_type, &self.id);
        Rank { severity: self.severity, score: self.score, day, finding_type, id }
    }
}

/// A drop's score is negative: its size is what ranks it.
fn rank_order(a: &Rank<'_>, b: &Rank<'_>) -> std::cmp::Ordering {
    b.severity
        .cmp(&a.severity)
        .then(b.score.unwrap_or(0.0).abs().total_cmp(&a.score.unwrap_or(0.0).abs()))
        .then(b.day.cmp(a.day))
        .then(a.finding_type.cmp(b.finding_type))
        .then(a.id.cmp(b.id))
}

fn listed_order(a: &FindingRow, b: &FindingRow) -> std::cmp::Ordering {
    rank_order(&a.rank(), &b.rank())
}

/// Everything the page shows, read from the store.
struct Data {
    days: Vec<Day>,
    stored: BTreeSet<Day>,
    series: BTreeMap<String, Vec<Option<f64>>>,
    findings: Findings,
    latest: Option<Day>,
    hosts: Option<Table>,
    processes: Option<Table>,
    run: Option<Map<String, Value>>,
}

/// The columns of `MdeTelemetryFindings` the report shows: read alone, so the large JSON ones
/// (Params, Series, DeviceIds) are neither decoded nor parsed for a report of many findings.
const SHOWN_FINDING_COLUMNS: &[(&str, ColumnType)] = &[
    ("Day", ColumnType::Day),
    ("FindingId", ColumnType::Text),
    ("FindingType", ColumnType::Text),
    ("Severity", ColumnType::Text),
    ("RemoteHost", ColumnType::Text),
    ("InitiatingProcessFileName", ColumnType::Text),
    ("InitiatingProcessFolderPath", ColumnType::Text),
    ("RemotePort", ColumnType::Int),
    ("DeviceCount", ColumnType::Int),
    ("DeviceNames", ColumnType::Json),
    ("Score", ColumnType::Float),
    ("Description", ColumnType::Text),
];

fn load(results: &Results) -> Result<Data, SinkError> {
    let stored: BTreeSet<Day> = results.days(tables::DAILY)?.into_iter().collect();
    let latest = stored.iter().next_back().copied();
    let days: Vec<Day> = match latest {
        Some(last) => Day(last.0 - REPORT_DAYS + 1).through(last).collect(),
        None => Vec::new(),
    };
    // Days are read on the worker pool, each ranked on its own and the rankings merged: the
    // order is total (it ends with the FindingId), so the merge gives the one list whatever
    // order the days come in.
    use rayon::prelude::*;
    let read_day = |(i, &day): (usize, &Day)| -> Result<(Vec<(usize, String, f64)>, Findings), SinkError> {
        let mut connections_of_day = Vec::new();
        let mut findings = Findings::default();
        if !stored.contains(&day) {
            return Ok((connections_of_day, findings));
        }
        if let Some(daily) = results.read_day(tables::DAILY, DAILY_COLUMNS, day)? {
            let (action, connections) = (column(&daily, "ActionType"), column(&daily, "Connections"));
            for row in &daily.rows {
                connections_of_day.push((i, cell_text(&row[action]), cell_f64(&row[connections]).unwrap_or(0.0)));
            }
        }
        // The day's batches are held until it is ranked (its shown columns, not rows of cells).
        let mut batches = Vec::new();
        let found = results.read_day_columns(tables::FINDINGS, SHOWN_FINDING_COLUMNS, day, false, |batch| {
            batches.push(batch);
            Ok(())
        })?;
        if found {
            findings = Findings::of_day(&batches).map_err(|message| {
                let path = format!("{}{PART}.parquet", day_prefix(tables::FINDINGS, day));
                SinkError::Decode { path, message }
            })?;
        }
        Ok((connections_of_day, findings))
    };
    let read: Vec<(Vec<(usize, String, f64)>, Findings)> =
        days.par_iter().enumerate().map(read_day).collect::<Result<_, _>>()?;
    let mut series: BTreeMap<String, Vec<Option<f64>>> = BTreeMap::new();
    let mut findings = Findings::default();
    for (connections_of_day, day_findings) in read {
        for (i, action, connections) in connections_of_day {
            let values = series.entry(action).or_insert_with(|| vec![None; days.len()]);
            values[i] = Some(values[i].unwrap_or(0.0) + connections);
        }
        findings.merge(day_findings);
    }
    // every stored day of the window has a value for every ActionType (0 when it had none)
    for values in series.values_mut() {
        for (i, day) in days.iter().enumerate() {
            if stored.contains(day) && values[i].is_none() {
                values[i] = Some(0.0);
            }
        }
    }
    let (hosts, processes) = match latest {
        Some(day) => (
            results.read_day(tables::HOSTS, HOSTS_COLUMNS, day)?,
            results.read_day(tables::PROCESSES, PROCESSES_COLUMNS, day)?,
        ),
        None => (None, None),
    };
    Ok(Data { days, stored, series, findings, latest, hosts, processes, run: latest_run(results)? })
}

/// The run record that started last. RunIds sort by their start to the second only (a backfill
/// runs several days a second, each with a random suffix), so the records of the latest second
/// are read and told apart by their `StartedAt`, which has microseconds.
fn latest_run(results: &Results) -> Result<Option<Map<String, Value>>, SinkError> {
    let prefix = format!("{}/", tables::RUNS);
    let name = |p: &str| p.rsplit('/').next().unwrap_or("").to_string();
    // `run-20261203T195110Z-3f9a1c.jsonl` → `run-20261203T195110Z`
    let second = |p: &str| {
        let name = name(p);
        name.rsplit_once('-').map_or(name.clone(), |(start, _)| start.to_string())
    };
    let paths: Vec<String> = results.store.list(&prefix)?.into_iter().filter(|p| p.ends_with(".jsonl")).collect();
    let Some(last_second) = paths.iter().map(|p| second(p)).max() else { return Ok(None) };
    // (StartedAt, file name) of the latest so far, and its record
    let mut latest: Option<((String, String), Map<String, Value>)> = None;
    for path in paths.iter().filter(|p| second(p) == last_second) {
        let Some(bytes) = results.store.get(path)? else { continue };
        let text = String::from_utf8_lossy(&bytes);
        let Some(Value::Object(record)) = text.lines().next().and_then(|line| serde_json::from_str::<Value>(line).ok())
        else {
            continue;
        };
        let started = record.get("StartedAt").and_then(Value::as_str).unwrap_or("").to_string();
        let key = (started, name(path));
        if latest.as_ref().is_none_or(|(latest_key, _)| key > *latest_key) {
            latest = Some((key, record));
        }
    }
    Ok(latest.map(|(_, record)| record))
}

const PALETTE: [&str; 10] =
    ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f", "#bcbd22"];

fn severity_class(severity: Severity) -> &'static str {
    match severity {
        Severity::High => "high",
        Severity::Medium => "medium",
        Severity::Low => "low",
        Severity::Informational => "info",
    }
}

/// A round upper bound for the y axis.
fn nice_ceiling(max: f64) -> f64 {
    if max <= 0.0 {
        return 1.0;
    }
    let magnitude = 10f64.powf(max.log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0].iter().map(|m| m * magnitude).find(|&v| v >= max).unwrap_or(10.0 * magnitude)
}

fn chart(data: &Data) -> String {
    let (width, height) = (1240.0, 380.0);
    let (left, right, top, bottom) = (64.0, 16.0, 16.0, 64.0);
    let plot_w = width - left - right;
    let plot_h = height - top - bottom;
    let n = data.days.len().max(1);
    let max = data.series.values().flatten().flatten().fold(0.0_f64, |m, &v| m.max(v));
    let y_max = nice_ceiling(max);
    let x = |i: usize| left + if n == 1 { plot_w / 2.0 } else { plot_w * i as f64 / (n - 1) as f64 };
    let y = |v: f64| top + plot_h * (1.0 - v / y_max);
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg class="chart" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" aria-label="Connections per ActionType and day">"#
    );
    for step in 0..=5 {
        let v = y_max * step as f64 / 5.0;
        let _ = write!(
            svg,
            r##"<line x1="{left}" x2="{x2}" y1="{py:.1}" y2="{py:.1}" stroke="#e3e3e3"/><text x="{tx}" y="{ty:.1}" class="axis" text-anchor="end">{v}</text>"##,
            x2 = width - right,
            py = y(v),
            tx = left - 6.0,
            ty = y(v) + 4.0,
            v = v.round() as i64,
        );
    }
    for (i, day) in data.days.iter().enumerate() {
        let label = day.to_string();
        let stored = data.stored.contains(day);
        let _ = write!(
            svg,
            r#"<text class="axis{missing}" transform="translate({tx:.1},{ty}) rotate(-45)" text-anchor="end">{label}</text>"#,
            missing = if stored { "" } else { " missing" },
            tx = x(i) + 4.0,
            ty = height - bottom + 14.0,
            label = &label[5..],
        );
    }
    // days with findings: a tick under the axis, coloured by the worst severity
    for (i, day) in data.days.iter().enumerate() {
        if let Some(severity) = data.findings.worst.get(&day.to_string()) {
            let _ = write!(
                svg,
                r##"<line x1="{px:.1}" x2="{px:.1}" y1="{top}" y2="{bottom_y}" class="finding-day {class}"><title>findings on {day}</title></line>"##,
                px = x(i),
                bottom_y = top + plot_h,
                class = severity_class(*severity),
            );
        }
    }
    for (k, (action, values)) in data.series.iter().enumerate() {
        let colour = PALETTE[k % PALETTE.len()];
        let mut path = String::new();
        let mut pen_down = false;
        for (i, v) in values.iter().enumerate() {
            match v {
                Some(v) => {
                    let _ = write!(path, "{}{:.1},{:.1} ", if pen_down { "L" } else { "M" }, x(i), y(*v));
                    pen_down = true;
                }
                None => pen_down = false,
            }
        }
        let _ = write!(svg, r#"<path d="{path}" fill="none" stroke="{colour}" stroke-width="2"/>"#);
        for (i, v) in values.iter().enumerate() {
            if let Some(v) = v {
                let _ = write!(
                    svg,
                    r#"<circle cx="{:.1}" cy="{:.1}" r="2.5" fill="{colour}"><title>{} {}: {v}</title></circle>"#,
                    x(i),
                    y(*v),
                    escape(action),
                    data.days[i],
                );
            }
        }
    }
    svg.push_str("</svg>");
    let mut legend = String::from(r#"<ul class="legend">"#);
    for (k, action) in data.series.keys().enumerate() {
        let _ = write!(
            legend,
            r#"<li><span class="swatch" style="background:{}"></span>{}</li>"#,
            PALETTE[k % PALETTE.len()],
            escape(action)
        );
    }
    legend.push_str("</ul>");
    svg + &legend
}

/// A table; `cell_classes` per column (`num`, `path`), `classes` per row.
fn table_html(headers: &[&str], cell_classes: &[&str], rows: &[Vec<String>], classes: &[&str]) -> String {
    let mut out = String::from("<table><thead><tr>");
    for h in headers {
        let _ = write!(out, "<th>{}</th>", escape(h));
    }
    out.push_str("</tr></thead><tbody>");
    for (i, row) in rows.iter().enumerate() {
        let class = classes.get(i).copied().unwrap_or("");
        if class.is_empty() {
            out.push_str("<tr>");
        } else {
            let _ = write!(out, r#"<tr class="{class}">"#);
        }
        for (i, cell) in row.iter().enumerate() {
            match cell_classes.get(i).copied().unwrap_or("") {
                "" => {
                    let _ = write!(out, "<td>{}</td>", escape(cell));
                }
                class => {
                    let _ = write!(out, r#"<td class="{class}">{}</td>"#, escape(cell));
                }
            }
        }
        out.push_str("</tr>");
    }
    out.push_str("</tbody></table>");
    out
}

fn findings_html(data: &Data, max_names: usize) -> String {
    if data.findings.total == 0 {
        return r#"<p class="quiet">No findings in these days: every detector stayed quiet.</p>"#.into();
    }
    let mut out = String::from(
        "<table class=\"findings\"><colgroup><col style=\"width:88px\"><col style=\"width:88px\"><col style=\"width:184px\">\
         <col style=\"width:56px\"><col style=\"width:176px\"><col style=\"width:48px\"><col style=\"width:190px\">\
         <col style=\"width:64px\"><col></colgroup><thead><tr><th>Severity</th><th>Day</th><th>Type</th><th>Score</th>\
         <th>Host</th><th>Port</th><th>Process</th><th>Devices</th><th>What</th></tr></thead><tbody>",
    );
    for f in &data.findings.listed {
        let names = if f.names.is_empty() {
            String::new()
        } else {
            let shown: Vec<String> = f.names.iter().take(max_names).map(|n| escape(n)).collect();
            let more = f.names.len().saturating_sub(max_names);
            format!(
                r#"<div class="names">{}{}</div>"#,
                shown.join(", "),
                if more > 0 { format!(" and {more} more") } else { String::new() }
            )
        };
        let _ = write!(
            out,
            r#"<tr class="{class}" id="finding-{id}"><td><span class="badge {class}">{severity}</span></td><td>{day}</td><td>{kind}</td><td class="num">{score}</td><td>{host}</td><td class="num">{port}</td><td class="path">{process}</td><td class="num">{devices}</td><td>{description}{names}<div class="id">{id}</div></td></tr>"#,
            class = severity_class(f.severity),
            id = escape(&f.id),
            severity = f.severity.as_str(),
            day = escape(&f.day),
            kind = escape(&f.finding_type),
            score = f.score.map_or(String::new(), |s| format!("{s:.2}")),
            host = escape(&f.host),
            port = escape(&f.port),
            process = escape(&f.process),
            devices = escape(&f.devices),
            description = escape(&f.description),
        );
    }
    out.push_str("</tbody></table>");
    if let Some(more) = data.findings.total.checked_sub(MAX_FINDING_ROWS).filter(|&n| n > 0) {
        let _ = write!(
            out,
            r#"<p class="quiet">and {more} more findings in MdeTelemetryFindings (the table lists the first {MAX_FINDING_ROWS} by severity and score)</p>"#
        );
    }
    out
}

/// The latest day's hosts: one row per host, ActionTypes side by side.
fn hosts_html(table: &Table) -> String {
    let c = |name: &str| column(table, name);
    let mut per_host: BTreeMap<String, (BTreeMap<String, f64>, f64, f64, BTreeSet<String>, bool, f64)> =
        BTreeMap::new();
    for row in &table.rows {
        let entry = per_host.entry(cell_text(&row[c("RemoteHost")])).or_default();
        entry.0.insert(cell_text(&row[c("ActionType")]), cell_f64(&row[c("Devices")]).unwrap_or(0.0));
        entry.1 += cell_f64(&row[c("Events")]).unwrap_or(0.0);
        entry.2 = entry.2.max(cell_f64(&row[c("FailedDevices")]).unwrap_or(0.0));
        entry.3.extend(cell_text(&row[c("Ports")]).split(',').filter(|p| !p.is_empty()).map(str::to_string));
        entry.4 |= matches!(row[c("OnReferenceList")], Cell::Bool(true));
        entry.5 += cell_f64(&row[c("EvasionEvents")]).unwrap_or(0.0);
    }
    let mut hosts: Vec<_> = per_host.into_iter().collect();
    let most = |v: &BTreeMap<String, f64>| v.values().fold(0.0_f64, |m, &d| m.max(d));
    hosts.sort_by(|a, b| most(&b.1 .0).total_cmp(&most(&a.1 .0)).then(a.0.cmp(&b.0)));
    let rows: Vec<Vec<String>> = hosts
        .iter()
        .take(TOP_ROWS)
        .map(|(host, (actions, events, failed, ports, reference, evasion))| {
            vec![
                host.clone(),
                if *reference { "yes".into() } else { "extra".into() },
                actions.get("ConnectionSuccess").map_or("0".into(), |d| format!("{d}")),
                format!("{failed}"),
                format!("{events}"),
                ports.iter().cloned().collect::<Vec<_>>().join(","),
                format!("{evasion}"),
            ]
        })
        .collect();
    let mut html = table_html(
        &["Host", "Reference list", "Devices (success)", "Devices failing", "Events", "Ports", "Evading events"],
        &["path", "", "num", "num", "num", "", "num"],
        &rows,
        &[],
    );
    if hosts.len() > TOP_ROWS {
        let _ = write!(html, r#"<p class="quiet">and {} more hosts in MdeTelemetryHosts</p>"#, hosts.len() - TOP_ROWS);
    }
    html
}

/// The latest day's processes, unexpected ones first, then by devices.
fn processes_html(table: &Table) -> String {
    let c = |name: &str| column(table, name);
    let mut rows: Vec<(bool, f64, Vec<String>)> = table
        .rows
        .iter()
        .map(|row| {
            let expected = matches!(row[c("Expected")], Cell::Bool(true));
            let devices = cell_f64(&row[c("Devices")]).unwrap_or(0.0);
            let by = cell_text(&row[c("ExpectedBy")]);
            (
                expected,
                devices,
                vec![
                    cell_text(&row[c("InitiatingProcessFileName")]),
                    cell_text(&row[c("InitiatingProcessFolderPath")]),
                    cell_text(&row[c("RemoteHost")]),
                    format!("{devices}"),
                    cell_text(&row[c("Events")]),
                    if by.is_empty() { "UNEXPECTED".into() } else { by },
                ],
            )
        })
        .collect();
    rows.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.total_cmp(&a.1)).then(a.2.cmp(&b.2)));
    let classes: Vec<&str> = rows.iter().take(TOP_ROWS).map(|r| if r.0 { "" } else { "high" }).collect();
    let shown: Vec<Vec<String>> = rows.iter().take(TOP_ROWS).map(|r| r.2.clone()).collect();
    let mut html = table_html(
        &["Process", "Folder", "Host", "Devices", "Events", "Expected by"],
        &["path", "path", "path", "num", "num", "path"],
        &shown,
        &classes,
    );
    if rows.len() > TOP_ROWS {
        let _ =
            write!(html, r#"<p class="quiet">and {} more rows in MdeTelemetryProcesses</p>"#, rows.len() - TOP_ROWS);
    }
    html
}

fn run_html(run: &Map<String, Value>) -> String {
    const SHOWN: [&str; 22] = [
        "RunId",
        "Status",
        "FailedStage",
        "Error",
        "StartedAt",
        "FinishedAt",
        "WindowFrom",
        "WindowTo",
        "Days",
        "MatchMode",
        "Files",
        "Bytes",
        "RowsScanned",
        "RowsRejected",
        "RowsMatchedKql",
        "RowsMatchedNormalized",
        "RowsEvadingReferenceQuery",
        "RowsTelemetry",
        "RowsExcluded",
        "Findings",
        "FindingsBySeverity",
        "DurationsMs",
    ];
    let rows: Vec<Vec<String>> = SHOWN
        .iter()
        .filter_map(|key| {
            let value = run.get(*key)?;
            let text = match value {
                Value::Null => return None,
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            Some(vec![key.to_string(), text])
        })
        .collect();
    table_html(&["", "latest run"], &["", "path"], &rows, &[])
}

const STYLE: &str = r#"
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 24px 32px; color: #1b1b1b; background: #fafafa; }
h1 { font-size: 22px; margin: 0 0 4px; } h2 { font-size: 17px; margin: 28px 0 8px; border-bottom: 1px solid #ddd; padding-bottom: 4px; }
.sub { color: #555; margin: 0 0 16px; } .quiet { color: #666; }
.tiles { display: flex; gap: 12px; flex-wrap: wrap; } .tile { background: #fff; border: 1px solid #ddd; border-radius: 6px; padding: 10px 14px; min-width: 120px; }
.tile b { display: block; font-size: 22px; } .tile span { color: #555; font-size: 12px; }
.chart { background: #fff; border: 1px solid #ddd; border-radius: 6px; width: 100%; max-width: 1240px; height: auto; display: block; }
.axis { font-size: 11px; fill: #555; } .axis.missing { fill: #bbb; }
.finding-day { stroke-width: 6; opacity: 0.18; } .finding-day.high { stroke: #c62828; } .finding-day.medium { stroke: #ef6c00; } .finding-day.low { stroke: #f9a825; } .finding-day.info { stroke: #1565c0; }
.legend { list-style: none; padding: 0; display: flex; flex-wrap: wrap; gap: 14px; font-size: 13px; } .swatch { display: inline-block; width: 12px; height: 12px; border-radius: 2px; margin-right: 5px; vertical-align: -1px; }
table { border-collapse: collapse; background: #fff; font-size: 13px; width: 100%; } th, td { border: 1px solid #e0e0e0; padding: 4px 7px; text-align: left; vertical-align: top; overflow-wrap: break-word; }
th { white-space: nowrap; } table.findings { table-layout: fixed; } table.findings td { overflow-wrap: anywhere; }
th { background: #f0f0f0; } td.num { text-align: right; white-space: nowrap; } td.path { font-family: ui-monospace, Consolas, monospace; font-size: 12px; word-break: break-all; }
tr.high td:first-child { border-left: 4px solid #c62828; } tr.medium td:first-child { border-left: 4px solid #ef6c00; } tr.low td:first-child { border-left: 4px solid #f9a825; } tr.info td:first-child { border-left: 4px solid #1565c0; }
.badge { color: #fff; border-radius: 3px; padding: 1px 6px; font-size: 12px; white-space: nowrap; } .badge.high { background: #c62828; } .badge.medium { background: #ef6c00; } .badge.low { background: #f9a825; color: #222; } .badge.info { background: #1565c0; }
.names { color: #444; font-size: 12px; margin-top: 3px; } .id { color: #999; font-size: 11px; font-family: ui-monospace, Consolas, monospace; }
"#;

/// The whole page.
pub fn render(results: &Results, settings: &Settings) -> Result<String, SinkError> {
    let data = load(results)?;
    let mut html = String::with_capacity(64 * 1024);
    html.push_str("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">");
    html.push_str(
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">",
    );
    html.push_str("<title>telemetry-hunt report</title><style>");
    html.push_str(STYLE);
    html.push_str("</style></head><body>");
    html.push_str("<h1>Defender for Endpoint telemetry: connections and findings</h1>");
    let window = match (data.days.first(), data.latest) {
        (Some(first), Some(last)) => {
            format!("{first} to {last}, {} of {} days hunted", data.stored.len().min(data.days.len()), data.days.len())
        }
        _ => "no day has been hunted yet".into(),
    };
    let _ =
        write!(html, r#"<p class="sub">{} · results in {}</p>"#, escape(&window), escape(&results.store.location()));

    html.push_str(r#"<div class="tiles">"#);
    for severity in [Severity::High, Severity::Medium, Severity::Low, Severity::Informational] {
        let _ = write!(
            html,
            r#"<div class="tile"><b>{}</b><span>{} findings</span></div>"#,
            data.findings.by_severity.get(&severity).copied().unwrap_or(0),
            severity.as_str()
        );
    }
    if let Some(last) = data.days.len().checked_sub(1) {
        for (action, values) in &data.series {
            if let Some(v) = values[last] {
                let _ = write!(
                    html,
                    r#"<div class="tile"><b>{v}</b><span>{} devices, {}</span></div>"#,
                    escape(action),
                    data.days[last]
                );
            }
        }
    }
    html.push_str("</div>");

    html.push_str(
        "<h2 id=\"connections\">Connections: distinct devices per ActionType and day (MdeTelemetryDaily)</h2>",
    );
    let chart_data = json!({
        "days": data.days.iter().map(Day::to_string).collect::<Vec<_>>(),
        "series": data.series,
    });
    let _ = write!(html, r#"<script type="application/json" id="chart-data">{}</script>"#, json_block(&chart_data));
    if data.series.is_empty() {
        html.push_str(r#"<p class="quiet">No connection to the reference hosts in these days.</p>"#);
    } else {
        html.push_str(&chart(&data));
    }

    let _ = write!(html, "<h2 id=\"findings\">Findings ({}), by severity and score</h2>", data.findings.total);
    html.push_str(&findings_html(&data, settings.detect.max_listed_devices.min(10)));

    if let Some(day) = data.latest {
        let _ = write!(html, "<h2 id=\"hosts\">Hosts on {day} (MdeTelemetryHosts)</h2>");
        html.push_str(&data.hosts.as_ref().map_or_else(|| "<p class=\"quiet\">No hosts table.</p>".into(), hosts_html));
        let _ = write!(html, "<h2 id=\"processes\">Processes on {day} (MdeTelemetryProcesses)</h2>");
        html.push_str(
            &data
                .processes
                .as_ref()
                .map_or_else(|| "<p class=\"quiet\">No processes table.</p>".into(), processes_html),
        );
    }
    html.push_str("<h2 id=\"run\">Run</h2>");
    html.push_str(&data.run.as_ref().map_or_else(|| "<p class=\"quiet\">No run record.</p>".into(), run_html));
    html.push_str("</body></html>\n");
    Ok(html)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_latest_run_is_the_one_that_started_last_even_within_one_second() {
        use crate::sink::local::LocalDir;
        let dir = tempfile::tempdir().unwrap();
        let results = Results::new(std::sync::Arc::new(LocalDir::new(dir.path())));
        let put = |run_id: &str, started: &str| {
            let record = serde_json::json!({"RunId": run_id, "StartedAt": started});
            let path = format!("{}/day=2026-11-30/run-{run_id}.jsonl", tables::RUNS);
            results.store.put(&path, Bytes::from(format!("{record}\n"))).unwrap();
        };
        // The same second: the greater suffix started first.
        put("20261130T101500Z-ffffff", "2026-11-30T10:15:00.100000Z");
        put("20261130T101500Z-000001", "2026-11-30T10:15:00.900000Z");
        put("20261130T101459Z-aaaaaa", "2026-11-30T10:14:59.999999Z");
        let run = latest_run(&results).unwrap().unwrap();
        assert_eq!(run["RunId"], "20261130T101500Z-000001");

        put("20261130T101501Z-000000", "2026-11-30T10:15:01.000000Z");
        assert_eq!(latest_run(&results).unwrap().unwrap()["RunId"], "20261130T101501Z-000000");
    }

    #[test]
    fn the_shown_finding_columns_are_findings_columns() {
        for column in SHOWN_FINDING_COLUMNS {
            assert!(tables::FINDINGS_COLUMNS.contains(column), "{column:?}");
        }
    }

    #[test]
    fn a_storm_of_findings_lists_the_first_thousand_and_counts_the_rest() {
        let day = Day::parse("2026-11-20").unwrap();
        let row = |i: usize| {
            vec![
                Cell::Day(day),
                Cell::Text(format!("id-{i:04}")),
                Cell::from("UnusualPort"),
                Cell::from("Low"),
                Cell::from("winatp-gw-weu.microsoft.com"),
                Cell::from("x.exe"),
                if i == 0 { Cell::from(r"c:\x\x.exe") } else { Cell::Null },
                Cell::Int(8080),
                Cell::Int(1),
                if i == 0 { Cell::Json(json!(["dev <a>", 1, "dev-b"])) } else { Cell::Null },
                Cell::Float(1.0),
                Cell::from("d"),
            ]
        };
        let of_day = |rows: &mut dyn Iterator<Item = usize>| {
            let mut table = Table::new(tables::FINDINGS, SHOWN_FINDING_COLUMNS);
            rows.for_each(|i| table.push(row(i)));
            let batch = table.to_record_batch().unwrap();
            Findings::of_day(&[Columns::of(SHOWN_FINDING_COLUMNS, &batch, false).unwrap()])
        };
        // a day of the rows ranked last, then a day of those ranked first
        let mut findings = of_day(&mut (3..MAX_FINDING_ROWS + 3).rev()).unwrap();
        findings.merge(of_day(&mut (0..3)).unwrap());
        let first = &findings.listed[0];
        assert_eq!(
            (first.day.as_str(), first.id.as_str(), first.process.as_str(), first.port.as_str(), &first.names[..]),
            ("2026-11-20", "id-0000", r"x.exe (c:\x\x.exe)", "8080", &["dev <a>".to_string(), "dev-b".to_string()][..])
        );
        assert_eq!((findings.listed[1].process.as_str(), findings.listed[1].names.len()), ("x.exe", 0));
        // a list of names that does not read fails the day, listed or not
        let mut table = Table::new(tables::FINDINGS, SHOWN_FINDING_COLUMNS);
        table.push(row(5));
        let batch = table.to_record_batch().unwrap();
        let names = SHOWN_FINDING_COLUMNS.iter().position(|(n, _)| *n == "DeviceNames").unwrap();
        let mut arrays = batch.columns().to_vec();
        arrays[names] = std::sync::Arc::new(arrow_array::StringArray::from(vec!["[\"dev-a\""]));
        let broken = arrow_array::RecordBatch::try_new(batch.schema(), arrays).unwrap();
        let error = Findings::of_day(&[Columns::of(SHOWN_FINDING_COLUMNS, &broken, false).unwrap()]).err().unwrap();
        assert!(error.starts_with("column `DeviceNames` row 0: not JSON"), "{error}");
        // in a later batch of the day's file, the row is counted from the file's first
        let batches = [&batch, &batch, &broken].map(|b| Columns::of(SHOWN_FINDING_COLUMNS, b, false).unwrap());
        let error = Findings::of_day(&batches).err().unwrap();
        assert!(error.starts_with("column `DeviceNames` row 2: not JSON"), "{error}");
        let mut data = Data {
            days: Vec::new(),
            stored: BTreeSet::new(),
            series: BTreeMap::new(),
            findings,
            latest: None,
            hosts: None,
            processes: None,
            run: None,
        };
        let html = findings_html(&data, 10);
        assert_eq!(html.matches("<tr class=").count(), MAX_FINDING_ROWS);
        let first = html.find("id=\"finding-id-0000\"").expect("the first row");
        assert!(first < html.find("id=\"finding-id-0003\"").unwrap());
        assert!(html.contains(&format!("id=\"finding-id-{:04}\"", MAX_FINDING_ROWS - 1)));
        assert!(!html.contains(&format!("id=\"finding-id-{MAX_FINDING_ROWS:04}\"")));
        assert!(html.contains("and 3 more findings in MdeTelemetryFindings"), "{}", &html[html.len() - 300..]);
        assert_eq!(data.findings.by_severity, BTreeMap::from([(Severity::Low, MAX_FINDING_ROWS + 3)]));
        data.findings.total = MAX_FINDING_ROWS;
        assert!(!findings_html(&data, 10).contains("more findings"));
    }

    #[test]
    fn escaping_leaves_no_markup_from_data() {
        assert_eq!(
            escape(r#"<img src=x onerror="a('b')">&"#),
            "&lt;img src=x onerror=&quot;a(&#39;b&#39;)&quot;&gt;&amp;"
        );
        let block = json_block(&json!({"host": "</script><script>alert(1)</script>"}));
        assert!(!block.contains("</script>") && !block.contains('<'), "{block}");
        let back: Value = serde_json::from_str(&block).unwrap();
        assert_eq!(back["host"], "</script><script>alert(1)</script>");
    }

    #[test]
    fn y_axis_bounds_are_round() {
        assert_eq!(nice_ceiling(0.0), 1.0);
        assert_eq!(nice_ceiling(7.0), 10.0);
        assert_eq!(nice_ceiling(187.0), 200.0);
        assert_eq!(nice_ceiling(250.0), 250.0);
        assert_eq!(nice_ceiling(251.0), 500.0);
    }
}
