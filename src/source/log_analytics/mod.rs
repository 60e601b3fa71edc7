//! The Log Analytics query API as a source (`POST {endpoint}/v1/workspaces/{id}/query`).
//!
//! The run's time range is cut into windows; each window is one query whose KQL carries the
//! window itself, the telemetry-host filter and the projection (or pre-aggregation), so only
//! telemetry rows travel. The API returns at most 500,000 rows and ~100 MB per answer and
//! reports a cut answer as HTTP 200 with an `error` object: such a window is halved and asked
//! again, never counted. At most `max_in_flight` windows run at once (the API runs five queries
//! per identity and queues the rest); each answer is decoded on rayon while the next ones travel.

pub mod answer;
pub mod kql;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use reqwest::{StatusCode, Url};
use tokio::task::JoinSet;

pub use answer::{AnswerShape, Decoded, EventBatch};
pub use kql::{HostFilter, Pushdown, QueryText, Window};

use crate::azure::http::{self, AzureClient, Call, HttpError, RetryPolicy, LOG_ANALYTICS_SCOPE};
use crate::source::{ScanOptions, ScanStats};
use crate::time::format_micros;

/// The validated `[source.log_analytics]` settings.
#[derive(Debug, Clone, PartialEq)]
pub struct LogAnalyticsSettings {
    pub workspace_id: String,
    /// The API's base URL (`https://api.loganalytics.azure.com`).
    pub endpoint: Url,
    pub table: String,
    pub pushdown: Pushdown,
    /// Width of the first windows, in microseconds.
    pub window: i64,
    /// Windows are not halved below this width.
    pub min_window: i64,
    pub max_rows: u64,
    pub max_answer_bytes: usize,
    pub max_in_flight: usize,
    /// The server-side query timeout (`Prefer: wait=`).
    pub server_timeout: Duration,
    /// How far the `timespan` reaches beyond the window on both sides, in microseconds: the
    /// API applies it to `TimeGenerated`, which trails `Timestamp` by the ingestion delay.
    pub timespan_slack: i64,
    /// Halvings allowed in one run, so a persistent error cannot fan out into thousands of calls.
    pub max_splits: u32,
    pub retry: RetryPolicy,
}

impl LogAnalyticsSettings {
    pub fn query_url(&self) -> Url {
        let mut url = self.endpoint.clone();
        url.path_segments_mut().expect("validated as an http(s) URL").pop_if_empty().extend([
            "v1",
            "workspaces",
            &self.workspace_id,
            "query",
        ]);
        url
    }

    /// How messages and the run record name the source.
    pub fn describe(&self) -> String {
        format!("Log Analytics workspace {} ({})", self.workspace_id, self.query_url())
    }

    /// The windows of `[start, end)`, `window` wide (the last one may be narrower).
    pub fn windows(&self, start: i64, end: i64) -> Vec<Window> {
        let mut windows = Vec::new();
        let mut at = start;
        while at < end {
            let next = at.saturating_add(self.window.max(1)).min(end);
            windows.push(Window { start: at, end: next });
            at = next;
        }
        windows
    }
}

/// A window that produced no usable answer, or a query the API refused; the run fails.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("{source} (window {window})")]
    Call { window: String, source: HttpError },
    #[error("{endpoint}: window {window}: HTTP {status}: {message}{hint}")]
    Refused { endpoint: String, window: String, status: u16, message: String, hint: String },
    #[error("{endpoint}: window {window}: {message}")]
    Answer { endpoint: String, window: String, message: String },
    #[error("{endpoint}: window {window} cannot be split further ({reason}); narrow `[scope]`, or set `pushdown = \"aggregate\"` so Kusto sends counts instead of rows")]
    TooBig { endpoint: String, window: String, reason: String },
    #[error("{endpoint}: {splits} window splits in one run, more than `max_splits`; the last reason: {reason}")]
    TooManySplits { endpoint: String, splits: u32, reason: String },
    #[error("{endpoint}: {exceeded}")]
    Limit { endpoint: String, exceeded: crate::source::LimitExceeded },
}

/// What the query side did, for the run record.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct QueryStats {
    /// Windows whose answers were counted.
    pub windows: u64,
    pub splits: u64,
    /// Attempts beyond the first, over all calls.
    pub retries: u64,
    pub rows_returned: u64,
    pub answer_bytes: u64,
}

/// What to scan: `[start, end)` in microseconds, the query, and what the hunt needs.
pub struct ScanRequest {
    pub start: i64,
    pub end: i64,
    pub text: QueryText,
    pub options: ScanOptions,
}

/// One window's fate.
enum Outcome<T> {
    Done { value: T, stats: ScanStats, rows_returned: u64, bytes: u64, retries: u64 },
    Split { reason: String, retries: u64 },
}

/// The Log Analytics source of one run.
pub struct LogAnalytics {
    pub settings: LogAnalyticsSettings,
    client: AzureClient,
    url: Url,
    endpoint: String,
}

