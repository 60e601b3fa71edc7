//! Blob Storage containers through object_store, signed by the job's [`Identity`], and what a
//! failed request means in words.

use std::error::Error as _;
use std::sync::Arc;
use std::time::Duration;

use object_store::azure::MicrosoftAzureBuilder;
use object_store::client::{HttpError, HttpErrorKind};
use object_store::{BackoffConfig, ClientOptions, ObjectStore, RetryConfig};

use super::identity::Identity;

/// A container, and a folder in it, in one storage account. Holds no credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobLocation {
    /// The storage account name (signs emulator requests, names the account in messages).
    pub account: String,
    /// The account's blob endpoint, `https://<account>.blob.core.windows.net` or Azurite's
    /// path-style `http://127.0.0.1:10000/devstoreaccount1`, without a trailing `/`.
    pub endpoint: String,
    pub container: String,
    /// A folder in the container, without leading or trailing `/`; empty for the whole container.
    pub prefix: String,
}

impl BlobLocation {
    /// `endpoint/container[/prefix]`: where this is, for messages and the run record.
    pub fn url(&self) -> String {
        match self.prefix.as_str() {
            "" => format!("{}/{}", self.endpoint, self.container),
            prefix => format!("{}/{}/{prefix}", self.endpoint, self.container),
        }
    }

    /// The URL of one object under this location.
    pub fn object_url(&self, name: &str) -> String {
        format!("{}/{}/{name}", self.endpoint, self.container)
    }
}

/// Timeouts and retries of every storage request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transport {
    pub max_retries: usize,
    /// No retry starts after this long since the first attempt.
    pub retry_timeout: Duration,
    pub connect_timeout: Duration,
    /// One whole request, body included (large JSON blobs stream for a while).
    pub request_timeout: Duration,
}

/// The I/O side of the job: a tokio runtime that drives every Azure request, and the one
/// credential they are signed with. Sync code reaches it through [`Container::block_on`] and
/// channels; it is never entered from inside the runtime.
pub struct Azure {
    runtime: tokio::runtime::Runtime,
    pub identity: Identity,
    transport: Transport,
}

impl std::fmt::Debug for Azure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Azure").field("identity", &self.identity).field("transport", &self.transport).finish()
    }
}

/// A storage client that could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("cannot start the I/O runtime: {0}")]
    Runtime(std::io::Error),
    #[error(transparent)]
    Identity(#[from] super::identity::IdentityError),
    #[error("cannot set up the storage client for {url}: {message}")]
    Client { url: String, message: String },
}

impl Azure {
    /// Starts the runtime and builds the credential; no request is sent yet.
    pub fn start(identity: &super::identity::IdentitySettings, transport: &Transport) -> Result<Azure, ConnectError> {
        // Two threads keep requests in flight while rayon uses the cores for decoding.
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("azure-io")
            .enable_all()
            .build()
            .map_err(ConnectError::Runtime)?;
        Ok(Azure { runtime, identity: Identity::build(identity)?, transport: transport.clone() })
    }

    pub fn handle(&self) -> tokio::runtime::Handle {
        self.runtime.handle().clone()
    }

    /// A client for one container.
    pub fn container(&self, location: &BlobLocation) -> Result<Container, ConnectError> {
        let t = &self.transport;
        let options = ClientOptions::new()
            .with_allow_http(location.endpoint.starts_with("http://"))
            .with_connect_timeout(t.connect_timeout)
            .with_timeout(t.request_timeout);
        let retry = RetryConfig {
            backoff: BackoffConfig {
                init_backoff: Duration::from_millis(200),
                max_backoff: Duration::from_secs(10),
                base: 2.0,
            },
            max_retries: t.max_retries,
            retry_timeout: t.retry_timeout,
        };
        let store = MicrosoftAzureBuilder::new()
            .with_account(&location.account)
            .with_endpoint(location.endpoint.clone())
            .with_container_name(&location.container)
            .with_credentials(self.identity.storage_credential())
            .with_client_options(options)
            .with_retry(retry)
            .build()
            .map_err(|e| ConnectError::Client { url: location.url(), message: e.to_string() })?;
        Ok(Container { store: Arc::new(store), location: location.clone(), runtime: self.handle() })
    }
}

