//! The fuzz targets' bodies live in the test suite (`tests/it/fuzz_drivers.rs`), which replays
//! every regression input through them; this crate only links them to libFuzzer.

#[path = "../../tests/it/fuzz_drivers.rs"]
pub mod drivers;

/// The parquet and arrow crates panic on some corrupt pages (levels that overrun their buffer);
/// a Parquet unit's scan catches that and fails the file with its name, which is the behaviour
/// under test. libFuzzer's panic hook aborts on every panic, caught or not, so each new corrupt
/// page of that kind would stop the run: a panic raised inside those crates is left to unwind
/// to the scan's `catch_unwind` (the driver then checks the file failed cleanly), and any
/// other panic, ours, still aborts as a crash.
pub fn panic_in_the_parquet_crate_is_an_error() {
    let libfuzzer_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let in_reader_crates = info.location().is_some_and(|at| {
            let file = at.file();
            ["/parquet-", "/arrow-"].iter().any(|krate| file.contains(krate)) && file.contains("/.cargo/registry/")
        });
        if !in_reader_crates {
            libfuzzer_hook(info);
        }
    }));
}