impl LogAnalytics {
    pub fn new(settings: LogAnalyticsSettings, client: AzureClient) -> LogAnalytics {
        let url = settings.query_url();
        let endpoint = settings.describe();
        LogAnalytics { settings, client, url, endpoint }
    }

    async fn post(&self, query: &str, timespan: Option<String>) -> Result<http::Answer, HttpError> {
        let mut body = serde_json::json!({ "query": query });
        if let Some(timespan) = timespan {
            body["timespan"] = serde_json::Value::String(timespan);
        }
        let prefer = format!("wait={}", self.settings.server_timeout.as_secs().max(1));
        let headers = [
            (CONTENT_TYPE, HeaderValue::from_static("application/json")),
            (HeaderName::from_static("prefer"), HeaderValue::from_str(&prefer).expect("ASCII")),
        ];
        self.client
            .post(Call {
                endpoint: &self.endpoint,
                url: &self.url,
                scope: LOG_ANALYTICS_SCOPE,
                headers: &headers,
                body: serde_json::to_vec(&body).expect("a JSON value serializes").into(),
                // A 504 means the query ran past the server timeout: asking again does the
                // same work again, so the window is split instead.
                retry_on: |status| http::transient(status) && status != StatusCode::GATEWAY_TIMEOUT,
                max_answer_bytes: self.settings.max_answer_bytes,
                policy: &self.settings.retry,
            })
            .await
    }

