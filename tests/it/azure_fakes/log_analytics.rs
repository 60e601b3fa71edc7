//! The Log Analytics query API: `POST /v1/workspaces/{id}/query` with
//! `{"query": "<KQL>", "timespan": "<start>/<end>"}`, answering
//! `{"tables":[{"name":"PrimaryResult","columns":[{"name","type"}],"rows":[[…]]}]}`.
//!
//! The server holds DeviceNetworkEvents rows and *evaluates* the KQL the job sends — the
//! table, the `where` time window, `has_any` (term semantics), `contains` (case-insensitive
//! substring), `project`, `summarize … count() by bin(…, 1d), …` and `print` — with the API's
//! limits: the `timespan` filters `TimeGenerated`, at most `max_rows` rows and `max_bytes` per
//! answer, past which it answers HTTP 200 with a `PartialError`, as the real service does.
//! Anything else in the query is a syntax error (HTTP 400), so the job cannot send KQL this
//! server does not understand.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};
use telemetry_hunt::time::{format_micros, parse_timestamp_micros, Day};

use super::{token_for, Fault, Reply, Script, Server, Shared};

pub const RESOURCE: &str = "https://api.loganalytics.io";

/// DeviceNetworkEvents in a Log Analytics workspace: column → type.
pub const SCHEMA: &[(&str, &str)] = &[
    ("Timestamp", "datetime"),
    ("TimeGenerated", "datetime"),
    ("DeviceId", "string"),
    ("DeviceName", "string"),
    ("ActionType", "string"),
    ("RemoteIP", "string"),
    ("RemotePort", "int"),
    ("RemoteUrl", "string"),
    ("LocalIP", "string"),
    ("LocalPort", "int"),
    ("Protocol", "string"),
    ("LocalIPType", "string"),
    ("RemoteIPType", "string"),
    ("InitiatingProcessSHA1", "string"),
    ("InitiatingProcessFileName", "string"),
    ("InitiatingProcessFolderPath", "string"),
    ("InitiatingProcessCommandLine", "string"),
    ("InitiatingProcessVersionInfoCompanyName", "string"),
    ("InitiatingProcessCreationTime", "datetime"),
    ("InitiatingProcessId", "long"),
    ("InitiatingProcessParentFileName", "string"),
    ("InitiatingProcessAccountDomain", "string"),
    ("InitiatingProcessAccountName", "string"),
    ("InitiatingProcessIntegrityLevel", "string"),
    ("ReportId", "long"),
    ("AdditionalFields", "dynamic"),
    ("MachineGroup", "string"),
];

/// A Kusto value. Strings are never null in Kusto (a missing one is "").
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum KValue {
    Str(String),
    Time(Option<i64>),
    Int(Option<i64>),
}

impl KValue {
    fn to_json(&self, out: &mut String) {
        match self {
            KValue::Str(s) => out.push_str(&serde_json::to_string(s).unwrap()),
            // Kusto writes 7 fractional digits.
            KValue::Time(Some(t)) => {
                let text = format_micros(*t);
                out.push('"');
                out.push_str(&text[..text.len() - 1]);
                out.push_str("0Z\"");
            }
            KValue::Int(Some(v)) => out.push_str(&v.to_string()),
            KValue::Time(None) | KValue::Int(None) => out.push_str("null"),
        }
    }

    fn time(&self) -> Option<i64> {
        match self {
            KValue::Time(t) => *t,
            _ => None,
        }
    }
}

/// An event: the columns it has; a column it lacks reads as Kusto's empty value of its type.
pub type Event = HashMap<&'static str, KValue>;

fn kind(column: &str) -> Option<&'static str> {
    SCHEMA.iter().find(|(c, _)| *c == column).map(|(_, t)| *t)
}

fn get(event: &Event, column: &str) -> KValue {
    match event.get(column) {
        Some(value) => value.clone(),
        None => match kind(column) {
            Some("datetime") => KValue::Time(None),
            Some("int" | "long") => KValue::Int(None),
            _ => KValue::Str(String::new()),
        },
    }
}

/// The schema's name for a column (events key on `'static` names).
pub fn column(name: &str) -> &'static str {
    SCHEMA.iter().find(|(c, _)| *c == name).map(|(c, _)| *c).unwrap_or_else(|| panic!("no column {name}"))
}

