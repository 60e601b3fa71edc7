//! One Entra ID credential for every Azure call the job makes: Blob Storage now, the Log
//! Analytics query API and the Logs Ingestion API through [`Identity::bearer`].
//!
//! The credential is chosen explicitly by configuration (`azure_identity` 1.x has no
//! `DefaultAzureCredential`, and trying deployed and developer credentials in turn would hide
//! which one is in use). Token values never leave this module except as an `Authorization`
//! header value: they are redacted from `Debug`, never logged and never part of an error.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use azure_core::credentials::TokenCredential;
use azure_core::http::{ClientOptions, ExponentialRetryOptions, RetryOptions};
use azure_identity::{
    AzureCliCredential, DeveloperToolsCredential, ManagedIdentityCredential, ManagedIdentityCredentialOptions,
    UserAssignedId, WorkloadIdentityCredential, WorkloadIdentityCredentialOptions,
};
use object_store::azure::{AzureAccessKey, AzureCredential};
use object_store::CredentialProvider;
use serde::{Deserialize, Serialize};

/// Blob Storage (data plane).
pub const STORAGE_SCOPE: &str = "https://storage.azure.com/.default";
/// The Log Analytics query API.
pub const LOG_ANALYTICS_SCOPE: &str = "https://api.loganalytics.io/.default";
/// The Logs Ingestion API (data collection rules).
pub const MONITOR_SCOPE: &str = "https://monitor.azure.com/.default";

/// Azurite's development account. Microsoft publishes this key; it opens nothing but a local
/// emulator, and it is the only key the job ever uses.
pub const EMULATOR_ACCOUNT: &str = "devstoreaccount1";
pub const EMULATOR_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
/// Where Azurite listens by default (path-style: the account is the first path segment).
pub const EMULATOR_ENDPOINT: &str = "http://127.0.0.1:10000/devstoreaccount1";

/// Which credential the job authenticates with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum IdentityKind {
    /// The managed identity of the Azure resource the job runs on. In Azure Container Apps the
    /// platform sets `IDENTITY_ENDPOINT` and `IDENTITY_HEADER`; elsewhere the VM metadata
    /// endpoint answers.
    #[default]
    ManagedIdentity,
    /// Kubernetes workload identity: `AZURE_TENANT_ID`, `AZURE_CLIENT_ID`,
    /// `AZURE_FEDERATED_TOKEN_FILE`.
    WorkloadIdentity,
    /// The account of `az login`, for running the job from a workstation.
    AzureCli,
    /// `az login`, else `azd auth login`.
    DeveloperTools,
    /// Azurite's well-known development account, for tests and local trials.
    Emulator,
}

impl IdentityKind {
    pub fn as_str(self) -> &'static str {
        match self {
            IdentityKind::ManagedIdentity => "managed-identity",
            IdentityKind::WorkloadIdentity => "workload-identity",
            IdentityKind::AzureCli => "azure-cli",
            IdentityKind::DeveloperTools => "developer-tools",
            IdentityKind::Emulator => "emulator",
        }
    }

    pub fn parse(text: &str) -> Option<IdentityKind> {
        [
            IdentityKind::ManagedIdentity,
            IdentityKind::WorkloadIdentity,
            IdentityKind::AzureCli,
            IdentityKind::DeveloperTools,
            IdentityKind::Emulator,
        ]
        .into_iter()
        .find(|k| k.as_str() == text)
    }

    /// What to do when this credential cannot produce a token.
    fn fix(self) -> &'static str {
        match self {
            IdentityKind::ManagedIdentity => {
                "check that the job has a managed identity assigned and, for a user-assigned identity, that `azure.client_id` (TELEMETRY_HUNT_CLIENT_ID) is its client id"
            }
            IdentityKind::WorkloadIdentity => {
                "check AZURE_TENANT_ID, AZURE_CLIENT_ID and AZURE_FEDERATED_TOKEN_FILE, and the federated credential of the app registration"
            }
            IdentityKind::AzureCli => "run `az login` (and `az account set --subscription …`) first",
            IdentityKind::DeveloperTools => "run `az login` or `azd auth login` first",
            IdentityKind::Emulator => "the emulator signs with its shared key and needs no credential",
        }
    }
}

/// Validated identity settings: which credential, and for whom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentitySettings {
    pub kind: IdentityKind,
    /// A user-assigned managed identity, or the workload identity's application.
    pub client_id: Option<String>,
    pub tenant_id: Option<String>,
    /// Retries of the token endpoint, the same budget as every other Azure call.
    pub max_retries: u32,
    pub retry_timeout: Duration,
}

