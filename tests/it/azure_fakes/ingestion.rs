//! The Logs Ingestion API of one DCR:
//! `POST /dataCollectionRules/{immutableId}/streams/{stream}?api-version=2023-01-01`, a JSON
//! array of objects shaped like the stream declaration, optionally gzipped; 204 on success,
//! 413 past the size limit, 401/403/404 for a wrong token, a missing role, an unknown DCR or
//! stream. Every request is checked against the documented format (the checks the job must
//! never fail are recorded as violations), and every accepted row is kept.

use std::collections::BTreeMap;
use std::io::Read;
use std::sync::{Arc, Mutex};

use serde_json::{json, Map, Value};

use super::{token_for, Fault, Reply, Script, Server, Shared};

pub const RESOURCE: &str = "https://monitor.azure.com";
pub const LIMIT: usize = 1_000_000;

/// One call, as the server saw it.
#[derive(Debug, Clone)]
pub struct Call {
    pub stream: String,
    pub status: u16,
    /// Uncompressed body bytes.
    pub bytes: usize,
    pub rows: usize,
    /// The body as sent (gzip).
    pub body: Vec<u8>,
    pub at: std::time::Instant,
}

#[derive(Debug)]
pub struct IngestionState {
    pub dcr: String,
    /// Stream → declared columns (name → DCR type).
    pub streams: BTreeMap<String, BTreeMap<String, String>>,
    /// Accepted rows, per stream, in arrival order.
    pub rows: BTreeMap<String, Vec<Map<String, Value>>>,
    pub calls: Vec<Call>,
    pub script: Script,
    /// After this many accepted calls, answer every call with the status (an outage).
    pub fail_after: Option<(usize, u16)>,
    /// Answer 413 to bodies larger than this (a stricter front end than the documented limit).
    pub max_accepted: usize,
    /// Answer 403 to everything (the identity lacks Monitoring Metrics Publisher).
    pub forbidden: bool,
    /// The 403 answer quotes the request's `Authorization` header, as some gateways do.
    pub echo_token: bool,
    /// The audience tokens must be for.
    pub audience: String,
    /// Every answer takes this long (a busy service), so that concurrent calls overlap.
    pub latency: std::time::Duration,
    pub violations: Vec<String>,
}

pub struct IngestionFake {
    pub server: Server,
    pub state: Shared<IngestionState>,
}

fn error_reply(status: u16, code: &str, message: &str) -> Reply {
    Reply::json(status, &json!({"error": {"code": code, "message": message}}))
}

impl IngestionFake {
    /// A DCR declaring `streams` (name → columns and types).
    pub fn start(dcr: &str, streams: BTreeMap<String, BTreeMap<String, String>>) -> IngestionFake {
        let state = Arc::new(Mutex::new(IngestionState {
            dcr: dcr.into(),
            streams,
            rows: BTreeMap::new(),
            calls: Vec::new(),
            script: Script::default(),
            fail_after: None,
            max_accepted: LIMIT,
            forbidden: false,
            echo_token: false,
            audience: RESOURCE.into(),
            latency: std::time::Duration::ZERO,
            violations: Vec::new(),
        }));
        let shared = state.clone();
        let server = Server::start(Arc::new(move |request| accept(&shared, request)));
        IngestionFake { server, state }
    }

    pub fn push_fault(&self, fault: Fault) {
        self.state.lock().unwrap().script.queue.push_back(fault);
    }

    pub fn violations(&self) -> Vec<String> {
        self.state.lock().unwrap().violations.clone()
    }

    pub fn calls(&self) -> Vec<Call> {
        self.state.lock().unwrap().calls.clone()
    }

    pub fn rows(&self) -> BTreeMap<String, Vec<Map<String, Value>>> {
        self.state.lock().unwrap().rows.clone()
    }
}

/// Whether a JSON value fits a declared DCR column type.
fn fits(value: &Value, ty: &str) -> bool {
    match (ty, value) {
        (_, Value::Null) | ("dynamic", _) => true,
        ("string", Value::String(_)) => true,
        ("long" | "int", Value::Number(n)) => n.is_i64() || n.is_u64(),
        ("real", Value::Number(_)) => true,
        ("boolean", Value::Bool(_)) => true,
        ("datetime", Value::String(s)) => {
            telemetry_hunt::time::parse_timestamp_micros(s).is_some() || telemetry_hunt::time::Day::parse(s).is_some()
        }
        _ => false,
    }
}

fn accept(shared: &Shared<IngestionState>, request: super::Request) -> Reply {
    let mut state = shared.lock().unwrap();
    let mut violations = Vec::new();
    let mut reply = handle(&mut state, &request, &mut violations);
    state.violations.extend(violations);
    reply.delay = reply.delay.max(state.latency);
    reply
}

