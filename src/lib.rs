//! telemetry-hunt: the nightly hunt over Defender `DeviceNetworkEvents` for connections to
//! Defender for Endpoint's own telemetry hosts.
//!
//! Data flows `source` → `hunt` → `sink`: sources yield canonical Arrow batches, the hunt
//! classifies hosts and aggregates exact distinct devices on rayon, sinks write the tables.

pub mod baseline;
pub mod cli;
pub mod config;
pub mod hunt;
pub mod job;
pub mod sample;
pub mod schema;
pub mod sink;
pub mod source;
pub mod time;
