//! What the Azurite tests share: finding Azurite (or starting a dedicated instance), creating
//! containers, uploading trees, a TCP proxy that counts, holds or stalls the traffic between the
//! job and Azurite, a local Container Apps managed-identity endpoint, and running the binary.
//!
//! Every blob test talks to a real Azurite. The shared instance comes from `.ci/run` through
//! `AZURITE_BLOB_URL`; without it the tests try `http://127.0.0.1:10000/devstoreaccount1`, and
//! fail (never skip) with the command to start one when nothing answers.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use bytes::Bytes;
use futures_util::TryStreamExt;
use object_store::azure::MicrosoftAzureBuilder;
use object_store::path::Path as ObjectPath;
use object_store::{ClientOptions, ObjectStore, ObjectStoreExt, PutPayload};
use telemetry_hunt::azure::identity::{EMULATOR_ACCOUNT, EMULATOR_KEY};

pub const START_HINT: &str = "start Azurite with `scripts/azurite.sh` (after `npm ci`), or run the whole suite with `bash .ci/run`, or point AZURITE_BLOB_URL at a running instance (e.g. http://127.0.0.1:10000/devstoreaccount1)";

/// The blob endpoint of the shared Azurite, which must answer.
pub fn azurite_url() -> String {
    let url = std::env::var("AZURITE_BLOB_URL")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "http://127.0.0.1:10000/devstoreaccount1".into());
    let address = host_port(&url);
    let reachable = address
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .is_some_and(|a| TcpStream::connect_timeout(&a, Duration::from_secs(2)).is_ok());
    assert!(reachable, "Azurite is not reachable at {url}: {START_HINT}");
    url.trim_end_matches('/').to_string()
}

fn host_port(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.split('/').next().unwrap_or(rest).to_string()
}

/// A name no other test (or earlier run of the suite) uses: containers outlive the tests.
pub fn unique(prefix: &str) -> String {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() % 1_000_000_000_000;
    format!("{prefix}-{}-{nanos}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// A tokio runtime for the tests' own uploads and reads.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

/// An object_store client for a container, signed with the emulator's key; `ca` trusts a
/// test certificate authority for https endpoints.
pub fn container_client(endpoint: &str, container: &str, ca: Option<&Path>) -> Arc<dyn ObjectStore> {
    let mut options = ClientOptions::new().with_allow_http(true);
    if let Some(ca) = ca {
        let pem = std::fs::read(ca).unwrap();
        options = options.with_root_certificate(object_store::Certificate::from_pem(&pem).unwrap());
    }
    Arc::new(
        MicrosoftAzureBuilder::new()
            .with_account(EMULATOR_ACCOUNT)
            .with_access_key(EMULATOR_KEY)
            .with_endpoint(endpoint.to_string())
            .with_container_name(container)
            .with_client_options(options)
            .build()
            .unwrap(),
    )
}

/// Creates a container with a Shared Key request (object_store cannot create containers).
pub fn create_container(endpoint: &str, container: &str, ca: Option<&Path>) {
    let date = httpdate(SystemTime::now());
    let version = "2023-11-03";
    let path = endpoint.split_once("://").map(|(_, r)| r).unwrap().split_once('/').map_or("", |(_, p)| p);
    let resource = format!("/{EMULATOR_ACCOUNT}/{path}/{container}\nrestype:container");
    let to_sign = format!("PUT\n\n\n\n\n\n\n\n\n\n\n\nx-ms-date:{date}\nx-ms-version:{version}\n{resource}");
    let key = base64::engine::general_purpose::STANDARD.decode(EMULATOR_KEY).unwrap();
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &key);
    let signature = base64::engine::general_purpose::STANDARD.encode(aws_lc_rs::hmac::sign(&key, to_sign.as_bytes()));
    let mut client = reqwest::Client::builder();
    if let Some(ca) = ca {
        client = client.add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(ca).unwrap()).unwrap());
    }
    let client = client.build().unwrap();
    let request = client
        .put(format!("{endpoint}/{container}?restype=container"))
        .header("x-ms-date", &date)
        .header("x-ms-version", version)
        .header("content-length", "0")
        .header("authorization", format!("SharedKey {EMULATOR_ACCOUNT}:{signature}"));
    let status = runtime().block_on(async { request.send().await.map(|r| r.status()) }).unwrap();
    assert!(status.as_u16() == 201 || status.as_u16() == 409, "create container {container}: {status}");
}

