//! Replays `tests/fuzz-regressions/<target>/*` through the code each fuzz target drives, with
//! the same assertions, so every crash the fuzzers found stays fixed (see `fuzz/run.sh`).

use std::path::{Path, PathBuf};

use crate::fuzz_drivers;

#[test]
fn every_fuzz_regression_input_passes() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz-regressions");
    let targets: [(&str, fn(&[u8])); 5] = [
        ("host", fuzz_drivers::host),
        ("json_lines", fuzz_drivers::json_lines),
        ("csv", fuzz_drivers::csv),
        ("parquet", fuzz_drivers::parquet),
        ("config", fuzz_drivers::config),
    ];
    let mut replayed = 0;
    for (target, run) in targets {
        let Ok(entries) = std::fs::read_dir(root.join(target)) else { continue };
        let mut files: Vec<PathBuf> = entries.map(|e| e.unwrap().path()).collect();
        files.sort();
        for file in files {
            let data = std::fs::read(&file).unwrap();
            if let Err(panic) = std::panic::catch_unwind(|| run(&data)) {
                let message = panic.downcast_ref::<String>().cloned().unwrap_or_default();
                panic!("{}: {message}", file.display());
            }
            replayed += 1;
        }
    }
    assert!(replayed >= 4, "the regression inputs are there ({replayed} replayed)");
}
