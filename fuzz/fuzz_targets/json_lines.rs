//! JSON lines, plain or gzip: the Defender streaming-export envelope, flat Log Analytics lines,
//! `{"records":[…]}` batches and pretty-printed documents, hunted as a run does.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| telemetry_hunt_fuzz::drivers::json_lines(data));
