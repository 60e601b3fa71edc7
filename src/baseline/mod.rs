//! Baselines: the history of daily aggregates, read back from the results store, and the
//! KQL-compatible scoring of daily series.

pub mod history;
pub mod series;
