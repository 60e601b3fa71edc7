//! The HTTP plumbing both Azure Monitor APIs use (the Log Analytics query API and the Logs
//! Ingestion API): one reqwest client, a fresh bearer token on every attempt (the credential
//! caches it), a timeout on every call, bounded retries with jittered exponential backoff that
//! honour the server's `Retry-After`, and errors that name the endpoint but never the token.
//!
//! Each API decides for itself what an answer *means* (a 413 splits a batch, a 504 splits a
//! query window); this module only decides what is worth trying again.

use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use azure_core::credentials::TokenCredential;
use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::{StatusCode, Url};

use crate::time::days_from_civil;

pub use crate::azure::identity::{LOG_ANALYTICS_SCOPE, MONITOR_SCOPE};

/// A `Retry-After` longer than this is not waited for in full: a nightly job that sleeps an hour
/// on one header is broken in a different way.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(600);

/// How hard to try one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in total, the first included (at least 1).
    pub max_attempts: u32,
    /// First backoff; doubled on each retry up to `max_delay`.
    pub base_delay: Duration,
    pub max_delay: Duration,
    /// The whole attempt, connection to last body byte.
    pub timeout: Duration,
}

impl RetryPolicy {
    /// The wait before attempt `attempt + 1`. The server's `Retry-After` wins when it gave one;
    /// otherwise exponential backoff with "equal jitter" (half fixed, half random), so that
    /// clients throttled together do not come back together.
    pub fn delay(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        if let Some(wait) = retry_after {
            let wait = wait.min(MAX_RETRY_AFTER);
            return wait + wait.mul_f64(0.1 * jitter());
        }
        let exponent = attempt.saturating_sub(1).min(20);
        let ceiling = self.base_delay.saturating_mul(1 << exponent).min(self.max_delay);
        ceiling / 2 + (ceiling / 2).mul_f64(jitter())
    }
}

/// A number in [0, 1) that differs between calls. `RandomState` is seeded per instance from
/// the OS, which is all the randomness backoff needs, without a dependency for it.
fn jitter() -> f64 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64));
    (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64
}

/// The answer to a call that was not retried away: any status the caller must interpret.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// Attempts made, this one included.
    pub attempts: u32,
}

/// A call that did not produce an answer. Messages name the endpoint, never a token.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("{endpoint}: cannot get an access token for `{scope}`: {message}")]
    Token { endpoint: String, scope: &'static str, message: String },
    #[error("{endpoint}: {message} (gave up after {attempts} attempt(s))")]
    Transport { endpoint: String, attempts: u32, timed_out: bool, message: String },
    #[error("{endpoint}: HTTP {status} (gave up after {attempts} attempt(s)): {body}")]
    Status { endpoint: String, status: u16, attempts: u32, body: String },
    #[error("{endpoint}: the answer is larger than {limit} bytes")]
    TooLarge { endpoint: String, limit: usize, attempts: u32 },
}

impl HttpError {
    pub fn attempts(&self) -> u32 {
        match self {
            HttpError::Token { .. } => 0,
            HttpError::Transport { attempts, .. }
            | HttpError::Status { attempts, .. }
            | HttpError::TooLarge { attempts, .. } => *attempts,
        }
    }
}

/// One POST to make.
pub struct Call<'a> {
    /// How errors name the endpoint: what it is and its URL (never with credentials in it).
    pub endpoint: &'a str,
    pub url: &'a Url,
    pub scope: &'static str,
    pub headers: &'a [(HeaderName, HeaderValue)],
    pub body: Bytes,
    /// Statuses worth another attempt (throttling and transient server errors).
    pub retry_on: fn(StatusCode) -> bool,
    /// Larger answers are refused rather than held in memory.
    pub max_answer_bytes: usize,
    pub policy: &'a RetryPolicy,
}

/// 429 and the 5xx statuses that mean "try again"; 501 and 505 never get better.
pub fn transient(status: StatusCode) -> bool {
    status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT
        || (status.is_server_error()
            && status != StatusCode::NOT_IMPLEMENTED
            && status != StatusCode::HTTP_VERSION_NOT_SUPPORTED)
}

/// The HTTP client of both Azure Monitor APIs, with the identity that signs its calls.
#[derive(Clone)]
pub struct AzureClient {
    http: reqwest::Client,
    credential: Arc<dyn TokenCredential>,
}

impl fmt::Debug for AzureClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AzureClient").finish_non_exhaustive()
    }
}

enum Failure {
    Transport { timed_out: bool, message: String },
    TooLarge,
}