    /// Asks one window and decodes it on rayon with `fold`.
    async fn window<T: Send + 'static>(
        self: Arc<Self>,
        window: Window,
        text: Arc<QueryText>,
        shape: AnswerShape,
        options: Arc<ScanOptions>,
        fold: Arc<dyn Fn(Vec<EventBatch>) -> T + Send + Sync>,
    ) -> Result<Outcome<T>, QueryError> {
        let slack = self.settings.timespan_slack;
        let timespan = format!(
            "{}/{}",
            format_micros(window.start.saturating_sub(slack)),
            format_micros(window.end.saturating_add(slack))
        );
        let answer = match self.post(&text.for_window(window), Some(timespan)).await {
            Ok(answer) => answer,
            Err(HttpError::TooLarge { attempts, limit, .. }) => {
                return Ok(Outcome::Split {
                    reason: format!("the answer is larger than {limit} bytes"),
                    retries: u64::from(attempts - 1),
                })
            }
            Err(source) => return Err(QueryError::Call { window: window.to_string(), source }),
        };
        let retries = u64::from(answer.attempts - 1);
        match answer.status {
            StatusCode::OK => {}
            StatusCode::GATEWAY_TIMEOUT => {
                return Ok(Outcome::Split { reason: "HTTP 504: the query ran past the server timeout".into(), retries })
            }
            status => return Err(self.refused(window, status, &answer.body)),
        }
        let bytes = answer.body.len() as u64;
        let endpoint = self.endpoint.clone();
        let decoded = on_rayon(move || {
            answer::decode(&answer.body, window, shape, &options).map(|decoded| match decoded {
                Decoded::Complete { batches, stats, rows_returned } => {
                    Outcome::Done { value: fold(batches), stats, rows_returned, bytes, retries }
                }
                Decoded::Incomplete(reason) => Outcome::Split { reason, retries },
            })
        })
        .await;
        decoded.map_err(|message| QueryError::Answer { endpoint, window: window.to_string(), message })
    }

    fn refused(&self, window: Window, status: StatusCode, body: &[u8]) -> QueryError {
        let message = http::api_message(body);
        QueryError::Refused {
            endpoint: self.endpoint.clone(),
            window: window.to_string(),
            status: status.as_u16(),
            hint: self.hint(status, &message),
            message,
        }
    }

    /// The fix in words for a refused query.
    pub fn hint(&self, status: StatusCode, message: &str) -> String {
        let id = &self.settings.workspace_id;
        let lower = message.to_ascii_lowercase();
        let hint = match status.as_u16() {
            401 => "the token was refused: the job's identity must get tokens for https://api.loganalytics.io (check the identity's tenant and that it exists)".to_string(),
            403 => format!("grant the job's identity the Log Analytics Reader role (or read access to table `{}`) on workspace {id}; new role assignments can take up to 30 minutes", self.settings.table),
            404 => format!("no workspace {id} at {}: `workspace_id` is the workspace's Workspace ID (a GUID on its Overview page), not its name or resource ID", self.settings.endpoint),
            400 if lower.contains("failed to resolve table") || lower.contains(&format!("'{}'", self.settings.table.to_ascii_lowercase())) && lower.contains("resolve") => format!(
                "the workspace has no table `{}`: check `table`, and that the Microsoft Defender XDR connector streams DeviceNetworkEvents to this workspace",
                self.settings.table
            ),
            400 if lower.contains("timestamp") && lower.contains("resolve") => {
                "the table has no `Timestamp` column (Sentinel workspaces may only have `TimeGenerated`): set `time_column = \"TimeGenerated\"`".to_string()
            }
            400 if lower.contains("resolve") => "a column the job reads is missing from the table; run `DeviceNetworkEvents | getschema` on the workspace and compare".to_string(),
            _ => String::new(),
        };
        if hint.is_empty() {
            hint
        } else {
            format!(" — {hint}")
        }
    }

    /// Runs every window of the request, folding each complete answer with `fold` on rayon
    /// and merging the results with `merge`. Fails on the first window that cannot be answered.
    pub async fn scan<T: Default + Send + 'static>(
        self: Arc<Self>,
        request: ScanRequest,
        fold: Arc<dyn Fn(Vec<EventBatch>) -> T + Send + Sync>,
        merge: fn(T, T) -> T,
    ) -> Result<(T, ScanStats, QueryStats), QueryError> {
        let ScanRequest { start, end, text, options } = request;
        let shape = AnswerShape {
            time_column: options.time_column.column(),
            pushdown: self.settings.pushdown,
            max_rows: self.settings.max_rows,
        };
        let text = Arc::new(text);
        let keep = options.reject_samples;
        let options = Arc::new(options);
        let mut pending: VecDeque<Window> = self.settings.windows(start, end).into();
        let mut running: JoinSet<(Window, Result<Outcome<T>, QueryError>)> = JoinSet::new();
        let (mut total, mut stats, mut query) = (T::default(), ScanStats::default(), QueryStats::default());
        loop {
            while running.len() < self.settings.max_in_flight.max(1) {
                let Some(window) = pending.pop_front() else { break };
                let task = self.clone().window(window, text.clone(), shape, options.clone(), fold.clone());
                running.spawn(async move { (window, task.await) });
            }
            let Some(joined) = running.join_next().await else { break };
            let (window, outcome) = joined.expect("window tasks do not panic");
            match outcome? {
                Outcome::Done { value, stats: window_stats, rows_returned, bytes, retries } => {
                    total = merge(total, value);
                    stats = stats.merge(window_stats, keep);
                    // The same bound as files: the rows (events, when pre-aggregated) read so far.
                    let limit = options.limits.max_rows_per_run;
                    if stats.rows_scanned > limit {
                        let what = "the rows the workspace returned to this run";
                        let exceeded = crate::source::LimitExceeded { what, setting: "max_rows_per_run", limit };
                        return Err(QueryError::Limit { endpoint: self.endpoint.clone(), exceeded });
                    }
                    query.windows += 1;
                    query.rows_returned += rows_returned;
                    query.answer_bytes += bytes;
                    query.retries += retries;
                    tracing::debug!(%window, rows_returned, "Window answered.");
                }
                Outcome::Split { reason, retries } => {
                    query.retries += retries;
                    let Some((first, second)) = window.halves(self.settings.min_window) else {
                        return Err(QueryError::TooBig {
                            endpoint: self.endpoint.clone(),
                            window: window.to_string(),
                            reason,
                        });
                    };
                    query.splits += 1;
                    if query.splits > u64::from(self.settings.max_splits) {
                        return Err(QueryError::TooManySplits {
                            endpoint: self.endpoint.clone(),
                            splits: query.splits as u32,
                            reason,
                        });
                    }
                    tracing::info!(%window, %reason, "Splitting a query window in two.");
                    pending.push_front(second);
                    pending.push_front(first);
                }
            }
        }
        Ok((total, stats, query))
    }

    /// `check`: runs `print 1` on the workspace. `Ok` carries what to tell the user.
    pub async fn probe(&self) -> Result<String, String> {
        let answer = self.post("print 1", None).await.map_err(|e| e.to_string())?;
        if answer.status != StatusCode::OK {
            let message = http::api_message(&answer.body);
            let hint = self.hint(answer.status, &message);
            return Err(format!("{}: HTTP {}: {message}{hint}", self.endpoint, answer.status.as_u16()));
        }
        let value: serde_json::Value = serde_json::from_slice(&answer.body)
            .map_err(|e| format!("{}: the answer to `print 1` is not JSON: {e}", self.endpoint))?;
        if let Some(error) = value.get("error") {
            return Err(format!("{}: `print 1` answered with an error: {}", self.endpoint, http::error_text(error)));
        }
        match value.pointer("/tables/0/rows/0/0").and_then(|v| v.as_i64()) {
            Some(1) => Ok(format!("{}: `print 1` answered 1", self.endpoint)),
            _ => Err(format!("{}: `print 1` did not answer 1: {}", self.endpoint, http::excerpt(&answer.body))),
        }
    }
}

/// Runs CPU work on rayon and waits for it without blocking a tokio worker.
async fn on_rayon<R: Send + 'static>(work: impl FnOnce() -> R + Send + 'static) -> R {
    let (send, receive) = tokio::sync::oneshot::channel();
    rayon::spawn(move || {
        let _ = send.send(work());
    });
    receive.await.expect("rayon runs every spawned task")
}