/// A credential that could not be set up, or a token request that failed. Names the credential
/// and what to fix, never a token.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("cannot set up the {via}: {message}; {fix}")]
    Setup { via: String, message: String, fix: &'static str },
    #[error("cannot get a token for {scope} from the {via}: {message}; {fix}")]
    Token { scope: String, via: String, message: String, fix: &'static str },
}

/// The built credential. Cheap to clone; every clone shares one token cache.
#[derive(Clone)]
pub struct Identity {
    settings: IdentitySettings,
    /// `None` for the emulator, which signs requests with its shared key instead.
    credential: Option<Arc<dyn TokenCredential>>,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("kind", &self.settings.kind)
            .field("client_id", &self.settings.client_id)
            .finish()
    }
}

/// An `Authorization: Bearer …` header value. Redacted from `Debug`; read it only to send it.
pub struct BearerToken(azure_core::credentials::Secret);

impl BearerToken {
    pub fn header_value(&self) -> String {
        format!("Bearer {}", self.0.secret())
    }
}

impl fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BearerToken(<redacted>)")
    }
}

impl Identity {
    /// Builds the credential. Reads the environment the credential needs (for a managed
    /// identity `IDENTITY_ENDPOINT`/`IDENTITY_HEADER`), asks for no token yet.
    pub fn build(settings: &IdentitySettings) -> Result<Identity, IdentityError> {
        let failed = |e: azure_core::Error| IdentityError::Setup {
            via: describe(settings),
            message: crate::azure::http::one_line(&crate::redact::redacted(&e.to_string())),
            fix: settings.kind.fix(),
        };
        let client_options = ClientOptions {
            retry: RetryOptions::exponential(ExponentialRetryOptions {
                max_retries: settings.max_retries,
                max_total_elapsed: azure_core::time::Duration::seconds(settings.retry_timeout.as_secs() as i64),
                ..Default::default()
            }),
            ..Default::default()
        };
        let credential: Option<Arc<dyn TokenCredential>> = match settings.kind {
            IdentityKind::ManagedIdentity => Some(
                ManagedIdentityCredential::new(Some(ManagedIdentityCredentialOptions {
                    user_assigned_id: settings.client_id.clone().map(UserAssignedId::ClientId),
                    client_options,
                    ..Default::default()
                }))
                .map_err(failed)?,
            ),
            IdentityKind::WorkloadIdentity => {
                let mut options = WorkloadIdentityCredentialOptions {
                    client_id: settings.client_id.clone(),
                    tenant_id: settings.tenant_id.clone(),
                    ..Default::default()
                };
                options.credential_options.client_options = client_options;
                Some(WorkloadIdentityCredential::new(Some(options)).map_err(failed)?)
            }
            IdentityKind::AzureCli => Some(AzureCliCredential::new(None).map_err(failed)?),
            IdentityKind::DeveloperTools => Some(DeveloperToolsCredential::new(None).map_err(failed)?),
            IdentityKind::Emulator => None,
        };
        Ok(Identity { settings: settings.clone(), credential })
    }

    pub fn kind(&self) -> IdentityKind {
        self.settings.kind
    }

    /// The credential in words, for messages: which kind, which identity, which endpoint.
    pub fn describe(&self) -> String {
        describe(&self.settings)
    }

    /// A token for one scope (e.g. [`LOG_ANALYTICS_SCOPE`]), from the credential's cache while
    /// it has more than five minutes left.
    pub async fn bearer(&self, scope: &str) -> Result<BearerToken, IdentityError> {
        let Some(credential) = &self.credential else {
            return Err(IdentityError::Token {
                scope: scope.into(),
                via: self.describe(),
                message: "the emulator identity has no Entra ID tokens".into(),
                fix: "use a real identity (`azure.identity`) for this service",
            });
        };
        let token = credential.get_token(&[scope], None).await.map_err(|e| IdentityError::Token {
            scope: scope.into(),
            via: self.describe(),
            message: crate::azure::http::one_line(&crate::redact::redacted(&e.to_string())),
            fix: self.settings.kind.fix(),
        })?;
        crate::redact::register(token.token.secret());
        Ok(BearerToken(token.token))
    }

    /// The Entra ID credential itself, for the Azure Monitor APIs' HTTP client; `None` for the
    /// emulator, which has no tokens to give.
    pub fn token_credential(&self) -> Option<Arc<dyn TokenCredential>> {
        self.credential.clone()
    }