impl AzureClient {
    pub fn new(credential: Arc<dyn TokenCredential>) -> Result<AzureClient, HttpError> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("telemetry-hunt/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| HttpError::Transport {
                endpoint: "the HTTP client".into(),
                attempts: 0,
                timed_out: false,
                message: error_chain(&e),
            })?;
        Ok(AzureClient { http, credential })
    }

    /// Sends `call`, retrying transport failures, timeouts and `retry_on` statuses within the
    /// policy. Any other status comes back as an [`Answer`] for the caller to interpret.
    pub async fn post(&self, call: Call<'_>) -> Result<Answer, HttpError> {
        let policy = call.policy;
        let max_attempts = policy.max_attempts.max(1);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let token = self.credential.get_token(&[call.scope], None).await.map_err(|e| HttpError::Token {
                endpoint: call.endpoint.to_string(),
                scope: call.scope,
                // The token endpoint's answer may quote the request's secret header.
                message: one_line(&crate::redact::redacted(&e.to_string())),
            })?;
            // Whatever the token is, it never shows in a message, even one a server echoes.
            crate::redact::register(token.token.secret());
            let mut request = self
                .http
                .post(call.url.clone())
                .timeout(policy.timeout)
                .bearer_auth(token.token.secret())
                .body(call.body.clone());
            for (name, value) in call.headers {
                request = request.header(name, value);
            }
            let outcome = match request.send().await {
                Ok(response) => {
                    let status = response.status();
                    let headers = response.headers().clone();
                    match read_limited(response, call.max_answer_bytes).await {
                        Ok(body) => Ok((status, headers, body)),
                        Err(failure) => Err(failure),
                    }
                }
                Err(e) => Err(Failure::Transport { timed_out: e.is_timeout(), message: error_chain(&e) }),
            };
            let last = attempt >= max_attempts;
            let retry_after = match outcome {
                Ok((status, headers, body)) if (call.retry_on)(status) => {
                    if last {
                        return Err(HttpError::Status {
                            endpoint: call.endpoint.to_string(),
                            status: status.as_u16(),
                            attempts: attempt,
                            body: excerpt(&body),
                        });
                    }
                    tracing::warn!(
                        endpoint = call.endpoint,
                        attempt,
                        status = status.as_u16(),
                        "The endpoint answered with a transient error; trying again."
                    );
                    retry_after(&headers)
                }
                Ok((status, headers, body)) => return Ok(Answer { status, headers, body, attempts: attempt }),
                Err(Failure::TooLarge) => {
                    return Err(HttpError::TooLarge {
                        endpoint: call.endpoint.to_string(),
                        limit: call.max_answer_bytes,
                        attempts: attempt,
                    })
                }
                Err(Failure::Transport { timed_out, message }) => {
                    if last {
                        return Err(HttpError::Transport {
                            endpoint: call.endpoint.to_string(),
                            attempts: attempt,
                            timed_out,
                            message,
                        });
                    }
                    tracing::warn!(endpoint = call.endpoint, attempt, error = %message, "The call failed in transit; trying again.");
                    None
                }
            };
            tokio::time::sleep(policy.delay(attempt, retry_after)).await;
        }
    }
}

/// The body, refusing to hold more than `limit` bytes. A connection dropped mid-body is a
/// transport failure (worth retrying), not a short answer.
async fn read_limited(mut response: reqwest::Response, limit: usize) -> Result<Bytes, Failure> {
    let expected = response.content_length().map_or(0, |n| n.min(limit as u64) as usize);
    let mut body = Vec::with_capacity(expected);
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > limit {
                    return Err(Failure::TooLarge);
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(Bytes::from(body)),
            Err(e) => return Err(Failure::Transport { timed_out: e.is_timeout(), message: error_chain(&e) }),
        }
    }
}

/// An error and its causes on one line, without the URL (the caller names the endpoint).
pub fn error_chain(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    if let Some(url) = error.url() {
        text = text.replace(&format!(" for url ({url})"), "");
    }
    text
}

/// A message on one line: azure_identity's span several (with a troubleshooting link).
pub fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The start of an error body, for messages, without anything that looks like a secret (a
/// server may echo the request's headers).
pub fn excerpt(body: &[u8]) -> String {
    let text = crate::redact::redacted(String::from_utf8_lossy(body).trim());
    let text = text.as_str();
    match text.char_indices().nth(300) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None if text.is_empty() => "(empty body)".into(),
        None => text.to_string(),
    }
}

/// The messages of an `error` object and of its nested `innererror`s and `details`.
pub fn error_text(error: &serde_json::Value) -> String {
    fn walk(value: &serde_json::Value, out: &mut Vec<String>) {
        if let Some(map) = value.as_object() {
            let code = map.get("code").and_then(|c| c.as_str()).unwrap_or("");
            let message = map.get("message").and_then(|m| m.as_str()).unwrap_or("");
            let text = match (code.is_empty(), message.is_empty()) {
                (false, false) => format!("{code}: {message}"),
                (false, true) => code.to_string(),
                (true, false) => message.to_string(),
                (true, true) => String::new(),
            };
            if !text.is_empty() && !out.contains(&text) {
                out.push(text);
            }
            for key in ["innererror", "details"] {
                match map.get(key) {
                    Some(serde_json::Value::Array(items)) => items.iter().for_each(|i| walk(i, out)),
                    Some(inner) => walk(inner, out),
                    None => {}
                }
            }
        }
    }
    let mut parts = Vec::new();
    walk(error, &mut parts);
    let text = if parts.is_empty() { error.to_string() } else { parts.join("; ") };
    crate::redact::redacted(&text)
}

