//! Local HTTP servers that speak the wire formats of the Azure APIs the job calls — the Log
//! Analytics query API, the Logs Ingestion API and the Container Apps managed-identity
//! endpoint — over real loopback connections, with scripted failures. Each server checks every
//! request against the documented format and records what it got, so tests assert on both
//! the job's results and what went over the wire.

pub mod identity;
pub mod ingestion;
pub mod log_analytics;

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming};
use hyper::header::HeaderMap;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

/// A request as the server received it.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub query: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The bearer token, if the request carries `Authorization: Bearer …`.
    pub fn bearer(&self) -> Option<&str> {
        self.header("authorization").and_then(|v| v.strip_prefix("Bearer "))
    }
}

/// What the server answers.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Wait this long before answering (a slow server).
    pub delay: Duration,
    /// Send only the first half of the body, then drop the connection.
    pub cut: bool,
}

impl Reply {
    pub fn new(status: u16, body: impl Into<Vec<u8>>) -> Reply {
        Reply { status, headers: Vec::new(), body: body.into(), delay: Duration::ZERO, cut: false }
    }

    pub fn json(status: u16, body: &serde_json::Value) -> Reply {
        Reply::new(status, body.to_string()).header("content-type", "application/json; charset=utf-8")
    }

    pub fn header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.into(), value.into()));
        self
    }
}

/// A failure to script, applied to the next request that reaches the API (FIFO).
#[derive(Debug, Clone)]
pub enum Fault {
    /// This status, with an error body and an optional `Retry-After`.
    Status { status: u16, retry_after: Option<String> },
    /// HTTP 200 with part of the rows and an `error` object (query API only).
    PartialError,
    /// The real answer, cut half-way through its body.
    Cut,
    /// The real answer, after this delay.
    Slow(Duration),
}

impl Fault {
    pub fn status(status: u16) -> Fault {
        Fault::Status { status, retry_after: None }
    }

    pub fn throttled(seconds: &str) -> Fault {
        Fault::Status { status: 429, retry_after: Some(seconds.into()) }
    }
}

/// Scripted faults, shared by the fakes.
#[derive(Debug, Default)]
pub struct Script {
    pub queue: VecDeque<Fault>,
}

/// The body of a reply, possibly cut short by a dropped connection.
struct ReplyBody {
    data: Option<Bytes>,
    fail: bool,
    len: u64,
}

impl Body for ReplyBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if let Some(data) = self.data.take() {
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        if self.fail {
            self.fail = false;
            return Poll::Ready(Some(Err(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "cut by the test"))));
        }
        Poll::Ready(None)
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        hyper::body::SizeHint::with_exact(self.len)
    }
}

pub type Handler = Arc<dyn Fn(Request) -> Reply + Send + Sync>;

/// A server on `127.0.0.1:<free port>`, running until dropped.
pub struct Server {
    pub addr: SocketAddr,
    runtime: Option<tokio::runtime::Runtime>,
    /// Requests being answered now, and the most there ever were at once.
    load: Arc<Load>,
}

#[derive(Debug, Default)]
struct Load {
    now: AtomicUsize,
    peak: AtomicUsize,
}

