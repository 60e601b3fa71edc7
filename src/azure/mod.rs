//! The Azure pieces every source and sink shares: the identity (one Entra ID credential for
//! every call), Blob Storage clients on a tokio runtime owned by the I/O side, one HTTP client
//! with timeouts and retries for the Azure Monitor APIs, and failures explained in words.

pub mod http;
pub mod identity;
pub mod storage;

pub use identity::{Identity, IdentityKind, IdentitySettings};
pub use storage::{Azure, BlobLocation, Container, Transport};