/// The OneAPI `error` of an answer (`{"error":{"code","message","innererror"|"details"}}`),
/// else the start of the body.
pub fn api_message(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("error").map(error_text))
        .unwrap_or_else(|| excerpt(body))
}

/// How long the server asked us to wait: `retry-after-ms` / `x-ms-retry-after-ms` (the Azure
/// forms, milliseconds), else `Retry-After` in seconds or as an HTTP date.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
    for name in ["retry-after-ms", "x-ms-retry-after-ms"] {
        if let Some(ms) = text(name).and_then(|v| v.parse::<u64>().ok()) {
            return Some(Duration::from_millis(ms));
        }
    }
    let value = text("retry-after")?;
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = parse_http_date(value)?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).ok()?.as_secs() as i64;
    Some(Duration::from_secs(at.saturating_sub(now).max(0) as u64))
}

/// `Sun, 06 Nov 1994 08:49:37 GMT` (RFC 9110 IMF-fixdate) as seconds since the epoch.
fn parse_http_date(text: &str) -> Option<i64> {
    let parts: Vec<&str> = text.split_whitespace().collect();
    let [_, day, month, year, clock, "GMT"] = parts.as_slice() else { return None };
    let month = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
        .iter()
        .position(|m| m == month)? as u32
        + 1;
    let (day, year): (u32, i32) = (day.parse().ok()?, year.parse().ok()?);
    let clock: Vec<i64> = clock.split(':').map(|p| p.parse().ok()).collect::<Option<_>>()?;
    let [h, m, s] = clock.as_slice() else { return None };
    crate::time::Day::from_ymd(year, month, day)?;
    Some(i64::from(days_from_civil(year, month, day)) * 86_400 + h * 3600 + m * 60 + s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_within_bounds_and_retry_after_wins() {
        let policy = RetryPolicy {
            max_attempts: 5,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(1000),
            timeout: Duration::from_secs(1),
        };
        for (attempt, ceiling) in [(1, 100), (2, 200), (3, 400), (4, 800), (5, 1000), (30, 1000)] {
            for _ in 0..50 {
                let d = policy.delay(attempt, None).as_millis() as u64;
                assert!(d >= ceiling / 2 && d <= ceiling, "attempt {attempt}: {d} ms");
            }
        }
        let d = policy.delay(1, Some(Duration::from_secs(3)));
        assert!(d >= Duration::from_secs(3) && d <= Duration::from_millis(3300), "{d:?}");
        assert!(policy.delay(1, Some(Duration::from_secs(86_400))) <= MAX_RETRY_AFTER.mul_f64(1.1));
        let spread: std::collections::BTreeSet<u128> = (0..20).map(|_| policy.delay(3, None).as_micros()).collect();
        assert!(spread.len() > 10, "jitter varies: {spread:?}");
    }

    #[test]
    fn retry_after_forms() {
        let headers = |pairs: &[(&'static str, &str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.insert(*k, HeaderValue::from_str(v).unwrap());
            }
            h
        };
        assert_eq!(retry_after(&headers(&[("retry-after", "7")])), Some(Duration::from_secs(7)));
        assert_eq!(
            retry_after(&headers(&[("retry-after", "7"), ("retry-after-ms", "250")])),
            Some(Duration::from_millis(250))
        );
        assert_eq!(retry_after(&headers(&[("x-ms-retry-after-ms", "40")])), Some(Duration::from_millis(40)));
        assert_eq!(retry_after(&headers(&[("retry-after", "Sun, 06 Nov 1994 08:49:37 GMT")])), Some(Duration::ZERO));
        assert_eq!(retry_after(&headers(&[("retry-after", "soon")])), None);
        assert_eq!(retry_after(&HeaderMap::new()), None);
        assert_eq!(parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"), Some(784_111_777));
        assert_eq!(parse_http_date("Sun, 31 Feb 1994 08:49:37 GMT"), None);
        let future = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64 + 120;
        let day = crate::time::Day::of_micros(future * 1_000_000);
        let (y, m, d) = day.ymd();
        let secs = future - day.start_micros() / 1_000_000;
        let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
        let date = format!(
            "Mon, {d:02} {} {y} {:02}:{:02}:{:02} GMT",
            months[m as usize - 1],
            secs / 3600,
            secs / 60 % 60,
            secs % 60
        );
        let wait = retry_after(&headers(&[("retry-after", &date)])).unwrap();
        assert!(wait >= Duration::from_secs(110) && wait <= Duration::from_secs(120), "{wait:?}");
    }

    #[test]
    fn transient_statuses() {
        for code in [429, 408, 500, 502, 503, 504] {
            assert!(transient(StatusCode::from_u16(code).unwrap()), "{code}");
        }
        for code in [200, 204, 400, 401, 403, 404, 413, 501, 505] {
            assert!(!transient(StatusCode::from_u16(code).unwrap()), "{code}");
        }
    }

    #[test]
    fn excerpts_are_short() {
        assert_eq!(excerpt(b"  "), "(empty body)");
        assert_eq!(excerpt(b"{\"error\":1}"), "{\"error\":1}");
        assert_eq!(excerpt("é".repeat(400).as_bytes()).chars().count(), 301);
    }
}