/// One event from a flat JSON object (the sample's JSON lines); `TimeGenerated` trails
/// `Timestamp` by `lag_micros`, the ingestion delay.
pub fn event_from_json(object: &serde_json::Map<String, Value>, lag_micros: i64) -> Event {
    let mut event = Event::new();
    for (column, ty) in SCHEMA {
        let value = object.get(*column).unwrap_or(&Value::Null);
        let k = match *ty {
            "datetime" => KValue::Time(value.as_str().and_then(parse_timestamp_micros)),
            "int" | "long" => KValue::Int(value.as_i64()),
            _ => KValue::Str(match value {
                Value::Null => String::new(),
                Value::String(s) => s.clone(),
                other => other.to_string(),
            }),
        };
        event.insert(column, k);
    }
    if let Some(t) = get(&event, "Timestamp").time() {
        event.insert("TimeGenerated", KValue::Time(Some(t + lag_micros)));
    }
    event
}

/// Every event of the JSON-lines files in `dir`.
pub fn events_from_dir(dir: &Path, lag_micros: i64) -> Vec<Event> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    files.sort();
    let mut events = Vec::new();
    for file in files {
        for line in std::fs::read_to_string(&file).unwrap().lines() {
            let Value::Object(object) = serde_json::from_str(line).unwrap() else { panic!("not an object") };
            events.push(event_from_json(&object, lag_micros));
        }
    }
    events
}

/// One request, as the server saw it.
#[derive(Debug, Clone)]
pub struct QueryRecord {
    pub query: String,
    /// The `where` window of the query, if it had one.
    pub window: Option<(i64, i64)>,
    pub status: u16,
    pub rows: usize,
    pub partial: bool,
    pub at: std::time::Instant,
}

#[derive(Debug)]
pub struct LaState {
    pub workspace: String,
    pub table: String,
    pub events: Vec<Event>,
    /// Whether the table has a `Timestamp` column (Sentinel's may only have `TimeGenerated`).
    pub has_timestamp: bool,
    pub max_rows: usize,
    pub max_bytes: usize,
    pub script: Script,
    pub requests: Vec<QueryRecord>,
    pub violations: Vec<String>,
    /// Answer 403 to every request (the identity lacks Log Analytics Reader).
    pub forbidden: bool,
    /// Error answers quote the request's `Authorization` header, as some gateways do.
    pub echo_token: bool,
}

pub struct LogAnalyticsFake {
    pub server: Server,
    pub state: Shared<LaState>,
}

impl LogAnalyticsFake {
    pub fn start(workspace: &str, events: Vec<Event>) -> LogAnalyticsFake {
        let state = Arc::new(Mutex::new(LaState {
            workspace: workspace.into(),
            table: "DeviceNetworkEvents".into(),
            events,
            has_timestamp: true,
            max_rows: 500_000,
            max_bytes: 100 << 20,
            script: Script::default(),
            requests: Vec::new(),
            violations: Vec::new(),
            forbidden: false,
            echo_token: false,
        }));
        let shared = state.clone();
        let server = Server::start(Arc::new(move |request| answer(&shared, request)));
        LogAnalyticsFake { server, state }
    }

    pub fn push_fault(&self, fault: Fault) {
        self.state.lock().unwrap().script.queue.push_back(fault);
    }

    pub fn requests(&self) -> Vec<QueryRecord> {
        self.state.lock().unwrap().requests.clone()
    }

    pub fn violations(&self) -> Vec<String> {
        self.state.lock().unwrap().violations.clone()
    }
}

/// A query the service refuses: the OneAPI error with Kusto's reason inside.
fn bad_request(kind: &str, message: &str) -> Reply {
    Reply::json(
        400,
        &json!({"error": {"code": "BadArgumentError", "message": "The request had some invalid properties",
            "innererror": {"code": kind, "message": message}}}),
    )
}

fn error_reply(status: u16, code: &str, message: &str) -> Reply {
    Reply::json(status, &json!({"error": {"code": code, "message": message}}))
}

