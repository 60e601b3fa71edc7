//! The fuzz targets' bodies live in the test suite (`tests/it/fuzz_drivers.rs`), which replays
//! every regression input through them; this crate only links them to libFuzzer.

#[path = "../../tests/it/fuzz_drivers.rs"]
pub mod drivers;