fn handle(state: &mut IngestionState, request: &super::Request, violations: &mut Vec<String>) -> Reply {
    if request.method != "POST" {
        violations.push(format!("method {}", request.method));
    }
    if request.query != "api-version=2023-01-01" {
        violations.push(format!("query `{}` is not api-version=2023-01-01", request.query));
        return error_reply(400, "InvalidApiVersion", "The api-version query parameter is missing or not supported");
    }
    if !token_for(request.bearer(), &state.audience) {
        return error_reply(
            401,
            "InvalidToken",
            "The authentication token is missing, expired, or for another audience",
        );
    }
    let prefix = format!("/dataCollectionRules/{}/streams/", state.dcr);
    let Some(stream) = request.path.strip_prefix(&prefix).map(super::identity::percent_decode) else {
        return error_reply(404, "NotFound", "Data collection rule with immutable Id not found");
    };
    if state.forbidden {
        let echo = match (state.echo_token, request.header("authorization")) {
            (true, Some(header)) => format!(" (request Authorization: {header})"),
            _ => String::new(),
        };
        return error_reply(
            403,
            "OperationFailed",
            &format!("The authentication token provided does not have access to ingest data for the data collection rule with immutable Id '{}'.{echo}", state.dcr),
        );
    }
    let Some(declared) = state.streams.get(&stream).cloned() else {
        return error_reply(
            404,
            "InvalidStream",
            &format!("Stream '{stream}' is not declared in the data collection rule"),
        );
    };
    if !request.header("content-type").is_some_and(|c| c.starts_with("application/json")) {
        violations.push("Content-Type is not application/json".into());
    }
    if request.header("content-encoding") != Some("gzip") {
        violations.push("Content-Encoding is not gzip".into());
    }
    let mut json = Vec::new();
    if let Err(e) = flate2::read::GzDecoder::new(&request.body[..]).read_to_end(&mut json) {
        violations.push(format!("the body is not gzip: {e}"));
        return error_reply(400, "InvalidPayload", "The body cannot be decompressed");
    }
    let mut call = Call {
        stream: stream.clone(),
        status: 204,
        bytes: json.len(),
        rows: 0,
        body: request.body.to_vec(),
        at: std::time::Instant::now(),
    };
    if json.len() > LIMIT {
        violations.push(format!("{} bytes uncompressed, more than the {LIMIT} one call takes", json.len()));
    }
    let rows: Vec<Value> = match serde_json::from_slice(&json) {
        Ok(Value::Array(rows)) => rows,
        Ok(_) | Err(_) => {
            violations.push("the body is not a JSON array".into());
            call.status = 400;
            state.calls.push(call);
            return error_reply(400, "InvalidPayload", "The body must be a JSON array");
        }
    };
    call.rows = rows.len();
    let mut objects = Vec::with_capacity(rows.len());
    for row in rows {
        let Value::Object(object) = row else {
            violations.push("a row is not a JSON object".into());
            continue;
        };
        for (key, value) in &object {
            match declared.get(key) {
                None => violations.push(format!("{stream}: column `{key}` is not declared")),
                Some(ty) if !fits(value, ty) => violations.push(format!("{stream}: `{key}` = {value} is not a {ty}")),
                Some(_) => {}
            }
        }
        objects.push(object);
    }
    let accepted = state.calls.iter().filter(|c| c.status == 204).count();
    let fault = state.script.queue.pop_front();
    let outage = state.fail_after.filter(|(after, _)| accepted >= *after).map(|(_, status)| status);
    let reply = match (fault, outage) {
        (Some(Fault::Status { status, retry_after }), _) => {
            let mut reply = error_reply(status, "ServiceError", "scripted failure");
            if let Some(after) = retry_after {
                reply = reply.header("retry-after", &after);
            }
            Some(reply)
        }
        (Some(Fault::Cut), _) => {
            Some(Reply { cut: true, ..error_reply(503, "ServiceUnavailable", "the connection drops half-way") })
        }
        (Some(Fault::Slow(delay)), _) => {
            // Slow, then accepted: the client has gone by then, so it will send again.
            let mut reply = Reply::new(204, Vec::new());
            reply.delay = delay;
            state.rows.entry(stream.clone()).or_default().extend(objects.iter().cloned());
            call.status = 204;
            state.calls.push(call.clone());
            return reply;
        }
        (Some(Fault::PartialError), _) => unreachable!("no partial errors in the ingestion API"),
        (None, Some(status)) => Some(error_reply(status, "ServiceUnavailable", "the service is down")),
        (None, None) if json.len() > state.max_accepted => {
            Some(error_reply(413, "ContentLengthLimitExceeded", "Maximum allowed content length: 1048576 bytes (1 MB)"))
        }
        (None, None) => None,
    };
    if let Some(reply) = reply {
        call.status = reply.status;
        state.calls.push(call);
        return reply;
    }
    state.rows.entry(stream).or_default().extend(objects);
    state.calls.push(call);
    Reply::new(204, Vec::new())
}

/// The streams the DCR of `infra/` declares (`infra/schema/tables.json`, what Bicep and
/// Terraform deploy): the job must send exactly these columns.
pub fn declared_streams() -> BTreeMap<String, BTreeMap<String, String>> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("infra/schema/tables.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let doc: serde_json::Value = serde_json::from_str(&text).expect("tables.json is JSON");
    doc["streamDeclarations"]
        .as_object()
        .expect("streamDeclarations")
        .iter()
        .map(|(stream, declaration)| {
            let columns = declaration["columns"]
                .as_array()
                .expect("columns")
                .iter()
                .map(|c| (c["name"].as_str().unwrap().to_string(), c["type"].as_str().unwrap().to_string()))
                .collect();
            (stream.clone(), columns)
        })
        .collect()
}