fn answer(shared: &Shared<LaState>, request: super::Request) -> Reply {
    let mut state = shared.lock().unwrap();
    let mut violations = Vec::new();
    if request.method != "POST" {
        violations.push(format!("method {}", request.method));
    }
    if !request.header("content-type").is_some_and(|c| c.starts_with("application/json")) {
        violations.push("Content-Type is not application/json".into());
    }
    if !request.header("prefer").is_some_and(|p| p.contains("wait=")) {
        violations.push("no `Prefer: wait=` header".into());
    }
    if !token_for(request.bearer(), RESOURCE) {
        state.violations.extend(violations);
        return error_reply(401, "AuthorizationRequiredError", "Valid authentication was not provided");
    }
    if request.path != format!("/v1/workspaces/{}/query", state.workspace) {
        state.violations.extend(violations);
        return error_reply(404, "PathNotFoundError", &format!("The requested path does not exist: {}", request.path));
    }
    let echo = match (state.echo_token, request.header("authorization")) {
        (true, Some(header)) => format!(" (request Authorization: {header})"),
        _ => String::new(),
    };
    if state.forbidden {
        return error_reply(
            403,
            "InsufficientAccessError",
            &format!("The provided credentials have insufficient access to perform the requested operation{echo}"),
        );
    }
    let body: Value = match serde_json::from_slice(&request.body) {
        Ok(body) => body,
        Err(e) => {
            violations.push(format!("body is not JSON: {e}"));
            state.violations.extend(violations);
            return error_reply(400, "BadArgumentError", "The request body is not JSON");
        }
    };
    let Some(text) = body.get("query").and_then(Value::as_str).map(str::to_string) else {
        state.violations.extend(violations);
        return error_reply(400, "BadArgumentError", "The request had some invalid properties: query");
    };
    let timespan = body.get("timespan").and_then(Value::as_str).map(str::to_string);
    let fault = state.script.queue.pop_front();
    let mut record = QueryRecord {
        query: text.clone(),
        window: None,
        status: 200,
        rows: 0,
        partial: false,
        at: std::time::Instant::now(),
    };

    if let Some(Fault::Status { status, retry_after }) = &fault {
        let mut reply = error_reply(*status, "ServiceError", &format!("scripted failure{echo}"));
        if let Some(after) = retry_after {
            reply = reply.header("retry-after", after);
        }
        record.status = *status;
        state.requests.push(record);
        state.violations.extend(violations);
        return reply;
    }
    let query = match parse(&text) {
        Ok(query) => query,
        Err(message) => {
            violations.push(format!("the query does not parse: {message}\n{text}"));
            state.violations.extend(violations);
            record.status = 400;
            state.requests.push(record);
            return bad_request("SyntaxError", &message);
        }
    };
    record.window = query.window.as_ref().map(|(_, a, b)| (*a, *b));
    let result = evaluate(&state, &query, timespan.as_deref(), &mut violations);
    let (columns, mut rows) = match result {
        Ok(result) => result,
        Err(message) => {
            state.violations.extend(violations);
            record.status = 400;
            state.requests.push(record);
            return bad_request("SemanticError", &message);
        }
    };
    let mut error = None;
    if rows.len() > state.max_rows {
        rows.truncate(state.max_rows);
        error = Some(format!("Query result set has exceeded the internal record count limit {}", state.max_rows));
    }
    if matches!(fault, Some(Fault::PartialError)) {
        rows.truncate(rows.len() / 2);
        error = Some("Query execution has resulted in error (0x80DA0003): Partial query failure".into());
    }
    let (mut body, mut size) = encode(&columns, &rows);
    if size > state.max_bytes {
        while size > state.max_bytes && !rows.is_empty() {
            rows.truncate(rows.len() / 2);
            (body, size) = encode(&columns, &rows);
        }
        error = Some(format!("Query result set has exceeded the internal data size limit {}", state.max_bytes));
    }
    if let Some(message) = &error {
        // the documented shape of a partial failure: HTTP 200, rows, and a top-level error
        body.truncate(body.len() - 1);
        body.push_str(&format!(
            r#","error":{{"code":"PartialError","message":"There were some errors when processing your query.","details":[{{"code":"EngineError","message":"Something went wrong processing your query on the server.","innererror":{{"code":"-2133196797","message":{},"severity":2,"severityName":"Error"}}}}]}}}}"#,
            serde_json::to_string(message).unwrap()
        ));
    }
    record.rows = rows.len();
    record.partial = error.is_some();
    state.requests.push(record);
    state.violations.extend(violations);
    let mut reply = Reply::new(200, body).header("content-type", "application/json; charset=utf-8");
    match fault {
        Some(Fault::Cut) => reply.cut = true,
        Some(Fault::Slow(delay)) => reply.delay = delay,
        _ => {}
    }
    reply
}

