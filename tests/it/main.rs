//! Integration tests: one binary, so the crate and its dependencies link once.

mod cli;
mod detect;
mod formats;
mod oracle;
mod parquet_variants;
mod public_fixtures;
mod support;