fn httpdate(time: SystemTime) -> String {
    let secs = time.duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
    let day = telemetry_hunt::time::Day((secs / 86_400) as i32);
    let (y, m, d) = day.ymd();
    let weekday = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"][(secs / 86_400).rem_euclid(7) as usize];
    let month = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"][m as usize - 1];
    let s = secs % 86_400;
    format!("{weekday}, {d:02} {month} {y} {:02}:{:02}:{:02} GMT", s / 3600, (s / 60) % 60, s % 60)
}

/// Uploads `name → bytes` into a container.
pub fn upload(store: &Arc<dyn ObjectStore>, files: &[(String, Vec<u8>)]) {
    runtime().block_on(async {
        for (name, bytes) in files {
            store.put(&ObjectPath::from(name.as_str()), PutPayload::from(bytes.clone())).await.unwrap();
        }
    });
}

/// Every object in a container, by name.
pub fn objects(store: &Arc<dyn ObjectStore>) -> BTreeMap<String, Bytes> {
    runtime().block_on(async {
        let metas: Vec<_> = store.list(None).try_collect().await.unwrap();
        let mut out = BTreeMap::new();
        for meta in metas {
            let bytes = store.get(&meta.location).await.unwrap().bytes().await.unwrap();
            out.insert(meta.location.to_string(), bytes);
        }
        out
    })
}