fn encode(columns: &[(String, &'static str)], rows: &[Vec<KValue>]) -> (String, usize) {
    let mut out = String::with_capacity(rows.len() * 160 + 256);
    out.push_str(r#"{"tables":[{"name":"PrimaryResult","columns":["#);
    for (i, (name, ty)) in columns.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&json!({"name": name, "type": ty}).to_string());
    }
    out.push_str(r#"],"rows":["#);
    for (i, row) in rows.iter().enumerate() {
        out.push_str(if i > 0 { ",[" } else { "[" });
        for (j, value) in row.iter().enumerate() {
            if j > 0 {
                out.push(',');
            }
            value.to_json(&mut out);
        }
        out.push(']');
    }
    out.push_str("]}]}");
    let size = out.len();
    (out, size)
}

/// The parts of KQL this server understands.
#[derive(Debug, Default)]
struct Query {
    table: String,
    /// (column, from, to): `column >= datetime(from) and column < datetime(to)`.
    window: Option<(String, i64, i64)>,
    has_any: Option<Vec<String>>,
    contains_any: Option<Vec<String>>,
    project: Option<Vec<String>>,
    /// (time column, keys): `summarize Events = count() by Day = bin(time, 1d), keys…`.
    summarize: Option<(String, Vec<String>)>,
    print: Option<i64>,
}

/// A KQL string literal at the start of `text`: its value and the rest.
fn literal(text: &str) -> Result<(String, &str), String> {
    let mut chars = text.char_indices();
    if chars.next().map(|(_, c)| c) != Some('"') {
        return Err(format!("expected a string literal at `{}`", &text[..text.len().min(30)]));
    }
    let mut value = String::new();
    let mut escaped = false;
    for (i, c) in chars {
        match (escaped, c) {
            (true, '"' | '\\') => {
                value.push(c);
                escaped = false;
            }
            (true, other) => return Err(format!("unsupported escape `\\{other}`")),
            (false, '\\') => escaped = true,
            (false, '"') => return Ok((value, &text[i + 1..])),
            (false, c) => value.push(c),
        }
    }
    Err("unterminated string literal".into())
}

fn datetime(text: &str) -> Result<i64, String> {
    let inner = text
        .strip_prefix("datetime(")
        .and_then(|t| t.strip_suffix(')'))
        .ok_or_else(|| format!("expected datetime(…), got `{text}`"))?;
    parse_timestamp_micros(inner).ok_or_else(|| format!("`{inner}` is not a datetime"))
}

fn columns(text: &str) -> Result<Vec<String>, String> {
    let names: Vec<String> = text.split(',').map(|c| c.trim().to_string()).collect();
    if names.iter().any(|n| n.is_empty() || !n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')) {
        return Err(format!("expected column names, got `{text}`"));
    }
    Ok(names)
}

fn parse(text: &str) -> Result<Query, String> {
    let mut lines = text.lines();
    let first = lines.next().unwrap_or("").trim();
    let mut query = Query::default();
    if let Some(value) = first.strip_prefix("print ") {
        query.print = Some(value.trim().parse().map_err(|_| format!("cannot print `{value}`"))?);
        return if lines.next().is_some() { Err("`print` takes no operators here".into()) } else { Ok(query) };
    }
    if first.is_empty() || !first.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(format!("expected a table name, got `{first}`"));
    }
    query.table = first.into();
    for line in lines {
        let stage = line.trim().strip_prefix("| ").ok_or_else(|| format!("expected `| operator`, got `{line}`"))?;
        if let Some(rest) = stage.strip_prefix("where RemoteUrl has_any (") {
            let mut rest = rest;
            let mut terms = Vec::new();
            loop {
                let (term, after) = literal(rest.trim_start())?;
                terms.push(term);
                rest = after.trim_start();
                if let Some(after) = rest.strip_prefix(',') {
                    rest = after;
                } else if rest == ")" {
                    break;
                } else {
                    return Err(format!("unexpected `{rest}` in has_any"));
                }
            }
            query.has_any = Some(terms);
        } else if stage.starts_with("where RemoteUrl contains ") {
            let mut rest = stage.strip_prefix("where ").unwrap();
            let mut needles = Vec::new();
            loop {
                let after = rest
                    .strip_prefix("RemoteUrl contains ")
                    .ok_or_else(|| format!("expected `RemoteUrl contains`, got `{rest}`"))?;
                let (needle, after) = literal(after)?;
                needles.push(needle);
                if after.is_empty() {
                    break;
                }
                rest = after.strip_prefix(" or ").ok_or_else(|| format!("expected ` or `, got `{after}`"))?;
            }
            query.contains_any = Some(needles);
        } else if let Some(rest) = stage.strip_prefix("where ") {
            let parts: Vec<&str> = rest.split(" and ").collect();
            let [low, high] = parts.as_slice() else { return Err(format!("unsupported where clause `{rest}`")) };
            let low: Vec<&str> = low.split_whitespace().collect();
            let high: Vec<&str> = high.split_whitespace().collect();
            match (low.as_slice(), high.as_slice()) {
                ([c1, ">=", a], [c2, "<", b]) if c1 == c2 => {
                    query.window = Some((c1.to_string(), datetime(a)?, datetime(b)?));
                }
                _ => return Err(format!("unsupported where clause `{rest}`")),
            }
        } else if let Some(rest) = stage.strip_prefix("project ") {
            query.project = Some(columns(rest)?);
        } else if let Some(rest) = stage.strip_prefix("summarize Events = count() by Day = bin(") {
            let (time, rest) = rest.split_once(", 1d), ").ok_or_else(|| format!("unsupported summarize `{stage}`"))?;
            query.summarize = Some((time.to_string(), columns(rest)?));
        } else {
            return Err(format!("unsupported operator `{stage}`"));
        }
    }
    Ok(query)
}

fn has_term(text: &str, term: &str) -> bool {
    text.split(|c: char| !c.is_ascii_alphanumeric()).any(|run| run.eq_ignore_ascii_case(term))
}

fn contains(text: &str, needle: &str) -> bool {
    text.to_ascii_lowercase().contains(&needle.to_ascii_lowercase())
}

type Answer = (Vec<(String, &'static str)>, Vec<Vec<KValue>>);

fn evaluate(
    state: &LaState,
    query: &Query,
    timespan: Option<&str>,
    violations: &mut Vec<String>,
) -> Result<Answer, String> {
    if let Some(value) = query.print {
        return Ok((vec![("print_0".into(), "long")], vec![vec![KValue::Int(Some(value))]]));
    }
    if query.table != state.table {
        return Err(format!("Failed to resolve table or column expression named '{}'", query.table));
    }
    let resolve = |column: &str| -> Result<&'static str, String> {
        match kind(column) {
            Some(_) if column == "Timestamp" && !state.has_timestamp => {
                Err(format!("Failed to resolve scalar expression named '{column}'"))
            }
            Some(ty) => Ok(ty),
            None => Err(format!("Failed to resolve scalar expression named '{column}'")),
        }
    };
    let Some((time_column, from, to)) = &query.window else {
        violations.push("a data query without a time window".into());
        return Err("no time window".into());
    };
    resolve(time_column)?;
    let span = timespan
        .and_then(|t| t.split_once('/'))
        .and_then(|(a, b)| Some((parse_timestamp_micros(a)?, parse_timestamp_micros(b)?)));
    let Some((span_from, span_to)) = span else {
        violations.push(format!("timespan missing or not `start/end`: {timespan:?}"));
        return Err("timespan".into());
    };
    if span_from > *from || span_to < *to {
        violations.push("the timespan does not cover the query window".into());
    }
    let mut kept: Vec<&Event> = state
        .events
        .iter()
        .filter(|e| get(e, "TimeGenerated").time().is_some_and(|t| span_from <= t && t < span_to))
        .filter(|e| get(e, time_column).time().is_some_and(|t| *from <= t && t < *to))
        .collect();
    let url = |e: &Event| match get(e, "RemoteUrl") {
        KValue::Str(s) => s,
        _ => String::new(),
    };
    if let Some(terms) = &query.has_any {
        kept.retain(|e| terms.iter().any(|t| has_term(&url(e), t)));
    }
    if let Some(needles) = &query.contains_any {
        kept.retain(|e| needles.iter().any(|n| contains(&url(e), n)));
    }
    match (&query.project, &query.summarize) {
        (Some(project), None) => {
            let columns: Vec<(String, &'static str)> =
                project.iter().map(|c| Ok((c.clone(), resolve(c)?))).collect::<Result<_, String>>()?;
            let rows = kept.iter().map(|e| project.iter().map(|c| get(e, c)).collect()).collect();
            Ok((columns, rows))
        }
        (None, Some((time, keys))) => {
            resolve(time)?;
            let mut columns = vec![("Day".to_string(), "datetime")];
            for key in keys {
                columns.push((key.clone(), resolve(key)?));
            }
            columns.push(("Events".into(), "long"));
            let mut groups: BTreeMap<Vec<KValue>, i64> = BTreeMap::new();
            for e in kept {
                let day = get(e, time).time().map(|t| Day::of_micros(t).start_micros());
                let mut key = vec![KValue::Time(day)];
                key.extend(keys.iter().map(|k| get(e, k)));
                *groups.entry(key).or_default() += 1;
            }
            let rows = groups
                .into_iter()
                .map(|(mut key, n)| {
                    key.push(KValue::Int(Some(n)));
                    key
                })
                .collect();
            Ok((columns, rows))
        }
        _ => Err("expected exactly one of `project` or `summarize`".into()),
    }
}
