//! The TOML configuration and `validate()`: an error or `Settings`, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| telemetry_hunt_fuzz::drivers::config(data));