/// The binary, run as the container runs it. `RUST_LOG` is removed unless given in `env`.
pub fn hunt(args: &[&str], cwd: &Path, env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_telemetry-hunt"));
    command.args(args).current_dir(cwd).env_remove("RUST_LOG");
    for (name, _) in std::env::vars() {
        if name.starts_with("TELEMETRY_HUNT_") || name == "IDENTITY_ENDPOINT" || name == "IDENTITY_HEADER" {
            command.env_remove(name);
        }
    }
    for (name, value) in env {
        command.env(name, value);
    }
    command.output().expect("the binary runs")
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A free port on 127.0.0.1 (bound and released; good enough for a test's own server).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn wait_for_port(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{what} did not start listening on port {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A TLS certificate authority and a server certificate for 127.0.0.1, made with openssl.
pub struct TestCertificates {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

pub fn make_certificates(dir: &Path) -> TestCertificates {
    let run = |args: &[&str]| {
        let out = Command::new("openssl").args(args).current_dir(dir).output().expect("openssl is installed");
        assert!(out.status.success(), "openssl {args:?}: {}", text(&out.stderr));
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=telemetry-hunt test CA",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    std::fs::write(dir.join("server.ext"), "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n").unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "server.ext",
    ]);
    TestCertificates { ca: dir.join("ca.pem"), cert: dir.join("server.pem"), key: dir.join("server.key") }
}

/// An Azurite of the test's own, on its own port and folder, so the test may kill it.
pub struct DedicatedAzurite {
    child: Option<Child>,
    pub port: u16,
    location: PathBuf,
    tls: Option<(PathBuf, PathBuf)>,
}

fn azurite_binary() -> PathBuf {
    let binary = std::env::var("AZURITE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("node_modules/.bin/azurite-blob"));
    assert!(binary.exists(), "{} is missing: run `npm ci` in the repository root ({START_HINT})", binary.display());
    binary
}

impl DedicatedAzurite {
    /// Starts Azurite on a free port, persisting to `location`; with `tls`, https and OAuth
    /// (`--oauth basic`: bearer tokens are checked for issuer, audience and expiry).
    pub fn start(location: &Path, tls: Option<(PathBuf, PathBuf)>) -> DedicatedAzurite {
        let mut azurite = DedicatedAzurite { child: None, port: free_port(), location: location.to_path_buf(), tls };
        azurite.launch();
        azurite
    }

    fn launch(&mut self) {
        let mut command = Command::new(azurite_binary());
        command
            .args(["--silent", "--disableTelemetry", "--blobHost", "127.0.0.1", "--blobPort"])
            .arg(self.port.to_string())
            .arg("--location")
            .arg(&self.location)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some((cert, key)) = &self.tls {
            command.arg("--cert").arg(cert).arg("--key").arg(key).args(["--oauth", "basic"]);
        }
        self.child = Some(command.spawn().expect("Azurite starts"));
        wait_for_port(self.port, "Azurite");
    }

    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}/{EMULATOR_ACCOUNT}", self.port)
    }

    /// Kills Azurite at once (SIGKILL): requests in flight and every later one fail.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// Starts Azurite again on the same port and folder.
    pub fn restart(&mut self) {
        self.kill();
        self.launch();
    }
}

impl Drop for DedicatedAzurite {
    fn drop(&mut self) {
        self.kill();
    }
}

/// What the proxy does with the traffic it forwards.
#[derive(Default)]
struct ProxyControl {
    /// Hold the request that contains this text until released.
    hold_on: Mutex<Option<Vec<u8>>>,
    held: Mutex<bool>,
    released: Mutex<bool>,
    changed: Condvar,
    /// Stall all forwarding once, for this long, after this many bytes from the client.
    stall: Mutex<Option<(u64, Duration)>>,
    stalled: AtomicBool,
    stall_until: Mutex<Option<Instant>>,
    up: AtomicU64,
    down: AtomicU64,
    /// Drop the connection of every request whose request line starts with the method and
    /// contains the text, while set; how many were dropped.
    fail: Mutex<Option<(String, String)>>,
    failed: AtomicUsize,
}

/// A TCP proxy between the job and Azurite. It forwards bytes unchanged (TLS too), counts them,
/// and can hold a request (plain http) or stall the whole stream once.
pub struct Proxy {
    pub port: u16,
    control: Arc<ProxyControl>,
}

impl Proxy {
    pub fn start(upstream_port: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let control = Arc::new(ProxyControl::default());
        let shared = control.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let upstream: SocketAddr = ([127, 0, 0, 1], upstream_port).into();
                let Ok(server) = TcpStream::connect(upstream) else {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                };
                let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                let up = shared.clone();
                std::thread::spawn(move || pump_up(client, server, &up));
                let down = shared.clone();
                std::thread::spawn(move || pump(s2, c2, &down.down));
            }
        });
        Proxy { port, control }
    }

    pub fn url(&self, scheme: &str) -> String {
        format!("{scheme}://127.0.0.1:{}/{EMULATOR_ACCOUNT}", self.port)
    }

    /// Bytes forwarded from Azurite to the job so far.
    pub fn bytes_down(&self) -> u64 {
        self.control.down.load(Ordering::SeqCst)
    }

    /// Holds the first request whose bytes contain `text` until [`Proxy::release`].
    pub fn hold_on(&self, text: &str) {
        *self.control.hold_on.lock().unwrap() = Some(text.as_bytes().to_vec());
    }

    /// Waits until a request is held.
    pub fn wait_held(&self, timeout: Duration) -> bool {
        let held = self.control.held.lock().unwrap();
        let (held, _) = self.control.changed.wait_timeout_while(held, timeout, |h| !*h).unwrap();
        *held
    }

    pub fn release(&self) {
        *self.control.released.lock().unwrap() = true;
        self.control.changed.notify_all();
    }

    /// Once the job has sent `after` bytes, stops forwarding for `pause`, then goes on.
    pub fn stall_once(&self, after: u64, pause: Duration) {
        *self.control.stall.lock().unwrap() = Some((after, pause));
    }

    pub fn stalled(&self) -> bool {
        self.control.stalled.load(Ordering::SeqCst)
    }

    /// From now on, drops the connection (nothing forwarded, nothing answered) of every request
    /// whose request line is `method …needle… HTTP/1.1`, retries included; `None` stops it.
    pub fn fail_requests(&self, rule: Option<(&str, &str)>) {
        *self.control.fail.lock().unwrap() = rule.map(|(m, n)| (format!("{m} "), n.to_string()));
    }

    /// Requests dropped by [`Proxy::fail_requests`].
    pub fn failed_requests(&self) -> usize {
        self.control.failed.load(Ordering::SeqCst)
    }
}

