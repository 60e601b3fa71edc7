//! Host extraction and matching on any RemoteUrl text: idempotent `normalized`, every `kql`
//! match a `normalized` match, and the relevance fast path agreeing with the full rules.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| telemetry_hunt_fuzz::drivers::host(data));