impl Server {
    pub fn start(handler: Handler) -> Server {
        let runtime =
            tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("a test runtime");
        let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).expect("a free port");
        let addr = listener.local_addr().unwrap();
        let load = Arc::new(Load::default());
        let shared = load.clone();
        runtime.spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let (handler, load) = (handler.clone(), shared.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |request| serve(handler.clone(), load.clone(), request));
                    let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
                });
            }
        });
        Server { addr, runtime: Some(runtime), load }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The most requests this server was answering at once.
    pub fn peak_in_flight(&self) -> usize {
        self.load.peak.load(Ordering::SeqCst)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

async fn serve(
    handler: Handler,
    load: Arc<Load>,
    request: hyper::Request<Incoming>,
) -> Result<hyper::Response<ReplyBody>, Infallible> {
    let now = load.now.fetch_add(1, Ordering::SeqCst) + 1;
    load.peak.fetch_max(now, Ordering::SeqCst);
    let (parts, body) = request.into_parts();
    let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let request = Request {
        method: parts.method.to_string(),
        path: parts.uri.path().to_string(),
        query: parts.uri.query().unwrap_or("").to_string(),
        headers: parts.headers,
        body,
    };
    // The handler may do real work (evaluating a query over many rows): off the I/O threads.
    let reply = tokio::task::spawn_blocking(move || handler(request)).await.expect("handlers do not panic");
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    load.now.fetch_sub(1, Ordering::SeqCst);
    let len = reply.body.len() as u64;
    let data =
        if reply.cut { Bytes::from(reply.body[..reply.body.len() / 2].to_vec()) } else { Bytes::from(reply.body) };
    let mut response = hyper::Response::builder().status(reply.status);
    for (name, value) in &reply.headers {
        response = response.header(name, value);
    }
    Ok(response.body(ReplyBody { data: Some(data), fail: reply.cut, len }).expect("a valid response"))
}

/// State shared between a fake and the test that drives it.
pub type Shared<T> = Arc<Mutex<T>>;

/// A token credential for in-process tests: a fixed token per scope, counted.
#[derive(Debug, Default)]
pub struct StaticToken {
    pub calls: std::sync::atomic::AtomicUsize,
}

pub const STATIC_TOKEN_PREFIX: &str = "static-secret-token";

#[async_trait::async_trait]
impl azure_core::credentials::TokenCredential for StaticToken {
    async fn get_token(
        &self,
        scopes: &[&str],
        _: Option<azure_core::credentials::TokenRequestOptions<'_>>,
    ) -> azure_core::Result<azure_core::credentials::AccessToken> {
        self.calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let expires = azure_core::time::OffsetDateTime::now_utc() + azure_core::time::Duration::hours(1);
        Ok(azure_core::credentials::AccessToken::new(
            format!("{STATIC_TOKEN_PREFIX} for {}", scopes.join(" ")),
            expires,
        ))
    }
}

/// Whether a bearer token was issued for `resource` (tokens of both the static credential
/// and the fake identity endpoint name their audience).
pub fn token_for(token: Option<&str>, resource: &str) -> bool {
    token.is_some_and(|t| {
        (t.starts_with(STATIC_TOKEN_PREFIX) || t.starts_with(identity::TOKEN_PREFIX)) && t.contains(resource)
    })
}

pub const WORKSPACE: &str = "5e1d8f3a-7c2b-4a9e-8f10-2b3c4d5e6f70";
pub const DCR: &str = "dcr-4f1e2d3c4b5a69788796a5b4c3d2e1f0";

/// Fast retries for tests, unless `extra` sets the key itself.
fn section(header: &str, keys: &[(&str, String)], extra: &str) -> String {
    let mut text = format!("{header}\n");
    let defaults = [("retry_base_ms", "20"), ("retry_max_ms", "200"), ("max_attempts", "3"), ("timeout_secs", "20")];
    let set = |key: &str| extra.lines().any(|l| l.split('=').next().is_some_and(|k| k.trim() == key));
    for (key, value) in
        keys.iter().map(|(k, v)| (*k, v.clone())).chain(defaults.iter().map(|(k, v)| (*k, v.to_string())))
    {
        if !set(key) {
            text.push_str(&format!("{key} = {value}\n"));
        }
    }
    text.push_str(extra);
    text.push('\n');
    text
}

/// `[source.log_analytics]` pointing at a fake; `extra` adds or overrides keys.
pub fn la_section(url: &str, extra: &str) -> String {
    section(
        "[source.log_analytics]",
        &[("workspace_id", format!("\"{WORKSPACE}\"")), ("endpoint", format!("\"{url}\""))],
        extra,
    )
}

/// `[sentinel]` pointing at a fake; `extra` adds or overrides keys.
pub fn sentinel_section(url: &str, extra: &str) -> String {
    section("[sentinel]", &[("endpoint", format!("\"{url}\"")), ("dcr_immutable_id", format!("\"{DCR}\""))], extra)
}

/// The Azure endpoints of a nightly run with a workspace source and Sentinel, each a local
/// server — the managed identity, the workspace, the DCR — and a working folder for the binary.
pub struct AzureWorld {
    pub identity: identity::Identity,
    pub la: log_analytics::LogAnalyticsFake,
    pub ingestion: ingestion::IngestionFake,
    pub cwd: tempfile::TempDir,
}

impl AzureWorld {
    /// A workspace holding `events`, a DCR declaring the streams of `infra/`.
    pub fn start(events: Vec<log_analytics::Event>) -> AzureWorld {
        AzureWorld {
            identity: identity::Identity::start(),
            la: log_analytics::LogAnalyticsFake::start(WORKSPACE, events),
            ingestion: ingestion::IngestionFake::start(DCR, ingestion::declared_streams()),
            cwd: tempfile::tempdir().unwrap(),
        }
    }

    /// `[source.log_analytics]` and `[sentinel]` on these servers, with extra keys for each.
    pub fn config(&self, la_extra: &str, sentinel_extra: &str) -> String {
        format!(
            "{}\n{}",
            la_section(&self.la.server.url(), la_extra),
            sentinel_section(&self.ingestion.server.url(), sentinel_extra)
        )
    }

    /// Every scripted failure off: the servers answer as the services do.
    pub fn heal(&self) {
        let mut la = self.la.state.lock().unwrap();
        la.forbidden = false;
        la.echo_token = false;
        la.script.queue.clear();
        drop(la);
        let mut ingestion = self.ingestion.state.lock().unwrap();
        ingestion.forbidden = false;
        ingestion.echo_token = false;
        ingestion.fail_after = None;
        ingestion.script.queue.clear();
        drop(ingestion);
        self.identity.state.lock().unwrap().fault = None;
    }

    /// No server saw a request that breaks its API's documented format.
    pub fn no_violations(&self) {
        assert_eq!(self.la.violations(), Vec::<String>::new());
        assert_eq!(self.ingestion.violations(), Vec::<String>::new());
        assert_eq!(self.identity.state.lock().unwrap().violations, Vec::<String>::new());
    }
}

/// A run in this process, with a static token.
pub fn run_in_process(
    config: &str,
    inputs: &[&std::path::Path],
    out: &std::path::Path,
    window: Option<(&str, &str)>,
) -> Result<telemetry_hunt::job::RunOutcome, (telemetry_hunt::job::RunError, telemetry_hunt::sink::tables::RunRecord)> {
    use telemetry_hunt::time::Day;
    let settings = telemetry_hunt::config::Config::from_toml(config)
        .expect("test config parses")
        .validate()
        .expect("test config is valid");
    let request = telemetry_hunt::job::RunRequest {
        inputs: inputs.iter().map(|p| p.to_path_buf()).collect(),
        out: out.to_path_buf(),
        window: window.map(|(a, b)| (Day::parse(a).unwrap(), Day::parse(b).unwrap())),
        settings,
        progress: false,
        credential: Some(Arc::new(StaticToken::default())),
    };
    telemetry_hunt::job::run(&request)
}

/// A generated JSON-lines sample (flat Log Analytics export lines), made once per process.
pub fn sample_jsonl(rows: u64, days: u32, devices: u32, start: &str) -> std::path::PathBuf {
    use telemetry_hunt::sample::{generate, SampleFormat, SampleOptions};
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("jsonl-{rows}-{days}-{devices}-{start}-{}", std::process::id()));
    let marker = dir.join(".complete");
    if !marker.exists() {
        let tmp = tempfile::Builder::new().prefix("th-jsonl").tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
        let options = SampleOptions {
            rows,
            days,
            devices,
            start: telemetry_hunt::time::Day::parse(start).unwrap(),
            format: SampleFormat::Jsonl,
            ..SampleOptions::default()
        };
        generate(&options, tmp.path()).expect("sample generation");
        std::fs::write(tmp.path().join(".complete"), b"").unwrap();
        let _ = std::fs::rename(tmp.keep(), &dir);
    }
    dir
}