/// Whether `window` holds a whole request line `method …needle… HTTP/1.1`. On a reused
/// connection the line follows the previous request's body without a line break, so it is
/// looked for inside lines too.
fn has_request_line(window: &[u8], method: &str, needle: &str) -> bool {
    String::from_utf8_lossy(window).split("\r\n").any(|line| {
        line.match_indices(method).any(|(at, _)| line[at..].contains(needle)) && line.ends_with(" HTTP/1.1")
    })
}

fn pump(mut from: TcpStream, mut to: TcpStream, counter: &AtomicU64) {
    let mut buffer = [0u8; 16 * 1024];
    loop {
        match from.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buffer[..n]).is_err() {
                    break;
                }
                counter.fetch_add(n as u64, Ordering::SeqCst);
            }
        }
    }
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
}

fn pump_up(mut from: TcpStream, mut to: TcpStream, control: &ProxyControl) {
    let mut buffer = [0u8; 16 * 1024];
    // The tail of the previous read, so a pattern split across two reads is still seen.
    let mut tail: Vec<u8> = Vec::new();
    let mut line_tail: Vec<u8> = Vec::new();
    loop {
        let n = match from.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let fail = control.fail.lock().unwrap().clone();
        if let Some((method, needle)) = fail {
            let mut window = std::mem::take(&mut line_tail);
            window.extend_from_slice(&buffer[..n]);
            if has_request_line(&window, &method, &needle) {
                control.failed.fetch_add(1, Ordering::SeqCst);
                break;
            }
            line_tail = window[window.len().saturating_sub(2048)..].to_vec();
        }
        let total = control.up.fetch_add(n as u64, Ordering::SeqCst) + n as u64;
        if let Some((after, pause)) = *control.stall.lock().unwrap() {
            if total >= after && !control.stalled.swap(true, Ordering::SeqCst) {
                *control.stall_until.lock().unwrap() = Some(Instant::now() + pause);
            }
        }
        // Every connection waits out the stall, so the whole run pauses, not one request.
        let until = *control.stall_until.lock().unwrap();
        if let Some(wait) = until.and_then(|u| u.checked_duration_since(Instant::now())) {
            std::thread::sleep(wait);
        }
        let pattern = control.hold_on.lock().unwrap().clone();
        if let Some(pattern) = pattern {
            let mut window = tail.clone();
            window.extend_from_slice(&buffer[..n]);
            if window.windows(pattern.len()).any(|w| w == pattern.as_slice()) {
                *control.hold_on.lock().unwrap() = None;
                *control.held.lock().unwrap() = true;
                control.changed.notify_all();
                let released = control.released.lock().unwrap();
                drop(control.changed.wait_while(released, |r| !*r).unwrap());
            }
            tail = window[window.len().saturating_sub(pattern.len())..].to_vec();
        }
        if to.write_all(&buffer[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
}

/// One token request the identity endpoint saw.
#[derive(Debug, Clone)]
pub struct TokenRequest {
    pub query: BTreeMap<String, String>,
    pub identity_header: Option<String>,
    pub token: Option<String>,
}

/// How the identity endpoint answers.
#[derive(Debug, Clone)]
pub enum TokenAnswer {
    /// A JWT whose `exp` is `lifetime` from now, reporting the same `expires_on`.
    Token { lifetime_secs: i64 },
    /// An error status and body, as the platform sends for an identity not assigned.
    Error { status: u16, body: String },
}

/// A local server speaking the Azure Container Apps managed-identity protocol
/// (`GET $IDENTITY_ENDPOINT?resource=…&api-version=2019-08-01[&client_id=…]` with
/// `X-IDENTITY-HEADER: $IDENTITY_HEADER`; answers `{"access_token", "expires_on", …}`).
pub struct IdentityEndpoint {
    pub url: String,
    pub secret: String,
    pub requests: Arc<Mutex<Vec<TokenRequest>>>,
}

pub fn base64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

impl IdentityEndpoint {
    pub fn start(answer: TokenAnswer) -> IdentityEndpoint {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://127.0.0.1:{}/msi/token", listener.local_addr().unwrap().port());
        let secret = format!("header-secret-{}", std::process::id());
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (seen, expected) = (requests.clone(), secret.clone());
        let serial = Arc::new(AtomicUsize::new(0));
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let (seen, expected, answer, serial) = (seen.clone(), expected.clone(), answer.clone(), serial.clone());
                std::thread::spawn(move || serve_token(stream, &seen, &expected, &answer, &serial));
            }
        });
        IdentityEndpoint { url, secret, requests }
    }

    pub fn tokens_issued(&self) -> Vec<String> {
        self.requests.lock().unwrap().iter().filter_map(|r| r.token.clone()).collect()
    }
}

