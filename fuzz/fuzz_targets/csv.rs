//! The portal's advanced-hunting CSV export, plain or gzip, hunted as a run does.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| telemetry_hunt_fuzz::drivers::csv(data));
