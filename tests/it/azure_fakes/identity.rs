//! The Container Apps managed-identity endpoint (`IDENTITY_ENDPOINT` / `IDENTITY_HEADER`):
//! `GET {endpoint}?api-version=2019-08-01&resource=<audience>[&client_id=…]` with the
//! `X-IDENTITY-HEADER` secret, answering `{"access_token","expires_on","resource","token_type"}`
//! with `expires_on` as a string of epoch seconds.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use super::{Reply, Server, Shared};

pub const TOKEN_PREFIX: &str = "mi-secret-token";
/// Every token issued ends with this and a serial number: a bearer token to look for in output.
pub const TOKEN_MARK: &str = "eyFAKETOKEN";
pub const PATH: &str = "/msi/token";

/// How the endpoint fails, while set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenFault {
    /// This status, with an error body that quotes the request's `X-IDENTITY-HEADER` (as a
    /// debugging proxy in front of the endpoint would).
    Status(u16),
    /// HTTP 200 with a body that is not a token answer (a captive portal, a wrong endpoint).
    Garbage,
}

#[derive(Debug, Default)]
pub struct IdentityState {
    /// Tokens issued, by resource.
    pub issued: BTreeMap<String, usize>,
    pub client_ids: Vec<String>,
    pub violations: Vec<String>,
    pub fault: Option<TokenFault>,
}

pub struct Identity {
    pub server: Server,
    pub header: String,
    pub state: Shared<IdentityState>,
}

fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == name).then(|| percent_decode(v))
    })
}

pub fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 3 <= bytes.len() {
            if let Some(b) = std::str::from_utf8(&bytes[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl Identity {
    pub fn start() -> Identity {
        let header = "identity-header-secret-8c41".to_string();
        let state: Shared<IdentityState> = Arc::new(Mutex::new(IdentityState::default()));
        let (expected, shared) = (header.clone(), state.clone());
        let server = Server::start(Arc::new(move |request| {
            let mut state = shared.lock().unwrap();
            let mut problems = Vec::new();
            if request.method != "GET" || request.path != PATH {
                problems.push(format!("{} {} is not the token endpoint", request.method, request.path));
            }
            if query_param(&request.query, "api-version").as_deref() != Some("2019-08-01") {
                problems.push(format!("api-version missing or unexpected: {}", request.query));
            }
            if request.header("x-identity-header") != Some(expected.as_str()) {
                problems.push("X-IDENTITY-HEADER missing or wrong".into());
            }
            let resource = query_param(&request.query, "resource").unwrap_or_default();
            if resource.is_empty() || resource.ends_with("/.default") {
                problems.push(format!("resource must be an audience, not a scope: `{resource}`"));
            }
            if let Some(id) = query_param(&request.query, "client_id") {
                state.client_ids.push(id);
            }
            if !problems.is_empty() {
                state.violations.extend(problems.iter().cloned());
                return Reply::json(
                    400,
                    &serde_json::json!({"error": "invalid_request", "error_description": problems.join("; ")}),
                );
            }
            match state.fault.clone() {
                Some(TokenFault::Status(status)) => {
                    let echo = format!("token service unavailable; request headers: x-identity-header={expected}");
                    return Reply::json(
                        status,
                        &serde_json::json!({"error": "unavailable", "error_description": echo}),
                    );
                }
                Some(TokenFault::Garbage) => {
                    return Reply::new(200, "<html><body>Sign in to the network to continue</body></html>")
                        .header("content-type", "text/html")
                }
                None => {}
            }
            let serial = state.issued.values().sum::<usize>();
            *state.issued.entry(resource.clone()).or_default() += 1;
            let expires_on =
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 3600;
            Reply::json(
                200,
                &serde_json::json!({
                    "access_token": format!("{TOKEN_PREFIX} for {resource} {TOKEN_MARK}{serial:04}"),
                    "expires_on": expires_on.to_string(),
                    "resource": resource,
                    "token_type": "Bearer",
                    "client_id": "11111111-2222-3333-4444-555555555555",
                }),
            )
        }));
        Identity { server, header, state }
    }

    /// The environment a Container App gets.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("IDENTITY_ENDPOINT".into(), format!("{}{PATH}", self.server.url())),
            ("IDENTITY_HEADER".into(), self.header.clone()),
        ]
    }
}
