//! The CPU part: classify each canonical row's host, tag exclusions, and aggregate exact
//! distinct devices per group. Partial aggregates are built per batch on rayon workers and
//! merged by reduce; nothing is shared between workers.

pub mod aggregate;
pub mod host;
pub mod lookalike;
pub mod memo;
pub mod prefilter;
pub mod rules;

pub use aggregate::{HuntCounts, Partial};
