//! Integration tests: one binary, so the crate and its dependencies link once.

mod azure_fakes;
mod azurite_failures;
mod azurite_identity;
mod azurite_nightly;
mod azurite_ranges;
mod azurite_support;
mod bad_input;
mod cli;
mod detect;
mod faults;
mod formats;
mod fuzz_drivers;
mod fuzz_regressions;
mod infra;
mod ingestion;
mod ingestion_e2e;
mod log_analytics;
mod oracle;
mod parquet_variants;
mod properties;
mod public_fixtures;
mod secrets;
mod support;