fn serve_token(
    stream: TcpStream,
    seen: &Mutex<Vec<TokenRequest>>,
    secret: &str,
    answer: &TokenAnswer,
    serial: &AtomicUsize,
) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let mut identity_header = None;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                if name.trim().eq_ignore_ascii_case("x-identity-header") {
                    identity_header = Some(value.trim().to_string());
                }
            }
        }
        let target = request_line.split_whitespace().nth(1).unwrap_or("");
        let query: BTreeMap<String, String> = target
            .split_once('?')
            .map(|(_, q)| q)
            .unwrap_or("")
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), percent_decode(v)))
            .collect();
        let authorised = identity_header.as_deref() == Some(secret);
        let (status, body, token) = match answer {
            _ if !authorised => (401, "{\"error\":\"missing or wrong X-IDENTITY-HEADER\"}".to_string(), None),
            TokenAnswer::Error { status, body } => (*status, body.clone(), None),
            TokenAnswer::Token { lifetime_secs } => {
                let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
                let expires = now + lifetime_secs;
                let resource = query.get("resource").cloned().unwrap_or_default();
                let header = base64url(br#"{"alg":"RS256","typ":"JWT"}"#);
                let claims = serde_json::json!({
                    "aud": resource,
                    "iss": "https://sts.windows.net/72f988bf-86f1-41af-91ab-2d7cd011db47/",
                    "iat": now, "nbf": now - 60, "exp": expires,
                    "oid": "00000000-0000-0000-0000-00000000cafe",
                    "appid": query.get("client_id").cloned().unwrap_or_default(),
                    "n": serial.fetch_add(1, Ordering::SeqCst),
                });
                let token =
                    format!("{header}.{}.{}", base64url(claims.to_string().as_bytes()), base64url(b"not-signed"));
                let body = serde_json::json!({
                    "access_token": token, "expires_on": expires.to_string(), "resource": resource,
                    "token_type": "Bearer", "client_id": query.get("client_id").cloned().unwrap_or_default(),
                });
                (200, body.to_string(), Some(token))
            }
        };
        seen.lock().unwrap().push(TokenRequest { query, identity_header, token });
        let reason = if status == 200 { "OK" } else { "Error" };
        let response = format!(
            "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        if writer.write_all(response.as_bytes()).is_err() {
            return;
        }
    }
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(&text[i + 1..i + 3], 16) {
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