    /// What object_store signs Blob Storage requests with: the shared key of the emulator, or
    /// this identity's storage tokens.
    pub fn storage_credential(&self) -> Arc<dyn CredentialProvider<Credential = AzureCredential>> {
        match &self.credential {
            None => Arc::new(EmulatorKey(Arc::new(AzureCredential::AccessKey(
                AzureAccessKey::try_new(EMULATOR_KEY).expect("the published emulator key is valid base64"),
            )))),
            Some(_) => Arc::new(StorageTokens(self.clone())),
        }
    }
}

fn describe(settings: &IdentitySettings) -> String {
    let who = settings.client_id.as_deref().map(|id| format!(" (client id {id})")).unwrap_or_default();
    match settings.kind {
        IdentityKind::ManagedIdentity => {
            let user = if settings.client_id.is_some() { "user-assigned" } else { "system-assigned" };
            match std::env::var("IDENTITY_ENDPOINT") {
                Ok(endpoint) => format!("{user} managed identity{who} at {endpoint}"),
                Err(_) => format!(
                    "{user} managed identity{who} via the instance metadata endpoint (IDENTITY_ENDPOINT is not set, so this is not Azure Container Apps or App Service)"
                ),
            }
        }
        IdentityKind::WorkloadIdentity => format!("workload identity{who}"),
        IdentityKind::AzureCli => "Azure CLI login".into(),
        IdentityKind::DeveloperTools => "developer tools login (Azure CLI, then azd)".into(),
        IdentityKind::Emulator => "Azurite development account".into(),
    }
}

/// The shared key of the emulator, the same for every request.
struct EmulatorKey(Arc<AzureCredential>);

impl fmt::Debug for EmulatorKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("EmulatorKey(<the emulator's published key>)")
    }
}

#[async_trait::async_trait]
impl CredentialProvider for EmulatorKey {
    type Credential = AzureCredential;

    async fn get_credential(&self) -> object_store::Result<Arc<AzureCredential>> {
        Ok(self.0.clone())
    }
}

/// Storage tokens from the identity, asked for on every request: the credential's cache answers
/// until a token is within five minutes of expiry, so a long run refreshes it in time.
#[derive(Debug)]
struct StorageTokens(Identity);

#[async_trait::async_trait]
impl CredentialProvider for StorageTokens {
    type Credential = AzureCredential;

    async fn get_credential(&self) -> object_store::Result<Arc<AzureCredential>> {
        let token = self
            .0
            .bearer(STORAGE_SCOPE)
            .await
            .map_err(|e| object_store::Error::Generic { store: "MicrosoftAzure", source: Box::new(e) })?;
        Ok(Arc::new(AzureCredential::BearerToken(token.0.secret().to_string())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(kind: IdentityKind) -> IdentitySettings {
        IdentitySettings {
            kind,
            client_id: Some("11111111-2222-3333-4444-555555555555".into()),
            tenant_id: None,
            max_retries: 0,
            retry_timeout: Duration::from_secs(1),
        }
    }

    #[test]
    fn kinds_round_trip_through_their_names() {
        for kind in [
            IdentityKind::ManagedIdentity,
            IdentityKind::WorkloadIdentity,
            IdentityKind::AzureCli,
            IdentityKind::DeveloperTools,
            IdentityKind::Emulator,
        ] {
            assert_eq!(IdentityKind::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(IdentityKind::parse("default"), None);
    }

    #[test]
    fn debug_output_names_the_identity_not_a_secret() {
        let identity = Identity::build(&settings(IdentityKind::Emulator)).unwrap();
        let debug = format!("{identity:?}");
        assert!(debug.contains("Emulator") && debug.contains("11111111-2222"), "{debug}");
        assert!(!debug.contains(EMULATOR_KEY));
        let provider = format!("{:?}", identity.storage_credential());
        assert_eq!(provider, "EmulatorKey(<the emulator's published key>)");
        let token = BearerToken(azure_core::credentials::Secret::new("eyJ-secret-value"));
        assert_eq!(format!("{token:?}"), "BearerToken(<redacted>)");
        assert_eq!(token.header_value(), "Bearer eyJ-secret-value");
    }

    #[test]
    fn the_emulator_has_no_tokens_and_says_so() {
        let identity = Identity::build(&settings(IdentityKind::Emulator)).unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let err = runtime.block_on(identity.bearer(MONITOR_SCOPE)).unwrap_err().to_string();
        assert!(err.contains("https://monitor.azure.com/.default") && err.contains("azure.identity"), "{err}");
    }
}
