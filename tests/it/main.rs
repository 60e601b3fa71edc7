//! Integration tests: one binary, so the crate and its dependencies link once.

mod azure_fakes;
mod cli;
mod formats;
mod ingestion;
mod ingestion_e2e;
mod log_analytics;
mod oracle;
mod parquet_variants;
mod public_fixtures;
mod support;
