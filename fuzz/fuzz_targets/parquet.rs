//! Parquet files, mutated (footer, schema, page headers, page data), planned and scanned from
//! memory as the blob source does, hunted as a run does.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(init: telemetry_hunt_fuzz::panic_in_the_parquet_crate_is_an_error(), |data: &[u8]| {
    telemetry_hunt_fuzz::drivers::parquet(data)
});