/// One container: the object_store client, where it is, and the runtime that drives it.
#[derive(Clone)]
pub struct Container {
    pub store: Arc<dyn ObjectStore>,
    pub location: BlobLocation,
    pub runtime: tokio::runtime::Handle,
}

impl std::fmt::Debug for Container {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Container").field("url", &self.location.url()).finish()
    }
}

impl Container {
    /// Runs a request from sync code (the main thread, rayon workers, the lock's renewer).
    pub fn block_on<F: std::future::Future>(&self, future: F) -> F::Output {
        self.runtime.block_on(future)
    }

    /// The object path of a name under this location's prefix.
    pub fn path(&self, name: &str) -> object_store::path::Path {
        match self.location.prefix.as_str() {
            "" => object_store::path::Path::from(name),
            prefix => object_store::path::Path::from(format!("{prefix}/{name}")),
        }
    }
}

/// What kind of failure a storage error is, which decides what the user must fix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    ContainerNotFound,
    NotFound,
    /// 403 `AuthorizationPermissionMismatch` (or any other 403): authenticated, but the
    /// identity has no data role on the container.
    Forbidden,
    /// 403 `AuthorizationFailure`: the account's firewall or network rules refuse the caller.
    Firewall,
    /// 401, or 403 `AuthenticationFailed`: the token (or key) itself was refused.
    Unauthenticated,
    /// The endpoint's host name does not resolve.
    UnknownHost,
    /// Nothing listens at the endpoint, or the connection broke.
    Unreachable,
    TimedOut,
    /// The identity could not produce a token at all.
    Token,
    Other,
}

