//! telemetry-hunt: the nightly hunt over Defender `DeviceNetworkEvents` for connections to
//! Defender for Endpoint's own telemetry hosts.
//!
//! Data flows `source` → `hunt` → `baseline`/`detect` → `sink`: sources yield canonical Arrow
//! batches, the hunt classifies hosts and aggregates exact distinct devices on rayon, the
//! detectors compare each day with its history, sinks write the tables and the report.

pub mod azure;
pub mod baseline;
pub mod check;
pub mod cli;
pub mod config;
pub mod detect;
pub mod hunt;
pub mod job;
pub mod redact;
pub mod sample;
pub mod schema;
pub mod sink;
pub mod source;
pub mod time;
