//! Azure plumbing shared by the sources and sinks that talk to Azure: one HTTP client with
//! timeouts and retries, and the identity that signs its calls.

pub mod http;
