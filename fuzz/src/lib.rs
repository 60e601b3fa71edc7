//! The fuzz targets' bodies live in the test suite (`tests/it/fuzz_drivers.rs`), which replays
//! every regression input through them; this crate only links them to libFuzzer.

#[path = "../../tests/it/fuzz_drivers.rs"]
pub mod drivers;

/// The parquet and arrow crates panic on some corrupt pages (levels that overrun their buffer);
/// a Parquet unit's scan catches that and fails the file with its name, which is the behaviour
/// under test. libFuzzer's panic hook aborts on every panic, caught or not, so each new corrupt
/// page of that kind would stop the run: a panic raised by those crates (directly, or in a
/// crate they call, such as `bytes`) is left to unwind to the scan's `catch_unwind` (the driver
/// then checks the file failed cleanly), and any other panic, ours, still aborts as a crash.
pub fn panic_in_the_parquet_crate_is_an_error() {
    let libfuzzer_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !raised_by_the_reader_crates() {
            libfuzzer_hook(info);
        }
    }));
}

/// Whether the innermost frame outside the standard library, this hook and helper crates lies in
/// the parquet or arrow crates (the build keeps line tables, so frames carry their files).
fn raised_by_the_reader_crates() -> bool {
    let trace = std::backtrace::Backtrace::force_capture().to_string();
    for line in trace.lines() {
        let Some(path) = line.trim_start().strip_prefix("at ") else { continue };
        if path.contains("/.cargo/registry/") {
            if ["/parquet-", "/arrow-"].iter().any(|krate| path.contains(krate)) {
                return true;
            }
            // bytes, hashbrown and the like: whoever called them decides
            continue;
        }
        // this hook, whose file the fuzz build names relative to fuzz/
        if path.starts_with("/rustc/") || path.starts_with("./src/lib.rs") || path.contains("fuzz/src/lib.rs") {
            continue;
        }
        return false;
    }
    false
}