/// Classifies an object_store error by walking its causes.
pub fn classify(error: &object_store::Error) -> FailureKind {
    let text = full_message(error);
    // Blob Storage answers a refused token with 403 too; the error code tells them apart.
    let refused_credential = ["AuthenticationFailed", "InvalidAuthenticationInfo", "NoAuthenticationInformation"]
        .iter()
        .any(|code| text.contains(code));
    match error {
        object_store::Error::NotFound { .. } if text.contains("ContainerNotFound") => {
            return FailureKind::ContainerNotFound
        }
        object_store::Error::NotFound { .. } => return FailureKind::NotFound,
        object_store::Error::Unauthenticated { .. } => return FailureKind::Unauthenticated,
        object_store::Error::PermissionDenied { .. } if refused_credential => return FailureKind::Unauthenticated,
        object_store::Error::PermissionDenied { .. } if text.contains("<Code>AuthorizationFailure<") => {
            return FailureKind::Firewall
        }
        object_store::Error::PermissionDenied { .. } => return FailureKind::Forbidden,
        _ => {}
    }
    let mut cause: Option<&(dyn std::error::Error + 'static)> = error.source();
    while let Some(current) = cause {
        if current.is::<super::identity::IdentityError>() {
            return FailureKind::Token;
        }
        if let Some(http) = current.downcast_ref::<HttpError>() {
            return match http.kind() {
                HttpErrorKind::Timeout => FailureKind::TimedOut,
                HttpErrorKind::Connect if text.contains("dns error") || text.contains("failed to lookup address") => {
                    FailureKind::UnknownHost
                }
                HttpErrorKind::Connect | HttpErrorKind::Request | HttpErrorKind::Interrupted => {
                    FailureKind::Unreachable
                }
                _ => FailureKind::Other,
            };
        }
        cause = current.source();
    }
    if text.contains("ContainerNotFound") {
        FailureKind::ContainerNotFound
    } else if text.contains("AuthorizationPermissionMismatch") || text.contains("403 Forbidden") {
        FailureKind::Forbidden
    } else {
        FailureKind::Other
    }
}

/// The error and every cause, on one line. object_store's messages carry the request URL (never
/// a credential: the job signs with headers, not SAS query strings).
pub fn full_message(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(current) = cause {
        let more = current.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        cause = current.source();
    }
    text
}

/// A storage failure in words: what happened at which endpoint, and what to do about it.
/// `role` is the data role the operation needs (`Storage Blob Data Reader` to read sources,
/// `… Contributor` to write results).
pub fn explain(error: &object_store::Error, location: &BlobLocation, identity: &Identity, role: &str) -> String {
    // The service's XML error body spans lines; one line reads better in logs and run records.
    let detail = full_message(error).split_whitespace().collect::<Vec<_>>().join(" ");
    let detail = crate::redact::redacted(&detail);
    let account = &location.account;
    let container = &location.container;
    let endpoint = &location.endpoint;
    let who = identity.describe();
    let summary = match classify(error) {
        FailureKind::ContainerNotFound => format!(
            "container `{container}` does not exist in storage account `{account}` ({endpoint}); create it or fix the container name"
        ),
        FailureKind::NotFound => "the object does not exist".to_string(),
        FailureKind::Forbidden => format!(
            "access denied (403): grant `{role}` on container `{container}` of storage account `{account}` to the {who} (role assignments take a few minutes to apply)"
        ),
        FailureKind::Firewall => format!(
            "the storage account `{account}` refuses the job's network (403 AuthorizationFailure): allow the job's subnet or add a private endpoint in the account's networking settings"
        ),
        FailureKind::Unauthenticated => format!(
            "the storage account refused the credential (authentication failed): `{account}` does not accept the token of the {who} (expired, another tenant, or the wrong audience)"
        ),
        FailureKind::UnknownHost => format!(
            "the storage endpoint {endpoint} does not resolve (DNS): check the account name `{account}` and the endpoint, or the private DNS zone of a private endpoint"
        ),
        FailureKind::Unreachable => format!(
            "cannot reach the storage endpoint {endpoint} (connection refused or broken): check that it is up and that the network or firewall lets the job through"
        ),
        FailureKind::TimedOut => {
            format!("no answer from the storage endpoint {endpoint} in time: check the network path and the firewall")
        }
        FailureKind::Token => format!("the {who} could not produce a storage token"),
        FailureKind::Other => format!("the storage request to {endpoint} failed"),
    };
    format!("{summary} ({detail})")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_print_as_urls() {
        let location = BlobLocation {
            account: "contoso".into(),
            endpoint: "https://contoso.blob.core.windows.net".into(),
            container: "results".into(),
            prefix: String::new(),
        };
        assert_eq!(location.url(), "https://contoso.blob.core.windows.net/results");
        let with_prefix = BlobLocation { prefix: "mde/nightly".into(), ..location };
        assert_eq!(with_prefix.url(), "https://contoso.blob.core.windows.net/results/mde/nightly");
        assert_eq!(
            with_prefix.object_url("mde/nightly/a"),
            "https://contoso.blob.core.windows.net/results/mde/nightly/a"
        );
    }

    #[test]
    fn status_errors_are_classified() {
        let source = || -> Box<dyn std::error::Error + Send + Sync> { "Server returned non-2xx status code".into() };
        let forbidden = object_store::Error::PermissionDenied { path: "x".into(), source: source() };
        assert_eq!(classify(&forbidden), FailureKind::Forbidden);
        let missing =
            object_store::Error::NotFound { path: "x".into(), source: "404 Not Found: ContainerNotFound".into() };
        assert_eq!(classify(&missing), FailureKind::ContainerNotFound);
        let blob = object_store::Error::NotFound { path: "x".into(), source: "404 Not Found: BlobNotFound".into() };
        assert_eq!(classify(&blob), FailureKind::NotFound);
        let unauthenticated = object_store::Error::Unauthenticated { path: "x".into(), source: source() };
        assert_eq!(classify(&unauthenticated), FailureKind::Unauthenticated);
        let expired = object_store::Error::PermissionDenied {
            path: "x".into(),
            source:
                "403 Forbidden: <Code>AuthenticationFailed</Code> Lifetime validation failed. The token is expired."
                    .into(),
        };
        assert_eq!(classify(&expired), FailureKind::Unauthenticated);
        let firewall = object_store::Error::PermissionDenied {
            path: "x".into(),
            source: "403: <Code>AuthorizationFailure</Code>".into(),
        };
        assert_eq!(classify(&firewall), FailureKind::Firewall);
        let role = object_store::Error::PermissionDenied {
            path: "x".into(),
            source: "403: <Code>AuthorizationPermissionMismatch</Code>".into(),
        };
        assert_eq!(classify(&role), FailureKind::Forbidden);
    }
}
